"""Command-line entry point: ``gradcam-kit <command>`` or ``python -m gradcam_kit <command>``.

Each command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``--help`` stays fast and optional dependencies stay optional.

:func:`main` is the Python API: it raises the command's exceptions. :func:`entry` is what
the command line runs: one error boundary for every command, which turns a user's mistake
(a bad option, a missing file, a checkpoint that does not fit, an output folder that is not
free) into one line on stderr and exit status 2. Exit statuses (:data:`EXIT_STATUSES`):

- 0: done;
- 1: an unexpected internal error (a bug: the traceback is printed, please report it);
- 2: a mistake in the command line, the inputs or the output folder (one line says what to
  do; ``--debug`` or ``GRADCAM_KIT_DEBUG=1`` prints the traceback as well);
- 3: the command ran but produced no result (e.g. ``explain`` could read none of the images);
- 130: interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from .config import add_config_argument, apply_config, config_path
from .outputs import NothingDone, record_pending

__all__ = ["COMMANDS", "DEBUG_ENV", "EXIT_STATUSES", "NothingDone", "entry", "main"]

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "workflow": ("gradcam_kit.cli.workflow", "the whole job offline: synthetic X-rays, train, evaluate, explain"),
    "synth": ("gradcam_kit.cli.synth", "write a synthetic chest-X-ray-like dataset with lesion masks"),
    "train": ("gradcam_kit.cli.train", "fine-tune ResNet50FineTuned on an ImageFolder or CSV dataset"),
    "evaluate": ("gradcam_kit.cli.evaluate", "accuracy, AUROC and pointing game per target layer"),
    "explain": ("gradcam_kit.cli.explain", "overlays, predictions.csv and an HTML report for images"),
    "compare": ("gradcam_kit.cli.compare", "CAM methods x faithfulness metrics on a dataset"),
    "figures": ("gradcam_kit.cli.figures", "Grad-CAM / Grad-CAM++ / layer-wise figure grids"),
    "arch": ("gradcam_kit.cli.arch", "stages, output shapes and parameter counts of a model"),
}

#: Set to 1 to print the traceback of a user error as well (same as ``--debug``).
DEBUG_ENV = "GRADCAM_KIT_DEBUG"
EXIT_STATUSES: dict[int, str] = {
    0: "done",
    1: "unexpected internal error (traceback printed; please report it)",
    2: "a mistake in the options, the inputs or the output folder (one line says what to do)",
    3: "ran, but produced no result (e.g. explain could read none of the images)",
    130: "interrupted",
}
# What a user's mistake raises: bad values and types, files that are missing, exist, or
# cannot be read, and runtime conditions the message explains (weights not cached, a layer
# that did not run). Anything else (KeyError, IndexError, ...) is a bug: exit status 1 and
# the traceback, so that it gets reported instead of read as the user's fault.
USER_ERRORS = (ValueError, TypeError, OSError, RuntimeError)


class _PrintHandler(logging.Handler):
    """Prints the library's INFO messages as plain lines on the current ``sys.stdout``."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stdout if record.levelno < logging.WARNING else sys.stderr, flush=True)


def _show_library_messages() -> None:
    # The library logs (gradcam_kit.*); a command shows those lines as its own output.
    package = logging.getLogger("gradcam_kit")
    if not any(isinstance(h, _PrintHandler) for h in package.handlers):
        package.addHandler(_PrintHandler())
        package.setLevel(logging.INFO)
        package.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` and runs the command; its exceptions propagate (the Python API).

    Returns:
        The command's exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [a for a in argv if a != "--debug"]
    parser = argparse.ArgumentParser(
        prog="gradcam-kit",
        description="Grad-CAM at the cost of one forward pass.",
        epilog=f"--debug (anywhere) or {DEBUG_ENV}=1: print the traceback of an error. Exit "
        "statuses: 0 done, 1 internal error, 2 a mistake in the options, inputs or output "
        "folder, 3 nothing produced, 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module_name)
        if argv and argv[0] == name:
            importlib.import_module(module_name).add_arguments(command)
            # train reads its own --config: it merges the file with a --resume checkpoint's
            own_config = any("--config" in action.option_strings for action in command._actions)
            add_config_argument(command)
            path = config_path(argv[1:])
            if path is not None and not own_config:
                apply_config(command, path)
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    _show_library_messages()
    try:
        return int(module.run(args) or 0)
    finally:
        record_pending()  # what a command wrote is recorded even when it fails midway


def _one_line(err: BaseException) -> str:
    text = str(err)
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.strerror}: {err.filename}"
    return " ".join(text.split()) or type(err).__name__


def entry(argv: Sequence[str] | None = None) -> int:
    """The command line: :func:`main` inside the error boundary described in the module docstring.

    Returns:
        The exit status (see :data:`EXIT_STATUSES`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    command = next((a for a in argv if a in COMMANDS), None)
    prefix = f"gradcam-kit {command}" if command else "gradcam-kit"
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as err:
        if err.code is None or isinstance(err.code, int):
            return int(err.code or 0)  # argparse: usage and message already printed
        if debug:
            traceback.print_exc()
        message = " ".join(str(err.code).split())
        if command and message.startswith(f"{command}: "):
            message = message[len(command) + 2 :]
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return 2
    except NothingDone as err:
        print(f"{prefix}: {_one_line(err)}", file=sys.stderr)
        return 3
    except USER_ERRORS as err:
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (--debug: traceback)"
        print(f"{prefix}: error: {_one_line(err)}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(entry())
