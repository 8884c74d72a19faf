"""The methods by name: :func:`get_method` (``"gradcam"``, ``"gradcam++"``, ...) and titles."""

from __future__ import annotations

from .activation import ScoreCAM
from .base import CAMMethod
from .gradient import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM

__all__ = ["METHODS", "get_method", "method_title"]

METHODS: dict[str, type[CAMMethod]] = {
    cls.name: cls for cls in (GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, ScoreCAM)
}


def get_method(method: str | CAMMethod) -> CAMMethod:
    """Returns a method instance from a name (``"gradcam"``, ``"gradcam++"``, ...) or an instance."""
    if isinstance(method, CAMMethod):
        return method
    if isinstance(method, str):
        key = method.lower().replace("_", "").replace("-", "").replace("plusplus", "++")
        key = {"gradcampp": "gradcam++"}.get(key, key)
        if key in METHODS:
            return METHODS[key]()
        if key == "cam":
            raise ValueError(
                "CAM needs the model's linear head: pass ClassActivationMap(model.fc) as the method"
            )
    raise ValueError(
        f"unknown CAM method {method!r}; choose one of {sorted(METHODS)} "
        "or pass a gradcam_kit.methods.CAMMethod instance"
    )


_TITLES = {
    "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "xgradcam": "XGrad-CAM", "hirescam": "HiResCAM",
    "layercam": "LayerCAM", "cam": "CAM", "scorecam": "Score-CAM",
}


def method_title(method: str | CAMMethod) -> str:
    """The display name of a method: ``"layercam"`` -> ``"LayerCAM"``, for titles and reports."""
    name = method.name if isinstance(method, CAMMethod) else str(method)
    key = name.lower().replace("_", "").replace("-", "").replace("plusplus", "++")
    return _TITLES.get({"gradcampp": "gradcam++"}.get(key, key), name)
