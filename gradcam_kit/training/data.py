"""Training data: samples checked before anything trains, transforms, samplers and loaders.

Two kinds of data: one label per image (an ImageFolder tree or a ``path,label`` CSV,
:mod:`gradcam_kit.data.datasets`), or several findings per image (a multi-label CSV,
:mod:`gradcam_kit.data.multilabel`), which :func:`load_data` detects (``--multilabel``
forces either way) and reads with the ``--uncertain`` and ``--blank`` policies.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from ..data.datasets import ImageDataset, Sample, load_split, split_samples, verify_images
from ..data.multilabel import (
    LabelPolicy,
    MultiLabelDataset,
    MultiLabelSample,
    is_multilabel_csv,
    parse_policy,
    read_multilabel_csv,
)
from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD, build_transform
from .distributed import DistributedContext, ShardSampler
from .loop import resolve_monitor

__all__ = ["BalancedBatchSampler", "TrainingData", "load_data"]


def _floats(text: object, default: Sequence[float]) -> tuple[float, ...]:
    if text is None:
        return tuple(default)
    values = text if isinstance(text, (list, tuple)) else str(text).split(",")
    parsed = tuple(float(v) for v in values)
    if len(parsed) not in (1, 3):
        raise ValueError(f"mean/std need 1 or 3 numbers, got {text!r}")
    return parsed * 3 if len(parsed) == 1 else parsed


def _datasets(cfg: argparse.Namespace) -> tuple[list[Sample], list[Sample], list[str], str]:
    """Train and val samples; every check that can fail runs here, before training."""
    data = Path(cfg.data)
    if data.suffix.lower() == ".csv" or not (data / "train").is_dir():
        train, names = load_split(data)
        origin = str(data)
    else:
        train, names = load_split(data, "train")
        origin = str(data / "train")
    if len(names) < 2:
        raise ValueError(
            f"{origin} holds a single class {names}; a classifier needs at least two classes "
            "(one folder per class, e.g. normal/ and lesion/)"
        )
    counts = torch.bincount(torch.tensor([s.label for s in train]), minlength=len(names))
    empty = [names[i] for i in range(len(names)) if counts[i] == 0]
    if empty:
        raise ValueError(f"class(es) {empty} have no training images in {origin}")
    if cfg.val_data:
        val, _ = load_split(cfg.val_data, class_names=names)
    elif data.suffix.lower() != ".csv" and (data / "val").is_dir():
        val, _ = load_split(data, "val", class_names=names)
    else:
        train, val = split_samples(train, cfg.val_fraction, seed=cfg.seed)
    verify_images(train + val)
    return train, val, names, origin


class BalancedBatchSampler(Sampler[list[int]]):
    """Cuts the sampler's order into ``ceil(n / batch_size)`` batches of near-equal size.

    Every sample is used once per epoch and no batch holds a single image (BatchNorm in
    train mode needs two), unless the whole shard is one image.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        for chunk in order.tensor_split(len(self)):
            yield chunk.tolist()

    def __len__(self) -> int:
        return max(1, math.ceil(len(self.sampler) / self.batch_size))



@dataclass
class TrainingData:
    """What :func:`load_data` prepares (``policy`` is ``None`` for single-label data)."""

    train_set: ImageDataset | MultiLabelDataset
    val_set: ImageDataset | MultiLabelDataset
    class_names: list[str]  # the findings, for multi-label data
    origin: str  # where the training images came from, for the log
    train_sampler: DistributedSampler  # ``set_epoch`` it before every epoch
    train_loader: DataLoader
    val_loader: DataLoader
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    policy: LabelPolicy | None = None

    def count_text(self) -> str:
        """The training labels for the log: ``"200 normal, 200 opacity"`` or, multi-label,
        ``"positives 120 opacity, 118 nodule"``."""
        counts = self.train_set.class_counts()
        if counts.ndim == 2:
            return "positives " + ", ".join(f"{n} {name}" for name, n in zip(self.class_names, counts[1].tolist()))
        return ", ".join(f"{n} {name}" for name, n in zip(self.class_names, counts.tolist()))

    def checkpoint_metadata(self) -> dict[str, object]:
        """What a multi-label checkpoint stores besides ``class_names``: ``task``, ``findings``
        and the label policy; ``{}`` for single-label data."""
        if self.policy is None:
            return {}
        return {"task": "multilabel", "findings": list(self.class_names), "label_policy": self.policy.describe(self.class_names)}


def _augmentation(cfg: argparse.Namespace) -> list:
    if not cfg.augment:
        return []
    from torchvision.transforms import v2

    return [
        v2.RandomAffine(
            degrees=5,
            translate=(cfg.augment_translate, cfg.augment_translate),
            scale=(1 - cfg.augment_scale, 1 + cfg.augment_scale),
        ),
        v2.ColorJitter(brightness=0.15, contrast=0.15),
    ]


def dicom_window(cfg: argparse.Namespace) -> tuple[float, float] | None:
    """``--dicom-window CENTER,WIDTH`` as two floats, or ``None`` (each file's own window).

    Raises:
        ValueError: not two numbers, or a width below 1.
    """
    from ..data.dicom import check_window

    text = getattr(cfg, "dicom_window", None)
    if not text:
        return None
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"--dicom-window takes CENTER,WIDTH (e.g. 40,400), got {text!r}") from None
    return check_window(values)


