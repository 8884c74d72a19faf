"""evaluate and explain on a multi-label checkpoint: per-finding rows, one overlay per finding, the report."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gradcam_kit.cli.commands import main
from gradcam_kit.data.multilabel import (
    LabelPolicy,
    MultiLabelDataset,
    fold_labels,
    read_multilabel_csv,
)
from gradcam_kit.data.preprocess import build_transform
from gradcam_kit.data.synthetic_findings import FINDINGS, write_multilabel_folder
from gradcam_kit.metrics.pointing import evaluate_findings, evaluate_pointing
from gradcam_kit.models.checkpoint import load_checkpoint, save_checkpoint
from resnet50 import ResNet50FineTuned

SIZE = 64
# Threshold 0: opacity and effusion are called positive in every image; 1.01: nodule never.
THRESHOLDS = [0.0, 1.01, 0.0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    write_multilabel_folder(root, {"val": 8, "test": 8}, size=SIZE, seed=0, progress=False)
    return root


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = ResNet50FineTuned(3, weights=None)
    path = tmp_path / "run" / "best.pt"
    save_checkpoint(
        path, model, num_classes=3, class_names=list(FINDINGS), input_size=SIZE, task="multilabel",
        findings=list(FINDINGS), thresholds=THRESHOLDS,
        label_policy=LabelPolicy(("ignore",) * 3, ("negative",) * 3).describe(FINDINGS),
    )
    return path


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_explain_writes_one_overlay_per_positive_finding(data, checkpoint, tmp_path):
    out = tmp_path / "explained"
    assert main(["explain", str(data / "test.csv"), "--checkpoint", str(checkpoint), "--output", str(out),
                 "--num-workers", "0", "--layer", "layer3"]) == 0
    rows = _rows(out / "predictions.csv")
    assert len(rows) == 8
    assert [c for c in rows[0] if c.startswith(("prob_", "true_", "overlay_"))] == [
        *(f"prob_{f}" for f in FINDINGS), *(f"true_{f}" for f in FINDINGS), *(f"overlay_{f}" for f in FINDINGS)
    ]
    written = sorted(p.name for p in (out / "overlays").iterdir())
    assert len(written) == 16 and all(n.endswith(("__opacity.png", "__effusion.png")) for n in written)
    for row in rows:
        assert row["positive"] == row["explained"] == "opacity|effusion" and row["overlay_nodule"] == ""
        assert (out / row["overlay_opacity"]).is_file() and (out / row["overlay_effusion"]).is_file()
    truth = read_multilabel_csv(data / "test.csv").samples
    assert [int(r["true_nodule"]) for r in rows] == [s.values[1] for s in truth]
    # Each overlay explains its own finding: the two maps of an image differ.
    first = rows[0]
    opacity = np.asarray(Image.open(out / first["overlay_opacity"]))
    effusion = np.asarray(Image.open(out / first["overlay_effusion"]))
    assert opacity.shape == effusion.shape and not np.array_equal(opacity, effusion)
    page = (out / "report.html").read_text()
    assert '"findings": ["opacity", "nodule", "effusion"]' in page and 'value="wrong:1"' in page


def test_explain_named_findings_and_errors(data, checkpoint, tmp_path):
    out = tmp_path / "named"
    assert main(["explain", str(data / "test"), "--checkpoint", str(checkpoint), "--output", str(out),
                 "--num-workers", "0", "--layer", "layer3", "--findings", "nodule"]) == 0
    written = sorted(p.name for p in (out / "overlays").iterdir())
    assert len(written) == 8 and all(n.endswith("__nodule.png") for n in written)
    rows = _rows(out / "predictions.csv")
    assert rows[0]["positive"] == "opacity|effusion" and rows[0]["explained"] == "nodule"
    assert "true_nodule" not in rows[0]  # a plain folder has no labels
    with pytest.raises(ValueError, match=r"--findings \['pneumonia'\] are not findings of the model"):
        main(["explain", str(data / "test"), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "x"),
              "--findings", "pneumonia"])
    with pytest.raises(ValueError, match="--class-idx does not apply to a multi-label checkpoint"):
        main(["explain", str(data / "test"), "--checkpoint", str(checkpoint), "--output", str(tmp_path / "y"),
              "--class-idx", "0"])


def test_evaluate_reports_each_finding_with_ceiling_and_baseline(data, checkpoint, capsys):
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "test",
                 "--layers", "layer3", "layer4", "--method", "gradcam", "layercam", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for finding in FINDINGS:
        assert f"{finding}: AUROC" in printed and f"explaining the {finding} logit" in printed
    result = json.loads((checkpoint.parent / "evaluation.json").read_text())
    assert result["task"] == "multilabel" and list(result["findings"]) == list(FINDINGS)
    labels = np.array([s.values for s in read_multilabel_csv(data / "test.csv").samples])
    for k, finding in enumerate(FINDINGS):
        row = result["findings"][finding]
        assert row["positives_with_masks"] == int(labels[:, k].sum())  # that finding's positives
        assert set(row["pointing_game"]) == {"gradcam", "layercam"} and set(row["ceiling"]) == {"layer3", "layer4"}
        assert 0 <= row["center_baseline"]["accuracy"] <= 1
        assert set(result["classification"]["per_finding"][finding]) >= {"auroc", "positives", "negatives"}
    assert result["recommended"]["split"] == "val" and result["thresholds"] == THRESHOLDS
    assert load_checkpoint(checkpoint)["recommended"]["layer"] in ("layer3", "layer4")


def test_evaluate_findings_is_the_pointing_game_of_each_logit(data):
    torch.manual_seed(0)
    model = ResNet50FineTuned(3, weights=None)
    table = read_multilabel_csv(data / "test.csv")
    dataset = MultiLabelDataset(
        table.samples, table.findings, LabelPolicy(("ignore",) * 3, ("negative",) * 3),
        build_transform((SIZE, SIZE)), mask_size=(SIZE, SIZE), return_index=True,
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    options = {"layers": ["layer3"], "methods": ["gradcam"], "progress": False}
    result = evaluate_findings(model, loader, FINDINGS, **options)
    for k, finding in enumerate(FINDINGS):
        single = [(b[0], fold_labels(b[1], b[2]), b[3][:, k], b[4]) for b in loader]
        alone = evaluate_pointing(model, single, class_index=k, **options)
        assert result["findings"][finding]["pointing_game"] == alone["pointing_game"]
        assert result["findings"][finding]["ceiling"] == alone["ceiling"]
