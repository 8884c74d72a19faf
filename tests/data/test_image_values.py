"""One rule for pixel values: 16-bit, 32-bit and float images give the same model input and
the same overlay whether they come as a file, a PIL image or an array."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gradcam_kit.data.preprocess import preprocess, to_8bit
from gradcam_kit.viz.render import images_to_tensor

H, W = 40, 48


def _xray16() -> np.ndarray:
    """A 12-bit X-ray-like ramp stored in 16 bits (values far above 255)."""
    rows, cols = np.mgrid[0:H, 0:W]
    return (200 + 3000 * (rows / H) * (0.5 + 0.5 * cols / W)).astype(np.uint16)


@pytest.mark.parametrize("kind", ["I;16", "I", "F"])
def test_preprocess_gives_the_same_input_for_path_pil_and_array(tmp_path, kind):
    values = _xray16()
    if kind == "I;16":
        image = Image.fromarray(values)
    elif kind == "I":
        image = Image.fromarray(values.astype(np.int32))
    else:
        image = Image.fromarray(values.astype(np.float32))
    assert image.mode == kind
    path = tmp_path / "xray.tif"
    image.save(path)
    from_path = preprocess(path, 32)
    from_pil = preprocess(image, 32)
    from_array = preprocess(np.asarray(image), 32)
    torch.testing.assert_close(from_pil, from_path)
    torch.testing.assert_close(from_array, from_path)
    # Stretched to the full range, not clipped to white: about [-2.1, 2.6] after normalisation.
    assert from_pil.min() < -1.5 and from_pil.max() > 2.0


def test_float_images_in_unit_range_are_scaled_not_stretched():
    values = np.full((H, W), 0.25, np.float32)
    values[0, 0] = 0.5
    gray = np.asarray(to_8bit(values))
    assert gray[1, 1] == 64 and gray[0, 0] == 128  # x 255, not min-max
    assert np.array_equal(np.asarray(to_8bit(Image.fromarray(values))), gray)
    wide = values * 1000  # outside [0, 1]: stretched
    stretched = np.asarray(to_8bit(wide))
    assert stretched.min() == 0 and stretched.max() == 255


def test_nan_and_constant_images_do_not_break_the_rule():
    values = np.full((H, W), 7, np.uint16)
    assert np.asarray(to_8bit(values)).max() == 0
    with_nan = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    with_nan[3, 4] = np.nan
    converted = np.asarray(to_8bit(with_nan))
    assert converted[3, 4] == 0 and converted.max() == 255


@pytest.mark.parametrize("make", [
    lambda v: Image.fromarray(v),  # I;16
    lambda v: Image.fromarray(v.astype(np.int32)),  # I
    lambda v: Image.fromarray(v.astype(np.float32)),  # F
    lambda v: v,  # uint16 array
    lambda v: v.astype(np.float64) / 4095.0,  # float array in [0, 1]
])
def test_overlay_originals_of_any_depth_are_not_clipped_to_white(shared_model, images, make):
    original = make(_xray16())
    with torch.no_grad():
        colored, overlaid = shared_model.get_gradcam_overlay(images[:1], original, alpha=0.0)
    assert overlaid.shape == (H, W, 3)
    white = (overlaid == 255).all(axis=2).mean()
    assert white < 0.05, f"{white:.0%} of the picture is white"
    # alpha = 0 shows the original itself, brought to 8 bits by the one rule.
    expected = np.asarray(to_8bit(original if not isinstance(original, Image.Image) else original))
    np.testing.assert_array_equal(overlaid[:, :, 0], expected)
    assert torch.equal(images_to_tensor(original), torch.from_numpy(overlaid))


def test_rgb_uint16_arrays_follow_the_same_rule():
    rgb = np.stack([_xray16()] * 3, axis=2)
    assert np.array_equal(np.asarray(to_8bit(rgb))[:, :, 0], np.asarray(to_8bit(_xray16())))


def test_shapes_that_are_not_images_are_rejected():
    with pytest.raises(ValueError, match="expected an image of shape"):
        to_8bit(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(TypeError, match="PIL image or an"):
        to_8bit([[0, 1], [2, 3]])
