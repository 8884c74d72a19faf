"""Map operations shared by every method: upsampling (two alignments) and normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ALIGNMENTS", "min_max_normalize", "upsample"]

ALIGNMENTS = ("pixel", "receptive-field")


def upsample(
    maps: Tensor,
    size: tuple[int, int],
    *,
    align_corners: bool = False,
    alignment: str = "pixel",
) -> Tensor:
    """Bilinearly resizes ``(B, h, w)`` maps to ``size`` (half-pixel centres, like OpenCV).

    ``align_corners=True`` maps corner pixel centres onto corner pixel centres instead, as
    ``torch.nn.UpsamplingBilinear2d`` does (used for Score-CAM's masks, see docs/METHODS.md).

    ``alignment="receptive-field"`` puts unit ``i`` of a stride-``s`` map on input pixel
    ``s * i``, the centre of its receptive field in networks whose strided layers pad by
    ``k // 2`` (torchvision's ResNets, DenseNets, ...). The default ``"pixel"`` resize (every
    Grad-CAM library's) puts it at ``s * i + (s - 1) / 2``: 15.5 px down and right for
    ResNet50's ``layer4`` at 224x224. Pixels past the last unit take its value.
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if alignment == "receptive-field":
        return _upsample_receptive_field(maps, size)
    return F.interpolate(
        maps[:, None], size=size, mode="bilinear", align_corners=align_corners
    )[:, 0]


def _upsample_receptive_field(maps: Tensor, size: tuple[int, int]) -> Tensor:
    (h, w), (height, width) = maps.shape[-2:], size
    # Output pixel p samples unit coordinate p / stride, stride = size / map size; in
    # grid_sample's normalised coordinates (align_corners=False) unit u sits at (2u + 1) / n - 1.
    ys = torch.arange(height, device=maps.device, dtype=maps.dtype) * (h / height)
    xs = torch.arange(width, device=maps.device, dtype=maps.dtype) * (w / width)
    grid_y, grid_x = torch.meshgrid((2 * ys + 1) / h - 1, (2 * xs + 1) / w - 1, indexing="ij")
    grid = torch.stack((grid_x, grid_y), dim=-1).expand(maps.shape[0], height, width, 2)
    return F.grid_sample(
        maps[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False
    )[:, 0]


def min_max_normalize(maps: Tensor) -> Tensor:
    """Per-image min-max normalisation of ``(B, H, W)`` maps to ``[0, 1]``.

    A constant map (all zeros after ReLU, say) becomes all zeros, never NaN.
    """
    flat = maps.flatten(1)
    low = flat.amin(dim=1)[:, None, None]
    span = flat.amax(dim=1)[:, None, None] - low
    scale = torch.where(span > 0, 1.0 / span.clamp_min(torch.finfo(maps.dtype).tiny), 0.0)
    return (maps - low) * scale
