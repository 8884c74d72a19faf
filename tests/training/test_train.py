"""The train command: checkpoints that load, logs, exact resume, config files, freezing, errors."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from gradcam_kit import cli
from gradcam_kit.data.synthetic import write_image_folder
from gradcam_kit.models.checkpoint import load_checkpoint
from resnet50 import ResNet50FineTuned

TINY = ["--weights", "none", "--image-size", "32", "--batch-size", "4", "--no-progress", "--seed", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root, {"train": 8, "val": 4}, size=32, seed=0, progress=False)
    return root


def train(*args: str) -> int:
    return cli.main(["train", *args])


@pytest.mark.slow
def test_train_writes_loadable_checkpoints_and_logs(data, tmp_path):
    out = tmp_path / "run"
    assert train("--data", str(data), "--out", str(out), "--epochs", "1", "--target-layer", "layer3", *TINY) == 0
    state = torch.load(out / "best.pt", map_location="cpu", weights_only=True)  # plain data only
    assert state["num_classes"] == 2 and state["class_names"] == ["normal", "opacity"]
    assert state["input_size"] == [32, 32] and len(state["mean"]) == 3 and len(state["std"]) == 3
    assert state["target_layer"] == "layer3" and "torch" in state["versions"]
    assert state["metrics"]["val"]["count"] == 4
    model = ResNet50FineTuned(weights=str(out / "best.pt"), num_classes=2, freeze_features=False)
    loaded = ResNet50FineTuned.from_checkpoint(out / "best.pt")
    assert loaded.gradcam_target_layer == "layer3" and loaded.class_names == ["normal", "opacity"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state["state_dict"][key])
    assert "optimizer" in load_checkpoint(out / "last.pt") and "optimizer" not in state

    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len(rows) == 1 and rows[0]["epoch"] == "1" and rows[0]["train_samples"] == "8"
    for column in ("val_accuracy", "val_auroc", "val_sensitivity", "val_specificity", "train_loss"):
        assert rows[0][column] != ""
    history = json.loads((out / "history.json").read_text())
    matrix = history[0]["val"]["confusion_matrix"]
    assert sum(map(sum, matrix)) == 4 and len(matrix) == 2


@pytest.mark.slow
def test_resume_continues_exactly(data, tmp_path):
    common = ["--data", str(data), "--epochs", "2", "--augment", "--lr", "3e-3", *TINY]
    assert train(*common, "--out", str(tmp_path / "straight")) == 0
    assert train(*common, "--out", str(tmp_path / "split"), "--stop-after", "1") == 0
    assert len(json.loads((tmp_path / "split" / "history.json").read_text())) == 1
    # --resume alone: the data, the output folder and every option come from last.pt
    assert train("--resume", str(tmp_path / "split" / "last.pt")) == 0
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "split" / "last.pt")
    assert resumed["epoch"] == straight["epoch"] == 1
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, msg=key)
    assert resumed["scheduler"]["last_epoch"] == straight["scheduler"]["last_epoch"]
    assert len(json.loads((tmp_path / "split" / "history.json").read_text())) == 2


@pytest.mark.slow
def test_ctrl_c_ends_with_one_line_naming_the_resume_command(data, tmp_path, monkeypatch, capsys):
    import gradcam_kit.training.train as train_module

    out = tmp_path / "run"
    assert train("--data", str(data), "--epochs", "1", *TINY, "--out", str(out)) == 0
    capsys.readouterr()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", interrupted)
    assert train("--resume", str(out / "last.pt"), "--epochs", "2") == 130
    err = capsys.readouterr().err.strip()
    assert err == f"train: interrupted; resume with: python -m gradcam_kit train --resume {out / 'last.pt'}"
    assert "Traceback" not in err


@pytest.mark.slow
def test_yaml_config_keys_mirror_flags_and_flags_win(data, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: {data}\nout: {tmp_path / 'cfg'}\nepochs: 3\nimage-size: 32\nbatch_size: 4\n"
        "weights: none\nprogress: false\nnum-classes: 1\nlr: 2e-3\n"
    )
    assert train("--config", str(config), "--epochs", "1") == 0
    history = json.loads((tmp_path / "cfg" / "history.json").read_text())
    assert len(history) == 1  # the flag beat the file's epochs: 3
    assert load_checkpoint(tmp_path / "cfg" / "best.pt")["num_classes"] == 1  # a sigmoid head
    config.write_text("data: x\nepochs: many\n")
    with pytest.raises(ValueError, match="epochs .* must be of type int"):
        train("--config", str(config))
    config.write_text("data: x\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown key.*learning_rate"):
        train("--config", str(config))


@pytest.mark.slow
def test_freeze_features_then_unfreeze(data, tmp_path):
    start = tmp_path / "start"
    assert train("--data", str(data), "--out", str(start), "--epochs", "1", *TINY) == 0
    start_state = load_checkpoint(start / "best.pt")["state_dict"]
    common = ["--data", str(data), "--image-size", "32", "--batch-size", "4", "--no-progress",
              "--weights", str(start / "best.pt"), "--freeze-features", "--lr", "1e-2"]
    assert train(*common, "--out", str(tmp_path / "frozen"), "--epochs", "1") == 0
    frozen = load_checkpoint(tmp_path / "frozen" / "last.pt")["state_dict"]
    torch.testing.assert_close(frozen["layer1.0.conv1.weight"], start_state["layer1.0.conv1.weight"])
    torch.testing.assert_close(frozen["bn1.running_mean"], start_state["bn1.running_mean"])  # BN kept
    assert not torch.equal(frozen["fc.weight"], start_state["fc.weight"])
    assert train(*common, "--out", str(tmp_path / "thawed"), "--epochs", "2", "--unfreeze-after", "1") == 0
    thawed = load_checkpoint(tmp_path / "thawed" / "last.pt")["state_dict"]
    assert not torch.equal(thawed["layer1.0.conv1.weight"], start_state["layer1.0.conv1.weight"])


def test_bad_input_fails_before_training(data, tmp_path):
    out = ["--out", str(tmp_path / "never"), *TINY]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        train("--data", str(tmp_path / "empty"), *out)
    one = tmp_path / "one"
    shutil.copytree(data / "train" / "normal", one / "normal")
    with pytest.raises(ValueError, match="single class"):
        train("--data", str(one), *out)
    broken = tmp_path / "broken"
    shutil.copytree(data / "train", broken)
    (broken / "normal" / "zz_broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="cannot read image.*zz_broken"):
        train("--data", str(broken), *out)
    with pytest.raises(FileNotFoundError, match="no CSV file"):
        train("--data", str(tmp_path / "missing.csv"), *out)
    with pytest.raises(ValueError, match="--freeze-features with --weights none"):
        train("--data", str(data), "--freeze-features", *out)
    with pytest.raises(ValueError, match="no training data"):
        train(*out)
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_csv_training_data(data, tmp_path):
    assert train("--data", str(data / "train.csv"), "--out", str(tmp_path / "csv"), "--epochs", "1",
                 "--val-fraction", "0.25", *TINY) == 0
    rows = list(csv.DictReader(open(tmp_path / "csv" / "history.csv")))
    assert rows[0]["train_samples"] == "6" and rows[0]["val_samples"] == "2"


def test_default_weights_offline_error_says_pass_weights_none(data, tmp_path, monkeypatch):
    from torchvision.models import ResNet50_Weights

    from gradcam_kit.models.checkpoint import _cached_weights_path

    if _cached_weights_path(ResNet50_Weights.DEFAULT.url).is_file():
        pytest.skip("ImageNet weights are cached here")
    monkeypatch.setenv("GRADCAM_KIT_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="--weights none"):
        train("--data", str(data), "--out", str(tmp_path / "x"), "--image-size", "32", "--no-progress")


def test_shipped_example_config_is_valid():
    from pathlib import Path

    from gradcam_kit.training.train import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "synthetic_xray.yaml")
    assert config["weights"] == "none" and config["data"] == "data/synthetic"
