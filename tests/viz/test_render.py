"""Colouring and overlays: RGB out, original size, every kind of original image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from gradcam_kit.data.preprocess import denormalize
from gradcam_kit.viz.render import blend, colorize, colormap_lut, images_to_tensor, overlay

SIZE = 64  # the side of conftest's images

H, W = 100, 140  # the "original" image: larger than the 64x64 model input, not square


@pytest.fixture
def original() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(H, W), dtype=np.uint8)


def hottest_pixel(heatmap: torch.Tensor, size: tuple[int, int]) -> tuple[int, int]:
    resized = cv2.resize(heatmap.numpy(), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return np.unravel_index(int(np.argmax(resized)), resized.shape)


def test_jet_lut_is_rgb():
    lut = colormap_lut(cv2.COLORMAP_JET)
    assert lut.shape == (256, 3) and lut.dtype == torch.uint8
    # JET runs blue -> red. OpenCV gives BGR; the table must be its reverse.
    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0]
    assert np.array_equal(lut.numpy(), bgr[:, ::-1])
    assert lut[255, 0] > 100 and lut[255, 2] == 0  # hot: red
    assert lut[0, 2] > 100 and lut[0, 0] == 0  # cold: blue


def test_colorize_and_blend():
    maps = torch.tensor([[[0.0, 1.0]]])
    colored = colorize(maps, "jet")
    assert colored.shape == (1, 1, 2, 3) and colored.dtype == torch.uint8
    assert colored[0, 0, 1, 0] > colored[0, 0, 1, 2]  # 1.0 -> red
    images = torch.full((1, 1, 2, 3), 200, dtype=torch.uint8)
    torch.testing.assert_close(blend(images, colored, 0.0), images)
    torch.testing.assert_close(blend(images, colored, 1.0), colored)
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        blend(images, colored, 1.5)
    with pytest.raises(ValueError, match="unknown colormap 'jett'"):
        colorize(maps, "jett")


def test_overlay_is_at_the_images_size():
    images = torch.zeros(2, H, W, 3, dtype=torch.uint8)
    heatmaps = torch.rand(2, 8, 8)
    colored, overlaid = overlay(images, heatmaps, 0.5)
    assert colored.shape == overlaid.shape == (2, H, W, 3)
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(B, H, W, 3\)"):
        overlay(images.float(), heatmaps)


def test_gradcam_overlay_rgb_at_original_size_hot_is_red(shared_model, images, original):
    x = images[:1]
    with torch.no_grad():
        _, heatmap = shared_model(x, return_gradcam=True)
    colored, overlaid = shared_model.get_gradcam_overlay(x, original)
    for array in (colored, overlaid):
        assert isinstance(array, np.ndarray)
        assert array.shape == (H, W, 3) and array.dtype == np.uint8
    row, col = hottest_pixel(heatmap[0], (H, W))
    red, green, blue = (int(c) for c in colored[row, col])
    assert red > 100 and red > blue, (red, green, blue)  # RGB, not OpenCV's BGR
    coldest = np.unravel_index(
        int(np.argmin(cv2.resize(heatmap[0].numpy(), (W, H)))), (H, W)
    )
    assert colored[coldest][2] > colored[coldest][0]  # cold: blue
    # The overlay is the documented blend of the grayscale original and the colours.
    expected = np.round(np.repeat(original[:, :, None], 3, 2) * 0.5 + colored * 0.5)
    np.testing.assert_allclose(overlaid, expected, atol=1)


@pytest.mark.filterwarnings("error")  # e.g. torch's warning on read-only PIL memory
@pytest.mark.parametrize(
    "kind", ["gray uint8", "gray (H,W,1)", "rgb uint8", "rgba uint8", "rgb float", "pil L", "pil RGB"]
)
def test_gradcam_overlay_accepts_every_original(shared_model, images, original, kind):
    gray = original
    rgb = np.stack([gray, np.flipud(gray), gray // 2], axis=2)
    image = {
        "gray uint8": gray,
        "gray (H,W,1)": gray[:, :, None],
        "rgb uint8": rgb,
        "rgba uint8": np.concatenate([rgb, np.full((H, W, 1), 255, np.uint8)], axis=2),
        "rgb float": rgb.astype(np.float32) / 255,
        "pil L": Image.fromarray(gray, "L"),
        "pil RGB": Image.fromarray(rgb, "RGB"),
    }[kind]
    colored, overlaid = shared_model.get_gradcam_overlay(images[:1], image, alpha=0.0)
    assert colored.shape == overlaid.shape == (H, W, 3)
    assert overlaid.dtype == np.uint8
    # alpha=0 shows the original itself, as RGB.
    base = rgb if "rgb" in kind or kind == "pil RGB" else np.repeat(gray[:, :, None], 3, 2)
    np.testing.assert_array_equal(overlaid, base)


def test_invalid_original_is_rejected(shared_model, images):
    with pytest.raises(ValueError, match=r"expected an image of shape"):
        shared_model.get_gradcam_overlay(images[:1], np.zeros((H, W, 2), np.uint8))
    with pytest.raises(ValueError, match="got 1 original image"):
        shared_model.get_gradcam_overlay(images, [np.zeros((H, W), np.uint8)])


def test_gradcam_overlay_needs_the_model_input(shared_model, original):
    with pytest.raises(TypeError, match=r"make one with preprocess\(image\)"):
        shared_model.get_gradcam_overlay(original)
    with pytest.raises(ValueError, match=r"expected a \(3, H, W\) or \(B, 3, H, W\) input"):
        shared_model.get_gradcam_overlay(torch.zeros(SIZE, SIZE))


def test_gradcam_overlay_batch_returns_lists(shared_model, images, original):
    colored, overlaid = shared_model.get_gradcam_overlay(images, [original, original[:50]])
    assert isinstance(colored, list) and isinstance(overlaid, list)
    assert [c.shape for c in colored] == [(H, W, 3), (50, W, 3)]
    assert [o.shape for o in overlaid] == [(H, W, 3), (50, W, 3)]


def test_gradcam_overlay_without_original_uses_the_input(shared_model, images):
    colored, overlaid = shared_model.get_gradcam_overlay(images[0], alpha=0.0)  # (3, H, W) too
    assert colored.shape == overlaid.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(overlaid, denormalize(images[:1])[0].numpy())


def test_gradcam_overlay_class_idx_and_colormap(shared_model, images, original):
    x = images[:1]
    with torch.no_grad():
        _, heatmap = shared_model(x, return_gradcam=True, gradcam_class_idx=1)
    colored, _ = shared_model.get_gradcam_overlay(
        x, original, colormap=cv2.COLORMAP_JET, class_idx=1
    )
    row, col = hottest_pixel(heatmap[0], (H, W))
    assert colored[row, col, 0] > colored[row, col, 2]
    by_name, _ = shared_model.get_gradcam_overlay(x, original, colormap="jet", class_idx=1)
    np.testing.assert_array_equal(by_name, colored)


def test_gradcam_overlay_when_disabled_returns_none_and_warns(fresh_model, images):
    fresh_model.disable_gradcam_mode()
    with pytest.warns(UserWarning, match=r"enable_gradcam_mode\(\)"):
        assert fresh_model.get_gradcam_overlay(images[:1]) is None


def test_images_to_tensor_rejects_unknown_types():
    with pytest.raises(TypeError, match="expected a PIL image"):
        images_to_tensor("image.png")
    with pytest.raises(ValueError, match="expected integer or float image data"):
        images_to_tensor(np.zeros((4, 4), np.complex64))
