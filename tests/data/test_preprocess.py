"""Preprocessing: a grayscale X-ray becomes a normalised 3-channel batch, and back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import ResNet50_Weights

from gradcam_kit.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_transform,
    denormalize,
    load_image,
    open_image,
    preprocess,
    to_8bit,
)
from resnet50 import preprocess as exported_preprocess


@pytest.fixture
def xray() -> Image.Image:
    """A grayscale ("L") image, 80 rows by 120 columns, with a bright square."""
    pixels = np.full((80, 120), 40, np.uint8)
    pixels[20:40, 30:60] = 220
    return Image.fromarray(pixels, "L")


def test_mean_and_std_are_the_weights_own():
    transforms = ResNet50_Weights.IMAGENET1K_V2.transforms()
    assert IMAGENET_MEAN == tuple(transforms.mean) == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == tuple(transforms.std) == (0.229, 0.224, 0.225)


def test_grayscale_xray_becomes_a_normalised_three_channel_batch(xray):
    batch = preprocess(xray, 64)
    assert batch.shape == (1, 3, 64, 64) and batch.dtype == torch.float32
    # Each channel is the same gray value, normalised with that channel's mean/std.
    dark = 40 / 255
    for channel, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD)):
        torch.testing.assert_close(batch[0, channel, 0, 0], torch.tensor((dark - mean) / std), atol=1e-3, rtol=0)
    # No crop: the bright square keeps its relative place (rows 20-40 of 80 -> 16-32 of 64).
    bright = batch[0, 0] > 0
    rows = bright.any(1).nonzero()[:, 0]
    cols = bright.any(0).nonzero()[:, 0]
    assert 15 <= int(rows.min()) <= 17 and 31 <= int(rows.max()) <= 32
    assert 15 <= int(cols.min()) <= 17 and 31 <= int(cols.max()) <= 32
    assert exported_preprocess is preprocess


def test_preprocess_from_path_tensor_and_size_pair(tmp_path, xray):
    path = tmp_path / "xray.png"
    xray.save(path)
    from_path = preprocess(path, (48, 64))
    assert from_path.shape == (1, 3, 48, 64)
    from_tensor = preprocess(torch.from_numpy(np.asarray(xray).copy())[None], (48, 64))
    torch.testing.assert_close(from_path, from_tensor, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="size must be an int or an"):
        preprocess(xray, (1, 2, 3))
    with pytest.raises(ValueError, match="size must be positive"):
        build_transform(0)


def test_denormalize_inverts_preprocess(xray):
    batch = preprocess(xray.convert("RGB"), (80, 120))
    restored = denormalize(batch)
    assert restored.shape == (1, 80, 120, 3) and restored.dtype == torch.uint8
    expected = np.repeat(np.asarray(xray)[:, :, None], 3, 2)
    np.testing.assert_allclose(restored[0].numpy(), expected, atol=1)
    with pytest.raises(ValueError, match=r"expected a \(B, 3, H, W\) batch"):
        denormalize(batch[0])


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image file at"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"cannot read .*bad\.png as an image"):
        load_image(bad)


def test_sixteen_bit_xray_is_stretched_not_clipped(tmp_path):
    # A 12-bit X-ray stored as a 16-bit PNG: PIL's convert("L") would make it all white.
    values = np.tile(np.linspace(0, 4095, 64), (32, 1)).astype(np.uint16)
    path = tmp_path / "xray16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")

    image = open_image(path)
    pixels = np.asarray(image)
    assert image.mode == "L"
    assert pixels.min() == 0 and pixels.max() == 255
    assert np.all(np.diff(pixels[0].astype(int)) >= 0)  # the gradient survives, in order
    assert np.asarray(load_image(path))[..., 0].tolist() == pixels.tolist()


def test_constant_sixteen_bit_image_becomes_black():
    flat = Image.fromarray(np.full((8, 8), 3000, np.uint16))
    assert np.asarray(to_8bit(flat)).max() == 0


def test_sixteen_bit_images_reach_training_and_explain_datasets(tmp_path):
    from gradcam_kit.data.datasets import ImageDataset, Sample
    from gradcam_kit.data.inputs import ExplainDataset, InputItem

    values = np.tile(np.linspace(0, 60000, 32), (32, 1)).astype(np.uint16)
    path = tmp_path / "a.png"
    Image.fromarray(values).save(path)
    expected = build_transform(32)(open_image(path))

    dataset = ImageDataset([Sample(path, 0)], ["a"], transform=build_transform(32))
    torch.testing.assert_close(dataset[0][0], expected)
    assert float(dataset[0][0].std()) > 0.5  # not a clipped, nearly uniform white image

    decoded = ExplainDataset([InputItem(path=path, label=None, index=0)], (32, 32))[0]
    assert decoded["error"] is None
    assert int(decoded["image"].min()) == 0 and int(decoded["image"].max()) == 255
