"""``python -m gradcam_kit train``: fine-tune ``ResNet50FineTuned`` on an ImageFolder or CSV.

One process::

    python -m gradcam_kit train --data data/synthetic --out runs/xray --weights none

Several (GPUs with NCCL, CPU processes with gloo), same flags::

    torchrun --nproc_per_node=2 -m gradcam_kit train --data data/synthetic ...

What it does: reads ``<data>/train`` and ``<data>/val`` (or splits off ``--val-fraction``
when there is no val folder; a CSV ``path,label`` file works the same), checks the data
before anything trains (missing folder or CSV, empty class, a single class, unreadable
image), trains with class-weighted cross-entropy (BCE for ``--num-classes 1``), AdamW or
SGD, a cosine or plateau schedule, early stopping, optional ``--freeze-features`` with
``--unfreeze-after``, AMP on CUDA; logs accuracy, AUROC, sensitivity, specificity and the
confusion matrix of every epoch to ``<out>/history.csv`` and ``<out>/history.json``;
writes ``<out>/best.pt`` (the best epoch, by ``--monitor``) and ``<out>/last.pt`` (also
the optimizer, scheduler, RNG and early-stopping state, for ``--resume``). Both load with
``ResNet50FineTuned(weights=path, num_classes=...)`` or ``ResNet50FineTuned.from_checkpoint``.
``--tensorboard DIR`` logs every epoch to TensorBoard (metrics, the pointing game per layer,
Grad-CAM overlays of fixed validation images; ``--watch-pointing`` puts the pointing game
into the history without it; see :mod:`gradcam_kit.training.monitor`).

A multi-label CSV (one row per image, one column per finding holding 1/0/-1/blank; detected,
or ``--multilabel``) trains one sigmoid per finding with BCE masked by ``--uncertain`` and
``--blank``, ``--pos-weight``, per-finding AUROC (``--monitor`` defaults to their mean) and
per-finding thresholds chosen on validation (:mod:`gradcam_kit.training.data`).

Every option can come from a YAML file (``--config run.yaml``) whose keys are the flag
names (``image-size`` or ``image_size``); flags given on the command line win.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..training.config import _OPTIONS, resolve_run

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m gradcam_kit train`` (defaults resolved in :func:`~gradcam_kit.training.config.resolve_config`)."""
    parser.add_argument("--config", default=None, help="YAML file whose keys are these flags' names; flags win")
    for name, (default, kind, help_text) in _OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{help_text} (default: {default})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif isinstance(kind, tuple):
            parser.add_argument(flag, choices=kind, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)


def run(args: argparse.Namespace) -> int:
    """Trains; returns 0. Raises ``ValueError``/``FileNotFoundError``/``RuntimeError`` on bad input."""
    from ..training import train as training
    from ..training.distributed import cleanup, init_distributed
    from .outputs import OutputFolder

    cfg, resume = resolve_run(args)  # --resume's checkpoint is read once, here
    # Checked before any work; cleared (with --overwrite) only once the data is known good.
    # An earlier run's evaluation.json and overlays describe another model: they go too.
    outputs = OutputFolder(
        cfg.out, command="train", overwrite=bool(cfg.overwrite), flag="--out",
        keep_own=bool(cfg.resume) and Path(cfg.out).resolve() in Path(cfg.resume).resolve().parents,
    )
    context = init_distributed(cfg.device)
    try:
        return training.train(cfg, context, outputs, resume)
    except KeyboardInterrupt:
        if context.is_main:
            last = Path(cfg.out) / "last.pt"
            hint = f"resume with: python -m gradcam_kit train --resume {last}" if last.is_file() else "no epoch had finished, so there is nothing to resume"
            print(f"\ntrain: interrupted; {hint}", file=sys.stderr)
        return 130
    finally:
        if context.is_main:
            outputs.record()
        cleanup(context)

