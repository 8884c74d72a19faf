"""``explain`` for a multi-label checkpoint: one heatmap per finding, each its own overlay.

For each image the model gives one probability per finding (a sigmoid each). The findings
explained are those at or above their threshold (stored in the checkpoint by ``train``,
chosen on validation), or the findings the user names (``explain --findings a,b``). Each
explained finding gets its own ``original | heatmap | overlay`` PNG,
``overlays/<index>_<name>__<finding>.png``, whose map explains that finding's logit; all
the image's pairs go through the model in one batched forward and backward pass.

:func:`explain_findings` runs one rank's share of the inputs batch by batch (decoding,
device and writer-thread machinery of :mod:`gradcam_kit.viz.overlays`);
:func:`write_findings_results` writes ``predictions.csv`` (one ``prob_<finding>`` column
per finding, ``true_<finding>`` when the input CSV has labels, ``overlay_<finding>``),
``skipped.csv``, a contact sheet of the overlays and ``report.html``
(:func:`gradcam_kit.viz.report.write_findings_report`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from .canvas import (
    GREEN,
    GREY,
    RED,
    WHITE,
    Geometry,
    compose_canvases,
    write_canvas,
    write_contact_sheet,
)
from .overlays import (
    ExplainStats,
    ModelInfo,
    OverlayOptions,
    _display_path,
    _percent,
    _prepare,
    _safe_name,
    _Shard,
    _Stopwatch,
    _write_csv,
    run_batches,
)

if TYPE_CHECKING:
    import torch

    from ..data.inputs import InputItem, Inputs

__all__ = ["FindingsChoice", "explain_findings", "write_findings_results"]


class FindingsChoice:
    """Which findings to explain, and the truth to show beside them.

    Args:
        findings: the model's findings, in output order.
        thresholds: per-finding probability thresholds (0.5 each when ``None``).
        named: explain these findings for every image; ``None``: those at or above threshold.
        truth: ``{input index: (1, 0, -1 or None per finding)}`` read from a multi-label CSV.

    Raises:
        ValueError: ``named`` holds a finding the model does not have.
    """

    def __init__(
        self, findings: Sequence[str], thresholds: Sequence[float] | None = None,
        named: Sequence[str] | None = None, truth: Mapping[int, Sequence[int | None]] | None = None,
    ) -> None:
        self.findings = [str(f) for f in findings]
        self.thresholds = [float(t) for t in thresholds] if thresholds is not None else [0.5] * len(self.findings)
        if len(self.thresholds) != len(self.findings):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.findings)} findings {self.findings}")
        unknown = [f for f in named or () if f not in self.findings]
        if unknown:
            raise ValueError(f"--findings {unknown} are not findings of the model; it has {self.findings}")
        self.named = None if named is None else [self.findings.index(f) for f in named]
        self.truth = dict(truth or {})

    def explained(self, probabilities: Sequence[float]) -> list[int]:
        """The finding indices to explain for an image with these probabilities."""
        if self.named is not None:
            return list(self.named)
        return [k for k, (p, t) in enumerate(zip(probabilities, self.thresholds)) if p >= t]


def _pairs(probabilities: torch.Tensor, choice: FindingsChoice) -> tuple[list[int], list[int]]:
    """``(image positions, finding indices)`` of the batch's heatmaps to draw."""
    rows, findings = [], []
    for b, probs in enumerate(probabilities.tolist()):
        for k in choice.explained(probs):
            rows.append(b)
            findings.append(k)
    return rows, findings


