"""Classification metrics computed in torch: accuracy, AUROC, sensitivity, specificity, confusion.

All functions take the model's logits and the targets as tensors and stay on their
device; only :func:`classification_metrics` turns its final numbers into Python floats.

Conventions:

* ``num_classes == 1`` (a single sigmoid logit): positive when ``z >= 0`` (the rule of
  :mod:`gradcam_kit.core.scores`); the score for AUROC is ``z`` itself.
* Two classes: class 1 is the positive class; the score is ``softmax(z)[:, 1]``.
* More classes: AUROC is the macro average of one-vs-rest AUROCs over the classes that
  have both positives and negatives; sensitivity and specificity are macro averages of
  the one-vs-rest values.

AUROC is the Mann-Whitney statistic with average ranks for ties, equal to
``sklearn.metrics.roc_auc_score``; it is ``nan`` when only one class is present.

**Multi-label** heads (one sigmoid per finding) take ``(N, F)`` integer labels: ``1``
positive, ``0`` negative, ``-1`` left out (an uncertain or blank label the policy ignores,
see :mod:`gradcam_kit.data.multilabel`). :func:`multilabel_metrics` gives each finding's
AUROC over its counted labels, their mean, and per-finding thresholds that maximise
Youden's J (:func:`youden_thresholds`); :func:`task_metrics` picks the single-label or
the multi-label metrics from the labels' shape.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.scores import class_probabilities, predicted_class

__all__ = [
    "auroc",
    "binary_auroc",
    "classification_metrics",
    "confusion_matrix",
    "format_metrics",
    "json_safe",
    "multilabel_auroc",
    "multilabel_metrics",
    "predictions",
    "scores",
    "task_metrics",
    "youden_thresholds",
]


def _check(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    if logits.ndim == 1:
        logits = logits[:, None]
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, num_classes) or (N,), got {tuple(logits.shape)}")
    if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must be (N,) with N={logits.shape[0]} to match the logits, got {tuple(targets.shape)}"
        )
    return logits.detach().float(), targets.detach().long()


def predictions(logits: Tensor) -> Tensor:
    """``(N,)`` predicted class indices (:func:`~gradcam_kit.core.scores.predicted_class`;
    ``(N,)`` logits are a single logit)."""
    return predicted_class(logits.reshape(-1, 1) if logits.ndim == 1 else logits)


def scores(logits: Tensor) -> Tensor:
    """Class probabilities ``(N, K)``; for a single logit, ``(N, 2)`` ``[1 - p, p]``
    (:func:`~gradcam_kit.core.scores.class_probabilities`)."""
    return class_probabilities(logits.reshape(-1, 1) if logits.ndim == 1 else logits)


def confusion_matrix(preds: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    flat = targets.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def _average_ranks(values: Tensor) -> Tensor:
    """1-based ranks of ``values`` with ties given their average rank."""
    _, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return (ends - (counts.double() - 1) / 2)[inverse]


def binary_auroc(score: Tensor, is_positive: Tensor) -> Tensor:
    """AUROC of ``score`` for the bool/0-1 ``is_positive`` labels; ``nan`` if one class is absent."""
    is_positive = is_positive.bool()
    n_pos = is_positive.sum().double()
    n_neg = is_positive.numel() - n_pos
    rank_sum = _average_ranks(score.double())[is_positive].sum()
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return torch.where((n_pos > 0) & (n_neg > 0), auc, torch.full_like(auc, float("nan")))


def auroc(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary AUROC, or macro one-vs-rest AUROC for more than two classes (0-dim tensor)."""
    logits, targets = _check(logits, targets)
    if logits.shape[1] == 1:
        return binary_auroc(logits[:, 0], targets == 1)
    probabilities = torch.softmax(logits, dim=1)
    if logits.shape[1] == 2:
        return binary_auroc(probabilities[:, 1], targets == 1)
    per_class = torch.stack(
        [binary_auroc(probabilities[:, k], targets == k) for k in range(logits.shape[1])]
    )
    return per_class.nanmean()


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), float("nan"))


