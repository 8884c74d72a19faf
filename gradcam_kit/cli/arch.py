"""``python -m gradcam_kit arch``: stages, output shapes and parameter counts of a model.

Prints the table of :func:`gradcam_kit.models.architecture.format_report` for a given input
size; ``--visualize`` draws the stages as a diagram (PNG), ``--json`` writes the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m gradcam_kit arch``."""
    from ..models.architecture import RESNET_BUILDERS
    from .options import weights_name

    parser.add_argument("--checkpoint", type=Path, help="checkpoint of ResNet50FineTuned to analyse")
    parser.add_argument("--model", default="resnet50", choices=["finetuned", *RESNET_BUILDERS],
                        help="without --checkpoint: torchvision builder, or 'finetuned' for "
                             "ResNet50FineTuned (frozen backbone)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classes of the head")
    parser.add_argument("--weights", default="none", type=weights_name, choices=["none", "imagenet"],
                        help="weights to load (counts and shapes do not depend on them)")
    parser.add_argument("--freeze-features", action=argparse.BooleanOptionalAction, default=None,
                        help="freeze all but the head (default: the model's own default)")
    parser.add_argument("--image-size", "--input-size", dest="input_size", type=int, nargs="+", default=[224], metavar="N",
                        help="input H [W] (default 224)")
    parser.add_argument("--target-layer", help="Grad-CAM layer to report (default: the model's own)")
    parser.add_argument("--visualize", action="store_true", help="also draw a diagram PNG")
    parser.add_argument("--output", "--out", dest="output", type=Path, default=Path("outputs/architecture"),
                        help="folder for the diagram and the JSON report")
    parser.add_argument("--json", action="store_true", help="also write architecture.json")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files an earlier arch run wrote in --output (never other files)")


def run(args: argparse.Namespace) -> int:
    """Runs ``arch``; returns the exit status."""
    import json

    from ..models.architecture import analyze, draw_architecture, format_report
    from ..models.builder import load_model

    if args.num_classes < 1:
        raise SystemExit(f"--num-classes must be at least 1, got {args.num_classes}")
    if len(args.input_size) not in (1, 2):
        raise SystemExit(f"--input-size takes H or H W, got {args.input_size}")
    size = args.input_size[0] if len(args.input_size) == 1 else tuple(args.input_size)
    try:
        from .outputs import OutputFolder

        outputs = None
        if args.visualize or args.json:  # arch writes nothing otherwise
            outputs = OutputFolder(args.output, command="arch", overwrite=args.overwrite)
        model, description = load_model(
            checkpoint=args.checkpoint, model=args.model, weights=args.weights,
            num_classes=args.num_classes, freeze_features=args.freeze_features,
        )
        report = analyze(model, size, model_name=description, target_layer=args.target_layer)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise SystemExit(f"arch: {err}") from None
    print(format_report(report))
    if args.checkpoint is not None and args.freeze_features is None:
        print("(trainable/frozen as loaded: ResNet50FineTuned freezes the backbone by default; "
              "pass --no-freeze-features to count it as trainable)")
    if outputs is None:
        return 0
    with outputs:
        if args.visualize:
            print(f"diagram: {draw_architecture(report, args.output / 'resnet_architecture.png')}")
        if args.json:
            out = args.output / "architecture.json"
            out.write_text(json.dumps(report.to_dict(), indent=2))
            print(f"report: {out}")
    return 0
