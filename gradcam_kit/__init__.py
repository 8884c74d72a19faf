"""gradcam_kit: Grad-CAM and its family at the cost of one forward pass.

The engine (:class:`CAMEngine`) explains any ``nn.Module`` at named layers; the methods
(:mod:`gradcam_kit.methods`) only say how activations and gradients become a map;
:mod:`gradcam_kit.viz.render` colours maps on the device. ``resnet50.ResNet50FineTuned`` is
built on these, as are the command-line tools (``python -m gradcam_kit --help``).

The names below are imported on first use (PEP 562 module ``__getattr__``): importing the
package, or running ``gradcam-kit --help``, does not import torch (about 2 s on two cores).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import _legacy

__version__ = "0.1.0"

_legacy.install()  # the module paths of the flat 0.1 layout stay importable

#: public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "CAMEngine": "core.engine",
    "CAMOutput": "core.engine",
    "min_max_normalize": "core.ops",
    "resolve_class_idx": "core.engine",
    "upsample": "core.ops",
    "METHODS": "methods",
    "CAMMethod": "methods",
    "ClassActivationMap": "methods",
    "GradCAM": "methods",
    "GradCAMPlusPlus": "methods",
    "HiResCAM": "methods",
    "LayerCAM": "methods",
    "ScoreCAM": "methods",
    "XGradCAM": "methods",
    "get_method": "methods",
    # gradcam_kit.explainers.cnn.explain() is not re-exported: `explain` names the CLI command.
    "GradCAMExplainer": "explainers.cnn",
    "default_target_layer": "explainers.cnn",
}

__all__ = [
    "CAMEngine",
    "CAMOutput",
    "CAMMethod",
    "ClassActivationMap",
    "GradCAM",
    "GradCAMExplainer",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "METHODS",
    "ScoreCAM",
    "XGradCAM",
    "default_target_layer",
    "get_method",
    "min_max_normalize",
    "resolve_class_idx",
    "upsample",
    "__version__",
]

if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from .core.engine import CAMEngine, CAMOutput, resolve_class_idx
    from .core.ops import min_max_normalize, upsample
    from .explainers.cnn import GradCAMExplainer, default_target_layer
    from .methods import (
        METHODS,
        CAMMethod,
        ClassActivationMap,
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
        ScoreCAM,
        XGradCAM,
        get_method,
    )


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gradcam_kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
