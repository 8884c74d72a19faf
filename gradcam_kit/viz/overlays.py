"""The work of ``explain`` on a list of images: decode, predict, colour, write overlays and rows.

:func:`_explain_shard` runs one rank's share of the inputs through the model batch by batch
and writes each ``original | heatmap | overlay`` PNG from a pool of writer threads;
:func:`_finish` writes ``predictions.csv``, ``skipped.csv``, the contact sheet and
``report.html`` from the rows of every rank.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
import time
from collections.abc import Sequence
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
    _write_canvas,
    compose_canvases,
    write_contact_sheet,
)

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ..data.inputs import InputItem, Inputs

STAGES = ("wait for data", "to device", "model", "colouring", "to host", "rows, queue PNGs")


def _method_title(method: str) -> str:
    from ..methods import method_title

    return method_title(method)


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


def _predict(logits: Tensor, class_idx: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Probabilities ``(B, C)``, predicted and explained class ``(B,)``, on the device."""
    import torch

    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits[:, 0].float())
        probs = torch.stack([1 - positive, positive], dim=1)
        predicted = (positive >= 0.5).long()
    else:
        probs = torch.softmax(logits.float(), dim=1)
        predicted = probs.argmax(dim=1)
    explained = predicted if class_idx is None else torch.full_like(predicted, class_idx)
    return probs, predicted, explained


def _gradcam_kwargs(num_outputs: int, class_idx: int | None, choice: dict, alignment: str) -> dict:
    kwargs: dict = {
        "gradcam_method": choice["method"], "gradcam_layers": choice["layer"], "gradcam_alignment": alignment,
    }
    if num_outputs == 1 and class_idx is not None:
        # A single logit z: class 1 is "z", class 0 is "-z".
        kwargs["gradcam_score_fn"] = (lambda z: z[:, 0]) if class_idx == 1 else (lambda z: -z[:, 0])
    else:
        kwargs["gradcam_class_idx"] = class_idx
    return kwargs


def _safe_name(index: int, path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:60].strip("._") or "image"
    return f"{index:06d}_{stem}.png"


@dataclass
class _Stats:
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    decode_s: float = 0.0
    write_s: float = 0.0
    images: int = 0


def _explain_shard(
    items: list[InputItem],
    model: torch.nn.Module,
    info: ModelInfo,
    args: argparse.Namespace,
    device: torch.device,
    output: Path,
    class_idx: int | None,
    root: Path,
    show_progress: bool,
) -> tuple[list[dict], list[tuple[str, str]], _Stats]:
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from ..data.inputs import ExplainDataset, collate_explain, normalize_batch

    display = _display_size(args, info)
    geometry = Geometry.for_size(display)
    dataset = ExplainDataset(items, info.size, display)
    workers = min(4, os.cpu_count() or 1) if args.num_workers is None else args.num_workers
    workers = min(workers, max(1, math.ceil(len(items) / args.batch_size)))
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        num_workers=workers,
        collate_fn=collate_explain,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    memory_format = torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format
    model.to(memory_format=memory_format)
    by_index = {item.index: item for item in items}
    colormap = int(args.colormap) if args.colormap.isdigit() else args.colormap
    gradcam_kwargs = _gradcam_kwargs(info.num_outputs, class_idx, args.choice, args.alignment)
    map_title = f"{_method_title(args.choice['method'])} {args.choice['layer']}"
    names = info.class_names
    sync = torch.cuda.synchronize if (args.profile and device.type == "cuda") else (lambda: None)
    stats = _Stats()
    rows: list[dict] = []
    failed: list[tuple[str, str]] = []
    pending: list[Future] = []
    (output / "overlays").mkdir(parents=True, exist_ok=True)

    def lap(stage: str, since: float) -> float:
        now = time.perf_counter()
        stats.seconds[stage] += now - since
        return now

    progress = tqdm(total=len(items), unit="img", desc="explain", disable=not show_progress, file=sys.stderr)
    # Writers scale with the cores: on a GPU machine the PNGs, not the model, set the pace.
    writer_threads = args.writers or max(2, min(8, (os.cpu_count() or 2) - workers))
    with ThreadPoolExecutor(max_workers=writer_threads) as writers:
        clock = time.perf_counter()
        for batch in loader:
            clock = lap("wait for data", clock)
            stats.decode_s += batch["decode_s"]
            failed.extend((str(by_index[i].path), why) for i, why in batch["failed"])
            if "image" not in batch:
                progress.update(len(batch["failed"]))
                continue
            images = batch["image"].to(device, non_blocking=True)
            pictures = batch["display"].to(device, non_blocking=True) if "display" in batch else images
            sync()
            clock = lap("to device", clock)

            with torch.no_grad():
                x = normalize_batch(images, info.mean, info.std).contiguous(memory_format=memory_format)
                logits, heatmaps = model(x, return_gradcam=True, **gradcam_kwargs)
                probs, predicted, explained = _predict(logits, class_idx)
            sync()
            clock = lap("model", clock)

            canvases = compose_canvases(
                pictures.permute(0, 2, 3, 1), heatmaps, geometry, alpha=args.alpha, colormap=colormap
            )
            numbers = torch.cat([predicted[:, None].float(), explained[:, None].float(), probs], dim=1)
            sync()
            clock = lap("colouring", clock)

            canvases_host = canvases.cpu().numpy()
            numbers_host = numbers.cpu().tolist()
            clock = lap("to host", clock)

            # Keep at most two batches of PNGs in flight: bounded memory, errors surface early.
            for done in pending:
                stats.write_s += done.result()
            pending = []
            for canvas, index, label, (pred, expl, *p) in zip(
                canvases_host, batch["index"].tolist(), batch["label"].tolist(), numbers_host
            ):
                item, pred, expl = by_index[index], int(pred), int(expl)
                overlay_path = output / "overlays" / _safe_name(index, item.path)
                truth = names[label] if label >= 0 else "?"
                verdict = WHITE if label < 0 else (GREEN if label == pred else RED)
                titles = (
                    (_display_path(item.path, root), GREY),
                    (f"{map_title}: {names[expl]}", WHITE),
                    (f"pred {names[pred]} {_percent(p[pred])} | true {truth}", verdict),
                )
                pending.append(writers.submit(_write_canvas, canvas, overlay_path, titles, geometry, args.png_compression))
                rows.append(
                    {
                        "index": index,
                        "path": str(item.path),
                        "label": "" if label < 0 else names[label],
                        "label_idx": "" if label < 0 else label,
                        "pred": names[pred],
                        "pred_idx": pred,
                        "probability": round(p[pred], 6),
                        "explained": names[expl],
                        "explained_idx": expl,
                        "correct": "" if label < 0 else int(label == pred),
                        "overlay": overlay_path.relative_to(output).as_posix(),
                        **{f"prob_{name}": round(v, 6) for name, v in zip(names, p)},
                    }
                )
            stats.images += len(batch["index"])
            progress.update(len(batch["index"]) + len(batch["failed"]))
            clock = lap("rows, queue PNGs", clock)
        for done in pending:
            stats.write_s += done.result()
        lap("rows, queue PNGs", clock)
    progress.close()
    return rows, failed, stats


