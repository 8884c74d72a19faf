"""End to end: ``explain`` and ``evaluate`` over a folder of X-rays, against plain inference.

What a user waits for is the whole job (decode, resize, forward, map, colour, compose, PNG
encode, report), not the Grad-CAM call. This harness writes N synthetic X-rays
(``python -m gradcam_kit synth``) as 8-bit PNG and as 16-bit PNG, a checkpoint of
``ResNet50FineTuned`` (seeded random weights: the work does not depend on the values), and
times, interleaved in one run (one call of each per round, the order rotated):

``plain``
    the reference: plain batched inference of the same model on the same files with the
    same decoding (``ExplainDataset`` in the same DataLoader set-up as explain: workers,
    batch size, pinned memory, ``channels_last``), softmax and argmax back on the host;
``explain``
    ``gradcam-kit explain DIR --checkpoint ... --profile``, in this process (start-up is
    measured apart: ``--startup``), its time split by stage from its own ``--profile``;
``evaluate``
    ``gradcam-kit evaluate`` with its defaults (maps at five layers per image).

Every job includes building the model from the checkpoint and scanning the folder. The
ratio ``x plain`` is images/s over plain's images/s of the same format in the same run.

    python benchmarks/bench_e2e.py                        # CPU: 128 images; CUDA: 512
    python benchmarks/bench_e2e.py --device cuda --images 512 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

DEFAULT_OUT_DIR = ROOT / "outputs" / "benchmarks"
JOBS = ("plain", "explain", "evaluate")
FORMATS = ("png", "png16")
PROFILE_LINE = re.compile(r"^\s{2}(\S.*?)\s{2,}(-?[\d.]+)(?:\s+(-?[\d.]+))?")


# -- data -------------------------------------------------------------------------------
def write_data(work: Path, images: int, file_size: int, formats: Sequence[str]) -> dict[str, Path]:
    """The synthetic test split as ImageFolder trees, one per format; returns format -> root."""
    from gradcam_kit import cli

    root8 = work / "png"
    with contextlib.redirect_stdout(io.StringIO()):
        cli.main(["synth", "--out", str(root8), "--size", str(file_size), "--train", "0",
                  "--val", "0", "--test", str(images), "--quiet"])
    roots = {"png": root8}
    if "png16" in formats:
        roots["png16"] = _to_16_bit(root8, work / "png16")
    return {f: roots[f] for f in formats}


def _to_16_bit(source: Path, target: Path) -> Path:
    """The same tree with every image as a 16-bit grayscale PNG (values x 257); masks copied."""
    import numpy as np
    from PIL import Image

    for path in sorted(source.rglob("*")):
        out = target / path.relative_to(source)
        if path.is_dir():
            out.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".png" and not path.stem.endswith("_mask"):
            values = np.asarray(Image.open(path).convert("L"), dtype=np.uint16) * 257
            Image.fromarray(values).save(out)  # uint16 -> mode I;16
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)
    return target


def write_checkpoint(path: Path, size: int, seed: int) -> Path:
    import torch

    from gradcam_kit.data.synthetic import CLASS_NAMES
    from gradcam_kit.models.checkpoint import save_checkpoint
    from resnet50 import ResNet50FineTuned

    torch.manual_seed(seed)
    model = ResNet50FineTuned(len(CLASS_NAMES), weights=None)
    return save_checkpoint(path, model, num_classes=len(CLASS_NAMES), class_names=list(CLASS_NAMES),
                           input_size=size, target_layer="layer4.2.conv3")


# -- the three jobs ---------------------------------------------------------------------
def run_plain(root: Path, checkpoint: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Plain batched inference on the files, decoded exactly as explain decodes them."""
    import math

    import torch
    from torch.utils.data import DataLoader

    from gradcam_kit.data.inputs import (
        ExplainDataset,
        collate_explain,
        collect_inputs,
        normalize_batch,
    )
    from gradcam_kit.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
    from resnet50 import ResNet50FineTuned

    device = torch.device(args.device)
    stages = dict.fromkeys(("wait for data", "to device", "model", "to host"), 0.0)
    start = time.perf_counter()
    items = collect_inputs(root).items
    model = ResNet50FineTuned.from_checkpoint(checkpoint).eval().to(device)
    model.to(memory_format=torch.channels_last)
    workers = min(4, os.cpu_count() or 1) if args.workers is None else args.workers
    workers = min(workers, max(1, math.ceil(len(items) / args.batch_size)))
    loader = DataLoader(
        ExplainDataset(items, (args.size, args.size)), batch_size=args.batch_size,
        num_workers=workers, collate_fn=collate_explain, pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    predictions, decode_s, clock = [], 0.0, time.perf_counter()
    setup = clock - start

    def lap(stage: str, since: float) -> float:
        now = time.perf_counter()
        stages[stage] += now - since
        return now

    for batch in loader:
        clock = lap("wait for data", clock)
        decode_s += batch["decode_s"]
        images = batch["image"].to(device, non_blocking=True)
        clock = lap("to device", clock)
        with torch.inference_mode():
            x = normalize_batch(images, IMAGENET_MEAN, IMAGENET_STD)
            probs = torch.softmax(model(x.contiguous(memory_format=torch.channels_last)), dim=1)
            top = torch.stack([probs.argmax(dim=1).float(), probs.amax(dim=1)], dim=1)
        clock = lap("model", clock)  # on CUDA the queued work is waited for below
        predictions.append(top.cpu())
        clock = lap("to host", clock)
    elapsed = time.perf_counter() - start
    images = sum(len(p) for p in predictions)
    return {"seconds": elapsed, "images": images, "stages_s": {"set-up": setup, **stages,
            "decode (summed in workers)": decode_s}}


def run_explain(root: Path, checkpoint: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from gradcam_kit import cli

    argv = ["explain", str(root), "--checkpoint", str(checkpoint), "--output", str(out),
            "--overwrite", "--batch-size", str(args.batch_size), "--device", args.device,
            "--profile", *args.explain_args]
    if args.workers is not None:
        argv += ["--num-workers", str(args.workers)]
    stderr = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        status = cli.main(argv)
    elapsed = time.perf_counter() - start
    if status:
        raise RuntimeError(f"explain exited with {status}: {stderr.getvalue()[-2000:]}")
    stages = parse_profile(stderr.getvalue())
    images = len((out / "predictions.csv").read_text().splitlines()) - 1
    return {"seconds": elapsed, "images": images, "stages_s": stages}


def run_evaluate(root: Path, checkpoint: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from gradcam_kit import cli

    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(root.parent),
            "--split", root.name, "--batch-size", str(args.batch_size), "--device", args.device,
            "--json", str(out / "evaluation.json"), "--overwrite", "--select-on", "none",
            "--no-progress"]
    if args.workers is not None:
        argv += ["--workers", str(args.workers)]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = cli.main(argv)
    elapsed = time.perf_counter() - start
    if status:
        raise RuntimeError(f"evaluate exited with {status}")
    result = json.loads((out / "evaluation.json").read_text())
    return {"seconds": elapsed, "images": int(result.get("images", args.images)), "stages_s": {}}


def parse_profile(text: str) -> dict[str, float]:
    """explain's ``--profile`` lines (``  stage  seconds  ms/image``) -> ``{stage: seconds}``."""
    stages: dict[str, float] = {}
    in_profile = False
    for line in text.splitlines():
        if line.startswith("profile ("):
            in_profile = True
            continue
        match = PROFILE_LINE.match(line) if in_profile else None
        if match:
            stages[match.group(1).strip()] = float(match.group(2))
    return stages


# -- timing -----------------------------------------------------------------------------
def measure(args: argparse.Namespace, roots: dict[str, Path], checkpoint: Path, work: Path) -> list[dict]:
    import torch

    runners = {
        "plain": lambda root, out: run_plain(root, checkpoint, args),
        "explain": lambda root, out: run_explain(root, checkpoint, out, args),
        "evaluate": lambda root, out: run_evaluate(root, checkpoint, out, args),
    }
    jobs = [(job, fmt) for fmt in roots for job in args.jobs]
    samples: dict[tuple[str, str], list[dict]] = {key: [] for key in jobs}
    for _ in range(args.warmup):  # one untimed pass: caches, allocator, lazy imports
        for job, fmt in jobs:
            runners[job](roots[fmt], work / f"out_{job}_{fmt}")
    for round_ in range(args.rounds):
        shift = round_ % len(jobs)
        for job, fmt in jobs[shift:] + jobs[:shift]:
            if torch.cuda.is_available() and args.device.startswith("cuda"):
                torch.cuda.synchronize()
            before = _cpu_seconds()
            sample = runners[job](roots[fmt], work / f"out_{job}_{fmt}")
            sample["cpu_s"] = _cpu_seconds() - before
            samples[(job, fmt)].append(sample)
            print(f"  round {round_ + 1}: {job:8s} {fmt:6s} {samples[(job, fmt)][-1]['seconds']:7.2f} s",
                  file=sys.stderr, flush=True)
    return summarise(samples)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (the decode workers).

    Unlike wall time it does not grow when other jobs share the cores, so on a loaded
    machine the ratio of CPU seconds per image is the steadier measure of extra work.
    """
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def summarise(samples: dict[tuple[str, str], list[dict]]) -> list[dict]:
    rows = []
    for (job, fmt), runs in samples.items():
        seconds = [r["seconds"] for r in runs]
        fastest = min(runs, key=lambda r: r["seconds"])
        images = fastest["images"]
        rows.append({
            "job": job, "format": fmt, "images": images, "seconds": seconds,
            "median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "images_per_s": images / statistics.median(seconds),
            "best_images_per_s": images / min(seconds),
            "cpu_ms_per_image": 1000 * statistics.median(r["cpu_s"] for r in runs) / images,
            "stages_s": fastest["stages_s"],  # of the fastest run: the least disturbed by load
        })
    for row in rows:
        plain = next((r for r in rows if r["job"] == "plain" and r["format"] == row["format"]), None)
        row["x_plain"] = row["images_per_s"] / plain["images_per_s"] if plain else None
        row["x_plain_best"] = row["best_images_per_s"] / plain["best_images_per_s"] if plain else None
        row["x_plain_cpu"] = plain["cpu_ms_per_image"] / row["cpu_ms_per_image"] if plain else None
    return rows


def measure_startup(repeats: int) -> dict[str, float]:
    """Median seconds of fresh interpreters running the help commands."""
    commands = {
        "gradcam-kit --help": [sys.executable, "-c",
                               "import sys; from gradcam_kit.cli.commands import main; sys.exit(main(['--help']))"],
        "python -m gradcam_kit explain --help": [sys.executable, "-m", "gradcam_kit", "explain", "--help"],
        "python -c 'import torch' (floor of any real command)": [sys.executable, "-c", "import torch"],
    }
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    timings: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):  # interleaved
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
            timings[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in timings.items()}


# -- report -----------------------------------------------------------------------------
def environment(args: argparse.Namespace) -> dict[str, Any]:
    import PIL
    import torch
    import torchvision

    info = {
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "pillow": PIL.__version__,
        "device": args.device, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    return info


def format_table(report: dict[str, Any]) -> str:
    lines = ["| format | job | images | median s | min-max s | img/s (median, best) | x plain (median, best) "
             "| CPU ms/image | x plain (CPU time) | stages, s (fastest run) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages_s"].items() if k != "whole command")
        ratio = "-" if r["x_plain"] is None else f"{r['x_plain']:.2f}x, {r['x_plain_best']:.2f}x"
        lines.append(
            f"| {r['format']} | {r['job']} | {r['images']} | {r['median_s']:.2f} | "
            f"{r['min_s']:.2f}-{r['max_s']:.2f} | {r['images_per_s']:.1f}, {r['best_images_per_s']:.1f} | "
            f"{ratio} | {r['cpu_ms_per_image']:.0f} | {r['x_plain_cpu']:.2f}x | {stages} |"
        )
    if report.get("startup_s"):
        lines += ["", "| start-up command | median s |", "|---|---|"]
        lines += [f"| `{name}` | {value:.2f} |" for name, value in report["startup_s"].items()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
    parser.add_argument("--images", type=int, default=None, help="synthetic images (default: 128 CPU, 512 CUDA)")
    parser.add_argument("--file-size", type=int, default=512, help="side of the written X-rays in px")
    parser.add_argument("--size", type=int, default=224, help="model input size")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: explain's)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--jobs", nargs="+", choices=JOBS, default=list(JOBS))
    parser.add_argument("--rounds", type=int, default=2, help="timed calls of each job, interleaved")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes over every job first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--startup", type=int, default=0, metavar="N",
                        help="also time the --help commands, N fresh interpreters each")
    parser.add_argument("--explain-args", nargs=argparse.REMAINDER, default=[],
                        help="extra explain options (last on the line)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None, help="where data and outputs go (default: a temp dir)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--tag", default="", help="suffix of the result files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.images is None:
        args.images = 512 if args.device.startswith("cuda") else 128
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"environment": environment(args), "settings": {
        k: v for k, v in vars(args).items() if k not in ("out_dir", "work_dir")}}
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as temp:
        work = args.work_dir or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        roots = write_data(work / "data", args.images, args.file_size, args.formats)
        checkpoint = write_checkpoint(work / "model.pt", args.size, args.seed)
        report["results"] = measure(args, {f: r / "test" for f, r in roots.items()}, checkpoint, work)
    if args.startup:
        report["startup_s"] = measure_startup(args.startup)
    report["environment"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"e2e_{torch.device(args.device).type}" + (f"_{args.tag}" if args.tag else "")
    (args.out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2))
    table = format_table(report)
    (args.out_dir / f"{stem}.md").write_text(table + "\n")
    print(json.dumps(report["environment"]))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
