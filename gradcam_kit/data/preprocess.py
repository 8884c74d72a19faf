"""Turning images (chest X-rays are usually grayscale) into normalised model inputs.

Built from torchvision's transforms with the mean and std that the ImageNet weights
carry (``ResNet50_Weights.IMAGENET1K_V2.transforms()``), not hand-written maths. The
image is resized to a square without cropping, so a heatmap lines up with the whole
original image. DICOM files are read by :mod:`gradcam_kit.data.dicom` (pydicom, an extra).
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

from .dicom import DICOM_EXTENSIONS, has_dicom_magic, read_dicom

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


def to_8bit(image: Image.Image | np.ndarray) -> Image.Image:
    """An image as 8-bit ``"L"`` (grayscale) or ``"RGB"``, ready for the transforms.

    The one rule for pixel values, whether the image comes as a file, a PIL image or an
    array:

    * 8-bit (``L``, ``RGB``, ``uint8`` arrays) stays as it is; palette, alpha and other
      8-bit modes are converted to ``L`` or ``RGB``.
    * Integer images of more than 8 bits (``I;16``, ``I``, ``uint16``/``int32`` arrays: the
      usual export of X-ray DICOMs) are stretched from their own minimum and maximum to
      0-255. PIL's plain ``convert("L")`` would clip every value above 255 to white.
    * Float images (``F``, float arrays) holding values in ``[0, 1]`` are scaled by 255;
      other float images are stretched like 16-bit ones. NaN counts as the minimum.
    * A constant image that is not 8-bit becomes 0.

    Raises:
        TypeError: not a PIL image or numpy array.
        ValueError: an array that is not ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or
            ``(H, W, 4)``.
    """
    if isinstance(image, Image.Image):
        if image.mode in ("L", "RGB"):
            return image
        if image.mode in ("1", "P", "LA", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa"):
            return image.convert("L" if image.mode in ("1", "LA", "La") else "RGB")
        values = np.asarray(image)
        if values.ndim != 2:
            return image.convert("RGB")
    elif isinstance(image, np.ndarray):
        values = image
    else:
        raise TypeError(f"expected a PIL image or an (H, W[, C]) array, got {type(image).__name__}")
    if values.ndim == 3 and values.shape[2] in (1, 3, 4):
        values = values[:, :, 0] if values.shape[2] == 1 else values[:, :, :3]
    if values.ndim not in (2, 3) or (values.ndim == 3 and values.shape[2] != 3) or 0 in values.shape:
        raise ValueError(
            f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {values.shape}"
        )
    mode = "L" if values.ndim == 2 else "RGB"
    if values.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(values), mode=mode)
    return Image.fromarray(_stretch_to_uint8(values), mode=mode)


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise ValueError(f"expected integer or float image data, got dtype {values.dtype}")
    floats = values.astype(np.float64)
    finite = np.isfinite(floats)
    if not finite.any():
        return np.zeros(values.shape, np.uint8)
    low, high = float(floats[finite].min()), float(floats[finite].max())
    floats = np.where(finite, floats, low)
    if np.issubdtype(values.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        scaled = floats * 255.0
    elif high > low:
        scaled = (floats - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(floats)
    return np.round(scaled).clip(0, 255).astype(np.uint8)


def open_image(path: str | Path, *, dicom_window: Sequence[float] | None = None) -> Image.Image:
    """Opens an image file as 8-bit ``"L"`` or ``"RGB"`` (see :func:`to_8bit`).

    DICOM files (``.dcm``, ``.dicom``, or any file with ``DICM`` at byte 128 that PIL
    cannot read) go through :func:`gradcam_kit.data.dicom.read_dicom`: rescale, VOI LUT or
    window, MONOCHROME1 inverted, then :func:`to_8bit`. They need pydicom
    (``pip install gradcam-kit[dicom]``).

    Args:
        path: the file.
        dicom_window: ``(center, width)`` replacing a DICOM file's own window; ignored for
            other images.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not an image PIL (or pydicom) can read (names the file).
        RuntimeError: a DICOM file without pydicom, or without the decoder its
            compression needs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return to_8bit(read_dicom(path, window=dicom_window))
    try:
        with Image.open(path) as image:
            image.load()
            return to_8bit(image)
    except (OSError, SyntaxError, ValueError) as err:
        if not has_dicom_magic(path):
            raise ValueError(f"cannot read {path} as an image: {err}") from None
    return to_8bit(read_dicom(path, window=dicom_window))


def load_image(path: str | Path, *, dicom_window: Sequence[float] | None = None) -> Image.Image:
    """Opens an image file as RGB (16-bit grayscale is rescaled, see :func:`to_8bit`).

    Args:
        path: the file (DICOM too, see :func:`open_image`).
        dicom_window: ``(center, width)`` replacing a DICOM file's own window.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not an image PIL or pydicom can read.
        RuntimeError: see :func:`open_image`.
    """
    return open_image(path, dicom_window=dicom_window).convert("RGB")


def preprocess(
    image: Image.Image | str | Path | np.ndarray | Tensor,
    size: int | Sequence[int] = 224,
    *,
    device: torch.device | str | None = None,
    dicom_window: Sequence[float] | None = None,
) -> Tensor:
    """One image -> a ``(1, 3, H, W)`` batch ready for the model.

    Args:
        image: a path (DICOM too, see :func:`open_image`), a PIL image, a numpy array
            (``(H, W)`` or ``(H, W, C)``) or a uint8 ``(C, H, W)`` tensor. 16-bit and float
            images are brought to 8 bits by one rule (see :func:`to_8bit`), the same for a
            path, a PIL image and an array.
        size: the model's input size: use the size the model was trained at (a checkpoint
            stores it; ``model.preprocess(image)`` uses it for you).
        device: where to put the batch.
        dicom_window: ``(center, width)`` replacing a DICOM file's own window.
    """
    if isinstance(image, (str, Path)):
        image = load_image(image, dicom_window=dicom_window)
    elif isinstance(image, (Image.Image, np.ndarray)):
        image = to_8bit(image)
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
