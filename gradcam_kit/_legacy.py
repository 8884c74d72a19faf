"""The module paths of gradcam_kit 0.1's flat layout, still importable.

``import gradcam_kit.engine`` and ``from gradcam_kit.render import overlay`` keep working:
each old path is an alias of the module that now holds the code (the same module object,
so patching one patches the other), with a ``DeprecationWarning`` naming the new path.
Old paths that are now packages (``gradcam_kit.models``, ``.data``, ``.metrics``)
serve the old module's names through the package's ``__getattr__``, and so do modules
whose library code moved elsewhere (:data:`MOVED_NAMES`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

__all__ = ["FORMER", "MOVED", "MOVED_NAMES", "former_attribute", "install", "moved_attribute"]

#: old module -> the module that holds its code now
MOVED: dict[str, str] = {
    f"gradcam_kit.{old}": f"gradcam_kit.{new}"
    for old, new in {
        "engine": "core.engine", "scores": "core.scores", "layers": "core.layers",
        "scorecam": "methods.activation", "vit": "explainers.vit",
        "checkpoint": "models.checkpoint", "architecture": "models.architecture",
        "preprocess": "data.preprocess", "inputs": "data.inputs", "layouts": "data.layouts",
        "synthetic": "data.synthetic", "localization": "metrics.localization",
        "faithfulness": "metrics.faithfulness", "render": "viz.render", "png": "viz.png",
        "layer_strips": "viz.layer_strips", "report": "viz.report", "figures": "viz.figures",
        "train": "training.train", "distributed": "training.distributed",
        "options": "cli.options", "outputs": "cli.outputs", "workflow": "cli.workflow",
        "evaluate": "metrics.pointing", "explain": "cli.explain", "compare": "metrics.comparison",
    }.items()
}
#: old module that is now a package -> the module that holds the old module's names
FORMER: dict[str, str] = {
    "gradcam_kit.models": "gradcam_kit.explainers.cnn",
    "gradcam_kit.data": "gradcam_kit.data.datasets",
    "gradcam_kit.metrics": "gradcam_kit.metrics.classification",
}

#: module -> {name it no longer defines: the module that holds it now}
MOVED_NAMES: dict[str, dict[str, str]] = {
    "gradcam_kit.cli.explain": dict.fromkeys(
        ("Geometry", "compose_canvases", "write_contact_sheet"), "gradcam_kit.viz.canvas"
    ),
}


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} moved to {new}; import it from there (the old path will be removed)",
        DeprecationWarning,
        stacklevel=3,
    )


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object, target: object = None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):  # the default (empty) module; exec_module replaces it
        return None

    def exec_module(self, module: ModuleType) -> None:
        new = MOVED[module.__name__]
        _warn(module.__name__, new)
        # The import system returns whatever sys.modules holds under the name at the end.
        sys.modules[module.__name__] = importlib.import_module(new)


def former_attribute(package: str, name: str) -> object:
    """A name of the old module ``package``, for the package's ``__getattr__``."""
    target = FORMER[package]
    if name.startswith("__"):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module = importlib.import_module(target)
    if not hasattr(module, name):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    _warn(f"{package}.{name}", f"{target}.{name}")
    return getattr(module, name)


def moved_attribute(module: str, name: str) -> object:
    """A name that left ``module``, for the module's ``__getattr__`` (with a warning)."""
    target = MOVED_NAMES[module].get(name)
    if target is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    _warn(f"{module}.{name}", f"{target}.{name}")
    return getattr(importlib.import_module(target), name)


def install() -> None:
    """Puts the alias finder on ``sys.meta_path`` once."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
