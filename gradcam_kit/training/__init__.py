"""Fine-tuning: the training loop, its steps, and distributed helpers."""