def classification_metrics(logits: Tensor, targets: Tensor) -> dict[str, object]:
    """Accuracy, AUROC, sensitivity, specificity and the confusion matrix.

    Args:
        logits: ``(N, K)`` raw model outputs (``K == 1`` for a sigmoid head) or ``(N,)``.
        targets: ``(N,)`` class indices.

    Returns:
        ``{"accuracy", "auroc", "sensitivity", "specificity", "confusion_matrix", "count"}``:
        floats (``nan`` where undefined, e.g. AUROC with a single class present), the
        matrix as a list of lists (rows = true class) and the number of samples.
    """
    logits, targets = _check(logits, targets)
    num_classes = max(logits.shape[1], 2)
    preds = predictions(logits)
    matrix = confusion_matrix(preds, targets, num_classes)
    true_positive = matrix.diagonal()
    actual = matrix.sum(dim=1)
    predicted = matrix.sum(dim=0)
    total = matrix.sum()
    false_positive = predicted - true_positive
    actual_negative = total - actual
    sensitivity = _ratio(true_positive, actual)
    specificity = _ratio(actual_negative - false_positive, actual_negative)
    if num_classes == 2:  # class 1 is the positive class
        sensitivity, specificity = sensitivity[1], specificity[1]
    else:
        sensitivity, specificity = sensitivity.nanmean(), specificity.nanmean()
    summary = torch.stack([
        _ratio(true_positive.sum(), total),
        auroc(logits, targets).double(),
        sensitivity,
        specificity,
    ]).tolist()  # the one host transfer, at the end
    return {
        "accuracy": summary[0],
        "auroc": summary[1],
        "sensitivity": summary[2],
        "specificity": summary[3],
        "confusion_matrix": matrix.tolist(),
        "count": int(total),
    }


def multilabel_auroc(logits: Tensor, labels: Tensor) -> Tensor:
    """``(F,)`` AUROC of each finding over its counted labels (``labels >= 0``); ``nan`` without both."""
    _check_multilabel(logits, labels)
    return torch.stack([
        binary_auroc(logits[labels[:, k] >= 0, k].float(), labels[labels[:, k] >= 0, k] == 1)
        for k in range(logits.shape[1])
    ]) if logits.shape[1] else torch.zeros(0, dtype=torch.float64)


