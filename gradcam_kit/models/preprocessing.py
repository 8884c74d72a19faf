"""How a model's inputs are prepared: the input size and normalisation a checkpoint implies.

A checkpoint written by ``train`` stores its ``input_size``, ``mean`` and ``std``; without a
checkpoint (torchvision or random weights) the defaults are 224 px and ImageNet's statistics.
"""

from __future__ import annotations

import os

__all__ = ["input_preprocessing"]


def input_preprocessing(
    checkpoint: str | os.PathLike | None = None, size: int | None = None
) -> tuple[int, dict[str, list[float]]]:
    """Input size and normalisation: ``size`` if given, else the checkpoint's, else ImageNet's.

    Args:
        checkpoint: a checkpoint file, or ``None`` for the defaults.
        size: the input side the caller asked for (overrides the checkpoint's).

    Returns:
        ``(size, {"mean": ..., "std": ...})``, the dict empty where the checkpoint stores no
        statistics (the defaults of :func:`gradcam_kit.data.preprocess.build_transform`, ImageNet's,
        then apply); ready for ``build_transform(size, **normalization)``.

    Raises:
        ValueError: ``size`` is below 32 (ResNet downsamples 32x).
        FileNotFoundError: the checkpoint does not exist.
    """
    stored: dict = {}
    if checkpoint is not None:
        from .checkpoint import load_checkpoint

        stored = load_checkpoint(checkpoint)
    if size is not None:
        if size < 32:
            raise ValueError(f"the input size must be at least 32 (ResNet downsamples 32x), got {size}")
    else:
        size = stored.get("input_size", 224)
        if isinstance(size, (list, tuple)):
            size = int(size[-1]) if size else 224
        size = int(size)
    normalization = {
        key: [float(v) for v in stored[key]]
        for key in ("mean", "std")
        if isinstance(stored.get(key), (list, tuple)) and len(stored[key]) == 3
    }
    return size, normalization
