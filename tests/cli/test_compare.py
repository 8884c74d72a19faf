"""compare: a row per method with every metric, saved as JSON, CSV and markdown."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gradcam_kit.cli.compare import add_arguments, run
from gradcam_kit.methods import METHODS
from gradcam_kit.metrics.comparison import (
    COLUMNS,
    DEFAULT_METHODS,
    available_methods,
    compare_methods,
    format_markdown,
)


class TinyNet(nn.Module):
    """A small CNN with the stage names the randomisation cascade uses (layer4, fc)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer4(x).mean(dim=(2, 3)))


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_every_available_method_gets_a_row_with_sane_values():
    torch.manual_seed(0)
    model = TinyNet().eval()
    images = torch.randn(3, 3, 16, 16)
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[0] = True  # a mask over the whole image: any maximum is a hit
    batches = [(images[:2], torch.zeros(2), masks[:2]), (images[2:], torch.zeros(1), masks[2:])]
    methods = available_methods()
    assert methods[:5] == ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"]
    assert ("scorecam" in methods) == ("scorecam" in METHODS)
    rows = compare_methods(model, batches, methods, target_layer="layer4.2", steps=4,
                           chunk_size=8, cascade=["fc", "layer4"], progress=False)
    assert [row["method"] for row in rows] == methods
    for row in rows:
        assert row["images"] == 3
        assert 0 <= row["deletion_auc"] <= 1 and 0 <= row["insertion_auc"] <= 1
        assert 0 <= row["average_drop"] <= 100 and 0 <= row["increase_in_confidence"] <= 100
        assert -1 <= row["randomization_corr"] <= 1
        assert list(row["randomization_cascade"]) == ["fc", "layer4"]
        assert row["randomization_corr"] == pytest.approx(row["randomization_cascade"]["layer4"])
        # Only the one image with a (non-empty) mask counts, and its mask covers everything.
        assert row["pointing_images"] == 1 and row["pointing_game"] == 100.0
        assert row["seconds_per_image"] > 0
    table = format_markdown(rows).splitlines()
    assert len(table) == 2 + len(methods)
    assert table[0].count("|") == len(COLUMNS) + 2


def test_pointing_game_is_empty_without_masks():
    torch.manual_seed(0)
    model = TinyNet().eval()
    rows = compare_methods(model, [(torch.randn(2, 3, 16, 16), torch.zeros(2))], ["gradcam"],
                           target_layer="layer4.2", steps=2, cascade=["fc"], progress=False)
    assert rows[0]["pointing_game"] is None and rows[0]["pointing_images"] == 0
    assert format_markdown(rows).splitlines()[2].split("|")[-3].strip() == ""
    with pytest.raises(ValueError, match="unknown method"):
        compare_methods(model, [], ["gradcam", "smoothgrad"], target_layer="layer4.2")
    with pytest.raises(ValueError, match="no images"):
        compare_methods(model, [], ["gradcam"], target_layer="layer4.2")


def _write_dataset(root):
    rng = np.random.default_rng(0)
    for k, label in enumerate(["normal", "lesion"]):
        folder = root / "test" / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / f"x{k}.png")
        if label == "lesion":
            mask = np.zeros((40, 40), dtype=np.uint8)
            mask[10:30, 10:30] = 255
            Image.fromarray(mask).save(folder / f"x{k}_mask.png")
    return root


def test_command_writes_json_csv_and_markdown(tmp_path, capsys):
    data = _write_dataset(tmp_path / "data")
    out = tmp_path / "out"
    methods = ["gradcam", "layercam"]
    assert run(_args("--data", str(data), "--weights", "none", "--size", "32", "--steps", "2",
                     "--batch-size", "2", "--cascade", "fc", "--methods", *methods,
                     "--output", str(out), "--device", "cpu", "--quiet")) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "compare.json").read_text())
    assert [row["method"] for row in saved["rows"]] == methods
    assert saved["settings"]["split"] == "test" and saved["settings"]["images"] == 2
    assert saved["settings"]["target_layer"] == "layer4.2.conv3"
    for row in saved["rows"]:
        assert row["pointing_images"] == 1  # only the lesion image has a mask
        assert row["pointing_game"] is not None
    with open(out / "compare.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["method"] for row in table] == methods
    assert set(table[0]) >= {key for key, _, _ in COLUMNS}
    markdown = (out / "compare.md").read_text()
    assert markdown.strip() in printed
    for method in methods:
        assert f"| {method} |" in markdown


def test_command_rejects_bad_options(tmp_path):
    data = _write_dataset(tmp_path / "data")
    with pytest.raises(SystemExit, match="unknown method"):
        run(_args("--data", str(data), "--weights", "none", "--methods", "gradcam", "rise"))
    with pytest.raises(SystemExit, match="--steps must be at least 1"):
        run(_args("--data", str(data), "--weights", "none", "--steps", "0"))
    with pytest.raises(SystemExit, match="no dataset folder"):
        run(_args("--data", str(tmp_path / "missing"), "--weights", "none", "--size", "64"))


def test_default_cascade_reaches_the_target_layer_stage():
    from torchvision.models import resnet18

    from gradcam_kit.metrics.comparison import default_cascade

    model = resnet18(weights=None)
    assert default_cascade(model, "layer4.1.conv2") == ["fc", "layer4"]
    assert default_cascade(model, "layer3") == ["fc", "layer4", "layer3"]
    assert default_cascade(TinyNet(), "layer4.2") == ["fc", "layer4"]


def test_default_methods_cost_one_pass_and_scorecam_is_on_request(tmp_path, capsys):
    assert DEFAULT_METHODS == ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")
    data = _write_dataset(tmp_path / "data")
    out = tmp_path / "out"
    assert run(_args("--data", str(data), "--weights", "none", "--size", "32", "--steps", "2",
                     "--batch-size", "2", "--cascade", "fc", "--method", "gradcam", "scorecam",
                     "--layer", "layer1", "--chunk-size", "256", "--output", str(out),
                     "--device", "cpu", "--quiet")) == 0
    printed = capsys.readouterr().out
    # the cost is said before Score-CAM starts: one masked forward per channel of layer1
    assert "Score-CAM: 256 masked forwards per image" in printed and "512 in all" in printed
    saved = json.loads((out / "compare.json").read_text())
    assert [row["method"] for row in saved["rows"]] == ["gradcam", "scorecam"]
    assert saved["settings"]["target_layer"] == "layer1"
    assert saved["settings"]["alignment"] == "receptive-field"
