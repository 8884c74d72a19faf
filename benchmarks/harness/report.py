"""The performance targets, the environment of a run, its tables and its figure."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
from pathlib import Path
from typing import Any

from .models import _import_project


def evaluate_targets(results: list[dict[str, Any]], device_type: str) -> list[dict[str, Any]]:
    """Checks the performance targets on this run's figures (``met`` is None if not run)."""
    table = {(r["contender"], r["batch_size"]): r for r in results}

    def value(name: str, batch: int, key: str) -> float | None:
        record = table.get((name, batch))
        return None if record is None else record.get(key)

    def speedup(slow: str, fast: str, batch: int) -> float | None:
        a, b = value(slow, batch, "median_ms"), value(fast, batch, "median_ms")
        return None if a is None or b is None else a / b

    def memory_gain(big: str, small: str, batch: int) -> float | None:
        a, b = value(big, batch, "memory_mb"), value(small, batch, "memory_mb")
        return None if a is None or not b else a / b

    if device_type == "cuda":
        batch = 64
        checks = [
            ("ours time / plain time", value("ours", batch, "ratio"), "<=", 1.05),
            ("ours memory / plain memory", value("ours", batch, "memory_ratio"), "<=", 1.10),
            ("ours-bf16 time / plain (fp32) time", value("ours-bf16", batch, "ratio"), "<=", 1.0),
            ("pytorch-grad-cam time / ours time", speedup("pytorch-grad-cam", "ours", batch), ">=", 8.0),
            ("torchcam time / ours time", speedup("torchcam", "ours", batch), ">", 1.0),
            ("torchcam memory / ours memory", memory_gain("torchcam", "ours", batch), ">=", 5.0),
            ("ours-layers time / plain time", value("ours-layers", batch, "ratio"), "<=", 1.15),
            ("ours-gradcam++ time / plain time", value("ours-gradcam++", batch, "ratio"), "<=", 1.15),
        ]
    else:
        batch = 8
        checks = [
            ("ours time / plain time", value("ours", batch, "ratio"), "<=", 1.15),
            ("pytorch-grad-cam time / ours time", speedup("pytorch-grad-cam", "ours", batch), ">=", 2.5),
        ]
    compare = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, ">": lambda a, b: a > b}
    return [
        {
            "target": name, "batch_size": batch, "value": measured, "op": op, "limit": limit,
            "met": None if measured is None else bool(compare[op](measured, limit)),
        }
        for name, measured, op, limit in checks
    ]


def environment(args: argparse.Namespace, device: Any) -> dict[str, Any]:
    """Device, versions, date and the exact command of this run."""
    from importlib import metadata

    import torch

    versions = {}
    for dist in ("torch", "torchvision", "gradcam-kit", "grad-cam", "captum", "torchcam", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    _import_project()
    import gradcam_kit

    versions["gradcam_kit (checkout)"] = gradcam_kit.__version__
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", *sys.argv]),
        "device": device.type,
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "size": args.size,
        "batch_sizes": args.batch_sizes,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": args.seed,
        "compile": {"backend": args.compile_backend, "mode": args.compile_mode}
        if args.compile else None,
        "memory": (
            "CUDA max_memory_allocated above the allocation before the call"
            if device.type == "cuda"
            else "peak RSS (VmHWM, reset before the first call) of a fresh process per "
            f"contender above its RSS before the first call, over {args.memory_calls} calls"
        ),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def format_table(report: dict[str, Any]) -> str:
    """The results as a Markdown table (also printed)."""
    header = (
        "| B | contender | median ms | IQR ms | img/s | x plain | x matched | "
        "peak extra MB | mem x plain | max abs diff vs ours | status |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in report["results"]:
        iqr = None if r["q1_ms"] is None else f"{r['q1_ms']:.1f}-{r['q3_ms']:.1f}"
        lines.append(
            f"| {r['batch_size']} | {r['contender']} | {_fmt(r['median_ms'], '.1f')} | "
            f"{iqr or '-'} | {_fmt(r['images_per_s'], '.1f')} | {_fmt(r['ratio'], '.2f', 'x')} | "
            f"{_fmt(r['ratio_matched'], '.2f', 'x')} | {_fmt(r['memory_mb'], '.0f')} | "
            f"{_fmt(r['memory_ratio'], '.2f', 'x')} | {_fmt(r['max_abs_diff'], '.1e')} | "
            f"{r['status']} |"
        )
    return "\n".join(lines)


def format_targets(report: dict[str, Any]) -> str:
    """The targets as a Markdown table."""
    lines = ["| target (B) | measured | limit | met |", "|---|---|---|---|"]
    for t in report["targets"]:
        met = {None: "not run", True: "yes", False: "NO"}[t["met"]]
        lines.append(
            f"| {t['target']} (B={t['batch_size']}) | {_fmt(t['value'], '.2f')} | "
            f"{t['op']} {t['limit']} | {met} |"
        )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Time per batch and peak extra memory per contender, one column per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = report["meta"]["batch_sizes"]
    rows = [r for r in report["results"] if r["median_ms"] is not None]
    names = list(dict.fromkeys(r["contender"] for r in rows))
    fig, axes = plt.subplots(
        2, len(batches), figsize=(4.6 * len(batches) + 1.5, 0.42 * len(names) * 2 + 2.2),
        squeeze=False,
    )
    colors = {
        name: ("#7f7f7f" if name.startswith("plain") else
               "#d62728" if name.startswith("ours") else "#1f77b4")
        for name in names
    }
    for col, batch in enumerate(batches):
        by_name = {r["contender"]: r for r in rows if r["batch_size"] == batch}
        for row, (key, ratio_key, label) in enumerate(
            [("median_ms", "ratio", "ms per batch"), ("memory_mb", "memory_ratio", "peak extra MB")]
        ):
            ax = axes[row][col]
            records = [by_name.get(n) for n in names]
            values = [r.get(key) if r else None for r in records]
            ax.barh(range(len(names)), [v or 0 for v in values],
                    color=[colors[n] for n in names])
            ends = list(values)
            if row == 0:
                errors = [
                    (r["median_ms"] - r["q1_ms"], r["q3_ms"] - r["median_ms"]) if r else (0, 0)
                    for r in records
                ]
                ax.errorbar([v or 0 for v in values], range(len(names)),
                            xerr=list(zip(*errors)), fmt="none", ecolor="black", capsize=2)
                ends = [r["q3_ms"] if r else None for r in records]
            top = max([v for v in ends if v] or [1])
            if not any(values):
                ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center",
                        color="#7f7f7f")
            for i, record in enumerate(records):
                ratio = record.get(ratio_key) if record else None
                if values[i] is not None and ratio is not None:
                    ax.text(ends[i] + top * 0.02, i, f"{ratio:.2f}x", va="center", fontsize=8)
            ax.set_xlim(0, top * 1.25)
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names if col == 0 else [], fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel(label)
            ax.set_title(f"B={batch}: {'time' if row == 0 else 'memory'} (ratio to plain)",
                         fontsize=9)
            ax.grid(axis="x", alpha=0.3)
    meta = report["meta"]
    fig.suptitle(
        f"Grad-CAM on ResNet50, {meta['size']}x{meta['size']}, {meta['device_name']} "
        f"({meta['torch_threads']} threads), torch {meta['versions']['torch']}, {meta['date_utc']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


