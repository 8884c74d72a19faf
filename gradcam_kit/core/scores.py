"""Which scores a CAM explains: class indices checked against the logits, and the scores.

:func:`resolve_class_idx` turns what a user passes as a class (an ``int``, a numpy integer
from ``np.argmax``, a sequence, a tensor or an array) into one index per image;
:func:`explained_scores` picks the ``(B,)`` scores whose gradient (or, for Score-CAM, whose
value) is explained: a class's logit, the decision of a single-logit head, or any
``score_fn`` of the model's output, which may then be a dict or a tuple.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["class_scores", "explained_scores", "resolve_class_idx"]

ScoreFn = Callable[[Tensor], object]


def resolve_class_idx(class_idx: object, logits: Tensor) -> Tensor | None:
    """Validates ``class_idx`` against ``logits`` ``(B, num_classes)``.

    Returns a ``(B,)`` int64 tensor on the logits' device, or ``None`` when ``class_idx`` is
    ``None`` and the head has a single logit (then the predicted decision is explained,
    see :func:`class_scores`).

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
        return None if num_classes == 1 else logits.detach().argmax(dim=1)
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


def class_scores(logits: Tensor, class_idx: Tensor | None) -> Tensor:
    """The ``(B,)`` scores whose gradients are explained.

    ``class_idx=None`` on a single-logit head explains the predicted decision: the logit
    ``z`` where ``z >= 0`` (positive) and ``-z`` where ``z < 0`` (negative).
    """
    if class_idx is None:
        logit = logits[:, 0]
        return torch.where(logit >= 0, logit, -logit)
    return logits.gather(1, class_idx[:, None])[:, 0]


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
