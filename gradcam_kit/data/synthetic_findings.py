"""The multi-label variant of the synthetic X-rays: up to three findings per image, each with its mask.

The scene is :mod:`gradcam_kit.data.synthetic`'s; the findings differ in shape and place:

* ``opacity``: the irregular blob anywhere in one lung (the single-label lesion);
* ``nodule``: a small, dense, round spot in the upper half of one lung;
* ``effusion``: fluid filling the base of one lung, its upper edge a meniscus that rises
  towards the side wall.

Finding ``k`` (in :data:`FINDINGS` order) is present in image ``i`` when
``is_positive(i >> k, positive_fraction)``: with the default fraction 0.5 every aligned run of
eight consecutive images holds each of the eight combinations once (none, each alone,
pairs, all three), so the findings are balanced and uncorrelated. Each finding draws
from its own random stream, so an image keeps its scene and its other findings whatever
subset of findings is asked for.

Layout written by :func:`write_multilabel_folder` (``python -m gradcam_kit synth --findings
opacity,nodule,effusion``)::

    <root>/<split>/<split>_00000.png                          the image
    <root>/masks/<split>/<finding>/<split>_00000_mask.png     that finding's mask, when present
    <root>/<split>.csv     path,opacity,nodule,effusion,opacity_mask,nodule_mask,effusion_mask

which :func:`gradcam_kit.data.multilabel.read_multilabel_csv` reads (labels 1/0, the mask
columns relative to the CSV).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from .synthetic import (
    SPLIT_OFFSETS,
    FindingDrawer,
    _check_size,
    _draw_opacity,
    _draw_parameters,
    is_positive,
    random_stream,
    render_batches,
)

__all__ = ["FINDINGS", "check_findings", "generate_multilabel", "has_finding", "write_multilabel_folder"]

FINDINGS: tuple[str, ...] = ("opacity", "nodule", "effusion")


def has_finding(index: int, finding: str, positive_fraction: float = 0.5) -> bool:
    """Whether image ``index`` carries ``finding`` (see the module docstring)."""
    return is_positive(index >> FINDINGS.index(finding), positive_fraction)


def check_findings(findings: Sequence[str]) -> list[str]:
    """The findings asked for, checked.

    Raises:
        ValueError: none, a repeated one, or one not in :data:`FINDINGS`.
    """
    findings = [f.strip() for f in findings if f.strip()]
    unknown = [f for f in findings if f not in FINDINGS]
    if unknown or not findings or len(set(findings)) != len(findings):
        raise ValueError(f"findings must be distinct names from {list(FINDINGS)}, got {findings}")
    return findings


def _side(P: dict[str, Tensor], name: str, side: Tensor) -> Tensor:
    return torch.where(side > 0.5, P[f"right_{name}"], P[f"left_{name}"])


def _draw_nodule(scene: dict, P: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """A small round dense spot (see :func:`gradcam_kit.data.synthetic._draw_opacity` for the returns)."""
    x, y = scene["x"], scene["y"]
    radius = torch.clamp(P["nodule_radius"], min=1.5 / scene["size"])
    squared = (x - P["nodule_x"]) ** 2 + (y - P["nodule_y"]) ** 2
    distance = torch.sqrt(squared) / radius
    lung = torch.where(P["nodule_side"] > 0.5, scene["right"], scene["left"])
    present = P["nodule_present"] > 0.5
    mask = (distance < 1.0) & (lung > 0.5) & present
    closeness = squared.masked_fill((lung <= 0.5) | ~present, float("inf"))
    level = P["nodule_level"] * P["nodule_present"] * torch.sigmoid((1.0 - distance) / 0.08) * lung
    return level, mask, closeness


def _draw_effusion(scene: dict, P: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Fluid at the base of one lung under a meniscus (returns as :func:`_draw_nodule`)."""
    side = P["effusion_side"]
    lateral = torch.where(side > 0.5, 1.0, -1.0)  # towards the side wall
    u = (scene["x"] - _side(P, "cx", side)) / _side(P, "rx", side) * lateral
    v = (scene["y"] - _side(P, "cy", side)) / _side(P, "ry", side)
    depth = v - (P["effusion_height"] - P["effusion_meniscus"] * u)
    lung = torch.where(side > 0.5, scene["right"], scene["left"])
    present = P["effusion_present"] > 0.5
    mask = (depth > 0) & (lung > 0.5) & present
    closeness = ((1.0 - v) ** 2 + u**2).masked_fill((lung <= 0.5) | ~present, float("inf"))
    level = P["effusion_level"] * P["effusion_present"] * torch.sigmoid(depth / 0.05) * lung
    return level, mask, closeness


_DRAWERS: dict[str, FindingDrawer] = {"opacity": _draw_opacity, "nodule": _draw_nodule, "effusion": _draw_effusion}


