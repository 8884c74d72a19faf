"""The gradient family: each weights the activation with its gradient.

Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM and LayerCAM all use the activation and the
gradient that the engine captures in one forward pass, so any number of them can be
computed from the same pass (:meth:`gradcam_kit.core.engine.CAMEngine.explain_methods`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import CAMMethod

__all__ = ["GradCAM", "GradCAMPlusPlus", "HiResCAM", "LayerCAM", "XGradCAM"]


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
