"""Command-line entry point: ``gradcam-kit <command>`` or ``python -m gradcam_kit <command>``.

Each command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``--help`` stays fast and optional dependencies stay optional.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "workflow": ("gradcam_kit.workflow", "the whole job offline: synthetic X-rays, train, evaluate, explain"),
    "synth": ("gradcam_kit.synthetic", "write a synthetic chest-X-ray-like dataset with lesion masks"),
    "train": ("gradcam_kit.train", "fine-tune ResNet50FineTuned on an ImageFolder or CSV dataset"),
    "evaluate": ("gradcam_kit.evaluate", "accuracy, AUROC and pointing game per target layer"),
    "explain": ("gradcam_kit.explain", "overlays, predictions.csv and an HTML report for images"),
    "compare": ("gradcam_kit.compare", "CAM methods x faithfulness metrics on a dataset"),
    "figures": ("gradcam_kit.figures", "Grad-CAM / Grad-CAM++ / layer-wise figure grids"),
    "arch": ("gradcam_kit.architecture", "stages, output shapes and parameter counts of a model"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="gradcam-kit", description="Grad-CAM at the cost of one forward pass."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module_name)
        if argv and argv[0] == name:
            importlib.import_module(module_name).add_arguments(command)
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
