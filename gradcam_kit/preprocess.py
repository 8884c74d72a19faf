"""Turning images (chest X-rays are usually grayscale) into normalised model inputs.

Built from torchvision's transforms with the mean and std that the ImageNet weights
carry (``ResNet50_Weights.IMAGENET1K_V2.transforms()``), not hand-written maths. The
image is resized to a square without cropping, so a heatmap lines up with the whole
original image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.models import ResNet50_Weights
from torchvision.transforms import v2

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_transform",
    "denormalize",
    "load_image",
    "open_image",
    "to_8bit",
    "preprocess",
]

_REFERENCE = ResNet50_Weights.IMAGENET1K_V2.transforms()
IMAGENET_MEAN: tuple[float, ...] = tuple(_REFERENCE.mean)
IMAGENET_STD: tuple[float, ...] = tuple(_REFERENCE.std)


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        pair = (size, size)
    elif isinstance(size, Sequence) and len(size) == 2:
        pair = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size must be an int or an (H, W) pair, got {size!r}")
    if min(pair) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return pair


def build_transform(
    size: int | Sequence[int] = 224,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    augment: Sequence[v2.Transform] = (),
) -> v2.Compose:
    """PIL image or uint8 tensor (grayscale or RGB) -> normalised float ``(3, H, W)`` tensor.

    Args:
        size: output size, an int for a square or ``(H, W)``.
        mean: per-channel mean (defaults to the ImageNet weights' own).
        std: per-channel std.
        augment: extra torchvision v2 transforms applied to the uint8 image after resizing
            (training augmentation).
    """
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RGB(),
            v2.Resize(_size_pair(size), antialias=True),
            *augment,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def to_8bit(image: Image.Image) -> Image.Image:
    """An opened image as 8-bit ``"L"`` (grayscale) or ``"RGB"``, ready for the transforms.

    16-bit and 32-bit grayscale images (``I;16``, ``I``, ``F``: the usual export of X-ray
    DICOMs) are stretched from their own minimum and maximum to 0-255; PIL's plain
    ``convert("L")`` would clip every value above 255 to white. A constant image becomes 0.
    """
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("1", "P", "LA", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa"):
        return image.convert("L" if image.mode in ("1", "LA", "La") else "RGB")
    values = np.asarray(image, dtype=np.float64)
    if values.ndim != 2:
        return image.convert("RGB")
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def open_image(path: str | Path) -> Image.Image:
    """Opens an image file as 8-bit ``"L"`` or ``"RGB"`` (see :func:`to_8bit`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not an image PIL can read (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return to_8bit(image)
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read {path} as an image: {err}") from None


def load_image(path: str | Path) -> Image.Image:
    """Opens an image file as RGB (16-bit grayscale is rescaled, see :func:`to_8bit`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not an image PIL can read.
    """
    return open_image(path).convert("RGB")


def preprocess(
    image: Image.Image | str | Path | Tensor,
    size: int | Sequence[int] = 224,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """One image (PIL, path or uint8 tensor) -> a ``(1, 3, H, W)`` batch ready for the model."""
    if isinstance(image, (str, Path)):
        image = load_image(image)
    batch = build_transform(size)(image).unsqueeze(0)
    return batch.to(device) if device is not None else batch


def denormalize(
    batch: Tensor,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """Inverts the normalisation: ``(B, 3, H, W)`` -> uint8 ``(B, H, W, 3)`` on the same device."""
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) batch, got {tuple(batch.shape)}")
    inverse = v2.Normalize(mean=[-m / s for m, s in zip(mean, std)], std=[1 / s for s in std])
    images = inverse(batch.detach().float()).clamp(0, 1)
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
