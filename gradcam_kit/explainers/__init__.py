"""Grad-CAM for models we did not write: any torchvision CNN (:mod:`.cnn`) and Vision
Transformers (:mod:`.vit`).
"""
