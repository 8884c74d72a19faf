"""Synthetic chest-X-ray-like images with ground-truth lesion masks.

Neither X-ray datasets nor ImageNet weights can be downloaded everywhere, so the workflow
(train -> evaluate -> explain) runs on images drawn here: two dark lung fields inside a
soft-tissue body, a bright mediastinum and spine, curved rib shadows, low-frequency
texture and pixel noise, under a random global brightness/contrast and a small random
shift, scale and rotation. A *positive* image carries one lesion, an opacity of varying
size, shape, intensity and position inside one lung, that covers at most 5 % of the
image; its binary mask is the ground truth the pointing game scores against.

Everything is deterministic by ``(seed, index)``: sample ``i`` is the same whatever batch
or dataset it is drawn in, and the scene does not depend on the resolution (only the
pixel noise does). The lesion changes global statistics far less than the random
brightness and contrast do, so a classifier on the image mean and std stays at chance
(tested in ``tests/data/test_synthetic.py``).

Layout written by :func:`write_image_folder` (and ``python -m gradcam_kit synth``,
:mod:`gradcam_kit.cli.synth`)::

    <root>/<split>/<class>/<split>_00000.png                  the image (8-bit grayscale)
    <root>/masks/<split>/opacity/<split>_00001_mask.png       its mask (255 = lesion), positives only
    <root>/<split>.csv                                        path,label,mask (relative to root)

The masks live in their own tree, outside the class folders, so torchvision's
``ImageFolder`` (and any loader that reads ``<split>/<class>/*``) sees only the images;
:func:`gradcam_kit.data.datasets.mask_path_for` finds them. Their names end in ``_mask`` as well.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "CLASS_NAMES",
    "MAX_LESION_FRACTION",
    "SPLIT_OFFSETS",
    "SyntheticSample",
    "SyntheticXRayDataset",
    "check_settings",
    "generate",
    "generate_sample",
    "is_positive",
    "write_image_folder",
]

# Sorted folder order is the class order, so "normal" is class 0 and "opacity" (the
# lesion) class 1, the positive class of the metrics.
CLASS_NAMES: tuple[str, str] = ("normal", "opacity")
MAX_LESION_FRACTION = 0.05
# Each split draws from its own index range, so the test set stays the same whatever the
# size of the training set.
SPLIT_OFFSETS: dict[str, int] = {"train": 0, "val": 1_000_000, "test": 2_000_000}
_SEED_STRIDE = 0x9E3779B1  # spreads (seed, index) pairs over the generator's seed space


@dataclass(frozen=True)
class SyntheticSample:
    """One synthetic image.

    Attributes:
        image: uint8 ``(H, W)`` grayscale image.
        mask: bool ``(H, W)`` lesion mask (all ``False`` for a negative image).
        label: ``1`` (lesion, class ``"opacity"``) or ``0`` (``"normal"``), an index into :data:`CLASS_NAMES`.
    """

    image: Tensor
    mask: Tensor
    label: int


def is_positive(index: int, positive_fraction: float = 0.5) -> bool:
    """Whether sample ``index`` carries a lesion.

    Labels interleave deterministically, so any run of consecutive indices holds the
    requested fraction of positives (to within one image): tiny datasets always hold both
    classes.
    """
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must lie in [0, 1], got {positive_fraction}")
    return math.floor((index + 1) * positive_fraction) - math.floor(index * positive_fraction) == 1


def _soft_ellipse(x: Tensor, y: Tensor, cx: Tensor, cy: Tensor, rx: Tensor, ry: Tensor, edge: float) -> Tensor:
    radius = torch.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return torch.sigmoid((1.0 - radius) / edge)


def random_stream(index: int, seed: int, stream: int) -> random.Random:
    """Random stream ``stream`` of image ``index``: 0 draws the scene, 1 the lesion, 2 and up
    the other findings of :mod:`gradcam_kit.data.synthetic_findings`. Each stream is
    independent, so adding or removing a finding leaves the rest of the image as it was."""
    base = (seed * _SEED_STRIDE + index) % (2**62)
    return random.Random(base + stream * 2**62)


def _draw_parameters(index: int, seed: int, positive: bool) -> dict[str, float]:
    """The scalar parameters of one image, from Python's RNG (no per-scalar torch op)."""
    scene = random_stream(index, seed, 0)
    # The lesion draws from its own stream: with positive=False the same scene comes out,
    # only without the lesion.
    lesion = random_stream(index, seed, 1)
    u = scene.uniform
    p = {
        "angle": math.radians(u(-6.0, 6.0)), "scale": u(0.93, 1.07),
        "shift_x": u(-0.06, 0.06), "shift_y": u(-0.06, 0.06),
        "body_rx": u(0.8, 0.9), "body_ry": u(0.95, 1.05),
        "lung_rx": u(0.25, 0.31), "lung_ry": u(0.5, 0.6),
    }
    for side, sign in (("left", -1.0), ("right", 1.0)):
        p[f"{side}_cx"], p[f"{side}_cy"] = sign * u(0.34, 0.42), u(-0.12, -0.02)
        p[f"{side}_rx"], p[f"{side}_ry"] = p["lung_rx"] * u(0.92, 1.08), p["lung_ry"] * u(0.95, 1.05)
    p.update(
        heart_cx=u(0.02, 0.12), heart_cy=u(0.22, 0.32), heart_rx=u(0.2, 0.26), heart_ry=u(0.22, 0.3),
        rib_count=u(7.0, 9.0), rib_phase=u(0.0, 2 * math.pi), rib_curve=u(0.25, 0.4), rib_level=u(0.07, 0.13),
        contrast=u(0.75, 1.25), brightness=u(-0.12, 0.12), noise=u(0.01, 0.03),
        noise_seed=scene.getrandbits(62),
    )
    v = lesion.uniform
    side = "right" if lesion.random() < 0.5 else "left"
    radius, theta = 0.6 * math.sqrt(v(0.0, 1.0)), v(0.0, 2 * math.pi)
    p.update(
        lesion_side=float(side == "right"),
        lesion_x=p[f"{side}_cx"] + p[f"{side}_rx"] * radius * math.cos(theta),
        lesion_y=p[f"{side}_cy"] + p[f"{side}_ry"] * radius * math.sin(theta),
        # Radius <= 0.15 (x 1.45 for the wobble) in [-1, 1] units, times at most 1/0.93 for
        # the pose: at most 4.3 % of the image, under MAX_LESION_FRACTION.
        lesion_radius=v(0.07, 0.15), lesion_aspect=v(0.7, 1.0), lesion_tilt=v(0.0, math.pi),
        lesion_level=v(0.22, 0.4) if positive else 0.0,
        positive=float(positive),
    )
    for k in (2, 3, 5):
        p[f"wobble{k}"], p[f"wobble{k}_phase"] = v(-0.15, 0.15), v(0.0, 2 * math.pi)
    return p


