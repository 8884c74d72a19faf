"""Draws docs/images/alignment.png: one layer4 unit drawn with both alignments.

A synthetic 224x224 chest X-ray with a lesion; the perfect ``layer4`` map (7x7, all weight
on the unit whose receptive field is centred nearest the lesion); that map drawn with the
usual bilinear resize (``"pixel"``) and on its receptive field's centre
(``"receptive-field"``), with the lesion outlined in green and each drawn peak as a white
cross. Run from the repository root::

    python docs/scripts/alignment_figure.py
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from gradcam_kit.core.engine import min_max_normalize, upsample
from gradcam_kit.data.synthetic import generate_sample
from gradcam_kit.metrics.localization import peak_points, unit_positions
from gradcam_kit.viz.render import overlay, title_font, to_numpy_images

SIZE, GRID, SCALE = 224, 7, 2


def main(path: Path = Path("docs/images/alignment.png")) -> Path:
    units = unit_positions(GRID, SIZE, "receptive-field")
    grid = torch.cartesian_prod(units, units)

    def offset(sample) -> float:  # lesion centre to the nearest unit centre
        return float(torch.cdist(sample.mask.nonzero().float().mean(0, keepdim=True), grid).min())

    # of 60 images, the positive whose lesion sits nearest a unit's receptive-field centre
    positives = [s for i in range(60) if (s := generate_sample(i, seed=3, size=SIZE)).label == 1]
    sample = min(positives, key=offset)
    image = sample.image[:, :, None].expand(SIZE, SIZE, 3).contiguous()[None]
    centre = sample.mask.nonzero().float().mean(0, keepdim=True)
    nearest = torch.cdist(grid, centre)[:, 0].argmin()
    raw = torch.zeros(1, GRID * GRID)
    raw[0, nearest] = 1.0
    raw = raw.view(1, GRID, GRID)
    outline = sample.mask.float()[None, None]
    outline = (F.max_pool2d(outline, 3, 1, 1) - outline)[0, 0].bool()
    panels = [image[0]]
    for alignment in ("pixel", "receptive-field"):
        heatmap = min_max_normalize(upsample(raw, (SIZE, SIZE), alignment=alignment))
        _, drawn = overlay(image, heatmap, 0.45)
        drawn = drawn[0].clone()
        drawn[outline] = torch.tensor([0, 255, 0], dtype=torch.uint8)
        y, x = peak_points(raw, (SIZE, SIZE), alignment)[0].round().long().tolist()
        for d in range(-4, 5):
            drawn[min(max(y + d, 0), SIZE - 1), x] = 255
            drawn[y, min(max(x + d, 0), SIZE - 1)] = 255
        panels.append(drawn)
    strip = torch.cat(panels, dim=1)
    strip = strip.repeat_interleave(SCALE, 0).repeat_interleave(SCALE, 1)
    picture = Image.fromarray(to_numpy_images(strip))
    titles = [
        "X-ray, lesion outlined",
        'layer4 unit, "pixel": 15.5 px off',
        'same unit, "receptive-field"',
    ]
    canvas = Image.new("RGB", (picture.width, picture.height + 28), (29, 35, 48))
    canvas.paste(picture, (0, 28))
    draw, font = ImageDraw.Draw(canvas), title_font(16)
    for n, title in enumerate(titles):
        draw.text((n * SIZE * SCALE + 6, 5), title, fill=(235, 238, 245), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


if __name__ == "__main__":
    print(main())
