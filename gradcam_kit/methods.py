"""How each CAM method turns a layer's activation and gradient into a map.

Every method here is a small object with one job: given the captured ``activation``
``(B, C, h, w)``, the ``gradient`` of the class scores with respect to it (same shape)
and the explained ``class_idx`` ``(B,)``, return the map ``(B, h, w)`` *before* ReLU.
Capture, the graph cut, ReLU, upsampling and normalisation are the engine's job
(:mod:`gradcam_kit.engine`), so a method is a few lines and cannot get them wrong.

The formulas follow the papers and, where the papers leave a choice, the widely used
implementation in pytorch-grad-cam (``pytorch_grad_cam``) so that maps agree to 1e-4
(see docs/METHODS.md for each choice and the measured agreement).

Score-CAM (:class:`gradcam_kit.scorecam.ScoreCAM`) needs no gradient but re-runs the model
on masked inputs; the engine hands it the model and the input through its ``bind`` method,
so it is used like any other method: ``get_method("scorecam")``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "CAMMethod",
    "ClassActivationMap",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
    "get_method",
    "method_title",
    "METHODS",
]


class CAMMethod:
    """Base class: turns an activation (and its gradient) into an un-rectified map."""

    name: str = "cam"
    #: False for methods that need no backward at all (the engine then builds no graph).
    needs_gradient: bool = True

    def __call__(self, activation: Tensor, gradient: Tensor | None, class_idx: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _ChannelWeighted(CAMMethod):
    """Methods of the form ``sum_k w_k(gradient, activation) * A_k``."""

    def channel_weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, activation: Tensor, gradient: Tensor | None, class_idx: Tensor) -> Tensor:
        weights = self.channel_weights(activation, gradient)
        return torch.einsum("bc,bchw->bhw", weights, activation)


class GradCAM(_ChannelWeighted):
    """Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391): spatially averaged gradients."""

    name = "gradcam"

    def channel_weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return gradient.mean(dim=(2, 3))


class GradCAMPlusPlus(_ChannelWeighted):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, arXiv:1710.11063).

    Uses the paper's closed form for the pixel weights ``alpha`` (its Eq. 19 with the
    exponential score, where higher derivatives are powers of the first):
    ``alpha = g^2 / (2 g^2 + sum_ab A_ab * g^3)``, zero where ``g == 0``, and channel
    weights ``sum_ij alpha_ij * relu(g_ij)``, as pytorch-grad-cam does.
    """

    name = "gradcam++"
    eps = 1e-6  # pytorch-grad-cam's value, so that maps agree to 1e-4

    def channel_weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        grad_sq = gradient.pow(2)
        grad_cube = grad_sq * gradient
        activation_sum = activation.sum(dim=(2, 3), keepdim=True)
        alpha = grad_sq / (2 * grad_sq + activation_sum * grad_cube + self.eps)
        alpha = torch.where(gradient != 0, alpha, torch.zeros_like(alpha))
        return (alpha * gradient.clamp_min(0)).sum(dim=(2, 3))


class XGradCAM(_ChannelWeighted):
    """XGrad-CAM (Fu et al., BMVC 2020, arXiv:2008.02312): activation-weighted gradients."""

    name = "xgradcam"
    eps = 1e-7

    def channel_weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        activation_sum = activation.sum(dim=(2, 3), keepdim=True)
        return (gradient * activation / (activation_sum + self.eps)).sum(dim=(2, 3))


class HiResCAM(CAMMethod):
    """HiResCAM (Draelos & Carin, 2020, arXiv:2011.08891): element-wise gradient x activation."""

    name = "hirescam"

    def __call__(self, activation: Tensor, gradient: Tensor | None, class_idx: Tensor) -> Tensor:
        return (gradient * activation).sum(dim=1)


class LayerCAM(CAMMethod):
    """LayerCAM (Jiang et al., IEEE TIP 2021): positive gradients weight each location."""

    name = "layercam"

    def __call__(self, activation: Tensor, gradient: Tensor | None, class_idx: Tensor) -> Tensor:
        return (gradient.clamp_min(0) * activation).sum(dim=1)


class ClassActivationMap(CAMMethod):
    """CAM (Zhou et al., CVPR 2016, arXiv:1512.04150): the classifier's weights, no gradient.

    Valid for a global-average-pool + linear head, explained at the layer that feeds the
    pool (``layer4`` for a ResNet). ``head`` is that linear layer.
    """

    name = "cam"
    needs_gradient = False

    def __init__(self, head: nn.Linear) -> None:
        if not isinstance(head, nn.Linear):
            raise TypeError(
                f"CAM needs the model's final nn.Linear (e.g. model.fc), got {type(head).__name__}"
            )
        self.head = head

    def __call__(self, activation: Tensor, gradient: Tensor | None, class_idx: Tensor) -> Tensor:
        if activation.shape[1] != self.head.in_features:
            raise ValueError(
                f"CAM needs the layer that feeds the pooled linear head: it has "
                f"{activation.shape[1]} channels, the head expects {self.head.in_features} "
                "(for a ResNet use target layer 'layer4')"
            )
        weights = self.head.weight.detach()[class_idx].to(activation.dtype)
        return torch.einsum("bc,bchw->bhw", weights, activation)

    def __repr__(self) -> str:
        return f"ClassActivationMap(head={self.head})"


# Imported here, not at the top: scorecam.py subclasses CAMMethod defined above.
from .scorecam import ScoreCAM  # noqa: E402

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
