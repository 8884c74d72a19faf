"""Training data: samples checked before anything trains, and the batch sampler."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import Sampler

from ..data.datasets import Sample, load_split, split_samples, verify_images

__all__ = ["BalancedBatchSampler"]


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

