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
    from .checkpoint import CheckpointMetadata, checkpoint_metadata, load_checkpoint

    stored = CheckpointMetadata()
    if checkpoint is not None:
        stored = checkpoint_metadata(load_checkpoint(checkpoint), source=str(checkpoint))
    if size is not None:
        if size < 32:
            raise ValueError(f"the input size must be at least 32 (ResNet downsamples 32x), got {size}")
    else:
        size = stored.input_size[-1] if stored.input_size else 224
    normalization = {} if stored.mean is None else {"mean": list(stored.mean), "std": list(stored.std)}
    return size, normalization
