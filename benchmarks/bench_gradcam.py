"""Grad-CAM side by side: this project against plain inference, pytorch-grad-cam, Captum, torchcam.

Run from the repository root::

    python benchmarks/bench_gradcam.py                         # CPU: B=1,8; GPU: B=1,8,64,256
    python benchmarks/bench_gradcam.py --batch-sizes 8 --repeats 7
    python benchmarks/bench_gradcam.py --compile --scorecam    # more contenders

The harness itself is the package ``benchmarks/harness/`` (models, contenders, timing,
memory, runner, report, cli); this script runs it, and is also the command that each CPU
memory process runs. See benchmarks/README.md for the flags and docs/PERFORMANCE.md for
the method and the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import CONTENDERS, Contender, main, run_benchmark  # noqa: E402

__all__ = ["CONTENDERS", "Contender", "main", "run_benchmark"]

if __name__ == "__main__":
    sys.exit(main())
