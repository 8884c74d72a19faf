"""Watching a run: TensorBoard scalars and overlays, the pointing game per epoch in the history,
best.pt picked on localisation, and the one-line error without tensorboard."""

from __future__ import annotations

import csv
import io
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gradcam_kit import cli
from gradcam_kit.data.datasets import ImageDataset, load_split
from gradcam_kit.data.preprocess import build_transform, denormalize
from gradcam_kit.data.synthetic import write_image_folder
from gradcam_kit.metrics.pointing import DEFAULT_LAYERS, evaluate_pointing
from gradcam_kit.models.checkpoint import load_checkpoint
from gradcam_kit.training.monitor import TrainingMonitor
from resnet50 import ResNet50FineTuned

SIZE = 64  # layer4 is 2x2: the maps are not constant
TINY = ["--weights", "none", "--image-size", str(SIZE), "--batch-size", "4", "--no-progress", "--seed", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root, {"train": 8, "val": 6}, size=SIZE, seed=0, progress=False)  # 3 val positives
    return root


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def _val_positives(root) -> ImageDataset:
    samples, names = load_split(root, "val")
    transform = build_transform((SIZE, SIZE))
    return ImageDataset([s for s in samples if s.mask is not None], names, transform, mask_size=(SIZE, SIZE))


@pytest.mark.slow
def test_tensorboard_logs_every_epoch_and_the_history_gets_the_pointing_game(data, tmp_path):
    out, board = tmp_path / "run", tmp_path / "run" / "tensorboard"
    args = ["--data", str(data), "--epochs", "2", "--augment", "--lr", "3e-3", *TINY]
    assert cli.main(["train", *args, "--out", str(out), "--tensorboard", str(board)]) == 0
    events = _events(board)
    for tag in ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "auroc/val", "lr",
                "val_pointing/best", "val_pointing/center_baseline"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2], tag
    history = json.loads((out / "history.json").read_text())
    rows = list(csv.DictReader(open(out / "history.csv")))
    for layer in DEFAULT_LAYERS:
        for epoch, (row, line) in enumerate(zip(history, rows)):
            figures = row["val_pointing"]
            assert figures["positives"] == 3
            pointing, ceiling = figures["layers"][layer], figures["ceiling"][layer]
            assert 0 <= pointing <= 1 and 0 <= ceiling <= 1
            assert events.Scalars(f"val_pointing/{layer}")[epoch].value == pytest.approx(pointing)
            assert events.Scalars(f"val_pointing_ceiling/{layer}")[epoch].value == pytest.approx(ceiling)
            assert float(line[f"val_pointing_{layer}"]) == pytest.approx(pointing)
            assert float(line[f"val_pointing_ceiling_{layer}"]) == pytest.approx(ceiling)
    assert events.Scalars("loss/val")[1].value == pytest.approx(history[1]["val_loss"])
    assert history[0]["val_pointing"]["ceiling"]["layer1"] == 1.0  # a 16x16 grid reaches every lesion

    # The last epoch's figures are the pointing game of last.pt on the validation positives.
    model = ResNet50FineTuned.from_checkpoint(out / "last.pt")
    loader = torch.utils.data.DataLoader(_val_positives(data), batch_size=4)
    result = evaluate_pointing(model, loader, progress=False)
    assert {k: v["accuracy"] for k, v in result["pointing_game"]["gradcam"].items()} == history[1]["val_pointing"]["layers"]

    (tag,) = events.Tags()["images"]
    assert tag == "overlays/layer4.2.conv3"
    grids = events.Images(tag)
    assert [g.step for g in grids] == [1, 2]
    for grid in grids:
        picture = Image.open(io.BytesIO(grid.encoded_image_string))
        assert picture.mode == "RGB" and picture.size == (6 * SIZE, 2 * SIZE)  # 6 val images, input over overlay
        pixels = np.asarray(picture)
        green = (pixels == [0, 255, 0]).all(axis=2)
        assert not green[:SIZE].any() and green[SIZE:, : 3 * SIZE].any()  # the 3 positives come first
        assert not green[SIZE:, 3 * SIZE :].any()

    # Watching changes nothing in the training itself.
    assert cli.main(["train", *args, "--out", str(tmp_path / "plain")]) == 0
    watched, plain = load_checkpoint(out / "last.pt"), load_checkpoint(tmp_path / "plain" / "last.pt")
    for key, value in plain["state_dict"].items():
        torch.testing.assert_close(watched["state_dict"][key], value, msg=key)
    assert "val_pointing" not in json.loads((tmp_path / "plain" / "history.json").read_text())[0]
    assert "val_pointing_layer2" not in next(csv.DictReader(open(tmp_path / "plain" / "history.csv")))


