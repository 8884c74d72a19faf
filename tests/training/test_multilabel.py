"""Multi-label training: the masked loss, pos_weight, thresholds, metrics, the data step and a tiny run."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models import resnet18

from gradcam_kit import cli
from gradcam_kit.data.synthetic_findings import write_multilabel_folder
from gradcam_kit.metrics.classification import format_metrics, multilabel_metrics, youden_thresholds
from gradcam_kit.models.checkpoint import load_checkpoint
from gradcam_kit.training.config import resolve_config
from gradcam_kit.training.data import load_data
from gradcam_kit.training.distributed import DistributedContext
from gradcam_kit.training.loop import (
    MaskedBCEWithLogitsLoss,
    batch_targets,
    build_criterion,
    build_optimizer,
    evaluate,
    resolve_monitor,
    train_one_epoch,
)

CPU = DistributedContext(0, 1, 0, torch.device("cpu"), None)


def test_masked_loss_leaves_out_the_ignored_labels():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    labels = torch.tensor([[1, -1], [0, 1]])
    loss = MaskedBCEWithLogitsLoss()(logits, labels)
    counted = torch.tensor([[True, False], [True, True]])
    expected = nn.functional.binary_cross_entropy_with_logits(logits[counted], labels[counted].float())
    torch.testing.assert_close(loss, expected)
    # The ignored logit gets no gradient, whatever its value.
    logits.requires_grad_(True)
    MaskedBCEWithLogitsLoss()(logits, labels).backward()
    assert logits.grad[0, 1] == 0 and (logits.grad[counted] != 0).all()
    weighted = MaskedBCEWithLogitsLoss(torch.tensor([1.0, 4.0]))(logits.detach(), labels)
    assert weighted > loss  # the positive of finding 1 weighs four times


def test_batch_targets_folds_the_mask_into_minus_one():
    target = torch.tensor([[1.0, 0.0, 1.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    assert batch_targets([target, mask]).tolist() == [[1, -1, 1]]
    assert batch_targets([torch.tensor([0, 1])]).tolist() == [0, 1]  # single-label: unchanged


def test_pos_weight_auto_is_negatives_over_positives():
    counts = torch.tensor([[30, 10], [10, 30]])  # rows: negatives, positives
    cfg = argparse.Namespace(pos_weight="auto")
    criterion = build_criterion(cfg, 2, counts, torch.device("cpu"))
    assert isinstance(criterion, MaskedBCEWithLogitsLoss)
    torch.testing.assert_close(criterion.pos_weight, torch.tensor([3.0, 1 / 3]))
    assert build_criterion(argparse.Namespace(pos_weight="none"), 2, counts, torch.device("cpu")).pos_weight is None
    with pytest.raises(ValueError, match="--pos-weight needs 1 or 2 numbers"):
        build_criterion(argparse.Namespace(pos_weight="1,2,3"), 2, counts, torch.device("cpu"))


def test_youden_thresholds_separate_the_classes_and_skip_ignored_labels():
    probabilities = torch.tensor([[0.1, 0.9], [0.3, 0.2], [0.6, 0.8], [0.8, 0.1], [0.95, 0.5]])
    labels = torch.tensor([[0, 1], [0, 0], [1, 1], [1, 0], [-1, -1]])
    thresholds = youden_thresholds(probabilities, labels)
    # finding 0: negatives 0.1, 0.3; positives 0.6, 0.8 -> halfway between 0.6 and 0.3 (0.95 is ignored)
    # finding 1: positives 0.9, 0.8; negatives 0.2, 0.1 -> halfway between 0.8 and 0.2
    torch.testing.assert_close(thresholds, torch.tensor([0.45, 0.5], dtype=torch.float64))
    one_class = youden_thresholds(probabilities[:2], torch.tensor([[0, 1], [0, 1]]))
    assert one_class.tolist() == [0.5, 0.5]  # no positives (or no negatives): the default


def test_multilabel_metrics_per_finding_auroc_and_mean():
    logits = torch.tensor([[2.0, -1.0], [-1.0, 0.5], [1.0, 1.0], [-2.0, 2.0]])
    labels = torch.tensor([[1, 0], [0, -1], [1, 1], [0, 1]])
    metrics = multilabel_metrics(logits, labels, ["a", "b"])
    assert metrics["per_finding"]["a"]["auroc"] == 1.0 and metrics["per_finding"]["b"]["auroc"] == 1.0
    assert metrics["per_finding"]["b"]["positives"] == 2 and metrics["per_finding"]["b"]["negatives"] == 1
    assert metrics["mean_auroc"] == metrics["auroc"] == 1.0 and metrics["count"] == 4
    assert metrics["accuracy"] == 1.0 and len(metrics["thresholds"]) == 2
    flipped = multilabel_metrics(-logits, labels, ["a", "b"])
    assert flipped["mean_auroc"] == 0.0
    assert format_metrics(metrics).startswith("mean auroc 1.000 (a 1.000, b 1.000)")
    assert math.isnan(multilabel_metrics(logits[:1], labels[:1])["mean_auroc"])  # one class only
    assert resolve_monitor("auroc", True) == "mean_auroc" and resolve_monitor("mean_auroc", False) == "auroc"


class Tagged(Dataset):
    """``(image, target, mask, index)``: 8 random 32x32 images, 2 findings, one label ignored."""

    findings = ["a", "b"]

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(8, 3, 32, 32, generator=generator)
        self.targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 4)
        self.masks = torch.ones(8, 2)
        self.masks[0, 1] = 0

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i], self.masks[i], torch.tensor(i)


def test_one_epoch_on_a_multilabel_loader():
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=2).train()
    loader = DataLoader(Tagged(), batch_size=4)
    criterion = build_criterion(argparse.Namespace(pos_weight="auto"), 2, torch.tensor([[4, 3], [4, 4]]), torch.device("cpu"))
    options = argparse.Namespace(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.0)
    metrics = train_one_epoch(model, loader, criterion, build_optimizer(options, model), device=torch.device("cpu"))
    assert metrics["count"] == 8 and math.isfinite(metrics["loss"])
    assert set(metrics["per_finding"]) == {"a", "b"} and metrics["per_finding"]["b"]["negatives"] == 3
    val = evaluate(model, loader, criterion, device=torch.device("cpu"), context=CPU)
    assert len(val["thresholds"]) == 2 and math.isfinite(val["loss"]) and 0 <= val["mean_auroc"] <= 1


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    write_multilabel_folder(root, {"train": 8, "val": 8}, size=32, seed=0, progress=False)
    return root


def test_load_data_detects_a_multilabel_csv_and_applies_the_policies(data):
    cfg = resolve_config(argparse.Namespace(data=str(data), image_size=32, batch_size=4, findings="nodule,opacity"))
    loaded = load_data(cfg, CPU)
    assert cfg.multilabel is True and cfg.monitor == "mean_auroc"
    assert loaded.class_names == ["nodule", "opacity"] and loaded.origin == str(data / "train.csv")
    assert len(loaded.train_set) == 8 and len(loaded.val_set) == 8  # val.csv, not a split
    images, target, mask, index = next(iter(loaded.train_loader))
    assert images.shape[1:] == (3, 32, 32) and target.shape == mask.shape == (4, 2)
    assert loaded.count_text() == "positives 4 nodule, 4 opacity"
    assert loaded.checkpoint_metadata()["task"] == "multilabel"
    with pytest.raises(ValueError, match="--num-classes 1: a multi-label head has one output per finding"):
        load_data(resolve_config(argparse.Namespace(data=str(data), num_classes=1)), CPU)
    with pytest.raises(ValueError, match="--uncertain: unknown policy"):
        load_data(resolve_config(argparse.Namespace(data=str(data), uncertain="drop")), CPU)


@pytest.mark.slow
def test_train_writes_a_multilabel_checkpoint_with_findings_and_thresholds(data, tmp_path):
    out = tmp_path / "run"
    assert cli.main([
        "train", "--data", str(data), "--out", str(out), "--epochs", "1", "--weights", "none",
        "--image-size", "32", "--batch-size", "4", "--no-progress", "--pos-weight", "auto",
        "--uncertain", "ignore,effusion=positive",
    ]) == 0
    state = load_checkpoint(out / "best.pt")
    assert state["task"] == "multilabel" and state["findings"] == ["opacity", "nodule", "effusion"]
    assert state["num_classes"] == 3 and state["class_names"] == state["findings"]
    assert len(state["thresholds"]) == 3 and all(0 <= t <= 1 for t in state["thresholds"])
    assert state["label_policy"]["effusion"] == {"uncertain": "positive", "blank": "negative"}
    assert state["monitor"] == "mean_auroc" and state["state_dict"]["fc.weight"].shape[0] == 3
    assert set(state["metrics"]["val"]["per_finding"]) == {"opacity", "nodule", "effusion"}
