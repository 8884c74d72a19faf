"""The command line: flags, defaults, and writing the table, JSON and PNG."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .contenders import BY_NAME
from .memory import memory_worker
from .models import DEFAULT_OUT_DIR, _import_project
from .report import format_table, format_targets, plot
from .runner import run_benchmark


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time Grad-CAM against plain inference, pytorch-grad-cam, Captum, torchcam.",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="default: 1 8 on the CPU, 1 8 64 256 on CUDA")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per contender (default 5 on the CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed calls first (default 2 on the CPU, 5 on CUDA)")
    parser.add_argument("--contenders", nargs="+", choices=sorted(BY_NAME), default=None,
                        help="default: all (optional ones with --compile / --scorecam)")
    parser.add_argument("--compile", action="store_true",
                        help="add torch.compile contenders (compile time is in the warm-up)")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (aot_eager: trace only, for checks)")
    parser.add_argument("--scorecam", action="store_true",
                        help="add Score-CAM (expensive: B*2048 masked forwards)")
    parser.add_argument("--scorecam-max-batch", type=int, default=8,
                        help="run Score-CAM only up to this batch size (default 8)")
    parser.add_argument("--scorecam-chunk", type=int, default=None,
                        help="masked images per Score-CAM forward (default 16 CPU, 128 CUDA)")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the memory measurement")
    parser.add_argument("--memory-calls", type=int, default=2,
                        help="calls per CPU memory process (peak over all of them)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--tag", default="",
                        help="suffix for the output files: bench_<device>_<tag>.json/.png")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parses flags, runs, prints the tables, writes JSON and PNG."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, value in (("--repeats", args.repeats), ("--warmup", args.warmup)):
        if value is not None and value < (1 if name == "--repeats" else 0):
            parser.error(f"{name} must be at least {1 if name == '--repeats' else 0}, got {value}")
    if args.size < 32:
        parser.error(f"--size must be at least 32 (ResNet50 downsamples by 32), got {args.size}")
    if not all(c.isalnum() or c in "-_" for c in args.tag):
        parser.error(f"--tag may hold letters, digits, '-' and '_' only, got {args.tag!r}")
    if args.batch_sizes is not None and any(b < 1 for b in args.batch_sizes):
        parser.error(f"--batch-sizes must be positive, got {args.batch_sizes}")
    _import_project()
    import torch

    cuda = torch.cuda.is_available()
    if args.device == "auto":
        args.device = "cuda" if cuda else "cpu"
    if args.device.startswith("cuda") and not cuda:
        parser.error("--device cuda was asked for but torch.cuda.is_available() is False")
    on_cuda = args.device.startswith("cuda")
    if args.scorecam_chunk is None:
        args.scorecam_chunk = 128 if on_cuda else 16
    if args.memory_worker:
        return memory_worker(args)
    if args.batch_sizes is None:
        args.batch_sizes = [1, 8, 64, 256] if on_cuda else [1, 8]
    if args.repeats is None:
        args.repeats = 20 if on_cuda else 5
    if args.warmup is None:
        args.warmup = 5 if on_cuda else 2

    report = run_benchmark(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"bench_{report['meta']['device']}" + (f"_{args.tag}" if args.tag else "")
    json_path = args.out_dir / f"{stem}.json"
    png_path = args.out_dir / f"{stem}.png"
    json_path.write_text(json.dumps(report, indent=2))
    try:
        plot(report, png_path)
    except (ImportError, RuntimeError) as err:  # no (or a stand-in) matplotlib: the JSON is the result
        print(f"no plot ({type(err).__name__}: {err})", file=sys.stderr)
        png_path = json_path
    meta = report["meta"]
    print(f"\n{meta['device_name']} ({meta['torch_threads']} threads), torch "
          f"{meta['versions']['torch']}, {meta['size']}x{meta['size']}, {meta['date_utc']}, "
          f"load {meta['loadavg_start']} -> {meta['loadavg_end']}")
    print(format_table(report))
    print("\nTargets:")
    print(format_targets(report))
    print(f"\nwrote {json_path} and {png_path}")
    return 0
