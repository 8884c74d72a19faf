"""Where to compute: the one place that turns ``"auto"``, ``"cpu"``, ``"cuda"`` into a device."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """The device a ``--device`` value names.

    Args:
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``
            or another ``torch.device`` string (``"mps"``).
        local_rank: the process's rank on this machine; with ``"cuda"`` it picks the GPU
            (``cuda:local_rank`` modulo the number of GPUs), as under torchrun.

    Returns:
        The device; a CUDA device also becomes the current one (``torch.cuda.set_device``).

    Raises:
        ValueError: not a device name (the message lists what to pass).
        RuntimeError: CUDA asked for but not available.
    """
    name = str(device).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {device!r}; pass auto, cpu, cuda or cuda:N") from None
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} was asked for but CUDA is not available; pass --device cpu")
        if name == "cuda":
            name = f"cuda:{local_rank % torch.cuda.device_count()}"
        torch.cuda.set_device(name)
    return torch.device(name)
