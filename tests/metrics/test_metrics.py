"""Classification metrics in torch: hand-checked values and parity with scikit-learn."""

from __future__ import annotations

import math

import pytest
import torch

from gradcam_kit.metrics.classification import (
    auroc,
    binary_auroc,
    classification_metrics,
    confusion_matrix,
    json_safe,
    predictions,
)


def test_confusion_matrix_rows_are_true_classes():
    preds = torch.tensor([0, 1, 1, 2, 0])
    targets = torch.tensor([0, 1, 0, 2, 2])
    expected = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    assert torch.equal(confusion_matrix(preds, targets, 3), expected)


def test_binary_auroc_hand_computed_with_ties():
    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4, 0.8>0.1, 0.4=0.4 -> 0.5, 0.4>0.1)
    score = torch.tensor([0.8, 0.4, 0.4, 0.1])
    labels = torch.tensor([1, 1, 0, 0])
    assert binary_auroc(score, labels).item() == pytest.approx(3.5 / 4)


def test_auroc_is_nan_with_one_class():
    assert math.isnan(binary_auroc(torch.rand(5), torch.ones(5)).item())


def test_binary_metrics_two_logits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.0, 0.2]])
    targets = torch.tensor([0, 1, 1, 1, 0])
    m = classification_metrics(logits, targets)
    # preds 0,1,1,0,1 -> TP=2, FN=1, TN=1, FP=1
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["count"] == 5


def test_single_logit_sigmoid_head():
    logits = torch.tensor([[-1.0], [0.5], [2.0], [-0.2]])
    targets = torch.tensor([0, 0, 1, 1])
    assert predictions(logits).tolist() == [0, 1, 1, 0]
    m = classification_metrics(logits, targets)
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]
    assert m["auroc"] == pytest.approx(binary_auroc(logits[:, 0], targets == 1).item())
    # (N,) logits are the same as (N, 1)
    assert classification_metrics(logits[:, 0], targets) == m


def test_parity_with_sklearn_binary_and_macro_ovr():
    metrics = pytest.importorskip("sklearn.metrics")
    torch.manual_seed(0)
    logits = torch.randn(60, 2)
    logits[:, 1] = torch.round(logits[:, 1] * 2) / 2  # ties
    targets = torch.randint(0, 2, (60,))
    probs = torch.softmax(logits, 1)[:, 1].numpy()
    assert auroc(logits, targets).item() == pytest.approx(metrics.roc_auc_score(targets.numpy(), probs))

    logits3 = torch.randn(90, 3)
    targets3 = torch.arange(90) % 3
    probs3 = torch.softmax(logits3, 1).numpy()
    expected = metrics.roc_auc_score(targets3.numpy(), probs3, multi_class="ovr", average="macro")
    m = classification_metrics(logits3, targets3)
    assert m["auroc"] == pytest.approx(expected)
    preds = logits3.argmax(1).numpy()
    assert m["sensitivity"] == pytest.approx(metrics.recall_score(targets3.numpy(), preds, average="macro"))
    assert m["confusion_matrix"] == metrics.confusion_matrix(targets3.numpy(), preds).tolist()


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="targets must be"):
        classification_metrics(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="logits must be"):
        classification_metrics(torch.zeros(4, 2, 2), torch.zeros(4, dtype=torch.long))


def test_json_safe_replaces_nan():
    assert json_safe({"a": [float("nan"), 1.0], "b": "x"}) == {"a": [None, 1.0], "b": "x"}
