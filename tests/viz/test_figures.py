"""Figures: maps from the integrated model (layer-wise in one forward), panels drawn in RGB."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet18

from gradcam_kit.cli.figures import add_arguments, run
from gradcam_kit.viz.figures import (
    LAYERS,
    _titles,
    attention_grid_figure,
    attention_maps,
    overlays_figure,
)
from gradcam_kit.viz.render import overlay, to_numpy_images
from resnet50 import ResNet50FineTuned

SIZE = 64
HOT = np.array([128, 0, 0])  # jet at 1.0 in RGB: dark red
COLD = np.array([0, 0, 128])  # jet at 0.0: dark blue


@pytest.fixture(scope="module")
def model() -> ResNet50FineTuned:
    torch.manual_seed(0)
    return ResNet50FineTuned(2, weights=None).eval()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, SIZE, SIZE)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def _contains(panel: np.ndarray, colour: np.ndarray, tolerance: int = 30) -> bool:
    return bool((np.abs(panel.astype(int) - colour).sum(-1) < tolerance).any())


def _panels(fig, path) -> list[np.ndarray]:
    """Saves ``fig`` and returns the pixels inside each image axes."""
    fig.savefig(path)
    image = np.asarray(Image.open(path).convert("RGB"))
    height = image.shape[0]
    panels = []
    for ax in fig.axes:
        if not ax.images:  # the colour bar
            continue
        box = ax.get_window_extent()
        top, bottom = int(height - box.y1) + 2, int(height - box.y0) - 2
        panels.append(image[top:bottom, int(box.x0) + 2 : int(box.x1) - 2])
    return panels


def test_maps_come_from_the_model_in_three_forwards(model, batch):
    forwards = []
    handle = model.conv1.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        maps = attention_maps(model, batch)
    finally:
        handle.remove()
    # Grad-CAM, Grad-CAM++ and ONE forward for layer1..layer4 together.
    assert len(forwards) == 3
    assert not model.gradcam_enabled  # switched back off
    assert list(maps.methods) == ["gradcam", "gradcam++"] and list(maps.layers) == list(LAYERS)
    for heatmap in [*maps.methods.values(), *maps.layers.values()]:
        assert heatmap.shape == (2, SIZE, SIZE)
        assert float(heatmap.min()) >= 0 and float(heatmap.max()) <= 1
        torch.testing.assert_close(heatmap.flatten(1).amax(1), torch.ones(2))  # normalised per image
    # The same maps as the model's own per-call API.
    model.enable_gradcam_mode()
    try:
        with torch.no_grad():
            logits, gradcam = model(batch, return_gradcam=True)
            _, layer2 = model(batch, True, maps.class_idx, gradcam_layers="layer2")
    finally:
        model.disable_gradcam_mode()
    torch.testing.assert_close(maps.methods["gradcam"], gradcam)
    torch.testing.assert_close(maps.layers["layer2"], layer2)
    torch.testing.assert_close(maps.class_idx, logits.argmax(1))
    assert not torch.allclose(maps.methods["gradcam"], maps.methods["gradcam++"])


def test_an_explicit_class_is_used_by_every_map(model, batch):
    maps = attention_maps(model, batch, 1)
    assert maps.class_idx.tolist() == [1, 1]
    with pytest.raises(ValueError, match="out of range"):
        attention_maps(model, batch, 5)
    with pytest.raises(TypeError, match="no integrated Grad-CAM"):
        attention_maps(resnet18(weights=None), batch)


def test_grid_and_overlay_panels_are_drawn_in_rgb(model, batch, tmp_path):
    maps = attention_maps(model, batch[:1])
    image = (torch.rand(1, SIZE, SIZE, 3) * 255).to(torch.uint8)
    keys = [*maps.methods, *maps.layers]
    stacked = torch.cat([maps.methods.get(k, maps.layers.get(k)) for k in keys])
    colored, overlaid = overlay(image.expand(len(keys), -1, -1, -1), stacked)
    colored, overlaid = to_numpy_images(colored), to_numpy_images(overlaid)

    grid = attention_grid_figure(to_numpy_images(image[0]), dict(zip(keys, colored, strict=True)), title="t")
    panels = _panels(grid, tmp_path / "grid.png")
    assert Image.open(tmp_path / "grid.png").size == (1300, 800)
    assert len(panels) == 7  # original, Grad-CAM, Grad-CAM++ / layer1..layer4
    assert panels[0].shape[0] > panels[3].shape[0]  # row 1 panels are the larger ones
    for panel in panels:
        assert panel.size and panel.std() > 10  # not blank
    for panel in panels[1:]:  # every heatmap has its maximum (red) and minimum (blue)
        assert _contains(panel, HOT) and _contains(panel, COLD)

    over = overlays_figure(to_numpy_images(image[0]), dict(zip(keys, overlaid, strict=True)))
    panels = _panels(over, tmp_path / "over.png")
    assert Image.open(tmp_path / "over.png").size == (1500, 560)
    assert len(panels) == 3
    for panel in panels[1:]:
        h, w = min(panel.shape[0], panels[0].shape[0]), min(panel.shape[1], panels[0].shape[1])
        difference = np.abs(panel[:h, :w].astype(int) - panels[0][:h, :w].astype(int))
        assert difference.mean() > 10  # the map is laid over the image


def test_titles_give_prediction_probability_and_truth():
    from gradcam_kit.viz.figures import AttentionMaps

    logits = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    maps = AttentionMaps(logits, torch.tensor([1, 0]), {}, {}, "layer4")
    titles = _titles(maps, ["normal", "lesion"], ["lesion", "lesion"], explicit_class=False)
    assert titles[0] == ("predicted: lesion (0.88)  |  true: lesion", "#1a7f37")
    assert titles[1] == ("predicted: normal (0.95)  |  true: lesion", "#c62828")
    titles = _titles(maps, None, [None, None], explicit_class=True)
    assert titles[0] == ("predicted: class 1 (0.88)  |  explained: class 1", "black")


def _write_folder(root, count: int = 3):
    rng = np.random.default_rng(0)
    for k in range(count):
        folder = root / ("lesion" if k % 2 else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 56), dtype=np.uint8)).save(folder / f"img_{k}.png")
    return root


def test_command_writes_both_figures_per_image(tmp_path, capsys):
    data = _write_folder(tmp_path / "data")
    out = tmp_path / "out"
    assert run(_args("--folder", str(data), "--num-images", "2", "--weights", "none",
                     "--size", str(SIZE), "--output", str(out), "--device", "cpu")) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    # ImageFolder order (lesion/img_1, normal/img_0, normal/img_2): two images spread over
    # the three reach both classes; each folder is named by the image's position and stem.
    assert written == [
        "0000_img_1/attention_maps_img_1.png", "0000_img_1/overlays_img_1.png",
        "0002_img_2/attention_maps_img_2.png", "0002_img_2/overlays_img_2.png",
    ]
    grid = np.asarray(Image.open(out / "0000_img_1/attention_maps_img_1.png").convert("RGB"))
    assert grid.shape == (800, 1300, 3)
    assert _contains(grid, HOT) and _contains(grid, COLD)
    over = np.asarray(Image.open(out / "0002_img_2/overlays_img_2.png").convert("RGB"))
    assert over.shape == (560, 1500, 3) and over.std() > 20
    assert "0000_img_1/attention_maps_img_1.png" in capsys.readouterr().out


def test_command_selection_errors(tmp_path):
    data = _write_folder(tmp_path / "data")
    with pytest.raises(SystemExit, match="out of range"):
        run(_args("--folder", str(data), "--index", "7", "--weights", "none", "--size", "64"))
    with pytest.raises(SystemExit, match="select from --folder"):
        run(_args("--image", str(data / "normal" / "img_0.png"), "--random", "2", "--weights", "none"))
    with pytest.raises(SystemExit, match="at least 1"):
        run(_args("--folder", str(data), "--random", "0", "--weights", "none", "--size", "64"))


def test_checkpoint_metadata_sets_size_normalisation_and_class_names(tmp_path, capsys):
    from gradcam_kit.models.checkpoint import save_checkpoint
    from gradcam_kit.models.preprocessing import input_preprocessing

    path = save_checkpoint(tmp_path / "m.pt", ResNet50FineTuned(2, weights=None), num_classes=2,
                           class_names=["normal", "lesion"], input_size=[SIZE, SIZE],
                           mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert input_preprocessing(path) == (SIZE, {"mean": [0.5] * 3, "std": [0.25] * 3})
    assert input_preprocessing(path, 96)[0] == 96
    assert input_preprocessing() == (224, {})
    with pytest.raises(ValueError, match="at least 32"):
        input_preprocessing(size=8)

    data = _write_folder(tmp_path / "data", count=1)
    out = tmp_path / "out"
    assert run(_args("--image", str(data / "normal" / "img_0.png"), "--checkpoint", str(path),
                     "--output", str(out), "--device", "cpu")) == 0
    assert f"1 image(s) at {SIZE}x{SIZE}" in capsys.readouterr().out
    assert (out / "0000_img_0" / "attention_maps_img_0.png").is_file()
    assert (out / "0000_img_0" / "overlays_img_0.png").is_file()
