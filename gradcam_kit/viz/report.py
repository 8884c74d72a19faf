"""``report.html``: one self-contained page to browse what ``explain`` wrote.

The page is rendered from the Jinja2 template ``templates/report.html.j2`` (autoescaped),
which inlines ``templates/report.css`` and ``templates/report.js``: the page needs nothing
but the files next to it, images are referenced by paths relative to the page, and no
network resource is ever requested. The per-image data is embedded once as JSON
(``|tojson``, safe inside ``<script>``); the cards are built by the script one page at a
time (``loading="lazy"`` on top), so a folder of tens of thousands of images stays
responsive. The script also counts loaded and broken images on ``<body>``
(``data-images-loaded`` / ``data-images-broken``), which the browser test reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from ..metrics.classification import confusion_matrix

__all__ = ["write_report"]

PAGE_SIZE = 48
#: Columns of a record in the page's JSON (``data.rows``), as report.js reads them.
RECORD_FIELDS = ("index", "overlay", "path", "label_idx", "pred_idx", "probability", "explained_idx")


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