MIN_DISPLAY = 192  # titles stay legible on small model inputs (96 px X-rays, say)


def _display_size(args: argparse.Namespace, info: ModelInfo) -> tuple[int, int]:
    """``--display-size``, else the model's input size scaled up to at least 192 px."""
    if args.display_size:
        return (args.display_size, args.display_size)
    scale = max(1.0, MIN_DISPLAY / min(info.size))
    return (round(info.size[0] * scale), round(info.size[1] * scale))


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


def _write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def _finish(
    rows: list[dict],
    failed: list[tuple[str, str]],
    inputs: Inputs,
    info: ModelInfo,
    args: argparse.Namespace,
    output: Path,
    model: torch.nn.Module,
    device: torch.device,
    world: int,
) -> None:
    from ..viz.report import write_report

    rows.sort(key=lambda r: r["index"])
    skipped = list(inputs.skipped) + sorted(failed)
    base = ["index", "path", "label", "label_idx", "pred", "pred_idx", "probability",
            "explained", "explained_idx", "correct", "overlay"]
    _write_csv(output / "predictions.csv", rows, base + [f"prob_{n}" for n in info.class_names])
    _write_csv(output / "skipped.csv", [{"path": p, "reason": r} for p, r in skipped], ["path", "reason"])
    display = _display_size(args, info)
    sheet = write_contact_sheet(rows, output, Geometry.for_size(display), max_images=args.grid) if args.grid else None
    report_rows = [
        {**r, "path": _display_path(Path(r["path"]), inputs.root), "label_idx": r["label_idx"] if r["label_idx"] != "" else None}
        for r in rows
    ]
    write_report(
        output,
        report_rows,
        class_names=info.class_names,
        skipped=skipped,
        contact_sheet=sheet,
        predictions_csv=output / "predictions.csv",
        details={
            "input": str(args.input),
            "model": info.source,
            "layer": args.choice["layer"],
            "method": f"{_method_title(args.choice['method'])} ({args.choice['source']})",
            "alignment": args.alignment,
            "size": f"{info.size[0]}x{info.size[1]}",
            "device": f"{device}" + (f" x {world} ranks" if world > 1 else ""),
        },
        page_size=args.page_size,
    )
