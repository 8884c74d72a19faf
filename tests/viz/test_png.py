"""gradcam_kit.viz.png: the PNG encoder explain writes its overlays with."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gradcam_kit.viz.png import encode_png, write_png


def _decode(data: bytes) -> tuple[str, np.ndarray]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.mode, np.asarray(image)


@pytest.mark.parametrize("level", [0, 1, 9])
def test_rgb_round_trips_exactly(level):
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, 37 * 53 * 3).reshape(37, 53, 3).astype(np.uint8)
    noisy = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)  # differences wrap modulo 256
    for image in (smooth, noisy):
        mode, decoded = _decode(encode_png(image, level))
        assert mode == "RGB"
        np.testing.assert_array_equal(decoded, image)


def test_grayscale_and_non_contiguous_views_round_trip():
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (20, 31), dtype=np.uint8)
    mode, decoded = _decode(encode_png(gray))
    assert mode == "L"
    np.testing.assert_array_equal(decoded, gray)
    view = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)[::2, 1::2]  # strided
    np.testing.assert_array_equal(_decode(encode_png(view))[1], view)


def test_write_png_writes_the_encoded_bytes(tmp_path):
    image = np.full((4, 5, 3), (10, 200, 30), dtype=np.uint8)
    path = tmp_path / "x.png"
    write_png(path, image)
    assert path.read_bytes() == encode_png(image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)


@pytest.mark.parametrize(
    ("image", "level", "message"),
    [
        (np.zeros((4, 4, 3), np.float32), 1, "needs uint8"),
        (np.zeros((4, 4, 4), np.uint8), 1, r"\(H, W\) or \(H, W, 3\)"),
        (np.zeros((0, 4, 3), np.uint8), 1, r"\(H, W\) or \(H, W, 3\)"),
        (np.zeros((4, 4, 3), np.uint8), 10, "compress_level"),
    ],
)
def test_rejects_what_it_cannot_encode(image, level, message):
    with pytest.raises(ValueError, match=message):
        encode_png(image, level)
