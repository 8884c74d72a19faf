"""Multi-label CSVs: the reader, the uncertain/blank policies, the dataset, and synth's multi-label variant."""

from __future__ import annotations

import csv

import pytest
import torch
from PIL import Image

from gradcam_kit.data.multilabel import (
    LabelPolicy,
    MultiLabelDataset,
    MultiLabelSample,
    encode_labels,
    is_multilabel_csv,
    parse_policy,
    read_multilabel_csv,
)
from gradcam_kit.data.synthetic_findings import generate_multilabel, write_multilabel_folder


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def chexpert(tmp_path):
    """A CheXpert-like CSV: Path, Sex, Age, three findings with 1.0/0.0/-1.0/blank, images under a root."""
    images = tmp_path / "images"
    (images / "p1").mkdir(parents=True)
    for i in range(4):
        Image.new("L", (20, 20), 40 * i).save(images / "p1" / f"v{i}.png")
    rows = [
        ["p1/v0.png", "Male", "61", "1.0", "", "-1.0"],
        ["p1/v1.png", "Female", "40", "0.0", "-1.0", "1.0"],
        ["p1/v2.png", "Female", "33", "", "1.0", "0.0"],
        ["p1/v3.png", "Male", "70", "-1.0", "0.0", ""],
    ]
    csv_path = _write_csv(tmp_path / "labels.csv", ["Path", "Sex", "Age", "Edema", "Atelectasis", "Effusion"], rows)
    return csv_path, images


def test_reader_detects_the_finding_columns_and_resolves_paths_against_images(chexpert):
    csv_path, images = chexpert
    table = read_multilabel_csv(csv_path, images=images)
    assert table.findings == ["Edema", "Atelectasis", "Effusion"]  # not Sex, not Age
    assert [s.path for s in table.samples] == [images / "p1" / f"v{i}.png" for i in range(4)]
    assert table.samples[0].values == (1, None, -1) and table.samples[3].values == (-1, 0, None)
    assert is_multilabel_csv(csv_path)
    chosen = read_multilabel_csv(csv_path, images=images, findings=["Effusion", "Edema"])
    assert chosen.findings == ["Effusion", "Edema"] and chosen.samples[1].values == (1, 0)


def test_reader_errors_say_what_to_do(chexpert, tmp_path):
    csv_path, images = chexpert
    with pytest.raises(ValueError, match="does not exist .*--images"):
        read_multilabel_csv(csv_path)  # paths are relative to the images root, not the CSV
    with pytest.raises(ValueError, match=r"\['Pneumonia'\] not in the header"):
        read_multilabel_csv(csv_path, images=images, findings=["Pneumonia"])
    with pytest.raises(ValueError, match="Age is '61'; a finding holds 1"):
        read_multilabel_csv(csv_path, images=images, findings=["Age"])
    bad = _write_csv(tmp_path / "nopath.csv", ["file_name", "A"], [["x.png", "1"]])
    with pytest.raises(ValueError, match="no image path column"):
        read_multilabel_csv(bad)
    single = _write_csv(tmp_path / "single.csv", ["path", "label"], [["x.png", "1"]])
    assert not is_multilabel_csv(single)


def test_policies_per_finding():
    findings = ["A", "B", "C"]
    assert parse_policy(None, findings, default="ignore", what="--uncertain") == ("ignore",) * 3
    assert parse_policy("negative,B=positive", findings, default="ignore", what="--uncertain") == (
        "negative", "positive", "negative",
    )
    with pytest.raises(ValueError, match="--uncertain: unknown policy 'maybe'"):
        parse_policy("maybe", findings, default="ignore", what="--uncertain")
    with pytest.raises(ValueError, match=r"--blank names \['D'\]"):
        parse_policy("D=ignore", findings, default="negative", what="--blank")


