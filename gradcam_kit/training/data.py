"""Training data: samples checked before anything trains, transforms, samplers and loaders."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from ..data.datasets import ImageDataset, Sample, load_split, split_samples, verify_images
from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD, build_transform
from .distributed import DistributedContext, ShardSampler

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
    """What :func:`load_data` prepares."""

    train_set: ImageDataset
    val_set: ImageDataset
    class_names: list[str]
    origin: str  # where the training images came from, for the log
    train_sampler: DistributedSampler  # ``set_epoch`` it before every epoch
    train_loader: DataLoader
    val_loader: DataLoader
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


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


def load_data(cfg: argparse.Namespace, context: DistributedContext) -> TrainingData:
    """Checked samples, transforms (with augmentation for training), samplers and loaders.

    Training batches come from a ``DistributedSampler`` (shuffled, one shard per process)
    cut by :class:`BalancedBatchSampler`; validation reads each process's
    :class:`ShardSampler` shard in order.

    Raises:
        ValueError: a single class, an empty class, an unreadable image, bad mean/std.
        FileNotFoundError: missing data folder or CSV.
    """
    train_samples, val_samples, class_names, origin = _datasets(cfg)
    size = (cfg.image_size, cfg.image_size)
    mean, std = _floats(cfg.mean, IMAGENET_MEAN), _floats(cfg.std, IMAGENET_STD)
    train_transform = build_transform(size, mean=mean, std=std, augment=_augmentation(cfg))
    train_set = ImageDataset(train_samples, class_names, train_transform, return_index=True)
    val_set = ImageDataset(val_samples, class_names, build_transform(size, mean=mean, std=std), return_index=True)
    train_sampler = DistributedSampler(
        train_set, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=cfg.seed
    )
    device = context.device
    options = {"num_workers": cfg.workers, "pin_memory": device.type == "cuda", "persistent_workers": cfg.workers > 0}
    train_loader = DataLoader(train_set, batch_sampler=BalancedBatchSampler(train_sampler, cfg.batch_size), **options)
    val_sampler = ShardSampler(len(val_set), context.rank, context.world_size)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, sampler=val_sampler, **options)
    return TrainingData(
        train_set, val_set, class_names, origin, train_sampler, train_loader, val_loader, size, mean, std
    )
