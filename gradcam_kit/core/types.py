"""The type aliases of the public signatures, named once.

Used in the signatures of the engine (:mod:`gradcam_kit.core.engine`), the methods, the
explainers and :class:`~gradcam_kit.models.resnet50.ResNet50FineTuned`, so that what a
parameter accepts is written in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["ClassIdx", "LayerSpec", "OutputSize", "ScoreFn"]

#: The class(es) to explain: ``None`` for each image's predicted class, an ``int`` (or a
#: numpy integer) for every image, or a sequence/tensor with one class per image. A
#: single-logit head has the classes ``0`` and ``1`` (see :mod:`gradcam_kit.core.scores`).
ClassIdx = int | Sequence[int] | Tensor | None

#: Target layer(s): a dotted name (``"layer4"``, ``"layer4[-1].conv3"``), a module of the
#: model, or a sequence of them.
LayerSpec = str | nn.Module | Sequence[str | nn.Module]

#: Size of the returned maps: ``"input"`` for the input's ``(H, W)``, an ``(h, w)`` tuple,
#: or ``None`` for the layer's own resolution.
OutputSize = tuple[int, int] | str | None

#: Maps the model's output (the logits, or whatever the model returns: a dict, a tuple) to
#: the ``(B,)`` scores to explain.
ScoreFn = Callable[[Any], Tensor]