@pytest.mark.parametrize(
    ("uncertain", "blank", "target", "mask"),
    [
        ("ignore", "negative", [1, 0, 0, 0, 0], [1, 1, 0, 1, 1]),  # U-Ignore, blanks negative
        ("negative", "ignore", [1, 0, 0, 0, 0], [1, 1, 1, 0, 1]),  # U-Zeros
        ("positive", "positive", [1, 0, 1, 1, 0], [1, 1, 1, 1, 1]),  # U-Ones
    ],
)
def test_encode_labels_follows_the_policy(uncertain, blank, target, mask):
    policy = LabelPolicy((uncertain,) * 5, (blank,) * 5)
    got_target, got_mask = encode_labels([1, 0, -1, None, 0], policy)
    assert got_target.tolist() == target and got_mask.tolist() == mask


def test_dataset_returns_image_target_mask_and_finding_masks(chexpert):
    csv_path, images = chexpert
    table = read_multilabel_csv(csv_path, images=images)
    policy = LabelPolicy(("ignore", "positive", "negative"), ("negative",) * 3)
    dataset = MultiLabelDataset(table.samples, table.findings, policy, mask_size=(8, 8), return_index=True)
    image, target, mask, masks, index = dataset[1]  # Edema 0, Atelectasis -1 (-> 1), Effusion 1
    assert image.size == (20, 20) and index == 1
    assert target.tolist() == [0, 1, 1] and mask.tolist() == [1, 1, 1]
    assert masks.shape == (3, 8, 8) and masks.dtype == torch.bool and not masks.any()
    _, target0, mask0, _, _ = dataset[0]  # Edema 1, Atelectasis blank (-> 0), Effusion -1 (-> 0)
    assert target0.tolist() == [1, 0, 0] and mask0.tolist() == [1, 1, 1]
    # (2, F): negatives and positives that count, per finding
    assert dataset.class_counts().tolist() == [[2, 2, 3], [1, 2, 1]]


def test_both_datasets_name_an_unreadable_image(tmp_path):
    from gradcam_kit.data.datasets import ImageDataset, Sample

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    policy = LabelPolicy(("ignore",), ("negative",))
    multilabel = MultiLabelDataset([MultiLabelSample(broken, (1,), (None,))], ["Edema"], policy)
    single = ImageDataset([Sample(broken, 0)], ["normal"])
    for dataset in (multilabel, single):
        with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
            dataset[0]


def test_synthetic_findings_have_their_own_masks_and_balanced_labels(tmp_path):
    images, masks, labels = generate_multilabel(16, size=48, seed=0)
    assert labels.shape == (16, 3) and masks.shape == (16, 3, 48, 48)
    assert labels.sum(0).tolist() == [8, 8, 8]
    assert {tuple(r) for r in labels.tolist()} == {(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)}
    has_mask = masks.flatten(2).any(2)
    assert torch.equal(has_mask, labels.bool())  # a mask exactly where the finding is
    # The scene stays the same whatever findings are asked for: only the finding differs.
    nodule_only, _, _ = generate_multilabel(16, size=48, seed=0, findings=["nodule"])
    no_finding = labels.sum(1) == 0
    assert torch.equal(images[no_finding], nodule_only[no_finding])
    effusion = masks[:, 2].flatten(1).float().mean(1)
    nodule = masks[:, 1].flatten(1).float().mean(1)
    assert effusion[labels[:, 2] == 1].mean() > 4 * nodule[labels[:, 1] == 1].mean()  # different shapes


def test_write_multilabel_folder_writes_a_csv_the_reader_reads(tmp_path):
    counts = write_multilabel_folder(tmp_path, {"train": 8, "val": 4}, size=32, progress=False, findings=["nodule", "opacity"])
    assert counts["train"] == {"images": 8, "nodule": 4, "opacity": 4}
    table = read_multilabel_csv(tmp_path / "train.csv")
    assert table.findings == ["nodule", "opacity"]  # the mask columns are not findings
    with_nodule = [s for s in table.samples if s.values[0] == 1]
    assert with_nodule and all(s.masks[0] is not None and s.masks[0].is_file() for s in with_nodule)
    assert all(s.masks[0] is None for s in table.samples if s.values[0] == 0)
    assert with_nodule[0].masks[0].parent == tmp_path / "masks" / "train" / "nodule"
