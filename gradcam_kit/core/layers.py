"""Finding target layers by name, with suggestions when a name is wrong."""

from __future__ import annotations

import difflib
import re

from torch import nn

__all__ = ["canonical_layer_name", "resolve_layer", "resolve_layers"]

_INDEX = re.compile(r"\[(-?\d+)\]")


def canonical_layer_name(model: nn.Module, name: str) -> str:
    """Turns ``"layer4[-1].conv3"`` into the dotted ``named_modules()`` form ``"layer4.2.conv3"``.

    Both spellings are accepted everywhere a layer is named. Negative indices count from
    the end of the container they index, as in Python.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"a layer name must be a non-empty string, got {name!r}")
    parts: list[str] = []
    module: nn.Module | None = model
    for token in re.split(r"\.(?![^\[]*\])", name):
        base, *indices = _INDEX.split(token)
        steps = ([base] if base else []) + [i for i in indices if i]
        for step in steps:
            if module is not None and step.lstrip("-").isdigit() and int(step) < 0:
                children = list(module.named_children())
                idx = int(step)
                step = children[idx][0] if -len(children) <= idx else step
            parts.append(step)
            module = getattr(module, step, None) if module is not None else None
            if module is not None and not isinstance(module, nn.Module):
                module = None
    return ".".join(parts)


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Returns ``(dotted_name, module)`` for a layer given by name or as a submodule.

    Raises:
        ValueError: the name does not exist in ``model``; the message suggests close names.
        TypeError: ``layer`` is neither a string nor a module of ``model``.
    """
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ValueError(
            f"{type(layer).__name__} is not a submodule of this {type(model).__name__}; "
            "pass one of its own layers or a name from model.named_modules()"
        )
    name = canonical_layer_name(model, layer)
    modules = dict(model.named_modules())
    if name in modules and name:
        return name, modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise ValueError(
        f"unknown layer {layer!r} in {type(model).__name__}; {hint}"
        "see [name for name, _ in model.named_modules()] for the valid names"
    )


def resolve_layers(
    model: nn.Module, layers: str | nn.Module | list | tuple
) -> dict[str, nn.Module]:
    """Resolves one layer or a sequence of layers to an ordered ``{name: module}`` mapping."""
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError(f"expected a layer name or a non-empty list of them, got {layers!r}")
    resolved: dict[str, nn.Module] = {}
    for layer in layers:
        name, module = resolve_layer(model, layer)
        resolved[name] = module
    return resolved
