"""CAM methods: each says only how an activation and its gradient become a map.

:mod:`.base` holds the base class, :mod:`.gradient` the gradient family (Grad-CAM,
Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM), :mod:`.activation` the methods that need no
gradient (CAM, Score-CAM) and :mod:`.registry` the names (:func:`get_method`).
"""

from .activation import ClassActivationMap, ScoreCAM, TopKScoreCAM, score_cam
from .base import CAMMethod
from .gradient import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from .registry import METHODS, get_method, method_title

__all__ = [
    "METHODS",
    "CAMMethod",
    "ClassActivationMap",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "TopKScoreCAM",
    "XGradCAM",
    "get_method",
    "method_title",
    "score_cam",
]
