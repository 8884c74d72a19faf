"""Localisation metrics: the pointing game, its ceiling and its center baseline.

The pointing game (Zhang et al., "Top-down neural attention by excitation backprop",
2016) asks whether a saliency map's maximum falls on the object: a **hit** when the peak
lies within ``tolerance_px`` pixels (15 at 224x224 in TorchRay's benchmark) of the
ground-truth mask.

Two ways to find the peak (``mode``):

* ``"unit"`` (the default): the peak is taken **where the map is defined**, at the layer's
  own resolution, and placed where the map draws that unit on the image (see
  :func:`unit_positions`). When several units share the maximum, the peak is the centre
  of that plateau; a constant map has no peak and scores a miss.
* ``"torchray"``: TorchRay's convention, for comparing with published figures: resize the
  map to the image, then the first maximal pixel in row-major order. A bilinear resize
  clamps the border to the edge unit's value, so a map whose peak is on an edge unit
  "points" at row 0 or column 0: at 96x96 a ResNet50 ``layer4`` map is 3x3 and 8 of its 9
  units are edge units. That bias, not the model, is why deep layers scored near zero.

Every figure should be read beside its **ceiling** (:func:`pointing_ceiling`: what a
perfect map at that layer, input size and alignment scores on the same masks, i.e. whether
*any* unit of the grid lies within the tolerance of the mask) and the **center baseline**
(:func:`center_baseline`: always point at the image centre).

Unit positions depend on the ``alignment`` the maps are drawn with (see
:func:`gradcam_kit.core.engine.upsample`): ``"receptive-field"`` puts unit ``i`` of an
``h``-unit map on pixel ``i * H / h`` (the centre of its receptive field in torchvision's
ResNets); ``"pixel"`` on ``(i + 0.5) * H / h - 0.5`` (the usual half-pixel resize).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..core.ops import ALIGNMENTS, upsample

__all__ = [
    "POINTING_MODES",
    "REFERENCE_SIZE",
    "center_baseline",
    "peak_points",
    "point_hits",
    "pointing_ceiling",
    "pointing_game",
    "scaled_tolerance",
    "unit_positions",
]

POINTING_MODES = ("unit", "torchray")
REFERENCE_SIZE = 224


def scaled_tolerance(tolerance_px: float, size: Sequence[int] | int, reference_size: int = REFERENCE_SIZE) -> float:
    """``tolerance_px`` at ``reference_size`` converted to an image of ``size`` (shorter side)."""
    side = size if isinstance(size, int) else min(size)
    return float(tolerance_px) * side / reference_size


def _check_masks(masks: Tensor, batch: int | None = None) -> Tensor:
    if masks.ndim != 3:
        raise ValueError(f"masks must be (B, H, W), got {tuple(masks.shape)}")
    if batch is not None and masks.shape[0] != batch:
        raise ValueError(f"got {masks.shape[0]} masks for {batch} heatmaps; pass one mask per heatmap")
    return masks.bool()


def _check_alignment(alignment: str) -> None:
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")


def unit_positions(units: int, pixels: int, alignment: str = "receptive-field", *, device=None) -> Tensor:
    """Pixel coordinate (float) at which each of ``units`` map units is drawn on ``pixels``.

    The same geometry as :func:`gradcam_kit.core.engine.upsample`, so the pointing game scores
    the picture the user sees.
    """
    _check_alignment(alignment)
    index = torch.arange(units, device=device, dtype=torch.float32)
    stride = pixels / units
    if alignment == "receptive-field":
        return index * stride
    return (index + 0.5) * stride - 0.5


def point_hits(points: Tensor, masks: Tensor, tolerance_px: float) -> Tensor:
    """Whether each ``(y, x)`` point lies within ``tolerance_px`` of its mask.

    Args:
        points: ``(B, 2)`` ``(row, column)`` pixel positions (fractional ones allowed);
            a NaN point (no peak) is a miss.
        masks: ``(B, H, W)`` bool masks; an empty mask is never hit.
        tolerance_px: the largest Euclidean distance in pixels that still counts as a hit.

    Returns:
        ``(B,)`` bool.
    """
    masks = _check_masks(masks, points.shape[0])
    if tolerance_px < 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}")
    _, height, width = masks.shape
    rows = torch.arange(height, device=masks.device, dtype=torch.float32)
    cols = torch.arange(width, device=masks.device, dtype=torch.float32)
    points = points.to(device=masks.device, dtype=torch.float32)
    distance2 = (rows[None, :, None] - points[:, 0, None, None]) ** 2 + (
        cols[None, None, :] - points[:, 1, None, None]
    ) ** 2
    nearest = distance2.masked_fill(~masks, float("inf")).flatten(1).amin(dim=1)
    return nearest <= float(tolerance_px) ** 2  # NaN compares False: a miss


def peak_points(
    maps: Tensor, image_size: tuple[int, int], alignment: str = "receptive-field"
) -> Tensor:
    """``(B, 2)`` image coordinates of each map's peak, taken at the map's own resolution.

    The peak is the centre of the set of units that hold the maximum (one unit for any
    real map), placed where ``alignment`` draws those units on an ``image_size`` image.
    A constant map (no peak at all, e.g. all zeros after ReLU) gives a NaN point.
    """
    if maps.ndim != 3:
        raise ValueError(f"heatmaps must be (B, H, W), got {tuple(maps.shape)}")
    maps = maps.detach().float()
    batch, h, w = maps.shape
    flat = maps.flatten(1)
    top = flat.amax(dim=1, keepdim=True)
    at_peak = (flat == top).view(batch, h, w).float()
    ys = unit_positions(h, image_size[0], alignment, device=maps.device)
    xs = unit_positions(w, image_size[1], alignment, device=maps.device)
    count = at_peak.sum(dim=(1, 2))
    points = torch.stack(
        [(at_peak.sum(dim=2) * ys).sum(dim=1) / count, (at_peak.sum(dim=1) * xs).sum(dim=1) / count], dim=1
    )
    constant = top[:, 0] == flat.amin(dim=1)
    return points.masked_fill(constant[:, None], float("nan"))


def _torchray_points(maps: Tensor, image_size: tuple[int, int], alignment: str) -> Tensor:
    maps = upsample(maps.detach().float(), image_size, alignment=alignment)
    width = maps.shape[-1]
    flat_max = maps.flatten(1).argmax(dim=1)
    return torch.stack([flat_max // width, flat_max % width], dim=1).float()


def pointing_game(
    heatmaps: Tensor,
    masks: Tensor,
    tolerance_px: float = 15.0,
    *,
    reference_size: int | None = None,
    alignment: str = "receptive-field",
    mode: str = "unit",
) -> Tensor:
    """Pointing-game hits: each map's peak lies within ``tolerance_px`` of its mask.

    Args:
        heatmaps: ``(B, h, w)`` saliency maps at any resolution, best the layer's own
            (``gradcam_raw=True``); any scale, only the peak matters.
        masks: ``(B, H, W)`` ground truth at the image's size.
        tolerance_px: tolerance in pixels of the image, or at ``reference_size`` if given.
        reference_size: the image side ``tolerance_px`` refers to (TorchRay: 15 px at
            224); the tolerance is scaled to the masks' shorter side.
        alignment: how the maps are drawn on the image (``"receptive-field"`` or
            ``"pixel"``); irrelevant when the maps are already at the masks' size.
        mode: ``"unit"`` (peak at the map's resolution, ties resolved to the plateau's
            centre) or ``"torchray"`` (resize, then the first maximal pixel).

    Returns:
        ``(B,)`` bool hits. Images with an empty mask count as misses; leave them out of
        the score (see :func:`gradcam_kit.metrics.pointing.evaluate_pointing`).
    """
    if heatmaps.ndim != 3:
        raise ValueError(f"heatmaps must be (B, H, W), got {tuple(heatmaps.shape)}")
    if mode not in POINTING_MODES:
        raise ValueError(f"mode must be one of {POINTING_MODES}, got {mode!r}")
    masks = _check_masks(masks, heatmaps.shape[0])
    image_size = tuple(masks.shape[-2:])
    if reference_size is not None:
        tolerance_px = scaled_tolerance(tolerance_px, image_size, reference_size)
    if mode == "torchray":
        points = _torchray_points(heatmaps, image_size, alignment)
    else:
        points = peak_points(heatmaps, image_size, alignment)
    return point_hits(points, masks, tolerance_px)


def pointing_ceiling(
    masks: Tensor,
    grid: tuple[int, int],
    tolerance_px: float = 15.0,
    *,
    reference_size: int | None = None,
    alignment: str = "receptive-field",
) -> Tensor:
    """Hits of a *perfect* map on a ``grid`` of units: is any unit within the tolerance?

    This is the best any map at that layer, input size and alignment can score (in
    ``"unit"`` mode) on these masks.

    Returns:
        ``(B,)`` bool.
    """
    masks = _check_masks(masks)
    _check_alignment(alignment)
    _, height, width = masks.shape
    if reference_size is not None:
        tolerance_px = scaled_tolerance(tolerance_px, (height, width), reference_size)
    ys = unit_positions(grid[0], height, alignment, device=masks.device)
    xs = unit_positions(grid[1], width, alignment, device=masks.device)
    rows = torch.arange(height, device=masks.device, dtype=torch.float32)
    cols = torch.arange(width, device=masks.device, dtype=torch.float32)
    along_x = (cols[None, :] - xs[:, None]) ** 2  # (w, W)
    along_y = (rows[None, :] - ys[:, None]) ** 2  # (h, H)
    hits = []
    for chunk in masks.split(8):  # bounds the (8, H, w, W) intermediate
        # Separable distance: per mask row, the nearest mask column to each unit column ...
        per_row = torch.where(chunk[:, :, None, :], along_x[None, None], float("inf")).amin(dim=-1)
        # ... then the nearest mask row to each unit row: (b, h, w) squared distances.
        distance2 = (along_y[None, :, :, None] + per_row[:, None, :, :]).amin(dim=2)
        hits.append(distance2.flatten(1).amin(dim=1) <= float(tolerance_px) ** 2)
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool, device=masks.device)


def center_baseline(
    masks: Tensor, tolerance_px: float = 15.0, *, reference_size: int | None = None
) -> Tensor:
    """Hits of the baseline that always points at the image centre (``(H // 2, W // 2)``)."""
    masks = _check_masks(masks)
    height, width = masks.shape[-2:]
    if reference_size is not None:
        tolerance_px = scaled_tolerance(tolerance_px, (height, width), reference_size)
    centre = torch.tensor([[height // 2, width // 2]], device=masks.device).expand(masks.shape[0], 2)
    return point_hits(centre, masks, tolerance_px)
