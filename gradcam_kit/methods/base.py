"""How each CAM method turns a layer's activation and gradient into a map.

Every method here is a small object with one job: given the captured ``activation``
``(B, C, h, w)``, the ``gradient`` of the class scores with respect to it (same shape)
and the explained ``class_idx`` ``(B,)``, return the map ``(B, h, w)`` *before* ReLU.
Capture, the graph cut, ReLU, upsampling and normalisation are the engine's job
(:mod:`gradcam_kit.core.engine`), so a method is a few lines and cannot get them wrong.

The formulas follow the papers and, where the papers leave a choice, the widely used
implementation in pytorch-grad-cam (``pytorch_grad_cam``) so that maps agree to 1e-4
(see docs/METHODS.md for each choice and the measured agreement).

Score-CAM (:class:`gradcam_kit.methods.activation.ScoreCAM`) needs no gradient but re-runs the model
on masked inputs; the engine hands it the model and the input through its ``bind`` method,
so it is used like any other method: ``get_method("scorecam")``.
"""


from __future__ import annotations

from torch import Tensor

__all__ = ["CAMMethod"]


class CAMMethod:
    """Base class: turns an activation (and its gradient) into an un-rectified map."""

    name: str = "cam"
    #: False for methods that need no backward at all (the engine then builds no graph).
    needs_gradient: bool = True

    def __call__(self, activation: Tensor, gradient: Tensor | None, class_idx: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