def _check_multilabel(logits: Tensor, labels: Tensor) -> None:
    if logits.ndim != 2 or labels.shape != logits.shape:
        raise ValueError(
            f"multi-label logits and labels must both be (N, F), got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )


def youden_thresholds(probabilities: Tensor, labels: Tensor, default: float = 0.5) -> Tensor:
    """``(F,)`` probability thresholds, one per finding, that maximise Youden's J (TPR - FPR).

    A finding is called positive when its probability is ``>=`` its threshold. The
    threshold lies halfway between the score that maximises J and the next lower score,
    so that it does not sit on a training point. ``default`` where a finding lacks
    positives or negatives.
    """
    _check_multilabel(probabilities, labels)
    chosen = []
    for k in range(probabilities.shape[1]):
        keep = labels[:, k] >= 0
        score, positive = probabilities[keep, k].double(), labels[keep, k] == 1
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            chosen.append(default)
            continue
        values, order = torch.sort(score, descending=True)
        tpr = positive[order].double().cumsum(0) / n_pos
        fpr = (~positive[order]).double().cumsum(0) / n_neg
        last = torch.ones_like(values, dtype=torch.bool)  # the last of each group of ties
        last[:-1] = values[:-1] != values[1:]
        j = torch.where(last, tpr - fpr, torch.full_like(tpr, -2.0))
        best = int(j.argmax())
        below = values[best + 1] if best + 1 < len(values) else values[best]
        chosen.append(float((values[best] + below) / 2))
    return torch.tensor(chosen, dtype=torch.float64)


def multilabel_metrics(
    logits: Tensor, labels: Tensor, findings: list[str] | None = None, thresholds: Tensor | None = None
) -> dict[str, object]:
    """Per-finding AUROC, their mean, and accuracy, sensitivity and specificity at thresholds.

    Args:
        logits: ``(N, F)`` raw outputs, one sigmoid logit per finding.
        labels: ``(N, F)`` ``1``/``0``, ``-1`` where the label does not count.
        findings: the findings' names (default ``"0" .. "F-1"``).
        thresholds: ``(F,)`` probability thresholds for accuracy, sensitivity and
            specificity (default 0.5 each).

    Returns:
        ``{"mean_auroc", "auroc" (the same mean, so that single-label logs and --monitor
        auroc work), "accuracy", "sensitivity", "specificity" (macro over findings),
        "per_finding": {name: {"auroc", "positives", "negatives", "sensitivity",
        "specificity"}}, "thresholds" (Youden's J on these predictions), "count"}``.
    """
    _check_multilabel(logits, labels)
    logits, labels = logits.detach().float(), labels.detach().long()
    names = list(findings) if findings is not None else [str(k) for k in range(logits.shape[1])]
    probabilities = torch.sigmoid(logits)
    cut = thresholds.to(probabilities) if thresholds is not None else torch.full((logits.shape[1],), 0.5)
    called = probabilities >= cut.to(probabilities.device)
    counted, positive = labels >= 0, labels == 1
    numbers = torch.stack([
        multilabel_auroc(logits, labels).double(),
        (positive & counted).sum(0).double(), (~positive & counted).sum(0).double(),
        _ratio((called & positive).sum(0), positive.sum(0)),
        _ratio((~called & ~positive & counted).sum(0), (~positive & counted).sum(0)),
        _ratio(((called == positive) & counted).sum(0), counted.sum(0)),
    ]).tolist()  # the one host transfer
    auc, pos, neg, sens, spec, acc = numbers
    mean_auroc = float(torch.tensor(auc).nanmean())
    return {
        "mean_auroc": mean_auroc,
        "auroc": mean_auroc,
        "accuracy": float(torch.tensor(acc).nanmean()),
        "sensitivity": float(torch.tensor(sens).nanmean()),
        "specificity": float(torch.tensor(spec).nanmean()),
        "per_finding": {
            name: {"auroc": auc[k], "positives": int(pos[k]), "negatives": int(neg[k]),
                   "sensitivity": sens[k], "specificity": spec[k]}
            for k, name in enumerate(names)
        },
        "thresholds": youden_thresholds(probabilities, labels).tolist(),
        "count": int(labels.shape[0]),
    }


def task_metrics(logits: Tensor, targets: Tensor, findings: list[str] | None = None) -> dict[str, object]:
    """:func:`multilabel_metrics` for ``(N, F)`` labels, else :func:`classification_metrics`."""
    if targets.ndim == 2:
        return multilabel_metrics(logits, targets, findings)
    return classification_metrics(logits, targets)


def _number(value: object) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def format_metrics(metrics: dict[str, object]) -> str:
    """One line: ``acc 0.950  auroc 0.990  sens 0.940  spec 0.960``; for multi-label metrics
    the mean AUROC and each finding's first (``mean auroc 0.850 (opacity 0.900, ...)``)."""
    line = (
        f"acc {_number(metrics.get('accuracy'))}  auroc {_number(metrics.get('auroc'))}  "
        f"sens {_number(metrics.get('sensitivity'))}  spec {_number(metrics.get('specificity'))}"
    )
    per_finding = metrics.get("per_finding")
    if isinstance(per_finding, dict):
        findings = ", ".join(f"{name} {_number(row.get('auroc'))}" for name, row in per_finding.items())
        line = f"mean auroc {_number(metrics.get('mean_auroc'))} ({findings})  " + line.replace(
            f"  auroc {_number(metrics.get('auroc'))}", ""
        )
    return line


def json_safe(value: object) -> object:
    """A copy of nested dicts/lists with ``nan`` floats replaced by ``None`` (strict JSON)."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
