"""Colouring heatmaps and blending them with images, batched on the heatmap's device.

OpenCV's colormaps are defined in BGR order. They are turned once into 256-entry **RGB**
lookup tables, so colouring a batch is one indexing op on the device and the hottest
value of ``COLORMAP_JET`` comes out red. Only the final uint8 images go to the host.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from ..core.ops import upsample

__all__ = [
    "colormap_lut",
    "colorize",
    "blend",
    "overlay",
    "parse_colormap",
    "images_to_tensor",
    "to_numpy_images",
]


def parse_colormap(colormap: int | str) -> int:
    """Accepts an OpenCV colormap id (``cv2.COLORMAP_JET``) or its name (``"jet"``).

    Raises:
        ValueError: an unknown name or id (checked here, before anything is drawn or written).
        TypeError: neither an int nor a string.
    """
    import cv2

    known = {a[9:].lower(): int(getattr(cv2, a)) for a in dir(cv2) if a.startswith("COLORMAP_")}
    if isinstance(colormap, str):
        if colormap.strip().isdigit():
            colormap = int(colormap)
        else:
            key = colormap.strip().lower()
            if key not in known:
                raise ValueError(f"unknown colormap {colormap!r}; choose one of {sorted(known)}")
            return known[key]
    if isinstance(colormap, bool) or not isinstance(colormap, (int, np.integer)):
        raise TypeError(f"colormap must be an OpenCV colormap id or name, got {colormap!r}")
    if int(colormap) not in known.values():
        raise ValueError(
            f"unknown colormap id {int(colormap)}; OpenCV's ids are "
            f"{sorted(set(known.values()))} (or pass a name such as 'jet')"
        )
    return int(colormap)


@lru_cache(maxsize=32)
def _lut_host(colormap: int) -> Tensor:
    import cv2

    ramp = np.arange(256, dtype=np.uint8)[:, None]
    try:
        bgr = cv2.applyColorMap(ramp, colormap)[:, 0, :]
    except cv2.error as err:
        raise ValueError(f"OpenCV rejected colormap id {colormap}: {err}") from None
    return torch.from_numpy(np.ascontiguousarray(bgr[:, ::-1]))


def colormap_lut(colormap: int | str, device: torch.device | str = "cpu") -> Tensor:
    """The ``(256, 3)`` uint8 RGB table of an OpenCV colormap."""
    return _lut_host(parse_colormap(colormap)).to(device)


def colorize(heatmap: Tensor, colormap: int | str = "jet") -> Tensor:
    """Colours ``(..., H, W)`` maps in ``[0, 1]`` into ``(..., H, W, 3)`` uint8 RGB."""
    levels = (heatmap.detach().float().clamp(0, 1) * 255).round().long()
    return colormap_lut(colormap, heatmap.device)[levels]


def blend(images: Tensor, colored: Tensor, alpha: float = 0.5) -> Tensor:
    """``(1 - alpha) * image + alpha * colored`` for uint8 ``(..., H, W, 3)`` tensors."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (the heatmap's weight), got {alpha}")
    # The same arithmetic as `images * (1 - alpha) + colored * alpha`, in place: a third
    # fewer passes over the batch (the blend was the costliest step of colouring on a CPU).
    mixed = images.float().mul_(1.0 - alpha).add_(colored.float().mul_(alpha))
    return mixed.round_().clamp_(0, 255).to(torch.uint8)


def images_to_tensor(image: object, device: torch.device | str = "cpu") -> Tensor:
    """A PIL image, array or tensor (grayscale or RGB/RGBA) -> ``(H, W, 3)`` uint8 RGB.

    Pixel values follow :func:`gradcam_kit.data.preprocess.to_8bit`: 8-bit as is, 16-bit and
    32-bit stretched from their minimum to their maximum, float in ``[0, 1]`` scaled by 255.

    Raises:
        TypeError: not a PIL image, numpy array or tensor.
        ValueError: an unsupported shape or dtype.
    """
    from PIL import Image

    from ..data.preprocess import to_8bit

    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, (Image.Image, np.ndarray)):
        raise TypeError(
            f"expected a PIL image or an (H, W[, C]) array, got {type(image).__name__}"
        )
    array = np.asarray(to_8bit(image))
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # np.asarray(PIL image) is read-only; torch warns on those
        array = array.copy()
    return torch.from_numpy(array).to(device)


def overlay(
    images: Tensor, heatmaps: Tensor, alpha: float = 0.5, colormap: int | str = "jet"
) -> tuple[Tensor, Tensor]:
    """Colours ``heatmaps`` and lays them over ``images``, at the images' size.

    Args:
        images: uint8 ``(B, H, W, 3)`` RGB images.
        heatmaps: ``(B, h, w)`` maps in ``[0, 1]``, resized to ``(H, W)`` before colouring so
            the colours stay smooth on a large image.
        alpha: the heatmap's weight in the blend.
        colormap: OpenCV colormap id or name.

    Returns:
        ``(colored, overlaid)``, both uint8 ``(B, H, W, 3)`` RGB on the images' device.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
        raise ValueError(
            f"expected uint8 images of shape (B, H, W, 3), got {images.dtype} {tuple(images.shape)}"
        )
    if heatmaps.ndim != 3 or heatmaps.shape[0] != images.shape[0]:
        raise ValueError(
            f"expected {images.shape[0]} heatmaps of shape (h, w), got {tuple(heatmaps.shape)}"
        )
    maps = upsample(heatmaps.detach().float(), tuple(images.shape[1:3])).clamp(0, 1)
    colored = colorize(maps.to(images.device), colormap)
    return colored, blend(images, colored, alpha)


def to_numpy_images(images: Tensor) -> np.ndarray:
    """The one host copy at the end of the tensor path: uint8 ``(..., H, W, 3)`` -> numpy."""
    return images.cpu().numpy()


@lru_cache(maxsize=8)
def title_font(size: int):
    """PIL's default font at ``size`` px (scalable with Pillow >= 10.1, else the bitmap one)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow: the fixed-size bitmap font
        return ImageFont.load_default()


def fit_text(text: str, font, width: int) -> str:
    """``text`` cut with an ellipsis so that it fits ``width`` pixels in ``font``."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"
