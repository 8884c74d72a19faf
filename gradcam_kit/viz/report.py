"""``report.html``: one self-contained page to browse what ``explain`` wrote.

The page is rendered from the Jinja2 template ``templates/report.html.j2`` (autoescaped),
which inlines ``templates/report.css`` and ``templates/report.js``: the page needs nothing
but the files next to it, images are referenced by paths relative to the page, and no
network resource is ever requested. The per-image data is embedded once as JSON
(``|tojson``, safe inside ``<script>``); the cards are built by the script one page at a
time (``loading="lazy"`` on top), so a folder of tens of thousands of images stays
responsive. The script also counts loaded and broken images on ``<body>``
(``data-images-loaded`` / ``data-images-broken``), which the browser test reads.

:func:`write_findings_report` writes the same page for a multi-label model: per image one
overlay per explained finding, each finding's probability against its threshold (and the
truth, when the input had labels), a table per finding, and a filter by finding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from ..metrics.classification import confusion_matrix

__all__ = ["write_findings_report", "write_report"]

PAGE_SIZE = 48
#: Columns of a record in the page's JSON (``data.rows``), as report.js reads them.
RECORD_FIELDS = ("index", "overlay", "path", "label_idx", "pred_idx", "probability", "explained_idx")
#: Columns of a multi-label record: ``probabilities`` and ``truth`` (1, 0, -1 or null) hold
#: one entry per finding, ``overlays`` ``[finding index, overlay path]`` pairs.
FINDINGS_FIELDS = ("index", "path", "probabilities", "truth", "overlays")


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gradcam_kit.viz", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    # |tojson escapes <, >, & and ' as \uXXXX, so no file name can end the <script> element.
    env.policies["json.dumps_kwargs"] = {"ensure_ascii": False}
    return env


def _relative(path: str | Path, output: Path) -> str:
    path = Path(path)
    try:
        return path.resolve().relative_to(output.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _records(rows: Sequence[Mapping[str, object]], output: Path, num_classes: int) -> list[list]:
    """One list per row in :data:`RECORD_FIELDS` order, sorted by index, with ``-1`` for no label.

    Raises:
        ValueError: a labelled row whose label or prediction lies outside the classes.
    """
    records = []
    for row in rows:
        label = row.get("label_idx")
        label = -1 if label is None or label == "" else int(label)
        records.append(
            [
                int(row["index"]),
                _relative(str(row["overlay"]), output),
                str(row["path"]),
                label,
                int(row["pred_idx"]),
                round(float(row["probability"]), 4),
                int(row.get("explained_idx", row["pred_idx"])),
            ]
        )
    for _, _, _, true, predicted, _, _ in records:
        if true >= 0 and not (true < num_classes and 0 <= predicted < num_classes):
            raise ValueError(
                f"class index out of range for {num_classes} classes: true {true}, predicted {predicted}"
            )
    records.sort(key=lambda r: r[0])
    return records


def _matrix(labelled: list[list], num_classes: int) -> list[list[int]]:
    """The confusion matrix of the labelled records, ``matrix[true][predicted]``."""
    import torch

    true = torch.tensor([r[3] for r in labelled], dtype=torch.long)
    predicted = torch.tensor([r[4] for r in labelled], dtype=torch.long)
    return confusion_matrix(predicted, true, num_classes).tolist()


def _matrix_cells(matrix: list[list[int]]) -> list[list[dict[str, object]]]:
    """Each count with its shade: green on the diagonal, red off it, stronger for more."""
    peak = max(max(r) for r in matrix) or 1
    return [
        [
            {"count": count, "hue": "34,139,34" if t == p else "200,40,40",
             "shade": 0.12 + 0.6 * count / peak if count else 0.0}
            for p, count in enumerate(row)
        ]
        for t, row in enumerate(matrix)
    ]


def _summary(records: list[list], labelled: list[list], correct: int, skipped: int) -> list[tuple[str, str]]:
    """The numbers at the top of the page, ``(name, value)``."""
    summary = [
        ("inputs", str(len(records) + skipped)),
        ("explained", str(len(records))),
        ("skipped", str(skipped)),
    ]
    if labelled:
        summary += [
            ("with labels", str(len(labelled))),
            ("accuracy", f"{100.0 * correct / len(labelled):.1f}%"),
            ("misclassified", str(len(labelled) - correct)),
        ]
    return summary


def write_report(
    output: str | Path,
    rows: Sequence[Mapping[str, object]],
    *,
    class_names: Sequence[str],
    skipped: Sequence[tuple[str, str]] = (),
    contact_sheet: str | Path | None = None,
    predictions_csv: str | Path | None = None,
    details: Mapping[str, str] | None = None,
    title: str = "Grad-CAM report",
    page_size: int = PAGE_SIZE,
) -> Path:
    """Writes ``output/report.html``.

    Args:
        output: the folder holding the overlays; the page goes there.
        rows: one mapping per explained image with ``index``, ``overlay`` (path of the
            overlay PNG), ``path`` (the input, as shown), ``label_idx`` (``None``, ``""`` or
            ``-1`` when unknown), ``pred_idx``, ``probability`` (of the predicted class) and
            ``explained_idx`` (the class the heatmap explains).
        class_names: the model's classes, in output order.
        skipped: ``(path, reason)`` for inputs that were not explained.
        contact_sheet: the contact-sheet PNG to link, if any.
        predictions_csv: the CSV to link, if any.
        details: extra ``name: value`` lines for the header (checkpoint, layer, ...).
        title: the page title.
        page_size: cards per page.

    Returns:
        The path of the page.

    Raises:
        ValueError: ``page_size < 1`` or a class index outside ``class_names``.
    """
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    names = [str(n) for n in class_names]
    records = _records(rows, output, len(names))
    labelled = [r for r in records if r[3] >= 0]
    matrix = _matrix(labelled, len(names)) if labelled else None
    correct = sum(matrix[i][i] for i in range(len(names))) if matrix else 0
    links = [(_relative(path, output), text) for path, text in
             ((predictions_csv, "predictions.csv"), (contact_sheet, "contact sheet")) if path is not None]
    page = _environment().get_template("report.html.j2").render(
        findings=None,
        title=title,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        details=[(str(k), str(v)) for k, v in (details or {}).items()],
        links=links,
        summary=_summary(records, labelled, correct, len(skipped)),
        classes=names,
        predicted_counts=[sum(1 for r in records if r[4] == c) for c in range(len(names))],
        matrix=_matrix_cells(matrix) if matrix else None,
        skipped=[(str(p), str(r)) for p, r in skipped],
        data={"classes": names, "rows": records, "pageSize": page_size},
    )
    path = output / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _finding_records(rows: Sequence[Mapping[str, object]], output: Path, findings: Sequence[str]) -> list[list]:
    """One list per row in :data:`FINDINGS_FIELDS` order, sorted by index."""
    def truth(row: Mapping[str, object], finding: str) -> int | None:
        value = row.get(f"true_{finding}", "")
        return None if value in ("", None) else int(value)

    records = [
        [
            int(row["index"]),
            str(row["path"]),
            [round(float(row[f"prob_{f}"]), 4) for f in findings],
            [truth(row, f) for f in findings],
            [[k, _relative(str(row[f"overlay_{f}"]), output)] for k, f in enumerate(findings) if row.get(f"overlay_{f}")],
        ]
        for row in rows
    ]
    return sorted(records, key=lambda r: r[0])


def _finding_table(records: list[list], findings: Sequence[str], thresholds: Sequence[float], labelled: bool) -> list[dict]:
    """Per finding: its threshold, images called positive, overlays drawn and, with labels,
    the positives and negatives and the sensitivity and specificity at the threshold."""
    table = []
    for k, name in enumerate(findings):
        called = [r[2][k] >= thresholds[k] for r in records]
        row = {"name": name, "threshold": f"{thresholds[k]:.3f}", "called": sum(called),
               "overlays": sum(1 for r in records if any(o[0] == k for o in r[4]))}
        if labelled:
            pos = [c for c, r in zip(called, records) if r[3][k] == 1]
            neg = [c for c, r in zip(called, records) if r[3][k] == 0]
            row.update(positives=len(pos), negatives=len(neg),
                       sensitivity=f"{sum(pos) / len(pos):.2f}" if pos else "-",
                       specificity=f"{1 - sum(neg) / len(neg):.2f}" if neg else "-")
        table.append(row)
    return table


def write_findings_report(
    output: str | Path,
    rows: Sequence[Mapping[str, object]],
    *,
    findings: Sequence[str],
    thresholds: Sequence[float],
    skipped: Sequence[tuple[str, str]] = (),
    contact_sheet: str | Path | None = None,
    predictions_csv: str | Path | None = None,
    details: Mapping[str, str] | None = None,
    labelled: bool = False,
    title: str = "Grad-CAM report (multi-label)",
    page_size: int = PAGE_SIZE,
) -> Path:
    """Writes ``output/report.html`` for a multi-label model.

    Args:
        output: the folder holding the overlays; the page goes there.
        rows: one mapping per image with ``index``, ``path``, ``prob_<finding>``,
            ``overlay_<finding>`` (empty when not explained) and, with labels,
            ``true_<finding>`` (1, 0, -1, or empty when blank).
        findings: the model's findings, in output order.
        thresholds: their probability thresholds.
        skipped, contact_sheet, predictions_csv, details, title, page_size: as for
            :func:`write_report`.
        labelled: the rows hold ``true_<finding>``.

    Returns:
        The path of the page.

    Raises:
        ValueError: ``page_size < 1``.
    """
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    names = [str(f) for f in findings]
    records = _finding_records(rows, output, names)
    links = [(_relative(path, output), text) for path, text in
             ((predictions_csv, "predictions.csv"), (contact_sheet, "contact sheet")) if path is not None]
    summary = [
        ("inputs", str(len(records) + len(skipped))), ("explained", str(len(records))), ("skipped", str(len(skipped))),
        ("overlays", str(sum(len(r[4]) for r in records))),
        ("with a finding", str(sum(1 for r in records if any(p >= t for p, t in zip(r[2], thresholds))))),
    ]
    page = _environment().get_template("report.html.j2").render(
        findings=_finding_table(records, names, thresholds, labelled), labelled=labelled,
        title=title,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        details=[(str(k), str(v)) for k, v in (details or {}).items()],
        links=links, summary=summary, classes=names, predicted_counts=[], matrix=None,
        skipped=[(str(p), str(r)) for p, r in skipped],
        data={"findings": names, "thresholds": list(thresholds), "labelled": labelled, "rows": records, "pageSize": page_size},
    )
    path = output / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
