"""The ``original | heatmap | overlay`` canvases of ``explain``, their titles and the contact sheet.

:func:`compose_canvases` assembles a batch of canvases on the device; :func:`write_canvas`
draws the titles on one canvas on the host and writes it as a PNG;
:func:`write_contact_sheet` tiles the overlay panels of written canvases into one grid.
torch, PIL and :mod:`gradcam_kit.viz.render` are imported inside the functions that use
them, so that importing this module (as ``gradcam-kit explain --help`` does) stays cheap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

__all__ = ["BACKGROUND", "Geometry", "compose_canvases", "write_canvas", "write_contact_sheet"]

BACKGROUND = (29, 35, 48)
GREEN, RED, WHITE, GREY = (120, 220, 120), (255, 110, 110), (235, 238, 245), (170, 178, 192)


def _font(size: int):
    from .render import title_font

    return title_font(size)


def _fit(text: str, font, width: int) -> str:
    from .render import fit_text

    return fit_text(text, font, width)


@dataclass(frozen=True)
class Geometry:
    """Where the three pictures and the title strip sit on an overlay canvas."""

    height: int
    width: int
    strip: int
    gap: int

    @classmethod
    def for_size(cls, size: tuple[int, int]) -> Geometry:
        height, width = size
        return cls(height, width, strip=max(16, round(0.09 * height)), gap=max(2, width // 64))

    def panel_left(self, panel: int) -> int:
        """x of the left edge of panel 0 (image), 1 (heatmap) or 2 (overlay)."""
        return panel * (self.width + self.gap)

    @property
    def canvas_size(self) -> tuple[int, int]:
        return self.strip + self.height, 3 * self.width + 2 * self.gap


def compose_canvases(
    images: Tensor,
    heatmaps: Tensor,
    geometry: Geometry,
    *,
    alpha: float = 0.5,
    colormap: int | str = "jet",
) -> Tensor:
    """``original | heatmap | overlay`` below an empty title strip, batched on the device.

    Args:
        images: uint8 ``(B, H, W, 3)`` pictures to draw on.
        heatmaps: ``(B, h, w)`` maps in ``[0, 1]`` (resized to ``(H, W)`` by ``overlay``).
        geometry: the canvas layout for ``(H, W)``.
        alpha: the heatmap's weight in the overlay.
        colormap: OpenCV colormap id or name.

    Returns:
        uint8 ``(B, strip + H, 3 W + 2 gap, 3)`` on the images' device.
    """
    import torch

    from .render import overlay

    colored, overlaid = overlay(images, heatmaps, alpha, colormap)
    batch = images.shape[0]
    fill = torch.tensor(BACKGROUND, dtype=torch.uint8, device=images.device)
    gap = fill.expand(batch, geometry.height, geometry.gap, 3)
    row = torch.cat([images, gap, colored, gap, overlaid], dim=2)
    strip = fill.expand(batch, geometry.strip, row.shape[2], 3)
    return torch.cat([strip, row], dim=1)


def write_canvas(canvas: np.ndarray, path: Path, titles: Sequence[tuple[str, tuple]], geometry: Geometry, compression: int) -> float:
    """Draws the panel titles on a canvas and writes it as a PNG (run in writer threads).

    Args:
        canvas: uint8 ``(strip + H, 3 W + 2 gap, 3)`` from :func:`compose_canvases`.
        path: the PNG to write.
        titles: ``(text, RGB colour)`` for panels 0, 1 and 2, each cut to fit its panel.
        geometry: the canvas layout.
        compression: zlib level, 0-9.

    Returns:
        The seconds spent.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    from .png import write_png

    start = time.perf_counter()
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = _font(max(8, geometry.strip - 6))
    top = (geometry.strip - getattr(font, "size", 11)) // 2 - 1
    for panel, (text, colour) in enumerate(titles):
        draw.text(
            (geometry.panel_left(panel) + 3, top), _fit(text, font, geometry.width - 6), fill=colour, font=font
        )
    # Not image.save(): Pillow's adaptive row filters cost ~3x the encoding (gradcam_kit.viz.png).
    write_png(path, np.asarray(image), compression)
    return time.perf_counter() - start


def _contact_sheet_rows(rows: Sequence[dict], max_images: int) -> list[dict]:
    ordered = sorted(rows, key=lambda r: r["index"])
    if len(ordered) <= max_images:
        return ordered
    wrong = [r for r in ordered if r["correct"] != "" and not int(r["correct"])][:max_images]
    rest = [r for r in ordered if r["correct"] == "" or int(r["correct"])]
    room = max_images - len(wrong)
    sample = [rest[round(i * (len(rest) - 1) / max(room - 1, 1))] for i in range(room)] if room else []
    return wrong + sample


def write_contact_sheet(
    rows: Sequence[dict], output: Path, geometry: Geometry, *, max_images: int = 64, tile: int = 160
) -> Path | None:
    """A grid of up to ``max_images`` overlays (green frame: correct, red: wrong).

    With more images than that, the misclassified ones come first and the rest of the grid
    is an evenly spaced sample of the others (so every class of a sorted ImageFolder shows
    up), each part in input order. Reads the overlay panel back from each written PNG, so
    every rank's images can be included after a distributed run.
    """
    from PIL import Image, ImageDraw

    chosen = _contact_sheet_rows(rows, max_images)
    if not chosen:
        return None
    columns = min(8, math.ceil(math.sqrt(len(chosen))))
    lines = math.ceil(len(chosen) / columns)
    caption, pad = 18, 4
    cell_w, cell_h = tile + 2 * pad, tile + caption + 2 * pad
    sheet = Image.new("RGB", (columns * cell_w, lines * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    left = geometry.panel_left(2)
    box = (left, geometry.strip, left + geometry.width, geometry.strip + geometry.height)
    for n, row in enumerate(chosen):
        x, y = (n % columns) * cell_w, (n // columns) * cell_h
        try:
            with Image.open(output / row["overlay"]) as canvas:
                picture = canvas.crop(box).resize((tile, tile), Image.Resampling.BILINEAR)
        except FileNotFoundError:  # written by a rank on another machine, without a shared disk
            continue
        correct = row["correct"]
        frame = GREY if correct == "" else (GREEN if int(correct) else RED)
        draw.rectangle((x + pad - 2, y + pad - 2, x + pad + tile + 1, y + pad + tile + 1), outline=frame, width=2)
        sheet.paste(picture, (x + pad, y + pad))
        text = f"#{row['index']} {row['pred']} {float(row['probability']):.2f}"
        draw.text((x + pad, y + pad + tile + 3), _fit(text, font, tile), fill=frame if correct != "" else WHITE, font=font)
    path = output / "contact_sheet.png"
    sheet.save(path, format="PNG", compress_level=6)
    return path