def _render_pairs(batch: dict, shard: _Shard, choice: FindingsChoice, watch: _Stopwatch):
    """Probabilities ``(B, F)`` and the canvases of the batch's (image, finding) pairs, on the host."""
    import torch

    from ..data.inputs import normalize_batch

    images = batch["image"].to(shard.device, non_blocking=True)
    pictures = batch["display"].to(shard.device, non_blocking=True) if "display" in batch else images
    watch.lap("to device", sync=True)
    x = normalize_batch(images, shard.info.mean, shard.info.std).contiguous(memory_format=shard.memory_format)
    with torch.no_grad():
        probabilities = torch.sigmoid(shard.model(x).float())
    rows, findings = _pairs(probabilities.cpu(), choice)
    canvases = None
    if rows:
        index = torch.tensor(rows, device=shard.device)
        options = {k: v for k, v in shard.gradcam_kwargs.items() if k != "gradcam_class_idx"}
        with torch.no_grad():
            # One finding = one sigmoid logit: its class 1 explains +z (gradcam_kit.core.scores).
            explained = [1] * len(findings) if probabilities.shape[1] == 1 else findings
            _, heatmaps = shard.model(x[index], return_gradcam=True, gradcam_class_idx=explained, **options)
        watch.lap("model", sync=True)
        canvases = compose_canvases(
            pictures[index].permute(0, 2, 3, 1), heatmaps, shard.geometry,
            alpha=shard.options.alpha, colormap=shard.options.colormap,
        )
        watch.lap("colouring", sync=True)
        canvases = canvases.cpu().numpy()
    else:
        watch.lap("model", sync=True)
    host = probabilities.cpu().tolist()
    watch.lap("to host")
    return host, list(zip(rows, findings)), canvases


