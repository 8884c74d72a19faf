"""Benchmarks of gradcam_kit (not part of the installed package)."""