@pytest.mark.slow
def test_watch_pointing_fills_the_history_and_monitor_val_pointing_picks_best_pt(data, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(data), "--epochs", "2", "--lr", "3e-3", *TINY, "--out", str(out),
                     "--watch-pointing", "--monitor", "val_pointing", "--patience", "0"]) == 0
    assert not list(out.glob("**/events.out.tfevents*"))  # no TensorBoard without --tensorboard
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len(rows) == 2 and all(row["val_pointing_layer2"] != "" for row in rows)
    best_figures = [float(row["val_pointing_best"]) for row in rows]
    chosen = 0 if best_figures[0] >= best_figures[1] else 1
    assert [row["best"] for row in rows] == ["True", str(chosen == 1)]
    best = load_checkpoint(out / "best.pt")
    assert best["epoch"] == chosen and best["monitor"] == "val_pointing"
    assert best["metrics"]["val_pointing"]["best"] == pytest.approx(best_figures[chosen])
    assert "accuracy" in best["metrics"]["val"]  # accuracy is still reported


def test_monitor_val_pointing_needs_masks_and_the_pointing_game(tmp_path):
    root = tmp_path / "nomasks"
    for split, count in (("train", 2), ("val", 2)):
        for label in ("normal", "opacity"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("L", (32, 32), 40 * i + 20).save(folder / f"{i}.png")
    common = ["train", "--data", str(root), "--epochs", "1", "--weights", "none", "--image-size", "32",
              "--no-progress", "--monitor", "val_pointing"]
    with pytest.raises(ValueError, match="needs validation images with lesion masks"):
        cli.main([*common, "--out", str(tmp_path / "a")])
    with pytest.raises(ValueError, match="drop --no-watch-pointing"):
        cli.main([*common, "--out", str(tmp_path / "b"), "--no-watch-pointing"])


def test_missing_tensorboard_is_one_line_naming_the_extra(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    for name in [m for m in sys.modules if m.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(RuntimeError) as raised:
        cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY,
                  "--tensorboard", str(tmp_path / "tb")])
    message = str(raised.value)
    assert "\n" not in message and "pip install gradcam-kit[tensorboard]" in message
    assert not (tmp_path / "tb").exists() and not (tmp_path / "run" / "last.pt").exists()


class _FixedMaps(nn.Module):
    """Stands in for the model: its Grad-CAM map is hot (1) in the top-left quarter, 0 elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(1, 2)
        self.gradcam_enabled, self.explained = False, []

    def enable_gradcam_mode(self) -> None:
        self.gradcam_enabled = True

    def disable_gradcam_mode(self) -> None:
        self.gradcam_enabled = False

    def explain(self, images, class_idx, layers):
        self.explained.append((images.clone(), class_idx, layers))
        maps = torch.zeros(images.shape[0], *images.shape[-2:])
        maps[:, : images.shape[-2] // 2, : images.shape[-1] // 2] = 1.0
        return SimpleNamespace(heatmaps={layers: maps})


def test_overlay_grid_shows_fixed_images_hot_red_with_the_lesion_outlined(data, tmp_path):
    pytest.importorskip("tensorboard")
    samples, names = load_split(data, "val")
    val_set = ImageDataset(samples, names, build_transform((SIZE, SIZE)), return_index=True)
    common = {"size": (SIZE, SIZE), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
              "device": torch.device("cpu"), "target_layer": "layer3"}
    monitor = TrainingMonitor(val_set, tensorboard=tmp_path / "tb", seed=3, grid_images=4, **common)
    model = _FixedMaps()
    try:
        first, second = monitor.overlay_grid(model), monitor.overlay_grid(model)
    finally:
        monitor.close()
    assert first.dtype == torch.uint8 and first.shape == (2 * SIZE, 4 * SIZE, 3)
    assert torch.equal(first, second) and not model.gradcam_enabled  # the same images; switch restored
    images, class_idx, layer = model.explained[0]
    assert layer == "layer3" and class_idx.tolist() == [1, 1, 1, 0]  # the 3 positives (masks) first
    top = torch.cat(list(denormalize(images)), dim=1)
    assert torch.equal(first[:SIZE], top)  # the inputs themselves on top
    overlaid = first[SIZE:].int()
    hot, cold = overlaid[4, 4], overlaid[SIZE - 4, SIZE - 4]  # first image: hot corner, cold corner
    # jet's top is dark red (128, 0, 0), its bottom dark blue, blended half and half with the image
    assert hot[0] > hot[1] + 40 and hot[0] > hot[2] + 40  # hot = red (RGB, not OpenCV's BGR)
    assert cold[2] > cold[0] + 40 and cold[2] > cold[1] + 40  # cold = blue
    assert ((overlaid == torch.tensor([0, 255, 0])).all(dim=2)).any()  # the lesion outline
    other = TrainingMonitor(val_set, seed=4, grid_images=4, **common)  # no log: no grid
    assert not other.pointing and other.on_epoch_end(0, model, {}) is None
    other = TrainingMonitor(val_set, tensorboard=tmp_path / "tb2", seed=4, grid_images=4, **common)
    other.close()
    assert not torch.equal(other.overlay_grid(model), first)  # another seed, other images
