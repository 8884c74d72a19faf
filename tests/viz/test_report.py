"""report.html: summary numbers, confusion matrix, skipped files, safety and self-containment."""

from __future__ import annotations

import html
import json
import re

import pytest

from gradcam_kit.viz.report import write_report

CLASSES = ["normal", "lesion"]


def _rows(labels, preds, probs=None):
    probs = probs or [0.9] * len(preds)
    return [
        {
            "index": i,
            "overlay": f"overlays/{i:06d}_img.png",
            "path": f"sub/img_{i}.png",
            "label_idx": label,
            "pred_idx": pred,
            "probability": prob,
            "explained_idx": pred,
        }
        for i, (label, pred, prob) in enumerate(zip(labels, preds, probs))
    ]


def _embedded(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert match is not None
    return json.loads(match.group(1))


def _matrix_cells(page: str) -> list[int]:
    return [int(c) for c in re.findall(r'<td style="background:[^"]*">(\d+)</td>', page)]


def test_matrix_counts_true_rows_and_predicted_columns_without_unknown_labels(tmp_path):
    rows = _rows([0, 0, 1, 1, 1, None, -1, ""], [0, 1, 1, 1, 0, 1, 0, 1])
    page = write_report(tmp_path, rows, class_names=CLASSES).read_text(encoding="utf-8")
    assert _matrix_cells(page) == [1, 1, 1, 2]  # rows: true class, columns: predicted
    footer = re.search(r"<tfoot>(.*?)</tfoot>", page, re.S).group(1)
    assert re.findall(r"<td>(\d+)</td>", footer) == ["3", "5"]  # predictions of all 8 images


def test_class_indices_outside_the_classes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="out of range for 2 classes: true 0, predicted 2"):
        write_report(tmp_path, _rows([0, 1], [2, 1]), class_names=CLASSES)
    with pytest.raises(ValueError, match="out of range"):
        write_report(tmp_path, _rows([0, 2], [0, 1]), class_names=CLASSES)


def test_templates_ship_with_the_package():
    from importlib.resources import files

    templates = files("gradcam_kit.viz") / "templates"
    names = {entry.name for entry in templates.iterdir()}
    assert {"report.html.j2", "report.css", "report.js"} <= names


def test_summary_accuracy_and_matrix(tmp_path):
    rows = _rows([0, 0, 1, 1], [0, 1, 1, 1])
    page = write_report(tmp_path, rows, class_names=CLASSES).read_text(encoding="utf-8")
    assert "75.0%" in page  # 3 of 4 correct
    assert re.search(r'<div class="v">1</div><div class="k">misclassified</div>', page)
    assert re.search(r'<div class="v">4</div><div class="k">explained</div>', page)
    cells = re.findall(r'<td style="background:[^"]*">(\d+)</td>', page)
    assert cells == ["1", "1", "0", "2"]
    data = _embedded(page)
    assert data["classes"] == CLASSES
    assert [r[0] for r in data["rows"]] == [0, 1, 2, 3]
    assert data["rows"][1][3:5] == [0, 1]  # true normal, predicted lesion


def test_unlabelled_rows_give_no_accuracy_and_no_matrix(tmp_path):
    rows = _rows([None, ""], [0, 1])
    page = write_report(tmp_path, rows, class_names=CLASSES).read_text(encoding="utf-8")
    assert "accuracy" not in page
    assert "confusion matrix" not in page
    assert [r[3] for r in _embedded(page)["rows"]] == [-1, -1]
    assert 'value="wrong"' not in page  # no "misclassified" filter without labels


def test_skipped_files_are_listed_escaped(tmp_path):
    skipped = [("data/notes.txt", "not an image file"), ("data/<b>bad</b>.png", "cannot decode")]
    page = write_report(tmp_path, _rows([0], [0]), class_names=CLASSES, skipped=skipped).read_text(
        encoding="utf-8"
    )
    assert 'id="skipped"' in page and "Skipped files (2)" in page
    assert "data/notes.txt" in page
    assert html.escape("data/<b>bad</b>.png") in page and "<b>bad</b>" not in page
    assert re.search(r'<div class="v">3</div><div class="k">inputs</div>', page)


def test_page_is_self_contained(tmp_path):
    (tmp_path / "overlays").mkdir()
    page = write_report(
        tmp_path,
        _rows([0, 1], [0, 0]),
        class_names=CLASSES,
        contact_sheet=tmp_path / "contact_sheet.png",
        predictions_csv=tmp_path / "predictions.csv",
    ).read_text(encoding="utf-8")
    # No URL with a scheme or a protocol-relative one anywhere: no network resource.
    assert not re.search(r"(?i)\b(?:https?|ftp|wss?):|//[a-z0-9.-]+\.[a-z]{2,}/", page)
    assert not re.search(r'<(?:script|link|img|iframe)[^>]*\s(?:src|href)=', page)  # all inline
    assert 'href="contact_sheet.png"' in page and 'href="predictions.csv"' in page
    assert "Content-Security-Policy" in page
    assert [r[1] for r in _embedded(page)["rows"]] == [
        "overlays/000000_img.png",
        "overlays/000001_img.png",
    ]


def test_paths_cannot_break_out_of_the_data_script(tmp_path):
    rows = _rows([0], [0])
    rows[0]["path"] = "evil</script><script>alert(1)</script><!--.png"
    page = write_report(tmp_path, rows, class_names=CLASSES).read_text(encoding="utf-8")
    assert page.count("</script>") == 2  # the data block and the code block, nothing injected
    assert _embedded(page)["rows"][0][2] == rows[0]["path"]


def test_class_names_are_escaped_in_the_page_and_kept_in_the_data(tmp_path):
    names = ["</script><script>alert(1)</script>", "it's <b>&</b>"]
    page = write_report(tmp_path, _rows([0, 1], [1, 1]), class_names=names).read_text(encoding="utf-8")
    assert page.count("</script>") == 2 and "<b>&</b>" not in page
    assert html.escape(names[0], quote=False) in page  # matrix headers and filter options
    assert _embedded(page)["classes"] == names


def test_overlay_paths_become_relative_to_the_page(tmp_path):
    rows = _rows([0], [0])
    rows[0]["overlay"] = str(tmp_path / "overlays" / "a.png")
    page = write_report(tmp_path, rows, class_names=CLASSES).read_text(encoding="utf-8")
    assert _embedded(page)["rows"][0][1] == "overlays/a.png"


def test_page_size_is_embedded_and_validated(tmp_path):
    page = write_report(tmp_path, _rows([0], [0]), class_names=CLASSES, page_size=7).read_text(
        encoding="utf-8"
    )
    assert _embedded(page)["pageSize"] == 7
    with pytest.raises(ValueError, match="page_size"):
        write_report(tmp_path, [], class_names=CLASSES, page_size=0)
