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

from .engine import upsample

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
    """Accepts an OpenCV colormap id (``cv2.COLORMAP_JET``) or its name (``"jet"``)."""
    import cv2

    if isinstance(colormap, str):
        attr = f"COLORMAP_{colormap.upper()}"
        if not hasattr(cv2, attr):
            names = sorted(a[9:].lower() for a in dir(cv2) if a.startswith("COLORMAP_"))
            raise ValueError(f"unknown colormap {colormap!r}; choose one of {names}")
        return int(getattr(cv2, attr))
    if isinstance(colormap, bool) or not isinstance(colormap, (int, np.integer)):
        raise TypeError(f"colormap must be an OpenCV colormap id or name, got {colormap!r}")
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
    """A PIL image or array (grayscale or RGB/RGBA, uint8 or float in [0, 1]) -> ``(H, W, 3)`` uint8.

    Raises:
        TypeError: not a PIL image, numpy array or tensor.
        ValueError: an unsupported shape, dtype or value range.
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a requirement
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
    if isinstance(image, np.ndarray):
        array = image
    elif isinstance(image, Tensor):
        array = image.detach().cpu().numpy()
    else:
        raise TypeError(
            f"expected a PIL image or an (H, W[, C]) array, got {type(image).__name__}"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(
            f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
            f"got {array.shape}"
        )
    array = array[:, :, :3]
    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1):
            raise ValueError(
                "a float image must hold values in [0, 1]; scale it or pass uint8 values"
            )
        array = np.round(np.nan_to_num(array) * 255).astype(np.uint8)
    else:
        raise ValueError(f"expected uint8 or float image data, got dtype {array.dtype}")
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
