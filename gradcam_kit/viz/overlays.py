"""The work of ``explain`` on a list of images: decode, predict, colour, write overlays and rows.

:func:`explain_images` runs one rank's share of the inputs through the model batch by
batch and writes each ``original | heatmap | overlay`` PNG from a pool of writer threads;
:func:`write_results` writes ``predictions.csv``, ``skipped.csv``, the contact sheet and
``report.html`` from the rows of every rank.

torch and numpy are imported inside the functions that use them, so that importing this
module (as ``gradcam-kit explain --help`` does) stays cheap.
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor

    from ..data.inputs import InputItem, Inputs

__all__ = [
    "MIN_DISPLAY",
    "STAGES",
    "ExplainStats",
    "ModelInfo",
    "OverlayOptions",
    "display_size",
    "explain_images",
    "run_batches",
    "write_results",
]

#: The stages of the batch loop, in order, as :class:`ExplainStats` times them.
STAGES = ("wait for data", "to device", "model", "colouring", "to host", "rows, queue PNGs")
MIN_DISPLAY = 192  # titles stay legible on small model inputs (96 px X-rays, say)
#: The columns of ``predictions.csv`` before one ``prob_<class>`` column per class.
PREDICTION_COLUMNS = (
    "index", "path", "label", "label_idx", "pred", "pred_idx", "probability",
    "explained", "explained_idx", "correct", "overlay",
)


@dataclass
class ModelInfo:
    """What explain needs to know about the model, read before any work starts."""

    class_names: list[str]
    names_known: bool
    num_outputs: int
    size: tuple[int, int]
    mean: Sequence[float]
    std: Sequence[float]
    source: str
    #: a multi-label model's findings and their thresholds (``None`` for a single-label one)
    findings: list[str] | None = None
    thresholds: list[float] | None = None


@dataclass(frozen=True)
class OverlayOptions:
    """How :func:`explain_images` explains and draws (the ``explain`` command's options)."""

    method: str
    layer: str
    alignment: str
    display: tuple[int, int]
    class_idx: int | None = None
    batch_size: int = 16
    num_workers: int | None = None
    memory_format: str = "channels_last"
    alpha: float = 0.5
    colormap: int | str = "jet"
    png_compression: int = 1
    writers: int | None = None
    profile: bool = False
    #: ``(center, width)`` replacing each DICOM file's own window, or ``None``
    dicom_window: tuple[float, float] | None = None


@dataclass
class ExplainStats:
    """Seconds per stage of the batch loop, summed decode and write times, images done."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    decode_s: float = 0.0
    write_s: float = 0.0
    images: int = 0


def display_size(requested: int | None, model_size: tuple[int, int]) -> tuple[int, int]:
    """The size of the pictures on a canvas.

    Args:
        requested: ``--display-size``, or ``None``.
        model_size: the model's ``(height, width)`` input size.

    Returns:
        ``(requested, requested)``, else the model's input size scaled up to at least
        :data:`MIN_DISPLAY` pixels.
    """
    if requested:
        return (requested, requested)
    scale = max(1.0, MIN_DISPLAY / min(model_size))
    return (round(model_size[0] * scale), round(model_size[1] * scale))


# -- the tensor path ------------------------------------------------------------------
def _predict(logits: Tensor, class_idx: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Probabilities ``(B, C)``, predicted and explained class ``(B,)``, on the device."""
    import torch

    from ..core.scores import class_probabilities, predicted_class

    probs, predicted = class_probabilities(logits), predicted_class(logits)
    explained = predicted if class_idx is None else torch.full_like(predicted, class_idx)
    return probs, predicted, explained


def _gradcam_kwargs(options: OverlayOptions) -> dict:
    return {
        "gradcam_method": options.method, "gradcam_layers": options.layer, "gradcam_alignment": options.alignment,
        "gradcam_class_idx": options.class_idx,  # a single logit: class 1 explains z, class 0 -z (core.scores)
    }


class _Stopwatch:
    """Adds the time since the last lap to a stage of :class:`ExplainStats`."""

    def __init__(self, stats: ExplainStats, sync: Callable[[], None]) -> None:
        self.stats, self.sync, self.clock = stats, sync, time.perf_counter()

    def lap(self, stage: str, *, sync: bool = False) -> None:
        if sync:  # with --profile on CUDA: wait for the device, so the stage gets its time
            self.sync()
        now = time.perf_counter()
        self.stats.seconds[stage] += now - self.clock
        self.clock = now


@dataclass
class _Shard:
    """What every batch of one rank's share needs: the model, the options, where to write."""

    model: torch.nn.Module
    info: ModelInfo
    options: OverlayOptions
    device: torch.device
    output: Path
    root: Path
    by_index: dict[int, InputItem]
    geometry: Geometry
    memory_format: torch.memory_format
    gradcam_kwargs: dict
    map_title: str


def _prepare(
    items: list[InputItem], model: torch.nn.Module, info: ModelInfo, options: OverlayOptions,
    device: torch.device, output: Path, root: Path,
) -> _Shard:
    """Puts the model in the chosen memory format and gathers what each batch needs."""
    import torch

    from ..methods import method_title

    memory_format = torch.channels_last if options.memory_format == "channels_last" else torch.contiguous_format
    model.to(memory_format=memory_format)
    return _Shard(
        model=model, info=info, options=options, device=device, output=output, root=root,
        by_index={item.index: item for item in items},
        geometry=Geometry.for_size(options.display),
        memory_format=memory_format,
        gradcam_kwargs=_gradcam_kwargs(options),
        map_title=f"{method_title(options.method)} {options.layer}",
    )


def _make_loader(items: list[InputItem], shard: _Shard):
    """A DataLoader decoding the images in workers; returns it and the number of workers."""
    from torch.utils.data import DataLoader

    from ..data.inputs import ExplainDataset, collate_explain

    options = shard.options
    dataset = ExplainDataset(items, shard.info.size, options.display, dicom_window=options.dicom_window)
    workers = min(4, os.cpu_count() or 1) if options.num_workers is None else options.num_workers
    workers = min(workers, max(1, math.ceil(len(items) / options.batch_size)))
    loader = DataLoader(
        dataset,
        batch_size=options.batch_size,
        num_workers=workers,
        collate_fn=collate_explain,
        pin_memory=shard.device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    return loader, workers


def _render_batch(batch: dict, shard: _Shard, watch: _Stopwatch) -> tuple[np.ndarray, list[list[float]]]:
    """One batch on the device: canvases and ``[pred, explained, *probs]`` rows, on the host."""
    import torch

    from ..data.inputs import normalize_batch

    info, options = shard.info, shard.options
    images = batch["image"].to(shard.device, non_blocking=True)
    pictures = batch["display"].to(shard.device, non_blocking=True) if "display" in batch else images
    watch.lap("to device", sync=True)

    with torch.no_grad():
        x = normalize_batch(images, info.mean, info.std).contiguous(memory_format=shard.memory_format)
        logits, heatmaps = shard.model(x, return_gradcam=True, **shard.gradcam_kwargs)
        probs, predicted, explained = _predict(logits, options.class_idx)
    watch.lap("model", sync=True)

    canvases = compose_canvases(
        pictures.permute(0, 2, 3, 1), heatmaps, shard.geometry, alpha=options.alpha, colormap=options.colormap
    )
    numbers = torch.cat([predicted[:, None].float(), explained[:, None].float(), probs], dim=1)
    watch.lap("colouring", sync=True)

    canvases_host = canvases.cpu().numpy()
    numbers_host = numbers.cpu().tolist()
    watch.lap("to host")
    return canvases_host, numbers_host


# -- host side: titles, PNGs, rows ----------------------------------------------------
def _safe_name(index: int, path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:60].strip("._") or "image"
    return f"{index:06d}_{stem}.png"


def _percent(probability: float) -> str:
    """A probability for a title: never "100.0%" for a value short of 1."""
    if probability >= 0.9995:
        return ">99.9%" if probability < 1.0 else "100%"
    if probability < 0.0005:
        return "<0.1%" if probability > 0.0 else "0%"
    return f"{100 * probability:.1f}%"


def _display_path(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _titles(shard: _Shard, item: InputItem, label: int, pred: int, expl: int, probs: Sequence[float]) -> tuple:
    """The three panel titles: the file, the map and its class, the verdict."""
    names = shard.info.class_names
    truth = names[label] if label >= 0 else "?"
    verdict = WHITE if label < 0 else (GREEN if label == pred else RED)
    return (
        (_display_path(item.path, shard.root), GREY),
        (f"{shard.map_title}: {names[expl]}", WHITE),
        (f"pred {names[pred]} {_percent(probs[pred])} | true {truth}", verdict),
    )


def _row(shard: _Shard, item: InputItem, label: int, pred: int, expl: int, probs: Sequence[float], overlay_path: Path) -> dict:
    """One row of ``predictions.csv``."""
    names = shard.info.class_names
    return {
        "index": item.index,
        "path": str(item.path),
        "label": "" if label < 0 else names[label],
        "label_idx": "" if label < 0 else label,
        "pred": names[pred],
        "pred_idx": pred,
        "probability": round(probs[pred], 6),
        "explained": names[expl],
        "explained_idx": expl,
        "correct": "" if label < 0 else int(label == pred),
        "overlay": overlay_path.relative_to(shard.output).as_posix(),
        **{f"prob_{name}": round(v, 6) for name, v in zip(names, probs)},
    }


def _queue_pngs(
    batch: dict, canvases: np.ndarray, numbers: list[list[float]], shard: _Shard, writers: ThreadPoolExecutor
) -> tuple[list[dict], list[Future]]:
    """Hands each canvas of a batch to the writer threads; returns its rows and the futures."""
    rows, pending = [], []
    for canvas, index, label, (pred, expl, *p) in zip(
        canvases, batch["index"].tolist(), batch["label"].tolist(), numbers
    ):
        item, pred, expl = shard.by_index[index], int(pred), int(expl)
        overlay_path = shard.output / "overlays" / _safe_name(index, item.path)
        titles = _titles(shard, item, label, pred, expl, p)
        pending.append(
            writers.submit(write_canvas, canvas, overlay_path, titles, shard.geometry, shard.options.png_compression)
        )
        rows.append(_row(shard, item, label, pred, expl, p, overlay_path))
    return rows, pending


def explain_images(
    items: list[InputItem],
    model: torch.nn.Module,
    info: ModelInfo,
    options: OverlayOptions,
    device: torch.device,
    output: Path,
    root: Path,
    *,
    show_progress: bool = False,
) -> tuple[list[dict], list[tuple[str, str]], ExplainStats]:
    """Explains ``items`` batch by batch and writes one overlay PNG each to ``output/overlays``.

    Args:
        items: the inputs to explain (one rank's share under ``torchrun``).
        model: a :class:`~gradcam_kit.models.resnet50.ResNet50FineTuned` built with Grad-CAM
            enabled, in eval mode, on ``device``.
        info: the model's classes, input size and normalisation.
        options: method, layer, drawing and batching options.
        device: where the model runs.
        output: the folder that receives ``overlays/``.
        root: the input's root; titles show paths relative to it.
        show_progress: draw a progress bar on stderr.

    Returns:
        The rows of ``predictions.csv`` (in the order written), ``(path, reason)`` for the
        images that could not be decoded, and the time spent per stage.
    """
    shard = _prepare(items, model, info, options, device, output, root)
    return run_batches(items, shard, _render_batch, _queue_pngs, show_progress=show_progress)


def run_batches(
    items: list[InputItem],
    shard: _Shard,
    render: Callable[[dict, _Shard, _Stopwatch], tuple],
    queue: Callable[..., tuple[list[dict], list[Future]]],
    *,
    show_progress: bool = False,
) -> tuple[list[dict], list[tuple[str, str]], ExplainStats]:
    """The batch loop of ``explain``: decode in workers, render on the device, write PNGs in threads.

    ``render(batch, shard, watch)`` returns what ``queue(batch, *rendered, shard, writers)``
    turns into the batch's rows and PNG futures; :func:`explain_images` passes one canvas per
    image, :func:`gradcam_kit.viz.findings.explain_findings` one per (image, finding).
    """
    import torch
    from tqdm import tqdm

    options, device = shard.options, shard.device
    loader, workers = _make_loader(items, shard)
    stats = ExplainStats()
    sync = torch.cuda.synchronize if (options.profile and device.type == "cuda") else (lambda: None)
    rows: list[dict] = []
    failed: list[tuple[str, str]] = []
    pending: list[Future] = []
    (shard.output / "overlays").mkdir(parents=True, exist_ok=True)

    progress = tqdm(total=len(items), unit="img", desc="explain", disable=not show_progress, file=sys.stderr)
    # Writers scale with the cores: on a GPU machine the PNGs, not the model, set the pace.
    writer_threads = options.writers or max(2, min(8, (os.cpu_count() or 2) - workers))
    with ThreadPoolExecutor(max_workers=writer_threads) as writers:
        watch = _Stopwatch(stats, sync)
        for batch in loader:
            watch.lap("wait for data")
            stats.decode_s += batch["decode_s"]
            failed.extend((str(shard.by_index[i].path), why) for i, why in batch["failed"])
            if "image" not in batch:
                progress.update(len(batch["failed"]))
                continue
            rendered = render(batch, shard, watch)
            # Keep at most two batches of PNGs in flight: bounded memory, errors surface early.
            for done in pending:
                stats.write_s += done.result()
            batch_rows, pending = queue(batch, *rendered, shard, writers)
            rows.extend(batch_rows)
            stats.images += len(batch["index"])
            progress.update(len(batch["index"]) + len(batch["failed"]))
            watch.lap("rows, queue PNGs")
        for done in pending:
            stats.write_s += done.result()
        watch.lap("rows, queue PNGs")
    progress.close()
    return rows, failed, stats


def _write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def write_results(
    output: Path,
    rows: list[dict],
    failed: list[tuple[str, str]],
    *,
    inputs: Inputs,
    class_names: Sequence[str],
    display: tuple[int, int],
    details: Mapping[str, str],
    grid: int = 64,
    page_size: int = 48,
) -> None:
    """Writes ``predictions.csv``, ``skipped.csv``, the contact sheet and ``report.html``.

    Args:
        output: the folder holding ``overlays/``.
        rows: the rows of every rank (:func:`explain_images`); sorted in place by index.
        failed: ``(path, reason)`` for the images that could not be decoded.
        inputs: the collected inputs (their root, and the files skipped while collecting).
        class_names: the model's classes, in output order.
        display: the size of the pictures on the canvases (:func:`display_size`).
        details: ``name: value`` lines for the report's header.
        grid: images in the contact sheet (0: none).
        page_size: cards per page of the report.
    """
    from .report import write_report

    rows.sort(key=lambda r: r["index"])
    skipped = list(inputs.skipped) + sorted(failed)
    columns = list(PREDICTION_COLUMNS) + [f"prob_{n}" for n in class_names]
    _write_csv(output / "predictions.csv", rows, columns)
    _write_csv(output / "skipped.csv", [{"path": p, "reason": r} for p, r in skipped], ["path", "reason"])
    sheet = write_contact_sheet(rows, output, Geometry.for_size(display), max_images=grid) if grid else None
    report_rows = [
        {**r, "path": _display_path(Path(r["path"]), inputs.root), "label_idx": r["label_idx"] if r["label_idx"] != "" else None}
        for r in rows
    ]
    write_report(
        output,
        report_rows,
        class_names=class_names,
        skipped=skipped,
        contact_sheet=sheet,
        predictions_csv=output / "predictions.csv",
        details=details,
        page_size=page_size,
    )
