"""Interleaved timing of the contenders."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from .contenders import BY_NAME, Run


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def time_contenders(
    runs: dict[str, Run],
    x: Any,
    device: Any,
    *,
    warmup: int,
    repeats: int,
    slow: Sequence[str] = (),
) -> dict[str, list[float]]:
    """Times ``runs`` interleaved: one call of each per round, the order rotated per round.

    Contenders in ``slow`` get at most one warm-up call and three timed calls; a
    contender's ``min_warmup`` raises its warm-up.
    """
    from tqdm.auto import tqdm

    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in tqdm(names, desc=f"warm-up B={x.shape[0]}", leave=False):
        calls = min(warmup, 1) if name in slow else max(warmup, BY_NAME[name].min_warmup)
        for _ in range(calls):
            runs[name](x)
        _sync(device)
    for round_index in tqdm(range(repeats), desc=f"timing B={x.shape[0]}", leave=False):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if name in slow and len(times[name]) >= 3:
                continue
            _sync(device)
            start = time.perf_counter()
            output = runs[name](x)
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
            del output
    return times


