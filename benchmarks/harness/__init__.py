"""Grad-CAM side by side: this project against plain inference, pytorch-grad-cam, Captum, torchcam.

Every contender does the same work on the same model and input: ResNet50 with a 2-class
head (``ResNet50FineTuned(weights=None, num_classes=2)``, all parameters trainable, eval
mode), target layer ``layer4[-1].conv3``, class = each image's argmax, heatmap upsampled
bilinearly to the input size and min-max normalised per image, result left on the device.
``plain`` is the same model's forward under ``torch.no_grad()``; every ratio is taken
against it, measured in the same run.

Run from the repository root (``benchmarks/bench_gradcam.py`` runs this package)::

    python benchmarks/bench_gradcam.py                         # CPU: B=1,8; GPU: B=1,8,64,256
    python benchmarks/bench_gradcam.py --batch-sizes 8 --repeats 7
    python benchmarks/bench_gradcam.py --compile --scorecam    # more contenders

Timing: contenders are timed *interleaved* (one call of each per round, the order rotated
every round) after a warm-up, with ``torch.cuda.synchronize()`` around every call on CUDA,
so that a load change on a shared machine hits every contender alike. Memory: on CUDA the
peak of ``torch.cuda.max_memory_allocated()`` above what was allocated before the call
(reset per contender); on the CPU the peak RSS of a fresh process that runs only that
contender, above its resident set before the first call (see :func:`benchmarks.harness.memory.memory_worker`).

Optional libraries are imported lazily; a missing one is reported as ``not installed``.
Writes ``bench_<device>.json`` and ``bench_<device>.png`` into ``--out-dir`` and prints a
table. See docs/PERFORMANCE.md for the method and the figures.
"""

from __future__ import annotations

from .cli import build_parser, main
from .contenders import BY_NAME, CONTENDERS, Contender
from .runner import Result, run_benchmark

__all__ = [
    "BY_NAME", "CONTENDERS", "Contender", "Result", "build_parser", "main", "run_benchmark",
]