def _draw_opacity(scene: dict, P: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """The lesion: an irregular blob around its centre, inside the chosen lung.

    Returns:
        ``(level, mask, closeness)``: what it adds to the image, its bool mask, and the
        squared distance to its centre for :func:`_fill_empty` (``inf`` outside the lung,
        and everywhere in an image without the lesion).
    """
    x, y, left, right = scene["x"], scene["y"], scene["left"], scene["right"]
    dx, dy = x - P["lesion_x"], y - P["lesion_y"]
    tcos, tsin = torch.cos(P["lesion_tilt"]), torch.sin(P["lesion_tilt"])
    ux = tcos * dx + tsin * dy
    uy = (-tsin * dx + tcos * dy) / P["lesion_aspect"]
    polar = torch.atan2(uy, ux)
    wobble = 1.0 + sum(P[f"wobble{k}"] * torch.cos(k * polar + P[f"wobble{k}_phase"]) for k in (2, 3, 5))
    radius = torch.clamp(P["lesion_radius"], min=3.0 / scene["size"])  # at least a few pixels when tiny
    distance = torch.sqrt(ux**2 + uy**2) / (radius * wobble)
    inside_lung = torch.where(P["lesion_side"] > 0.5, right, left)
    opacity = torch.sigmoid((1.0 - distance) / 0.12) * inside_lung
    mask = (distance < 1.0) & (inside_lung > 0.5) & (P["positive"] > 0.5)
    closeness = (ux**2 + uy**2).masked_fill((inside_lung <= 0.5) | (P["positive"] <= 0.5), float("inf"))
    return P["lesion_level"] * opacity, mask, closeness


def _fill_empty(mask: Tensor, closeness: Tensor) -> Tensor:
    """Tiny images: a finding whose mask came out empty covers at least the pixel nearest its
    centre (the smallest ``closeness``). Drawers give an absent finding ``inf`` closeness
    everywhere, so its mask stays empty."""
    empty = ~mask.flatten(1).any(1) & torch.isfinite(closeness.flatten(1)).any(1)
    if bool(empty.any()):
        nearest = closeness.flatten(1).argmin(1)
        for i in empty.nonzero()[:, 0].tolist():
            mask[i].view(-1)[nearest[i]] = True
    return mask


#: Draws a finding: ``(scene, parameters) -> (level, mask, closeness)``, see :func:`_draw_opacity`.
FindingDrawer = Callable[[dict, dict], tuple[Tensor, Tensor, Tensor]]


def _render(
    params: list[dict[str, float]], size: int, drawers: Sequence[FindingDrawer] = (_draw_opacity,)
) -> tuple[Tensor, list[Tensor]]:
    """Draws a batch of images from their parameters: uint8 ``(B, H, W)`` and one bool
    ``(B, H, W)`` mask per drawer (the findings, drawn in order)."""
    P = {k: torch.tensor([p[k] for p in params], dtype=torch.float32)[:, None, None] for k in params[0] if k != "noise_seed"}
    # Pixel centres in [-1, 1], then the random pose: shift, scale and rotation of the
    # whole scene (mask included, as both are drawn in these coordinates).
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    sx, sy = gx - P["shift_x"], gy - P["shift_y"]
    cos, sin = torch.cos(P["angle"]), torch.sin(P["angle"])
    x = (cos * sx + sin * sy) / P["scale"]
    y = (-sin * sx + cos * sy) / P["scale"]
    zero = torch.zeros_like(P["scale"])

    body = _soft_ellipse(x, y, zero, zero + 0.08, P["body_rx"], P["body_ry"], 0.04)
    left = _soft_ellipse(x, y, P["left_cx"], P["left_cy"], P["left_rx"], P["left_ry"], 0.06)
    right = _soft_ellipse(x, y, P["right_cx"], P["right_cy"], P["right_rx"], P["right_ry"], 0.06)
    lung = torch.maximum(left, right)
    heart = _soft_ellipse(x, y, P["heart_cx"], P["heart_cy"], P["heart_rx"], P["heart_ry"], 0.08)
    spine = torch.sigmoid((0.07 - x.abs()) / 0.02) * body
    # Ribs: bands that curve down towards the sides, strongest over the lungs.
    wave = torch.sin(math.pi * P["rib_count"] * (y - P["rib_curve"] * x**2) + P["rib_phase"])
    ribs = torch.sigmoid((wave - 0.45) * 8.0) * body * (0.35 + 0.65 * lung)

    # Noise from one generator per image, so an image does not depend on its batch.
    generators = [torch.Generator().manual_seed(p["noise_seed"]) for p in params]
    coarse = torch.stack([torch.randn(1, 6, 6, generator=g) for g in generators])
    texture = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[:, 0]
    pixel_noise = torch.stack([torch.randn(size, size, generator=g) for g in generators])

    image = 0.08 + 0.42 * body - 0.24 * lung + 0.16 * heart + 0.1 * spine
    image = image + P["rib_level"] * ribs + 0.035 * texture * body

    scene = {"x": x, "y": y, "left": left, "right": right, "size": size}
    masks = []
    for draw in drawers:
        level, mask, closeness = draw(scene, P)
        image = image + level
        masks.append(_fill_empty(mask, closeness))

    image = (image - 0.35) * P["contrast"] + 0.35 + P["brightness"]
    image = image + P["noise"] * pixel_noise
    return (image.clamp(0, 1) * 255).round().to(torch.uint8), masks


def _check_size(size: object) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16 pixels, got {size!r}")


def generate_sample(
    index: int,
    *,
    seed: int = 0,
    size: int = 128,
    positive_fraction: float = 0.5,
    positive: bool | None = None,
) -> SyntheticSample:
    """Draws synthetic image ``index`` (deterministic by ``seed`` and ``index``).

    Args:
        index: the sample's index; labels follow :func:`is_positive` unless ``positive``
            is given.
        seed: the dataset's seed.
        size: the square image's side in pixels (at least 16).
        positive_fraction: share of positive images, see :func:`is_positive`.
        positive: force a lesion (``True``) or none (``False``); the rest of the scene
            stays the same.

    Returns:
        a :class:`SyntheticSample`.
    """
    _check_size(size)
    if positive is None:
        positive = is_positive(index, positive_fraction)
    images, masks, _ = generate(1, seed=seed, size=size, start=index, positive_fraction=float(positive))
    return SyntheticSample(image=images[0], mask=masks[0], label=int(positive))


def generate(
    count: int,
    *,
    seed: int = 0,
    size: int = 128,
    start: int = 0,
    positive_fraction: float = 0.5,
    batch_size: int = 64,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draws samples ``start .. start + count - 1`` (rendered ``batch_size`` at a time).

    Returns:
        ``(images, masks, labels)``: uint8 ``(N, H, W)``, bool ``(N, H, W)``, int64 ``(N,)``.
    """
    _check_size(size)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    labels = [is_positive(start + i, positive_fraction) for i in range(count)]
    images, masks = render_batches(
        count, size, batch_size, lambda i: _draw_parameters(start + i, seed, labels[i]), (_draw_opacity,)
    )
    return images, masks[:, 0], torch.tensor(labels, dtype=torch.long)


def render_batches(
    count: int, size: int, batch_size: int, parameters: Callable[[int], dict[str, float]],
    drawers: Sequence[FindingDrawer],
) -> tuple[Tensor, Tensor]:
    """Renders images ``0 .. count - 1``, ``batch_size`` at a time, on one thread.

    Args:
        count: number of images.
        size: image side in pixels.
        batch_size: images rendered together.
        parameters: ``i -> `` the parameters of image ``i`` (see ``_draw_parameters``).
        drawers: the findings to draw, in order (see :func:`_draw_opacity`).

    Returns:
        uint8 ``(N, H, W)`` images and bool ``(N, len(drawers), H, W)`` masks.
    """
    images = [torch.zeros(0, size, size, dtype=torch.uint8)]
    masks = [torch.zeros(0, len(drawers), size, size, dtype=torch.bool)]
    # Small element-wise ops gain nothing from intra-op threads, and on a busy machine
    # OpenMP's spinning threads make them ~20x slower: render on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for first in range(0, count, batch_size):
            chunk = range(first, min(first + batch_size, count))
            rendered, chunk_masks = _render([parameters(i) for i in chunk], size, drawers)
            images.append(rendered)
            masks.append(torch.stack(chunk_masks, dim=1))
    finally:
        torch.set_num_threads(threads)
    return torch.cat(images), torch.cat(masks)


class SyntheticXRayDataset(Dataset):
    """An in-memory dataset of synthetic X-rays, drawn once at construction.

    Items are ``(transform(image), label)``, or ``(transform(image), label, mask)`` with
    ``return_mask=True``. Without a transform the image is the uint8 ``(1, H, W)`` tensor.

    Args:
        count: number of images.
        size: image side in pixels.
        seed: dataset seed.
        split: ``"train"``, ``"val"`` or ``"test"``: which index range to draw from.
        positive_fraction: share of images with a lesion.
        transform: applied to the ``(1, H, W)`` uint8 image, e.g.
            ``gradcam_kit.data.preprocess.build_transform(size)`` (grayscale -> 3 channels).
        return_mask: also return the bool ``(H, W)`` mask.
    """

    classes: tuple[str, str] = CLASS_NAMES

    def __init__(
        self,
        count: int,
        *,
        size: int = 128,
        seed: int = 0,
        split: str = "train",
        positive_fraction: float = 0.5,
        transform: Callable[[Tensor], Tensor] | None = None,
        return_mask: bool = False,
    ) -> None:
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLIT_OFFSETS)}")
        self.images, self.masks, self.labels = generate(
            count, seed=seed, size=size, start=SPLIT_OFFSETS[split], positive_fraction=positive_fraction
        )
        self.transform = transform
        self.return_mask = return_mask

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple:
        image = self.images[index][None]
        if self.transform is not None:
            image = self.transform(image)
        label = int(self.labels[index])
        return (image, label, self.masks[index]) if self.return_mask else (image, label)


def check_settings(splits: Mapping[str, int], *, size: int, positive_fraction: float) -> None:
    """Checks the settings of a dataset before anything is written.

    Args:
        splits: images per split, e.g. ``{"train": 400, "val": 100, "test": 200}``.
        size: image side in pixels.
        positive_fraction: share of images with a lesion.

    Raises:
        ValueError: a negative count, all counts zero, a size below 16 or a fraction outside [0, 1].
    """
    if any(n < 0 for n in splits.values()) or not any(splits.values()):
        raise ValueError(f"image counts must be >= 0 and not all zero, got {dict(splits)}")
    _check_size(size)
    is_positive(0, positive_fraction)  # validates the fraction


def write_image_folder(
    root: str | Path,
    splits: Mapping[str, int],
    *,
    size: int = 128,
    seed: int = 0,
    positive_fraction: float = 0.5,
    progress: bool = True,
) -> dict[str, dict[str, int]]:
    """Writes an ImageFolder tree, the positives' masks in ``masks/``, and one CSV per split.

    Args:
        root: output folder (created).
        splits: images per split, e.g. ``{"train": 400, "val": 100, "test": 200}``.
        size: image side in pixels.
        seed: dataset seed.
        positive_fraction: share of images with a lesion.
        progress: show a tqdm progress bar.

    Returns:
        ``{split: {class_name: count}}``.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    unknown = sorted(set(splits) - set(SPLIT_OFFSETS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; choose from {sorted(SPLIT_OFFSETS)}")
    _check_size(size)
    root = Path(root)
    counts: dict[str, dict[str, int]] = {}
    for split, count in splits.items():
        if count <= 0:
            continue
        counts[split] = dict.fromkeys(CLASS_NAMES, 0)
        for name in CLASS_NAMES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split / CLASS_NAMES[1]).mkdir(parents=True, exist_ok=True)
        rows = []
        for first in tqdm(range(0, count, 64), desc=f"synth {split}", disable=not progress, leave=False):
            images, masks, labels = generate(
                min(64, count - first), seed=seed, size=size,
                start=SPLIT_OFFSETS[split] + first, positive_fraction=positive_fraction,
            )
            for offset, (image, mask, label) in enumerate(zip(images.numpy(), masks.numpy(), labels.tolist())):
                i = first + offset
                name = CLASS_NAMES[label]
                image_path = Path(split) / name / f"{split}_{i:05d}.png"
                Image.fromarray(image, mode="L").save(root / image_path)
                mask_field = ""
                if label == 1:
                    mask_path = Path("masks") / image_path.with_name(f"{image_path.stem}_mask.png")
                    Image.fromarray(mask.astype("uint8") * 255, mode="L").save(root / mask_path)
                    mask_field = mask_path.as_posix()
                rows.append((image_path.as_posix(), name, mask_field))
                counts[split][name] += 1
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "mask"])
            writer.writerows(rows)
    return counts
