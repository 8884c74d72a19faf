"""Which scores a CAM explains: class indices checked against the logits, and the scores.

:func:`resolve_class_idx` turns what a user passes as a class (an ``int``, a numpy integer
from ``np.argmax``, a sequence, a tensor or an array) into one index per image;
:func:`explained_scores` picks the ``(B,)`` scores whose gradient (or, for Score-CAM, whose
value) is explained: a class's logit, a class of a single-logit head, or any ``score_fn``
of the model's output, which may then be a dict or a tuple.

This module owns the rule of a single-logit head (``num_classes=1``, a sigmoid): its one
logit ``z`` stands for **two classes**, ``0`` (negative) and ``1`` (positive).

* predicted class (:func:`predicted_class`): ``1`` where ``z >= 0`` (``sigmoid(z) >= 0.5``,
  decided on ``z`` itself, so no float rounding of the sigmoid moves it), else ``0``;
* probabilities (:func:`class_probabilities`): ``[1 - sigmoid(z), sigmoid(z)]``;
* score explained for a class (:func:`class_scores`): ``+z`` for class ``1`` and ``-z`` for
  class ``0``; explaining the prediction therefore explains ``|z|``.

Every caller (the engine, the CAM methods, the metrics, the commands and the demo) uses
these functions instead of testing ``logits.shape[1] == 1`` itself.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .types import ScoreFn

__all__ = [
    "class_probabilities",
    "class_probability",
    "class_scores",
    "explained_scores",
    "predicted_class",
    "resolve_class_idx",
    "select_class",
]


def resolve_class_idx(class_idx: object, logits: Tensor) -> Tensor | None:
    """Validates ``class_idx`` against ``logits`` ``(B, num_classes)``.

    Returns a ``(B,)`` int64 tensor on the logits' device: ``class_idx`` per image, or the
    predicted class (:func:`predicted_class`) when ``class_idx`` is ``None``. A single-logit
    head has two classes, ``0`` and ``1`` (see the module docstring).

    Raises:
        ValueError: wrong length, out of range, or not integers; the message says what was
            expected.
    """
    logits = _require_tensor_output(logits, "a class index")
    if logits.ndim != 2:
        raise ValueError(
            f"class-based explanations need logits of shape (B, num_classes), got "
            f"{tuple(logits.shape)}; pass score_fn to explain another output"
        )
    batch, num_classes = logits.shape
    if class_idx is None:
        return predicted_class(logits.detach())
    num_classes = max(num_classes, 2)  # a single logit: classes 0 (negative) and 1 (positive)
    expected = (
        f"an int in [0, {num_classes - 1}] or a sequence/tensor of {batch} such ints"
    )
    if _is_bool(class_idx) or (isinstance(class_idx, numbers.Real) and not _is_int(class_idx)):
        raise ValueError(f"class index must be {expected}, got {_describe(class_idx)}")
    if _is_int(class_idx):  # int, numpy.int64 (np.argmax), ...
        class_idx = int(class_idx)
        if not 0 <= class_idx < num_classes:
            raise ValueError(f"class index {class_idx} is out of range: expected {expected}")
        return torch.full((batch,), class_idx, dtype=torch.long, device=logits.device)
    if isinstance(class_idx, Tensor):
        indices = class_idx
    elif type(class_idx).__module__ == "numpy" and hasattr(class_idx, "dtype"):  # an ndarray
        indices = torch.as_tensor(class_idx.copy())
    elif isinstance(class_idx, Sequence) and not isinstance(class_idx, str):
        if not all(_is_int(i) and not _is_bool(i) for i in class_idx):
            shown = ", ".join(_describe(i) for i in class_idx)
            raise ValueError(f"class indices must be {expected}, got [{shown}]")
        indices = torch.tensor([int(i) for i in class_idx], dtype=torch.long)
    else:
        raise ValueError(f"class index must be {expected}, got {_describe(class_idx)}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise ValueError(f"class indices must be integers ({expected}), got dtype {indices.dtype}")
    if indices.ndim == 0:
        indices = indices.expand(batch)
    if indices.shape != (batch,):
        raise ValueError(
            f"got {tuple(indices.shape)} class indices for a batch of {batch}: expected {expected}"
        )
    # One validation check on user-given indices; predicted classes never reach here.
    if bool(((indices < 0) | (indices >= num_classes)).any()):
        raise ValueError(f"class indices {indices.tolist()} out of range: expected {expected}")
    return indices.to(device=logits.device, dtype=torch.long)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy.bool_


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def _describe(value: object) -> str:
    kind = type(value)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    return f"{value!r} ({name})"


def _require_tensor_output(output: object, what: str) -> Tensor:
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the model returns a {type(output).__name__}, not a logits tensor, so {what} is "
            "undefined; pass score_fn= to say which score to explain, e.g. "
            "score_fn=lambda out: out['logits'][:, 1]"
        )
    return output


def _detach(output: object) -> object:
    """Detaches the tensors of a model output (a tensor, or a dict/tuple/list of them)."""
    if isinstance(output, Tensor):
        return output.detach()
    if isinstance(output, Mapping):
        return {k: _detach(v) for k, v in output.items()}
    if isinstance(output, tuple) and hasattr(output, "_fields"):  # a namedtuple
        return type(output)(*(_detach(v) for v in output))
    if isinstance(output, (tuple, list)):
        return type(output)(_detach(v) for v in output)
    return output


def _requires_grad(output: object) -> bool:
    if isinstance(output, Tensor):
        return output.requires_grad
    if isinstance(output, Mapping):
        return any(_requires_grad(v) for v in output.values())
    if isinstance(output, (tuple, list)):
        return any(_requires_grad(v) for v in output)
    return False


def _check_logits(logits: Tensor) -> Tensor:
    if logits.ndim != 2:
        raise ValueError(f"expected logits of shape (B, num_classes), got {tuple(logits.shape)}")
    return logits


def predicted_class(logits: Tensor) -> Tensor:
    """The ``(B,)`` int64 predicted class of each row of ``(B, num_classes)`` logits.

    ``argmax`` over the classes; for a single logit ``z``, ``1`` where ``z >= 0`` and ``0``
    where ``z < 0`` (the rule of the module docstring).

    Raises:
        ValueError: ``logits`` is not 2-D.
    """
    logits = _check_logits(logits)
    if logits.shape[1] == 1:
        return (logits[:, 0] >= 0).long()
    return logits.argmax(dim=1)


def class_probabilities(logits: Tensor) -> Tensor:
    """``(B, C)`` float32 class probabilities: softmax, or ``[1 - p, p]`` with ``p = sigmoid(z)``
    for a single logit (then ``C == 2``).

    Raises:
        ValueError: ``logits`` is not 2-D.
    """
    logits = _check_logits(logits).float()
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - positive, positive], dim=1)
    return logits.softmax(dim=1)


def class_probability(logits: Tensor, class_idx: Tensor) -> Tensor:
    """The ``(B,)`` float32 probability of ``class_idx`` (one index per row of ``logits``).

    Softmax; for a single logit, ``sigmoid(z)`` for class ``1`` and ``1 - sigmoid(z)`` for
    class ``0``.

    Raises:
        ValueError: ``logits`` is not 2-D.
    """
    probabilities = class_probabilities(logits)
    return probabilities.gather(1, class_idx.to(probabilities.device).long()[:, None])[:, 0]


def select_class(values: Tensor, class_idx: Tensor) -> Tensor:
    """Picks class ``class_idx[b]`` along dim 1 of ``values`` ``(B, K, ...)`` -> ``(B, ...)``.

    For ``K == 1`` (a single-logit head) class ``1`` is ``+values[:, 0]`` and any other index
    (class ``0``) is ``-values[:, 0]``: the logit and the head's weights of a single logit
    explain the positive class as they are and the negative class negated. ``class_idx`` is
    assumed valid (see :func:`resolve_class_idx`).
    """
    if values.shape[1] == 1:
        positive = (class_idx == 1).view(-1, *([1] * (values.ndim - 2)))
        return torch.where(positive.to(values.device), values[:, 0], -values[:, 0])
    rows = torch.arange(values.shape[0], device=values.device)
    return values[rows, class_idx.to(values.device)]


def class_scores(logits: Tensor, class_idx: Tensor | None) -> Tensor:
    """The ``(B,)`` scores whose gradients are explained: the logit of ``class_idx``.

    For a single logit ``z``: ``+z`` for class ``1``, ``-z`` for class ``0``. ``None`` explains
    the predicted class (:func:`predicted_class`): for a single logit that is ``|z|``, the
    evidence for the decision the model made.
    """
    if class_idx is None:
        class_idx = predicted_class(logits.detach())
    return select_class(logits, class_idx)


def explained_scores(
    logits: object,
    class_idx: Tensor | None,
    score_fn: ScoreFn | None = None,
    *,
    batch: int | None = None,
) -> Tensor:
    """The ``(B,)`` scores to explain: ``score_fn(logits)`` if given, else :func:`class_scores`.

    ``logits`` is whatever the model returns: with a ``score_fn`` it may be a dict, a tuple
    or any other object (then pass ``batch``, the number of images).

    Raises:
        ValueError: ``score_fn`` did not return one score per image.
        TypeError: the output is not a tensor and no ``score_fn`` was given.
    """
    if score_fn is None:
        return class_scores(_require_tensor_output(logits, "a class score"), class_idx)
    if batch is None:
        batch = _require_tensor_output(logits, "the batch size").shape[0]
    scores = score_fn(logits)
    if not isinstance(scores, Tensor) or scores.shape != (batch,):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"score_fn must return one score per image, shape ({batch},), got {shape}")
    return scores
