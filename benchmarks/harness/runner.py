"""One benchmark run: every selected contender at every batch size."""

from __future__ import annotations

import argparse
import gc
import statistics
from dataclasses import dataclass, field
from typing import Any

from .contenders import BY_NAME, Contender, Run, _select
from .memory import cpu_peak_memory_mb, cuda_peak_memory_mb
from .models import Setup, Unavailable, build_setup, make_input
from .report import _loadavg, environment, evaluate_targets
from .timing import _quartiles, time_contenders


@dataclass
class Result:
    """What the harness reports for one contender at one batch size."""

    contender: str
    batch_size: int
    status: str = "ok"  # "ok", "not installed: ...", "skipped: ...", "error: ..."
    description: str = ""
    baseline: str = "plain"
    times_ms: list[float] = field(default_factory=list)
    median_ms: float | None = None
    q1_ms: float | None = None
    q3_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    images_per_s: float | None = None
    ms_per_image: float | None = None
    ratio: float | None = None  # median / plain's median
    ratio_matched: float | None = None  # median / its baseline's median
    memory_mb: float | None = None  # peak above the resident set before the call
    memory_ratio: float | None = None  # memory_mb / plain's memory_mb
    memory_note: str | None = None
    max_abs_diff: float | None = None  # heatmap vs ours (fp32), where it should agree
    heatmap_min: float | None = None
    heatmap_max: float | None = None
    heatmap_mean: float | None = None



def _heatmap_of(output: tuple[Any, Any]) -> Any:
    heatmap = output[1]
    return heatmap if heatmap is not None and not isinstance(heatmap, dict) else None


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every selected contender at every batch size and returns the JSON report.

    Args:
        args: the parsed flags of :func:`benchmarks.harness.cli.build_parser`, with the
            device defaults filled in.

    Returns:
        ``{"meta": environment, "results": [one Result per contender and batch size],
        "targets": [...]}``.
    """
    import torch

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {name for name in ("compile", "scorecam") if getattr(args, name)}
    contenders = _select(args.contenders, device, options)
    report: dict[str, Any] = {"meta": environment(args, device), "results": []}
    load_start = _loadavg()

    for batch_size in args.batch_sizes:
        results = run_batch(args, contenders, device, batch_size)
        report["results"].extend(vars(r) for r in results.values())

    report["meta"]["loadavg_start"] = load_start
    report["meta"]["loadavg_end"] = _loadavg()
    report["targets"] = evaluate_targets(report["results"], device.type)
    return report


def run_batch(
    args: argparse.Namespace, contenders: list[Contender], device: Any, batch_size: int
) -> dict[str, Result]:
    """Builds, checks, times and measures every contender at one batch size.

    Args:
        args: the parsed flags (see :func:`run_benchmark`).
        contenders: the selected contenders, ``plain`` among them.
        device: the ``torch.device`` to run on.
        batch_size: images per call.

    Returns:
        One :class:`Result` per contender, by name, with the ratios filled in.
    """
    import torch

    setup = build_setup(
        args.device, args.size, args.seed, compile_mode=args.compile_mode,
        compile_backend=args.compile_backend, scorecam_chunk=args.scorecam_chunk,
    )
    x = make_input(batch_size, args.size, device, args.seed)
    results = {c.name: Result(c.name, batch_size, description=c.description,
                              baseline=c.baseline) for c in contenders}
    runs = _build_runs(contenders, setup, results, args.scorecam_max_batch)
    _record_heatmaps(runs, x, results)  # this is also the first warm-up call

    slow = [name for name in runs if name == "ours-scorecam"]
    times = time_contenders(
        runs, x, device, warmup=max(args.warmup - 1, 0), repeats=args.repeats, slow=slow
    )
    _record_times(times, results)
    if args.memory:
        _record_memory(runs, x, device, args, results)
    del runs, setup, x
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    _record_ratios(results)
    return results


def _build_runs(
    contenders: list[Contender], setup: Setup, results: dict[str, Result], scorecam_max_batch: int
) -> dict[str, Run]:
    """Builds the contenders that can run here; the others get their reason as status."""
    runs: dict[str, Run] = {}
    for contender in contenders:
        result = results[contender.name]
        if contender.cuda_only and setup.device.type != "cuda":
            result.status = "skipped: CUDA only"
            continue
        if contender.option == "scorecam" and result.batch_size > scorecam_max_batch:
            result.status = f"skipped: B > --scorecam-max-batch {scorecam_max_batch}"
            continue
        try:
            runs[contender.name] = contender.build(setup)
        except Unavailable as error:
            result.status = str(error)
        except Exception as error:  # a broken contender must not stop the others
            result.status = f"error: {type(error).__name__}: {error}"
    return runs


def _record_heatmaps(runs: dict[str, Run], x: Any, results: dict[str, Result]) -> None:
    """Calls each run once: heatmap statistics, and the difference from ours where it applies.

    A run that raises is reported as an error and removed from ``runs``.
    """
    outputs = {}
    for name, run in list(runs.items()):
        try:
            outputs[name] = _heatmap_of(run(x))
        except Exception as error:
            results[name].status = f"error: {type(error).__name__}: {error}"
            del runs[name]
    reference = outputs.get("ours")
    for name, heatmap in outputs.items():
        result = results[name]
        if heatmap is None:
            continue
        heatmap = heatmap.float()
        result.heatmap_min = float(heatmap.min())
        result.heatmap_max = float(heatmap.max())
        result.heatmap_mean = float(heatmap.mean())
        if BY_NAME[name].compare and reference is not None and name != "ours":
            result.max_abs_diff = float((heatmap - reference).abs().max())


def _record_times(times: dict[str, list[float]], results: dict[str, Result]) -> None:
    """The timing statistics of each contender from its per-call times in ms."""
    for name, values in times.items():
        result = results[name]
        result.times_ms = [round(v, 4) for v in values]
        result.median_ms = statistics.median(values)
        result.q1_ms, result.q3_ms = _quartiles(values)
        result.min_ms, result.max_ms = min(values), max(values)
        result.images_per_s = result.batch_size / (result.median_ms / 1e3)
        result.ms_per_image = result.median_ms / result.batch_size


def _record_memory(
    runs: dict[str, Run],
    x: Any,
    device: Any,
    args: argparse.Namespace,
    results: dict[str, Result],
) -> None:
    """Peak extra memory of each run: in this process on CUDA, a fresh one on the CPU."""
    for name, run in runs.items():
        result = results[name]
        if device.type == "cuda":
            result.memory_mb = cuda_peak_memory_mb(run, x, device)
        else:
            record = cpu_peak_memory_mb(name, result.batch_size, args)
            if "error" in record:
                result.memory_note = record["error"]
            else:
                result.memory_mb = record["memory_mb"]


def _record_ratios(results: dict[str, Result]) -> None:
    """Time and memory ratios to ``plain`` and to each contender's matched baseline."""
    plain = results["plain"]
    for result in results.values():
        if result.median_ms is None:
            continue
        result.ratio = result.median_ms / plain.median_ms
        matched = results.get(result.baseline)
        if matched is not None and matched.median_ms is not None:
            result.ratio_matched = result.median_ms / matched.median_ms
        if result.memory_mb is not None and plain.memory_mb:
            result.memory_ratio = result.memory_mb / plain.memory_mb
