"""Overlay strips of several layers for one image: what ``evaluate --overlays`` writes.

Each strip shows the input, then each layer's map laid over it with the lesion outlined in
green and the map's peak (as the pointing game scores it) as a white cross, under a title
bar naming the image and each layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.ops import min_max_normalize, upsample
from ..metrics.localization import peak_points

__all__ = ["draw_mask_outlines", "write_overlays"]


def write_overlays(
    kept: list[tuple[Tensor, Tensor, dict[str, Tensor], list[str]]],
    out_dir: str | Path,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    alignment: str = "receptive-field",
    method: str = "gradcam",
    scale: int = 2,
) -> list[Path]:
    """One PNG per image: the input, then the overlay of each layer (mask outline in green,
    the map's peak as a white cross), each under a title naming the image or the layer.
    Returns the paths written."""
    from PIL import Image

    from ..data.preprocess import denormalize
    from .render import overlay, to_numpy_images

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    index = 0
    for images, masks, maps, titles in kept:
        base = denormalize(images, mean=mean, std=std)
        size = tuple(images.shape[-2:])
        panels = [base]
        for raw in maps.values():
            heatmap = min_max_normalize(upsample(raw.float(), size, alignment=alignment))
            _, overlaid = overlay(base, heatmap)
            overlaid = overlaid.clone()
            draw_mask_outlines(overlaid, masks)
            _draw_crosses(overlaid, peak_points(raw, size, alignment))
            panels.append(overlaid)
        strips = torch.cat(panels, dim=2)
        if scale > 1:
            strips = strips.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
        for strip, title in zip(to_numpy_images(strips), titles):
            path = out_dir / f"overlay_{index:03d}.png"
            labels = [title] + [f"{layer} ({method})" for layer in maps]
            _titled(Image.fromarray(strip), labels).save(path)
            written.append(path)
            index += 1
    return written


def draw_mask_outlines(pictures: Tensor, masks: Tensor, color: Sequence[int] = (0, 255, 0)) -> None:
    """Draws the one-pixel outline of each mask, in place, on uint8 ``(B, H, W, 3)`` pictures.

    Args:
        pictures: uint8 ``(B, H, W, 3)`` RGB images, changed in place.
        masks: bool ``(B, H, W)`` masks at the pictures' size (an empty mask draws nothing).
        color: the outline's RGB colour (green by default).
    """
    floats = masks.to(pictures.device).float()[:, None]
    outline = (F.max_pool2d(floats, 3, 1, 1) - floats)[:, 0].bool()
    pictures[outline] = torch.tensor(list(color), dtype=torch.uint8, device=pictures.device)


def _draw_crosses(pictures: Tensor, points: Tensor, arm: int = 2) -> None:
    """A small white cross at each finite ``(y, x)`` point, in place on uint8 ``(B, H, W, 3)``."""
    height, width = pictures.shape[1:3]
    finite = torch.isfinite(points).all(dim=1)
    rows = points[:, 0].nan_to_num(0).round().long().clamp(0, height - 1)[finite]
    cols = points[:, 1].nan_to_num(0).round().long().clamp(0, width - 1)[finite]
    batch = torch.arange(len(points), device=pictures.device)[finite]
    for offset in range(-arm, arm + 1):
        pictures[batch, (rows + offset).clamp(0, height - 1), cols] = 255
        pictures[batch, rows, (cols + offset).clamp(0, width - 1)] = 255


def _titled(strip, labels: Sequence[str]):
    """The strip below a title bar with one label per panel."""
    from PIL import Image, ImageDraw

    from .render import fit_text, title_font

    panel = strip.width // len(labels)
    bar = 18
    canvas = Image.new("RGB", (strip.width, strip.height + bar), (29, 35, 48))
    canvas.paste(strip, (0, bar))
    draw, font = ImageDraw.Draw(canvas), title_font(12)
    for n, label in enumerate(labels):
        draw.text((n * panel + 3, 2), fit_text(label, font, panel - 6), fill=(235, 238, 245), font=font)
    return canvas