def _overlay_name(index: int, item: InputItem, finding: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", finding)[:40] or "finding"
    return _safe_name(index, item.path)[: -len(".png")] + f"__{safe}.png"


def _verdict(predicted: bool, truth: int | None) -> tuple[str, tuple]:
    if truth is None or truth < 0:
        return "?" if truth is None else "uncertain", WHITE
    return str(truth), GREEN if bool(truth) == predicted else RED


def _row(shard: _Shard, choice: FindingsChoice, item: InputItem, probs: list[float], overlays: dict[int, Path]) -> dict:
    """One row of ``predictions.csv``."""
    truth = choice.truth.get(item.index)
    positive = [f for f, p, t in zip(choice.findings, probs, choice.thresholds) if p >= t]
    row = {
        "index": item.index,
        "path": str(item.path),
        "positive": "|".join(positive),
        "explained": "|".join(choice.findings[k] for k in sorted(overlays)),
        **{f"prob_{f}": round(p, 6) for f, p in zip(choice.findings, probs)},
        **{f"overlay_{f}": overlays[k].relative_to(shard.output).as_posix() if k in overlays else "" for k, f in enumerate(choice.findings)},
    }
    if choice.truth:
        row.update({f"true_{f}": "" if truth is None or truth[k] is None else truth[k] for k, f in enumerate(choice.findings)})
    return row


def _queue(batch: dict, numbers: tuple, shard: _Shard, choice: FindingsChoice, writers: ThreadPoolExecutor) -> tuple[list[dict], list[Future]]:
    """Hands each pair's canvas to the writer threads; returns the batch's rows and the futures."""
    probabilities, pairs, canvases = numbers
    items = [shard.by_index[i] for i in batch["index"].tolist()]
    overlays: list[dict[int, Path]] = [{} for _ in items]
    pending = []
    for canvas, (b, k) in zip(canvases if canvases is not None else [], pairs):
        item, finding = items[b], choice.findings[k]
        path = shard.output / "overlays" / _overlay_name(item.index, item, finding)
        p, threshold = probabilities[b][k], choice.thresholds[k]
        truth = choice.truth.get(item.index)
        true_text, colour = _verdict(p >= threshold, None if truth is None else truth[k])
        titles = (
            (_display_path(item.path, shard.root), GREY),
            (f"{shard.map_title}: {finding}", WHITE),
            (f"{finding} {_percent(p)} (threshold {threshold:.2f}) | true {true_text}", colour),
        )
        pending.append(writers.submit(write_canvas, canvas, path, titles, shard.geometry, shard.options.png_compression))
        overlays[b][k] = path
    rows = [_row(shard, choice, item, probabilities[b], overlays[b]) for b, item in enumerate(items)]
    return rows, pending


def explain_findings(
    items: list[InputItem], model: torch.nn.Module, info: ModelInfo, options: OverlayOptions,
    device: torch.device, output: Path, root: Path, choice: FindingsChoice, *, show_progress: bool = False,
) -> tuple[list[dict], list[tuple[str, str]], ExplainStats]:
    """Explains ``items`` finding by finding and writes one overlay per explained finding.

    Args:
        items, model, info, options, device, output, root, show_progress: as for
            :func:`gradcam_kit.viz.overlays.explain_images` (``options.class_idx`` is unused).
        choice: the findings, their thresholds, those named, and the truth.

    Returns:
        The rows of ``predictions.csv``, ``(path, reason)`` for images that could not be
        decoded, and the time spent per stage.
    """
    shard = _prepare(items, model, info, options, device, output, root)
    return run_batches(
        items, shard,
        lambda batch, shard, watch: (_render_pairs(batch, shard, choice, watch),),
        lambda batch, numbers, shard, writers: _queue(batch, numbers, shard, choice, writers),
        show_progress=show_progress,
    )


def _sheet_rows(rows: list[dict], choice: FindingsChoice) -> list[dict]:
    """One contact-sheet tile per overlay: ``#index finding probability``, framed by the truth."""
    tiles = []
    for row in rows:
        for k, finding in enumerate(choice.findings):
            if row[f"overlay_{finding}"]:
                truth = row.get(f"true_{finding}", "")
                predicted = row[f"prob_{finding}"] >= choice.thresholds[k]
                correct = "" if truth in ("", -1) else int(bool(truth) == predicted)
                tiles.append({"index": row["index"], "overlay": row[f"overlay_{finding}"], "correct": correct,
                              "pred": finding, "probability": row[f"prob_{finding}"]})
    return tiles


def write_findings_results(
    output: Path, rows: list[dict], failed: list[tuple[str, str]], *, inputs: Inputs, choice: FindingsChoice,
    display: tuple[int, int], details: Mapping[str, str], grid: int = 64, page_size: int = 48,
) -> None:
    """Writes ``predictions.csv``, ``skipped.csv``, the contact sheet and ``report.html``.

    Args:
        output: the folder holding ``overlays/``.
        rows: every rank's rows (:func:`explain_findings`); sorted in place by index.
        failed: ``(path, reason)`` for images that could not be decoded.
        inputs: the collected inputs (their root and the files skipped while collecting).
        choice: the findings and thresholds.
        display: the size of the pictures on the canvases.
        details: ``name: value`` lines for the report's header.
        grid: overlays in the contact sheet (0: none).
        page_size: cards per page of the report.
    """
    from .report import write_findings_report

    rows.sort(key=lambda r: r["index"])
    skipped = list(inputs.skipped) + sorted(failed)
    findings = choice.findings
    columns = ["index", "path", "positive", "explained", *(f"prob_{f}" for f in findings)]
    columns += [f"true_{f}" for f in findings] if choice.truth else []
    columns += [f"overlay_{f}" for f in findings]
    _write_csv(output / "predictions.csv", rows, columns)
    _write_csv(output / "skipped.csv", [{"path": p, "reason": r} for p, r in skipped], ["path", "reason"])
    tiles = _sheet_rows(rows, choice)
    sheet = write_contact_sheet(tiles, output, Geometry.for_size(display), max_images=grid) if grid and tiles else None
    report_rows = [{**r, "path": _display_path(Path(r["path"]), inputs.root)} for r in rows]
    write_findings_report(
        output, report_rows, findings=findings, thresholds=choice.thresholds, skipped=skipped,
        contact_sheet=sheet, predictions_csv=output / "predictions.csv", details=details,
        labelled=bool(choice.truth), page_size=page_size,
    )
