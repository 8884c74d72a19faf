"""resnet50_demo.py: writes its figures offline, at the right sizes, and fails clearly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import resnet50_demo
from gradcam_kit.models.checkpoint import save_checkpoint

FIGURE_PIXELS = (
    int(resnet50_demo.FIGURE_SIZE[0] * resnet50_demo.FIGURE_DPI),
    int(resnet50_demo.FIGURE_SIZE[1] * resnet50_demo.FIGURE_DPI),
)


@pytest.fixture(autouse=True)
def no_workflow_checkpoint(tmp_path, monkeypatch):
    """Run where no `workflow` checkpoint exists, so the demo's default is random weights."""
    monkeypatch.chdir(tmp_path)


def check_outputs(output, stdout: str, size: tuple[int, int]) -> None:
    """The figures exist, at the original image's size, and the overlay is a real blend."""
    for name in ("gradcam_heatmap.png", "gradcam_overlay.png", "gradcam_figure.png"):
        path = output / name
        assert path.is_file(), name
        assert str(path) in stdout, f"the demo did not say where it wrote {name}"
    heatmap = Image.open(output / "gradcam_heatmap.png")
    overlay = Image.open(output / "gradcam_overlay.png")
    assert heatmap.size == overlay.size == size  # (width, height) of the original
    assert heatmap.mode == overlay.mode == "RGB"
    assert Image.open(output / "gradcam_figure.png").size == FIGURE_PIXELS
    colored = np.asarray(heatmap).astype(np.int16)
    # JET colours: every pixel is a JET entry, hot pixels red, never OpenCV's BGR order.
    assert colored[..., 0].max() > 100
    assert not (colored[..., 2] > 200).all()


@pytest.mark.slow
def test_demo_synthetic_image_random_weights(tmp_path, capsys):
    output = tmp_path / "demo"
    assert resnet50_demo.main(["--output", str(output), "--size", "64", "--device", "cpu"]) == 0
    stdout = capsys.readouterr().out
    assert "RANDOM weights" in stdout and "weights=None" in stdout
    for scenario in ("[1]", "[2]", "[3]", "[4]"):
        assert scenario in stdout
    assert "logits identical to [1]: True" in stdout
    assert "plain prediction unchanged: True" in stdout
    assert "forward hooks left=0" in stdout
    assert "same heatmap: True" in stdout
    synthetic = output / "synthetic_xray.png"
    assert synthetic.is_file() and str(synthetic) in stdout
    original = Image.open(synthetic)
    assert original.mode == "L" and original.size == (256, 256)
    check_outputs(output, stdout, original.size)
    # The overlay is the 50/50 blend of the original and the coloured heatmap.
    gray = np.repeat(np.asarray(original)[:, :, None], 3, 2).astype(np.float32)
    expected = np.round(0.5 * gray + 0.5 * np.asarray(Image.open(output / "gradcam_heatmap.png")))
    np.testing.assert_allclose(np.asarray(Image.open(output / "gradcam_overlay.png")), expected, atol=1)
    # Seeded: a second run draws the same figures.
    again = tmp_path / "again"
    assert resnet50_demo.main(["--output", str(again), "--size", "64", "--device", "cpu"]) == 0
    for name in ("synthetic_xray.png", "gradcam_heatmap.png", "gradcam_overlay.png"):
        assert np.array_equal(np.asarray(Image.open(again / name)), np.asarray(Image.open(output / name)))


@pytest.mark.slow
@pytest.mark.parametrize("input_size", [64, [64, 64]], ids=["int", "train-command-list"])
def test_demo_with_image_checkpoint_and_class(tmp_path, capsys, input_size, build_model):
    image = np.zeros((90, 120, 3), np.uint8)
    image[20:60, 30:80] = (200, 180, 160)
    image_path = tmp_path / "xray.png"
    Image.fromarray(image).save(image_path)
    checkpoint = save_checkpoint(
        tmp_path / "best.pt", build_model(num_classes=3), num_classes=3,
        class_names=["a", "b", "c"], input_size=input_size,
    )
    output = tmp_path / "out"
    code = resnet50_demo.main(
        ["--image", str(image_path), "--checkpoint", str(checkpoint), "--output", str(output),
         "--class-idx", "2"]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert f"Loaded checkpoint {checkpoint}" in stdout
    assert "RANDOM" not in stdout
    assert "Model input: (1, 3, 64, 64)" in stdout  # the checkpoint's input size
    assert "chosen class 2 (c)" in stdout
    assert not (output / "synthetic_xray.png").exists()
    check_outputs(output, stdout, (120, 90))


def test_missing_image_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nowhere.png"
    with pytest.raises(SystemExit) as info:
        resnet50_demo.main(["--image", str(missing), "--output", str(tmp_path)])
    assert info.value.code == 2
    assert f"--image: no image file at {missing}" in capsys.readouterr().err


def test_missing_checkpoint_and_bad_class_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        resnet50_demo.main(["--checkpoint", str(tmp_path / "none.pt"), "--output", str(tmp_path)])
    assert "--checkpoint: no checkpoint file at" in capsys.readouterr().err
    code = resnet50_demo.main(["--output", str(tmp_path), "--size", "64", "--class-idx", "7"])
    assert code == 2
    assert "--class-idx: class index 7 is out of range" in capsys.readouterr().err


def test_synthetic_image_is_the_packages_generator_with_a_bright_lesion():
    from gradcam_kit.data.synthetic import generate_sample

    image = resnet50_demo.synthetic_image()
    sample = generate_sample(resnet50_demo.SYNTHETIC_SAMPLE, size=256, positive=True)
    assert image.mode == "L" and image.size == (256, 256)
    assert np.array_equal(np.asarray(image), sample.image.numpy())
    pixels, mask = np.asarray(image).astype(float), sample.mask.numpy()
    assert mask.any()
    lesion = pixels[mask].mean()
    mirrored = pixels[:, ::-1][mask].mean()  # the same place in the other lung
    assert lesion > mirrored + 40
