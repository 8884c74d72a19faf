"""``python -m gradcam_kit synth``: write a synthetic chest-X-ray-like dataset with lesion masks.

The images and masks come from :mod:`gradcam_kit.data.synthetic` (one lesion, two classes)
or, with ``--findings opacity,nodule,effusion`` (or ``--multilabel`` for all three), from
:mod:`gradcam_kit.data.synthetic_findings` (several findings per image, a multi-label CSV
per split); this module parses the options, checks them before anything is written, and
prints what was written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m gradcam_kit synth``."""
    parser.add_argument("--out", "--output", dest="out", default="data/synthetic", help="output folder (default: %(default)s)")
    parser.add_argument("--image-size", "--size", dest="size", type=int, default=128, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--train", type=int, default=400, help="training images (default: %(default)s)")
    parser.add_argument("--val", type=int, default=100, help="validation images (default: %(default)s)")
    parser.add_argument("--test", type=int, default=200, help="held-out test images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: %(default)s)")
    parser.add_argument(
        "--positive-fraction", type=float, default=0.5,
        help="share of images with a lesion (with --findings: with each finding) (default: %(default)s)",
    )
    parser.add_argument(
        "--findings", default=None, metavar="A,B",
        help="write a multi-label dataset with these findings (from opacity, nodule, effusion): "
        "<split>/*.png, masks/<split>/<finding>/*_mask.png and <split>.csv with one column per finding",
    )
    parser.add_argument("--multilabel", action="store_true", help="the same as --findings opacity,nodule,effusion")
    parser.add_argument("--no-progress", "--quiet", dest="quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace the dataset an earlier synth run wrote in --out (never other files)",
    )


def run(args: argparse.Namespace) -> int:
    """Writes the dataset and prints what was written.

    Raises:
        ValueError: a bad size, count or fraction (before anything is written).
        FileExistsError: ``--out`` is not empty and ``--overwrite`` was not given.
    """
    from ..data.synthetic import check_settings, write_image_folder
    from .outputs import OutputFolder

    splits = {"train": args.train, "val": args.val, "test": args.test}
    check_settings(splits, size=args.size, positive_fraction=args.positive_fraction)
    findings = _findings(args)
    output = OutputFolder(args.out, command="synth", overwrite=args.overwrite, flag="--out")
    if findings:
        return _write_multilabel(args, splits, findings, output)
    with output:
        counts = write_image_folder(
            args.out, splits, size=args.size, seed=args.seed,
            positive_fraction=args.positive_fraction, progress=not args.quiet,
        )
    for split, per_class in counts.items():
        described = ", ".join(f"{n} {name}" for name, n in per_class.items())
        print(f"{Path(args.out) / split}: {described} ({args.size}x{args.size}, seed {args.seed})")
    return 0


def _findings(args: argparse.Namespace) -> list[str] | None:
    from ..data.synthetic_findings import FINDINGS, check_findings

    if args.findings is not None:
        return check_findings(args.findings.split(","))
    return list(FINDINGS) if args.multilabel else None


def _write_multilabel(args: argparse.Namespace, splits: dict[str, int], findings: list[str], output) -> int:
    from ..data.synthetic_findings import write_multilabel_folder

    with output:
        counts = write_multilabel_folder(
            args.out, splits, findings=findings, size=args.size, seed=args.seed,
            positive_fraction=args.positive_fraction, progress=not args.quiet,
        )
    for split, per_finding in counts.items():
        described = ", ".join(f"{per_finding[f]} {f}" for f in findings)
        print(
            f"{Path(args.out) / (split + '.csv')}: {per_finding['images']} images, positives: {described} "
            f"({args.size}x{args.size}, seed {args.seed})"
        )
    return 0
