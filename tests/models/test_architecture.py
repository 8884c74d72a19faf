"""Architecture analysis: exact parameter counts, shapes and the command's outputs."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet18, resnet50

from gradcam_kit.cli.arch import add_arguments, run
from gradcam_kit.models.architecture import analyze, build_model
from gradcam_kit.models.checkpoint import save_checkpoint
from resnet50 import ResNet50FineTuned

# torchvision ResNet50, per stage (He et al., 2016): the seed's "~25.6 M".
RESNET50_STAGES = {
    "stem": 9_536, "layer1": 215_808, "layer2": 1_219_584, "layer3": 7_098_368,
    "layer4": 14_964_736, "avgpool": 0, "fc": 2_049_000,
}


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_torchvision_resnet50_counts_and_shapes_at_224():
    report = analyze(resnet50(weights=None), 224)
    assert report.total_parameters == 25_557_032
    assert {s.name: s.parameters for s in report.stages} == RESNET50_STAGES
    assert report.trainable_parameters == 25_557_032 and report.frozen_parameters == 0
    shapes = {s.name: s.output_shape for s in report.stages}
    assert shapes == {
        "stem": (64, 56, 56), "layer1": (256, 56, 56), "layer2": (512, 28, 28),
        "layer3": (1024, 14, 14), "layer4": (2048, 7, 7), "avgpool": (2048, 1, 1), "fc": (1000,),
    }
    assert [s.blocks for s in report.stages] == [0, 3, 4, 6, 3, 0, 0]
    # The layer every explainer defaults to (explainers.cnn.default_target_layer).
    assert report.target_layer == "layer4" and report.target_shape == (2048, 7, 7)


def test_fine_tuned_head_changes_the_count_and_freezes_the_backbone():
    model = ResNet50FineTuned(2, weights=None)
    was_training = model.training
    report = analyze(model, 64)
    assert model.training == was_training  # the analysis restores the mode
    assert report.total_parameters == 23_512_130
    assert report.trainable_parameters == 4_098  # Linear(2048, 2)
    assert report.frozen_parameters == 23_508_032
    assert report.stages[-1].output_shape == (2,)
    assert report.stages[4].output_shape == (2048, 2, 2)  # 64 px / 32


def test_basic_block_resnet_targets_layer4_and_non_square_inputs():
    report = analyze(resnet18(weights=None, num_classes=3), (64, 96))
    assert report.total_parameters == sum(p.numel() for p in resnet18(num_classes=3).parameters())
    assert report.target_layer == "layer4" and report.target_shape == (512, 2, 3)
    assert report.stages[4].output_shape == (512, 2, 3)
    # Any target layer, in either spelling; its output shape is reported.
    report = analyze(resnet18(weights=None), 64, target_layer="layer3[-1]")
    assert report.target_layer == "layer3.1" and report.target_shape == (256, 4, 4)
    report = analyze(resnet18(weights=None), 64, target_layer="layer2")
    assert report.target_shape == (128, 8, 8)
    with pytest.raises(ValueError, match="not in the model"):
        analyze(resnet18(weights=None), 64, target_layer="layer9")


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="too small"):
        analyze(resnet18(weights=None), 16)
    with pytest.raises(ValueError, match="not a torchvision-style ResNet"):
        analyze(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3)), 64)
    with pytest.raises(ValueError, match="unknown model"):
        build_model(model="vgg16")


def test_command_prints_the_table_and_draws_a_diagram(tmp_path, capsys):
    assert run(_args("--model", "finetuned", "--num-classes", "2", "--input-size", "64",
                     "--visualize", "--json", "--output", str(tmp_path))) == 0
    printed = capsys.readouterr().out
    assert "23,512,130 (23.5 M)" in printed and "frozen:            23,508,032" in printed
    assert "Grad-CAM target:   layer4.2.conv3 -> 2048\u00d72\u00d72" in printed
    data = json.loads((tmp_path / "architecture.json").read_text())
    assert data["total_parameters"] == 23_512_130 and data["trainable_parameters"] == 4_098
    image = np.asarray(Image.open(tmp_path / "resnet_architecture.png").convert("RGB"))
    assert image.shape[0] > 600 and image.shape[1] > 400
    assert image.std() > 20  # boxes and text, not a blank canvas
    # The target stage is framed in red and the trainable head is green.
    red = (image[..., 0] > 180) & (image[..., 1] < 40) & (image[..., 2] < 40)
    assert red.sum() > 500
    green = (np.abs(image.astype(int) - [0xB6, 0xD7, 0xA8]).sum(-1) < 6)
    assert green.sum() > 1000


def test_command_reads_a_checkpoint(tmp_path, capsys):
    model = ResNet50FineTuned(3, weights=None)
    path = save_checkpoint(tmp_path / "model.pt", model, num_classes=3)
    assert run(_args("--checkpoint", str(path), "--input-size", "64")) == 0
    printed = capsys.readouterr().out
    assert "25,557,032" not in printed
    assert f"{23_508_032 + 2048 * 3 + 3:,}" in printed  # backbone + Linear(2048, 3)
    with pytest.raises(SystemExit, match="no checkpoint file"):
        run(_args("--checkpoint", str(tmp_path / "missing.pt")))
