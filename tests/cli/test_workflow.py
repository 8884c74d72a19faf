"""The main job in one command, and what a user sees after it: the recommended layer drawn by
default in explain, figures and the demo, --layer/--method/--alignment on every command, and
a warning when the input size is far from the trained one."""

from __future__ import annotations

import json
import shutil

import pytest

import resnet50_demo
from gradcam_kit import cli
from gradcam_kit.models.checkpoint import load_checkpoint

TINY = ["--image-size", "32", "--epochs", "1", "--train", "8", "--val", "4", "--test", "4",
        "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    out = tmp_path_factory.mktemp("wf") / "run"
    assert cli.main(["workflow", "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.slow
def test_workflow_writes_data_model_recommendation_and_report(workflow, capsys):
    for path in ("data/train.csv", "data/test.csv", "model/best.pt", "model/evaluation.json",
                 "explain/report.html", "explain/predictions.csv", "workflow.json"):
        assert (workflow / path).is_file(), path
    recommended = load_checkpoint(workflow / "model" / "best.pt")["recommended"]
    assert recommended["split"] == "val" and recommended["layer"] in (
        "layer1", "layer2", "layer3", "layer4", "layer4.2.conv3")
    evaluation = json.loads((workflow / "model" / "evaluation.json").read_text())
    assert evaluation["recommended"] == recommended
    assert set(evaluation["ceiling"]) == set(evaluation["layers"])
    # explain drew the recommended layer and said why, in the report's header too
    report = (workflow / "explain" / "report.html").read_text()
    assert recommended["layer"] in report and "recommended by evaluate" in report


@pytest.mark.slow
def test_workflow_refuses_a_used_folder_and_overwrites_only_its_own(workflow, tmp_path, capsys):
    with pytest.raises(FileExistsError, match="--overwrite"):
        cli.main(["workflow", "--out", str(workflow), *TINY])
    copy = tmp_path / "copy"
    shutil.copytree(workflow, copy)
    (copy / "notes.txt").write_text("mine")
    assert cli.main(["workflow", "--out", str(copy), "--overwrite", *TINY]) == 0
    assert (copy / "notes.txt").read_text() == "mine"
    assert "report:" in capsys.readouterr().out
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="no workflow run wrote"):
        cli.main(["workflow", "--out", str(foreign), "--overwrite", *TINY])
    assert (foreign / "x.txt").is_file()


@pytest.mark.slow
def test_explain_takes_layer_method_and_alignment(workflow, tmp_path, capsys):
    out = tmp_path / "explained"
    assert cli.main([
        "explain", str(workflow / "data" / "test"), "--checkpoint", str(workflow / "model" / "best.pt"),
        "--output", str(out), "--layer", "layer1", "--method", "layercam", "--alignment", "pixel",
    ]) == 0
    printed = capsys.readouterr().out
    assert "maps: layer1, LayerCAM (layer and method chosen on the command line" in printed
    assert "LayerCAM" in (out / "report.html").read_text()


@pytest.mark.slow
def test_bad_layer_is_refused_before_anything_is_written(workflow, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="layer"):
        cli.main([
            "explain", str(workflow / "data" / "test"), "--checkpoint", str(workflow / "model" / "best.pt"),
            "--output", str(out), "--layer", "layer9",
        ])
    assert not out.exists()


@pytest.mark.slow
def test_a_far_input_size_warns(workflow, tmp_path):
    with pytest.warns(UserWarning, match="far from the 32 px this checkpoint was trained at"):
        cli.main([
            "explain", str(workflow / "data" / "test"), "--checkpoint", str(workflow / "model" / "best.pt"),
            "--output", str(tmp_path / "o"), "--image-size", "64",
        ])


@pytest.mark.slow
def test_figures_default_to_the_recommended_layer(workflow, tmp_path, capsys):
    recommended = load_checkpoint(workflow / "model" / "best.pt")["recommended"]
    assert cli.main([
        "figures", "--folder", str(workflow / "data" / "test"), "--num-images", "1",
        "--checkpoint", str(workflow / "model" / "best.pt"), "--output", str(tmp_path / "f"), "--device", "cpu",
    ]) == 0
    printed = capsys.readouterr().out
    assert f"maps: {recommended['layer']}" in printed and "recommended by evaluate" in printed


@pytest.mark.slow
def test_demo_uses_the_workflow_checkpoint_when_it_exists(workflow, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "runs" / "workflow"
    shutil.copytree(workflow / "model", target / "model")
    shutil.copytree(workflow / "data", target / "data")
    assert resnet50_demo.main(["--output", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "No --checkpoint: using runs/workflow/model/best.pt" in printed
    assert "Image: runs/workflow/data/test/opacity/" in printed
    assert "RANDOM weights" not in printed
    assert resnet50_demo.main(["--output", str(tmp_path / "demo2"), "--device", "cpu", "--random-weights", "--image-size", "64"]) == 0
    assert "RANDOM weights" in capsys.readouterr().out


@pytest.mark.parametrize(("module", "argv", "expected"), [
    ("gradcam_kit.cli.figures", ["--image", "x.png", "--out", "o", "--weights", "DEFAULT", "--size", "96"],
     {"output": "o", "weights": "imagenet", "size": 96}),
    ("gradcam_kit.cli.compare", ["--data", "d", "--output", "o", "--weights", "ImageNet", "--image-size", "96"],
     {"output": "o", "weights": "imagenet", "size": 96}),
    ("gradcam_kit.cli.explain", ["in", "--out", "o", "--image-size", "96", "--target-layer", "layer2"],
     {"output": "o", "size": 96, "layer": "layer2"}),
    ("gradcam_kit.cli.synth", ["--output", "o"], {"out": "o"}),
    ("gradcam_kit.cli.evaluate", ["--checkpoint", "c", "--data", "d", "--size", "96", "--layer", "layer2"],
     {"image_size": 96, "layers": ["layer2"]}),
    # progress bars, loader workers, input size and output folder: one spelling everywhere
    ("gradcam_kit.cli.synth", ["--out", "o", "--image-size", "96", "--no-progress"], {"size": 96, "quiet": True}),
    ("gradcam_kit.cli.compare", ["--data", "d", "--no-progress"], {"quiet": True}),
    ("gradcam_kit.cli.explain", ["in", "--workers", "2", "--no-progress"], {"num_workers": 2, "progress": False}),
    ("gradcam_kit.cli.evaluate", ["--checkpoint", "c", "--data", "d", "--out", "o", "--num-workers", "1", "--no-progress"],
     {"output": "o", "workers": 1, "progress": False}),
    ("gradcam_kit.cli.arch", ["--image-size", "96"], {"input_size": [96]}),
    ("gradcam_kit.cli.workflow", ["--out", "o", "--image-size", "96", "--no-progress"],
     {"out": "o", "image_size": 96, "progress": False}),
])
def test_one_vocabulary_for_the_same_things(module, argv, expected):
    import argparse
    import importlib
    from pathlib import Path

    parser = argparse.ArgumentParser()
    importlib.import_module(module).add_arguments(parser)
    args = vars(parser.parse_args(argv))
    for key, value in expected.items():
        got = args[key]
        assert (str(got) if isinstance(got, Path) else got) == value, key
