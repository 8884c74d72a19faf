"""A fast PNG encoder for the RGB canvases that ``explain`` writes by the thousand.

Pillow's PNG encoder picks a filter for every row by trying all five ("adaptive"
filtering), which costs more than the compression itself at zlib level 1: on explain's
244 x 678 overlay canvases it took 49 ms per image against 13 ms here (two loaded CPU
cores; files 4 % smaller here). Here every row uses the *Up* filter (the difference to the
row above, one vectorised numpy subtraction), which suits images that are smooth from row
to row (X-rays, colour maps), then zlib. The output is an ordinary 8-bit RGB (or
grayscale) PNG that any reader decodes to exactly the input; zlib releases the GIL, so
several writer threads encode in parallel.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["encode_png", "write_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_UP = 2  # PNG filter type "Up"
_COLOUR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (grayscale, RGB)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """Encodes uint8 ``(H, W, 3)`` RGB or ``(H, W)`` grayscale as PNG bytes.

    Args:
        image: the pixels, C-contiguous or not.
        compress_level: zlib level, 0 (none) to 9 (smallest, slowest).

    Raises:
        ValueError: not uint8, not 2-D or 3-channel, empty, or a bad level.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in _COLOUR_TYPES or 0 in image.shape:
        raise ValueError(f"encode_png needs an (H, W) or (H, W, 3) image, got shape {image.shape}")
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must lie in [0, 9], got {compress_level}")
    height, width, channels = image.shape
    rows = image.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = _UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # wraps modulo 256, as PNG wants
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join((
        _SIGNATURE,
        _chunk(b"IHDR", header),
        _chunk(b"IDAT", zlib.compress(filtered.data, compress_level)),
        _chunk(b"IEND", b""),
    ))


def write_png(path: str | Path, image: np.ndarray, compress_level: int = 1) -> None:
    """Writes ``image`` (see :func:`encode_png`) to ``path``."""
    Path(path).write_bytes(encode_png(image, compress_level))