def load_data(cfg: argparse.Namespace, context: DistributedContext) -> TrainingData:
    """Checked samples, transforms (with augmentation for training), samplers and loaders.

    Settles the task first: ``cfg.multilabel`` becomes ``True`` or ``False`` (detected
    unless given, see :func:`is_multilabel`) and ``cfg.monitor`` the metric of that head
    (:func:`~gradcam_kit.training.loop.resolve_monitor`).

    Training batches come from a ``DistributedSampler`` (shuffled, one shard per process)
    cut by :class:`BalancedBatchSampler`; validation reads each process's
    :class:`ShardSampler` shard in order.

    Raises:
        ValueError: a single class, an empty class, an unreadable image, bad mean/std.
        FileNotFoundError: missing data folder or CSV.
    """
    cfg.multilabel = is_multilabel(cfg)
    cfg.monitor = resolve_monitor(cfg.monitor, cfg.multilabel)
    size = (cfg.image_size, cfg.image_size)
    mean, std = _floats(cfg.mean, IMAGENET_MEAN), _floats(cfg.std, IMAGENET_STD)
    train_transform = build_transform(size, mean=mean, std=std, augment=_augmentation(cfg))
    val_transform = build_transform(size, mean=mean, std=std)
    window = dicom_window(cfg)
    policy = None
    if cfg.multilabel:
        train_set, val_set, origin = _multilabel_sets(cfg, train_transform, val_transform)
        class_names, policy = train_set.findings, train_set.policy
    else:
        train_samples, val_samples, class_names, origin = _datasets(cfg)
        train_set = ImageDataset(train_samples, class_names, train_transform, return_index=True, dicom_window=window)
        val_set = ImageDataset(val_samples, class_names, val_transform, return_index=True, dicom_window=window)
    train_sampler = DistributedSampler(
        train_set, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=cfg.seed
    )
    device = context.device
    options = {"num_workers": cfg.workers, "pin_memory": device.type == "cuda", "persistent_workers": cfg.workers > 0}
    train_loader = DataLoader(train_set, batch_sampler=BalancedBatchSampler(train_sampler, cfg.batch_size), **options)
    val_sampler = ShardSampler(len(val_set), context.rank, context.world_size)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, sampler=val_sampler, **options)
    return TrainingData(
        train_set, val_set, class_names, origin, train_sampler, train_loader, val_loader, size, mean, std, policy
    )


def _multilabel_csv(data: Path, split: str) -> Path:
    return data if data.suffix.lower() == ".csv" else data / f"{split}.csv"


def is_multilabel(cfg: argparse.Namespace) -> bool:
    """``--multilabel`` if given, else whether ``--data`` (a CSV, or a root's ``train.csv``) is a
    multi-label CSV (:func:`gradcam_kit.data.multilabel.is_multilabel_csv`)."""
    if cfg.multilabel is not None:
        return bool(cfg.multilabel)
    return is_multilabel_csv(_multilabel_csv(Path(cfg.data), "train"))


def _names(value: object) -> list[str] | None:
    if value is None:
        return None
    names = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(n).strip() for n in names if str(n).strip()]


def _split_rows(samples: list[MultiLabelSample], val_fraction: float, seed: int) -> tuple[list, list]:
    """A seeded random train/val split of multi-label rows (at least one in each part)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(max(1, round(val_fraction * len(samples))), len(samples) - 1)
    return [samples[i] for i in sorted(order[n_val:])], [samples[i] for i in sorted(order[:n_val])]


def _multilabel_sets(cfg: argparse.Namespace, train_transform, val_transform) -> tuple[MultiLabelDataset, MultiLabelDataset, str]:
    """The train and val sets of a multi-label CSV, checked before anything trains.

    Raises:
        FileNotFoundError: no CSV. ValueError: see :func:`~gradcam_kit.data.multilabel.read_multilabel_csv`,
            a bad policy, ``--num-classes`` other than the number of findings, or a finding
            without positive or negative training labels.
    """
    data = Path(cfg.data)
    source = _multilabel_csv(data, "train")
    train = read_multilabel_csv(source, findings=_names(cfg.findings), images=cfg.images)
    findings = train.findings
    if cfg.val_data:
        val = read_multilabel_csv(cfg.val_data, findings=findings, images=cfg.images).samples
        train_rows = train.samples
    elif data.suffix.lower() != ".csv" and (data / "val.csv").is_file():
        val = read_multilabel_csv(data / "val.csv", findings=findings, images=cfg.images).samples
        train_rows = train.samples
    else:
        train_rows, val = _split_rows(train.samples, cfg.val_fraction, cfg.seed)
    if cfg.num_classes not in (None, len(findings)):
        raise ValueError(f"--num-classes {cfg.num_classes}: a multi-label head has one output per finding, {len(findings)} here {findings}")
    policy = LabelPolicy(
        parse_policy(cfg.uncertain, findings, default="ignore", what="--uncertain"),
        parse_policy(cfg.blank, findings, default="negative", what="--blank"),
    )
    verify_images([Sample(s.path, 0) for s in train_rows + val])
    train_set = MultiLabelDataset(train_rows, findings, policy, train_transform, return_index=True, dicom_window=dicom_window(cfg))
    counts = train_set.class_counts()
    lacking = [f for f, neg, pos in zip(findings, *counts.tolist()) if neg == 0 or pos == 0]
    if lacking:
        raise ValueError(
            f"finding(s) {lacking} have no positive or no negative training labels in {source} after the "
            "--uncertain/--blank policies; leave them out with --findings or change the policies"
        )
    val_set = MultiLabelDataset(val, findings, policy, val_transform, return_index=True, dicom_window=dicom_window(cfg))
    return train_set, val_set, str(source)