def _parameters(index: int, seed: int, present: Mapping[str, bool]) -> dict[str, float]:
    """The scene and lesion of ``_draw_parameters``, plus the nodule's and the effusion's."""
    p = _draw_parameters(index, seed, present.get("opacity", False))
    nodule = random_stream(index, seed, 2)
    side = "right" if nodule.random() < 0.5 else "left"
    radius, theta = 0.6 * math.sqrt(nodule.uniform(0.0, 1.0)), nodule.uniform(1.15 * math.pi, 1.85 * math.pi)
    p.update(
        nodule_side=float(side == "right"),
        nodule_x=p[f"{side}_cx"] + p[f"{side}_rx"] * radius * math.cos(theta),
        nodule_y=p[f"{side}_cy"] + p[f"{side}_ry"] * radius * math.sin(theta),
        nodule_radius=nodule.uniform(0.035, 0.055),
        nodule_level=nodule.uniform(0.3, 0.45),
        nodule_present=float(present.get("nodule", False)),
    )
    effusion = random_stream(index, seed, 3)
    p.update(
        effusion_side=float(effusion.random() < 0.5),
        effusion_height=effusion.uniform(0.4, 0.6),
        effusion_meniscus=effusion.uniform(0.15, 0.3),
        effusion_level=effusion.uniform(0.25, 0.35),
        effusion_present=float(present.get("effusion", False)),
    )
    return p


def generate_multilabel(
    count: int,
    *,
    findings: Sequence[str] = FINDINGS,
    seed: int = 0,
    size: int = 128,
    start: int = 0,
    positive_fraction: float = 0.5,
    batch_size: int = 64,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draws multi-label samples ``start .. start + count - 1``.

    Args:
        count: number of images.
        findings: which findings may appear, in output order (a subset of :data:`FINDINGS`).
        seed: the dataset's seed.
        size: image side in pixels (at least 16).
        start: the first sample's index.
        positive_fraction: share of images carrying each finding.
        batch_size: images rendered together.

    Returns:
        ``(images, masks, labels)``: uint8 ``(N, H, W)``, bool ``(N, F, H, W)``, int64 ``(N, F)``.
    """
    _check_size(size)
    findings = check_findings(findings)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    present = [{f: has_finding(start + i, f, positive_fraction) for f in findings} for i in range(count)]
    images, masks = render_batches(
        count, size, batch_size, lambda i: _parameters(start + i, seed, present[i]),
        [_DRAWERS[f] for f in findings],
    )
    labels = torch.tensor([[int(p[f]) for f in findings] for p in present], dtype=torch.long)
    return images, masks, labels.reshape(count, len(findings))


def write_multilabel_folder(
    root: str | Path,
    splits: Mapping[str, int],
    *,
    findings: Sequence[str] = FINDINGS,
    size: int = 128,
    seed: int = 0,
    positive_fraction: float = 0.5,
    progress: bool = True,
) -> dict[str, dict[str, int]]:
    """Writes the images, each present finding's mask, and one multi-label CSV per split.

    Args:
        root: output folder (created).
        splits: images per split, e.g. ``{"train": 240, "val": 60, "test": 60}``.
        findings: the findings, in column order.
        size: image side in pixels.
        seed: dataset seed.
        positive_fraction: share of images carrying each finding.
        progress: show a tqdm progress bar.

    Returns:
        ``{split: {"images": n, finding: positives, ...}}``.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    unknown = sorted(set(splits) - set(SPLIT_OFFSETS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; choose from {sorted(SPLIT_OFFSETS)}")
    findings, root = check_findings(findings), Path(root)
    counts: dict[str, dict[str, int]] = {}
    for split, count in ((s, n) for s, n in splits.items() if n > 0):
        (root / split).mkdir(parents=True, exist_ok=True)
        for finding in findings:
            (root / "masks" / split / finding).mkdir(parents=True, exist_ok=True)
        rows = []
        for first in tqdm(range(0, count, 64), desc=f"synth {split}", disable=not progress, leave=False):
            images, masks, labels = generate_multilabel(
                min(64, count - first), findings=findings, seed=seed, size=size,
                start=SPLIT_OFFSETS[split] + first, positive_fraction=positive_fraction,
            )
            for offset in range(images.shape[0]):
                stem = f"{split}_{first + offset:05d}"
                Image.fromarray(images[offset].numpy(), mode="L").save(root / split / f"{stem}.png")
                mask_fields = []
                for k, finding in enumerate(findings):
                    mask_path = Path("masks") / split / finding / f"{stem}_mask.png"
                    if labels[offset, k]:
                        Image.fromarray(masks[offset, k].numpy().astype("uint8") * 255, mode="L").save(root / mask_path)
                    mask_fields.append(mask_path.as_posix() if labels[offset, k] else "")
                rows.append([f"{split}/{stem}.png", *labels[offset].tolist(), *mask_fields])
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", *findings, *(f"{f}_mask" for f in findings)])
            writer.writerows(rows)
        counts[split] = {"images": count, **{f: sum(r[1 + k] for r in rows) for k, f in enumerate(findings)}}
    return counts
