"""The steps of train, each on a tiny model or dataset: data, one epoch, evaluation, stopping, resume."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.models import resnet18

from gradcam_kit import cli
from gradcam_kit.training.config import resolve_config
from gradcam_kit.training.data import load_data
from gradcam_kit.training.distributed import DistributedContext
from gradcam_kit.training.loop import (
    EarlyStopping,
    build_criterion,
    build_optimizer,
    evaluate,
    train_one_epoch,
)

CPU = DistributedContext(0, 1, 0, torch.device("cpu"), None)


class Indexed(Dataset):
    """``(image, label, index)`` of 8 seeded random 32x32 images, 4 per class."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(8, 3, 32, 32, generator=generator)
        self.labels = torch.tensor([0, 1] * 4)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i], torch.tensor(i)


def _options(**values: object) -> argparse.Namespace:
    base = {"class_weights": "balanced", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}
    return argparse.Namespace(**(base | values))


def test_train_one_epoch_changes_the_parameters_and_returns_finite_metrics():
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = DataLoader(Indexed(), batch_size=4)
    criterion = build_criterion(_options(), 2, torch.tensor([4, 4]), torch.device("cpu"))
    optimizer = build_optimizer(_options(), model)
    metrics = train_one_epoch(model, loader, criterion, optimizer, device=torch.device("cpu"))
    assert metrics["count"] == 8 and math.isfinite(metrics["loss"]) and metrics["loss"] > 0
    assert 0.0 <= metrics["accuracy"] <= 1.0 and len(metrics["confusion_matrix"]) == 2
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "fc.weight" in changed and "conv1.weight" in changed and "bn1.running_mean" in changed

    val = evaluate(model, loader, criterion, device=torch.device("cpu"), context=CPU)
    assert val["count"] == 8 and math.isfinite(val["loss"]) and model.training  # mode restored


def test_a_frozen_backbone_trains_only_the_head():
    from gradcam_kit.models.modules import freeze_backbone
    from gradcam_kit.training.loop import set_train_mode

    model = freeze_backbone(resnet18(weights=None, num_classes=2))
    set_train_mode(model, frozen=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = DataLoader(Indexed(), batch_size=4)
    criterion = build_criterion(_options(class_weights="none"), 2, torch.tensor([4, 4]), torch.device("cpu"))
    train_one_epoch(model, loader, criterion, build_optimizer(_options(), model), device=torch.device("cpu"))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"fc.weight", "fc.bias"}  # no BatchNorm statistics either


def _write_folder(root, split: str, counts: dict[str, int]) -> None:
    generator = torch.Generator().manual_seed(len(split))
    for name, count in counts.items():
        (root / split / name).mkdir(parents=True)
        for i in range(count):
            pixels = torch.randint(0, 256, (20, 24, 3), generator=generator, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / split / name / f"{i}.png")


def test_load_data_reads_a_tiny_image_folder(tmp_path):
    _write_folder(tmp_path, "train", {"normal": 4, "opacity": 3})
    _write_folder(tmp_path, "val", {"normal": 1, "opacity": 2})
    cfg = resolve_config(argparse.Namespace(data=str(tmp_path), image_size=32, batch_size=3, mean="0.5", std="0.25"))
    data = load_data(cfg, CPU)
    assert data.class_names == ["normal", "opacity"] and data.origin == str(tmp_path / "train")
    assert len(data.train_set) == 7 and len(data.val_set) == 3
    assert data.size == (32, 32) and data.mean == (0.5,) * 3 and data.std == (0.25,) * 3
    batches = list(data.train_loader)
    assert [len(b[1]) for b in batches] == [3, 2, 2]  # near-equal batches, never one image
    seen = sorted(i for _, _, index in batches for i in index.tolist())
    assert seen == list(range(7)) and batches[0][0].shape[1:] == (3, 32, 32)
    data.train_sampler.set_epoch(1)
    assert [b[2].tolist() for b in data.train_loader] != [b[2].tolist() for b in batches]  # reshuffled
    images, labels, index = next(iter(data.val_loader))
    assert labels.tolist() == [0, 1, 1] and index.tolist() == [0, 1, 2]

    _write_folder(tmp_path / "one", "train", {"normal": 2})
    with pytest.raises(ValueError, match="single class"):
        load_data(resolve_config(argparse.Namespace(data=str(tmp_path / "one"))), CPU)


def test_early_stopping_tracks_the_monitored_metric():
    stopping = EarlyStopping("loss", patience=2)
    assert stopping.update({"loss": 0.5}, first=True)
    assert not stopping.update({"loss": 0.7}, first=False) and not stopping.should_stop
    assert stopping.update({"loss": 0.4}, first=False) and stopping.bad_epochs == 0
    assert not stopping.update({"loss": 0.4}, first=False)
    assert not stopping.update({"loss": float("nan")}, first=False) and stopping.should_stop
    assert stopping.best_value == pytest.approx(0.4)
    undefined = EarlyStopping("auroc", patience=0)
    assert undefined.update({"auroc": None}, first=True)  # the first epoch is kept
    assert not undefined.update({"auroc": None}, first=False) and not undefined.should_stop
    assert math.isnan(undefined.best_value)


def test_resume_reads_last_pt_once(tmp_path, monkeypatch):
    from gradcam_kit.data.synthetic import write_image_folder
    from gradcam_kit.models import checkpoint

    write_image_folder(tmp_path / "data", {"train": 4, "val": 2}, size=32, seed=0, progress=False)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(tmp_path / "data"), "--out", str(out), "--epochs", "1",
                     "--weights", "none", "--image-size", "32", "--batch-size", "4", "--no-progress"]) == 0
    reads = []
    original = checkpoint.load_checkpoint
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda path: reads.append(path) or original(path))
    assert cli.main(["train", "--resume", str(out / "last.pt")]) == 0  # nothing left to train
    assert reads == [str(out / "last.pt")]


def test_train_reads_a_dicom_window_as_center_comma_width():
    import argparse

    from gradcam_kit.training.data import dicom_window

    assert dicom_window(argparse.Namespace(dicom_window="40,400")) == (40.0, 400.0)
    assert dicom_window(argparse.Namespace(dicom_window=None)) is None
    with pytest.raises(ValueError, match="CENTER,WIDTH"):
        dicom_window(argparse.Namespace(dicom_window="40;400"))
    with pytest.raises(ValueError, match="width must be at least 1"):
        dicom_window(argparse.Namespace(dicom_window="40,0"))
