"""Peak memory of one contender: CUDA allocator peak, or peak RSS of a fresh process."""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
from typing import Any

from .contenders import BY_NAME, Run
from .models import ROOT, Unavailable, build_setup, make_input
from .timing import _sync

#: the command that a memory process runs (with ``--memory-worker NAME``)
SCRIPT = ROOT / "benchmarks" / "bench_gradcam.py"


def cuda_peak_memory_mb(run: Run, x: Any, device: Any) -> float:
    """Peak CUDA memory allocated by one call above what was allocated before it."""
    import torch

    gc.collect()
    _sync(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    output = run(x)
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del output
    return peak / 2**20


def _proc_status_bytes(field_name: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux) in bytes, else None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (``VmHWM``) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def memory_worker(args: argparse.Namespace) -> int:
    """Runs one contender in this (fresh) process and prints its peak RSS as JSON.

    The peak is the kernel's ``VmHWM`` reset just before the first call; ``ru_maxrss`` is
    the fallback where ``/proc`` is missing. (On Linux ``ru_maxrss`` of a child started by
    fork+exec starts at the *parent's* RSS, so it cannot measure a small contender.)
    """
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    setup = build_setup(
        "cpu", args.size, args.seed, compile_mode=args.compile_mode,
        compile_backend=args.compile_backend, scorecam_chunk=args.scorecam_chunk,
    )
    setup.share_model = True  # one model in this process, as in the caller's own code
    x = make_input(args.batch_size, args.size, setup.device, args.seed)
    contender = BY_NAME[args.memory_worker]
    try:
        run = contender.build(setup)
    except Unavailable as error:
        print(json.dumps({"error": str(error)}))
        return 0
    gc.collect()
    reset = _reset_peak_rss()
    before = _proc_status_bytes("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(args.memory_calls):
        output = run(x)
        del output
    peak = _proc_status_bytes("VmHWM") if reset else None
    if peak is None or before is None:
        # ru_maxrss is in KiB on Linux, bytes on macOS; a peak only if it grew.
        scale = 1 if sys.platform == "darwin" else 1024
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        record = {"method": "ru_maxrss", "memory_mb": (maxrss - maxrss_before) * scale / 2**20}
    else:
        record = {
            "method": "VmHWM",
            "rss_before_mb": before / 2**20,
            "peak_mb": peak / 2**20,
            "memory_mb": (peak - before) / 2**20,
        }
    print(json.dumps(record))
    return 0


def cpu_peak_memory_mb(name: str, batch_size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of one contender, measured in its own fresh process."""
    command = [
        sys.executable, str(SCRIPT), "--memory-worker", name,
        "--batch-size", str(batch_size), "--size", str(args.size), "--seed", str(args.seed),
        "--memory-calls", str(args.memory_calls), "--scorecam-chunk", str(args.scorecam_chunk),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.compile_mode:
        command += ["--compile-mode", args.compile_mode]
    command += ["--compile-backend", args.compile_backend]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:]
        return {"error": f"memory process failed ({completed.returncode}): {' '.join(tail)}"}
    return json.loads(lines[-1])


