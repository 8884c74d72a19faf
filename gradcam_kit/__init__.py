"""gradcam_kit: Grad-CAM and its family at the cost of one forward pass.

The engine (:class:`CAMEngine`) explains any ``nn.Module`` at named layers; the methods
(:mod:`gradcam_kit.methods`) only say how activations and gradients become a map;
:mod:`gradcam_kit.render` colours maps on the device. ``resnet50.ResNet50FineTuned`` is
built on these, as are the command-line tools (``python -m gradcam_kit --help``).
"""

from .engine import CAMEngine, CAMOutput, min_max_normalize, resolve_class_idx, upsample
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

# gradcam_kit.models.explain() is not re-exported: gradcam_kit.explain is the CLI command module.
from .models import GradCAMExplainer, default_target_layer

__version__ = "0.1.0"

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
