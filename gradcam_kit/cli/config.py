"""``--config FILE`` for every command: a YAML mapping of flag names to values.

Keys are the command's long flag names, with ``-`` or ``_`` (``image-size: 160`` or
``image_size: 160``). A flag given on the command line wins over the file. Values are read
as the flag would read them: ``lr: 2e-3`` (a string to YAML) becomes the float the flag
asks for, and an option with choices rejects a value outside them. ``train`` has its own
reader (:func:`gradcam_kit.training.train.load_config`) because it also merges the
configuration stored in a ``--resume`` checkpoint; the keys mean the same there.

Torch-free: ``--help`` and a bad config answer without importing torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_config_argument", "apply_config", "config_path", "read_config"]

_HELP = "YAML file whose keys are this command's flag names (image-size: 160); flags given here win"


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Adds ``--config FILE`` unless the command defines its own."""
    if not any("--config" in action.option_strings for action in parser._actions):
        parser.add_argument("--config", type=Path, default=None, metavar="FILE", help=_HELP)


def config_path(argv: Sequence[str]) -> str | None:
    """The value of ``--config`` in ``argv`` (``--config F`` or ``--config=F``), if any."""
    for i, arg in enumerate(argv):
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ValueError("--config needs a file name: --config run.yaml")
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def read_config(path: str | Path) -> dict[str, object]:
    """The YAML mapping in ``path``, keys with ``-`` turned into ``_``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not YAML, or not a mapping.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}; pass the path of a YAML file to --config")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"--config {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(loaded, dict):
        raise ValueError(
            f"--config {path} must be a mapping of flag names to values, got {type(loaded).__name__}"
        )
    return {str(key).replace("-", "_"): value for key, value in loaded.items()}


def apply_config(parser: argparse.ArgumentParser, path: str | Path) -> None:
    """Makes the values in ``path`` the defaults of ``parser``'s options.

    Raises:
        ValueError: an unknown key (the message lists the valid ones), a key naming a
            positional argument, or a value the flag would reject.
    """
    config = read_config(path)
    options: dict[str, tuple[argparse.Action, bool]] = {}  # key -> (action, inverted)
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "config"):
            continue
        for flag in action.option_strings:
            if flag.startswith("--"):
                # --no-progress (dest "progress") is written no-progress: true
                inverted = isinstance(action, argparse._StoreFalseAction) and flag[2:].replace("-", "_") != action.dest
                options.setdefault(flag[2:].replace("-", "_"), (action, inverted))
        options.setdefault(action.dest, (action, False))
    positionals = {a.dest for a in parser._actions if not a.option_strings}
    defaults = {}
    for key, value in config.items():
        if key in positionals:
            raise ValueError(f"--config {path}: {key} is a positional argument; give it on the command line")
        if key not in options:
            valid = ", ".join(sorted({_flag(a)[2:] for a, _ in options.values()}))
            raise ValueError(f"--config {path}: unknown key {key!r}; valid keys: {valid}")
        action, inverted = options[key]
        value = _value(action, value, path)
        defaults[action.dest] = (not value) if inverted else value
        action.required = False  # the file gives it
    parser.set_defaults(**defaults)


def _value(action: argparse.Action, value: object, path: str | Path) -> object:
    name = _flag(action)
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ValueError(f"--config {path}: {name} takes true or false, got {value!r}")
        return value
    values = value if isinstance(value, list) else [value]
    if action.nargs in (None, "?") and isinstance(value, list):
        raise ValueError(f"--config {path}: {name} takes one value, got a list {value!r}")
    converted = []
    for item in values:
        if item is not None and action.type is not None and not isinstance(item, bool):
            try:
                item = action.type(item if isinstance(item, str) or action.type in (int, float) else str(item))
            except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
                raise ValueError(f"--config {path}: {name} got {item!r}: {err}") from None
        if action.choices is not None and item is not None and item not in action.choices:
            raise ValueError(
                f"--config {path}: {name} got {item!r}; choose one of {', '.join(map(str, action.choices))}"
            )
        converted.append(item)
    return converted if isinstance(value, list) else converted[0]


def _flag(action: argparse.Action) -> str:
    return next((f for f in action.option_strings if f.startswith("--")), action.option_strings[0])
