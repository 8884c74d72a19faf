"""``explain``: predictions, Grad-CAM overlays, a contact sheet and an HTML report for images.

::

    python -m gradcam_kit explain data/val --checkpoint runs/best.pt --output explained/

The input is one image, a folder (searched recursively), an ImageFolder split or a CSV of
``path,label`` rows (:func:`gradcam_kit.data.inputs.collect_inputs`). The tensor path:

1. DataLoader workers decode and resize each image to uint8 (:class:`ExplainDataset`);
2. each batch crosses to the device once (``non_blocking`` from pinned memory on CUDA)
   and is normalised there;
3. one forward pass under ``torch.no_grad()`` gives logits and heatmaps
   (``model(x, return_gradcam=True)``), probabilities are taken on the device;
4. colouring and blending run batched on the device (:func:`gradcam_kit.viz.render.overlay`,
   a LUT lookup), and the ``original | heatmap | overlay`` canvases are assembled there;
5. only the uint8 canvases and a small table of numbers come back to the host, once per
   batch. Host threads then draw the title text (PIL ``ImageDraw``) and encode the PNGs
   while the device works on the next batch.

Under ``torchrun`` every rank explains its share of the inputs and writes its overlays;
rank 0 gathers the rows and writes ``predictions.csv``, ``skipped.csv``, the contact sheet
and ``report.html``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import re
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.layouts import LAYOUTS

# torch, numpy and the modules built on them are imported where they are used, so that
# `gradcam-kit explain --help` does not import torch (about 2 s of a 2-core start-up).
from .options import add_map_arguments

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor

    from ..data.inputs import InputItem, Inputs

__all__ = ["Geometry", "add_arguments", "compose_canvases", "run", "write_contact_sheet"]

RESULT_NAMES = ("predictions.csv", "skipped.csv", "report.html", "contact_sheet.png", "overlays")
BACKGROUND = (29, 35, 48)
GREEN, RED, WHITE, GREY = (120, 220, 120), (255, 110, 110), (235, 238, 245), (170, 178, 192)
STAGES = ("wait for data", "to device", "model", "colouring", "to host", "rows, queue PNGs")


def _font(size: int):
    from ..viz.render import title_font

    return title_font(size)


def _fit(text: str, font, width: int) -> str:
    from ..viz.render import fit_text

    return fit_text(text, font, width)


def _method_title(method: str) -> str:
    from ..methods import method_title

    return method_title(method)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Registers the ``explain`` options."""
    parser.add_argument(
        "input", type=Path, help="an image, a folder (searched recursively), an ImageFolder split or a CSV with path,label"
    )
    model = parser.add_argument_group("model")
    model.add_argument("--checkpoint", type=Path, help="a checkpoint written by `train` (class names come from it)")
    model.add_argument(
        "--weights", choices=["none"], default=None,
        help="'none': random weights, to try the command without a checkpoint (predictions are meaningless)",
    )
    model.add_argument("--num-classes", type=int, default=None, help="head size with --weights none and unlabelled input (default 2)")
    model.add_argument("--class-idx", default=None, help="explain this class (index or name) for every image; default: the predicted class")
    add_map_arguments(model)
    model.add_argument("--image-size", "--size", dest="size", type=int, default=None, help="model input size (default: the checkpoint's, else 224)")
    model.add_argument(
        "--memory-format", choices=["channels_last", "contiguous"], default="channels_last",
        help="layout of the model's tensors (channels_last: faster convolutions with oneDNN and cuDNN)",
    )
    model.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available; under torchrun each rank's own GPU)")

    data = parser.add_argument_group("input")
    data.add_argument("--layout", choices=LAYOUTS, default="auto", help="how to read INPUT (default: guess)")
    data.add_argument("--random", type=int, default=None, metavar="N", help="explain N inputs drawn at random (see --seed)")
    data.add_argument("--index", type=int, nargs="+", default=None, metavar="I", help="explain only these inputs (positions in the sorted list)")
    data.add_argument("--seed", type=int, default=0, help="seed of --random")
    data.add_argument("--batch-size", type=int, default=16)
    data.add_argument("--num-workers", type=int, default=None, help="DataLoader decode workers (default: min(4, CPUs))")

    out = parser.add_argument_group("output")
    out.add_argument("--output", "--out", dest="output", type=Path, default=Path("explain_out"), help="folder for overlays/, predictions.csv, report.html")
    out.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --output")
    out.add_argument("--alpha", type=float, default=0.5, help="heatmap weight in the overlay, in [0, 1]")
    out.add_argument("--colormap", default="jet", help="OpenCV colormap name or id")
    out.add_argument("--display-size", type=int, default=None, help="size of the pictures in the overlays (default: the input size, at least 192)")
    out.add_argument("--grid", type=int, default=64, help="images in the contact sheet (0: none)")
    out.add_argument("--page-size", type=int, default=48, help="cards per page of report.html")
    out.add_argument("--png-compression", type=int, default=1, choices=range(10), metavar="0-9", help="zlib level of the PNGs (default 1: fast)")
    out.add_argument("--writers", type=int, default=None, help="threads drawing titles and encoding PNGs (default: the CPUs the decode workers leave, 2 to 8)")
    out.add_argument("--profile", action="store_true", help="print where the time goes, per stage")


# -- set-up, all before any image is decoded --------------------------------------------
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


def _read_model_info(args: argparse.Namespace, inputs: Inputs) -> ModelInfo:
    from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD
    from ..models.checkpoint import checkpoint_metadata, extract_state_dict, load_checkpoint

    if (args.checkpoint is None) == (args.weights is None):
        raise ValueError(
            "pass --checkpoint PATH (a checkpoint written by `train`), or --weights none to "
            "run with random weights"
        )
    if args.checkpoint is not None:
        loaded = load_checkpoint(args.checkpoint)
        meta = checkpoint_metadata(loaded, source=str(args.checkpoint))
        num_outputs = meta.num_classes  # also under module. (DDP) or model. (Lightning) prefixes
        if num_outputs is None:
            extract_state_dict(loaded, source=str(args.checkpoint))  # no state_dict at all: say that
            raise ValueError(
                f"checkpoint {args.checkpoint} holds no fc.weight to read the number of "
                "classes from; is it a checkpoint of ResNet50FineTuned (written by train)?"
            )
        names = meta.class_names
        from .options import warn_if_size_differs

        warn_if_size_differs(args.size, meta.input_size)
        size = args.size or meta.input_size or 224
        mean, std = meta.mean or IMAGENET_MEAN, meta.std or IMAGENET_STD
        source = str(args.checkpoint)
    else:
        num_outputs = args.num_classes or len(inputs.class_names) or 2
        names, size, mean, std = None, args.size or 224, IMAGENET_MEAN, IMAGENET_STD
        source = "random weights"
    if num_outputs < 1:
        raise ValueError(f"the model needs at least one output, got num_classes={num_outputs}")
    num_classes = 2 if num_outputs == 1 else num_outputs  # a single logit is a binary decision
    names_known = isinstance(names, (list, tuple)) and len(names) == num_classes
    if names_known:
        class_names = [str(n) for n in names]
    elif args.checkpoint is None and len(inputs.class_names) == num_classes:
        class_names, names_known = list(inputs.class_names), True
    else:
        class_names = ["negative", "positive"] if num_outputs == 1 else [str(i) for i in range(num_classes)]
    if isinstance(size, (list, tuple)):
        size = (int(size[0]), int(size[-1]))
    else:
        size = (int(size), int(size))
    if min(size) < 32:
        raise ValueError(f"--size must be at least 32 pixels for ResNet50, got {size}")
    return ModelInfo(class_names, names_known, num_outputs, size, list(mean), list(std), source)


def _match_labels(inputs: Inputs, info: ModelInfo, source: Path) -> list[InputItem]:
    """Maps the data's labels onto the model's classes, or says clearly why they differ."""
    from ..data.inputs import InputItem

    items = inputs.items
    num_classes = len(info.class_names)
    if inputs.class_names:  # labels named by folders or CSV values
        data_names = inputs.class_names
        if info.names_known:
            unknown = [n for n in data_names if n not in info.class_names]
            if unknown:
                raise ValueError(
                    f"the model ({info.source}) has {num_classes} classes {info.class_names} but "
                    f"the data in {source} has {len(data_names)} classes {data_names}; "
                    f"{unknown} are not among the model's classes. Point explain at data with "
                    "the checkpoint's classes (folder names / CSV labels must be class names), "
                    "or pass --layout folder to explain the images without labels"
                )
            lookup = {n: info.class_names.index(n) for n in data_names}
            return [
                InputItem(i.index, i.path, None if i.label_name is None else lookup[i.label_name], i.label_name)
                for i in items
            ]
        if len(data_names) != num_classes:
            raise ValueError(
                f"the model ({info.source}) has {num_classes} classes but the data in {source} "
                f"has {len(data_names)} classes {data_names}; use a checkpoint trained on these "
                "classes, or data with the checkpoint's classes, or pass --layout folder to "
                "explain the images without labels"
            )
        return items
    labels = [i.label for i in items if i.label is not None]
    if labels and max(labels) >= num_classes:
        raise ValueError(
            f"the data in {source} has label index {max(labels)} but the model ({info.source}) "
            f"has {num_classes} classes {info.class_names}; labels must lie in [0, {num_classes - 1}]"
        )
    return items


def _resolve_class_idx(value: str | None, info: ModelInfo) -> int | None:
    if value is None:
        return None
    if value in info.class_names:
        return info.class_names.index(value)
    if value.lstrip("-").isdigit() and 0 <= int(value) < len(info.class_names):
        return int(value)
    raise ValueError(
        f"--class-idx {value!r} is neither a class name nor an index in "
        f"[0, {len(info.class_names) - 1}]; the classes are {info.class_names}"
    )


def _select(items: list[InputItem], args: argparse.Namespace) -> list[InputItem]:
    if args.random is not None and args.index is not None:
        raise ValueError("pass either --random N or --index I, not both")
    if args.index is not None:
        bad = [i for i in args.index if not 0 <= i < len(items)]
        if bad:
            raise ValueError(f"--index {bad} out of range: the input has {len(items)} images (0 to {len(items) - 1})")
        return [items[i] for i in sorted(set(args.index))]
    if args.random is not None:
        if args.random < 1:
            raise ValueError(f"--random must be a positive number of images, got {args.random}")
        if args.random > len(items):
            warnings.warn(f"--random {args.random} but the input has {len(items)} images: explaining all", stacklevel=2)
            return items
        picked = random.Random(args.seed).sample(range(len(items)), args.random)
        return [items[i] for i in sorted(picked)]
    return items


def _check_output(output: Path, overwrite: bool):
    """The output folder: new or empty, or holding an earlier explain's results to replace."""
    from .outputs import OutputFolder

    return OutputFolder(output, command="explain", overwrite=overwrite, flag="--output")


def _check_options(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must lie in [0, 1] (the heatmap's weight), got {args.alpha}")
    if args.num_workers is not None and args.num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {args.num_workers}")
    if args.display_size is not None and args.display_size < 16:
        raise ValueError(f"--display-size must be at least 16 pixels, got {args.display_size}")
    if args.grid < 0 or args.page_size < 1 or (args.writers is not None and args.writers < 1):
        raise ValueError("--grid must be >= 0, --page-size and --writers >= 1")
    from ..methods import get_method
    from ..viz.render import parse_colormap

    parse_colormap(args.colormap if not args.colormap.isdigit() else int(args.colormap))
    if args.method:
        get_method(args.method)


# -- the tensor path ------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """Where the three pictures and the title strip sit on an overlay canvas."""

    height: int
    width: int
    strip: int
    gap: int

    @classmethod
    def for_size(cls, size: tuple[int, int]) -> Geometry:
        height, width = size
        return cls(height, width, strip=max(16, round(0.09 * height)), gap=max(2, width // 64))

    def panel_left(self, panel: int) -> int:
        """x of the left edge of panel 0 (image), 1 (heatmap) or 2 (overlay)."""
        return panel * (self.width + self.gap)

    @property
    def canvas_size(self) -> tuple[int, int]:
        return self.strip + self.height, 3 * self.width + 2 * self.gap


def compose_canvases(
    images: Tensor,
    heatmaps: Tensor,
    geometry: Geometry,
    *,
    alpha: float = 0.5,
    colormap: int | str = "jet",
) -> Tensor:
    """``original | heatmap | overlay`` below an empty title strip, batched on the device.

    Args:
        images: uint8 ``(B, H, W, 3)`` pictures to draw on.
        heatmaps: ``(B, h, w)`` maps in ``[0, 1]`` (resized to ``(H, W)`` by ``overlay``).
        geometry: the canvas layout for ``(H, W)``.
        alpha: the heatmap's weight in the overlay.
        colormap: OpenCV colormap id or name.

    Returns:
        uint8 ``(B, strip + H, 3 W + 2 gap, 3)`` on the images' device.
    """
    import torch

    from ..viz.render import overlay

    colored, overlaid = overlay(images, heatmaps, alpha, colormap)
    batch = images.shape[0]
    fill = torch.tensor(BACKGROUND, dtype=torch.uint8, device=images.device)
    gap = fill.expand(batch, geometry.height, geometry.gap, 3)
    row = torch.cat([images, gap, colored, gap, overlaid], dim=2)
    strip = fill.expand(batch, geometry.strip, row.shape[2], 3)
    return torch.cat([strip, row], dim=1)


def _predict(logits: Tensor, class_idx: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Probabilities ``(B, C)``, predicted and explained class ``(B,)``, on the device."""
    import torch

    from ..core.scores import class_probabilities, predicted_class

    probs, predicted = class_probabilities(logits), predicted_class(logits)
    explained = predicted if class_idx is None else torch.full_like(predicted, class_idx)
    return probs, predicted, explained


def _gradcam_kwargs(num_outputs: int, class_idx: int | None, choice: dict, alignment: str) -> dict:
    return {
        "gradcam_method": choice["method"], "gradcam_layers": choice["layer"], "gradcam_alignment": alignment,
        "gradcam_class_idx": class_idx,  # a single logit: class 1 explains z, class 0 -z (core.scores)
    }


# -- host side: titles, PNGs ----------------------------------------------------------
def _write_canvas(canvas: np.ndarray, path: Path, titles: Sequence[tuple[str, tuple]], geometry: Geometry, compression: int) -> float:
    import numpy as np
    from PIL import Image, ImageDraw

    from ..viz.png import write_png

    start = time.perf_counter()
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = _font(max(8, geometry.strip - 6))
    top = (geometry.strip - getattr(font, "size", 11)) // 2 - 1
    for panel, (text, colour) in enumerate(titles):
        draw.text(
            (geometry.panel_left(panel) + 3, top), _fit(text, font, geometry.width - 6), fill=colour, font=font
        )
    # Not image.save(): Pillow's adaptive row filters cost ~3x the encoding (gradcam_kit.viz.png).
    write_png(path, np.asarray(image), compression)
    return time.perf_counter() - start


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


# -- rank 0: merge and write ------------------------------------------------------------
def _write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def _contact_sheet_rows(rows: Sequence[dict], max_images: int) -> list[dict]:
    ordered = sorted(rows, key=lambda r: r["index"])
    if len(ordered) <= max_images:
        return ordered
    wrong = [r for r in ordered if r["correct"] != "" and not int(r["correct"])][:max_images]
    rest = [r for r in ordered if r["correct"] == "" or int(r["correct"])]
    room = max_images - len(wrong)
    sample = [rest[round(i * (len(rest) - 1) / max(room - 1, 1))] for i in range(room)] if room else []
    return wrong + sample


def write_contact_sheet(
    rows: Sequence[dict], output: Path, geometry: Geometry, *, max_images: int = 64, tile: int = 160
) -> Path | None:
    """A grid of up to ``max_images`` overlays (green frame: correct, red: wrong).

    With more images than that, the misclassified ones come first and the rest of the grid
    is an evenly spaced sample of the others (so every class of a sorted ImageFolder shows
    up), each part in input order. Reads the overlay panel back from each written PNG, so
    every rank's images can be included after a distributed run.
    """
    from PIL import Image, ImageDraw

    chosen = _contact_sheet_rows(rows, max_images)
    if not chosen:
        return None
    columns = min(8, math.ceil(math.sqrt(len(chosen))))
    lines = math.ceil(len(chosen) / columns)
    caption, pad = 18, 4
    cell_w, cell_h = tile + 2 * pad, tile + caption + 2 * pad
    sheet = Image.new("RGB", (columns * cell_w, lines * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    left = geometry.panel_left(2)
    box = (left, geometry.strip, left + geometry.width, geometry.strip + geometry.height)
    for n, row in enumerate(chosen):
        x, y = (n % columns) * cell_w, (n // columns) * cell_h
        try:
            with Image.open(output / row["overlay"]) as canvas:
                picture = canvas.crop(box).resize((tile, tile), Image.Resampling.BILINEAR)
        except FileNotFoundError:  # written by a rank on another machine, without a shared disk
            continue
        correct = row["correct"]
        frame = GREY if correct == "" else (GREEN if int(correct) else RED)
        draw.rectangle((x + pad - 2, y + pad - 2, x + pad + tile + 1, y + pad + tile + 1), outline=frame, width=2)
        sheet.paste(picture, (x + pad, y + pad))
        text = f"#{row['index']} {row['pred']} {float(row['probability']):.2f}"
        draw.text((x + pad, y + pad + tile + 3), _fit(text, font, tile), fill=frame if correct != "" else WHITE, font=font)
    path = output / "contact_sheet.png"
    sheet.save(path, format="PNG", compress_level=6)
    return path


def _print_profile(stats: _Stats, elapsed: float, setup: float, world: int) -> None:
    images = max(stats.images, 1)
    print(f"profile ({stats.images} images, rank 0 of {world}; seconds, ms per image):", file=sys.stderr)
    print(f"  {'set-up (model, input scan)':28s} {setup:8.2f}", file=sys.stderr)
    for stage in STAGES:
        seconds = stats.seconds[stage]
        print(f"  {stage:28s} {seconds:8.2f} {1000 * seconds / images:8.2f}", file=sys.stderr)
    print(f"  {'decode (summed in workers)':28s} {stats.decode_s:8.2f} {1000 * stats.decode_s / images:8.2f}", file=sys.stderr)
    print(f"  {'title+PNG (summed, threads)':28s} {stats.write_s:8.2f} {1000 * stats.write_s / images:8.2f}", file=sys.stderr)
    print(f"  {'whole command':28s} {elapsed:8.2f}  -> {stats.images / max(elapsed, 1e-9):.1f} images/s", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Runs ``explain``; see the module docstring. Returns the exit status.

    Raises:
        ValueError: bad options, a checkpoint whose classes do not match the data's, or an
            input without images; raised before any image is decoded.
        FileExistsError: ``--output`` already holds results and ``--overwrite`` is not set.
        FileNotFoundError: the input or the checkpoint does not exist.
    """
    import torch.distributed as dist

    from ..data.inputs import collect_inputs
    from ..training.distributed import barrier, cleanup, init_distributed

    started = time.perf_counter()
    _check_options(args)
    inputs = collect_inputs(args.input, layout=args.layout)
    info = _read_model_info(args, inputs)
    items = _select(_match_labels(inputs, info, args.input), args)
    class_idx = _resolve_class_idx(args.class_idx, info)
    output = args.output
    outputs = _check_output(output, args.overwrite)  # on every rank, before any rank writes

    context = init_distributed(args.device or "auto")
    explained = None
    try:
        rank, world, device = context.rank, context.world_size, context.device
        model = _build_model(args, info, device)  # validates --layer/--method before any write
        from .options import resolve_map_options

        args.choice = resolve_map_options(args, model)
        if rank == 0:
            print(f"maps: {args.choice['layer']}, {_method_title(args.choice['method'])} ({args.choice['source']}); {args.alignment} alignment")
            outputs.clear()  # deletes only what an earlier run recorded in the folder
        barrier(context)
        setup = time.perf_counter() - started
        rows, failed, stats = _explain_shard(
            items[rank::world], model, info, args, device, output, class_idx, inputs.root, rank == 0
        )
        if world > 1:
            gathered: list | None = [None] * world if rank == 0 else None
            dist.gather_object((rows, failed), gathered, dst=0)
            if rank == 0:
                rows = [r for part, _ in gathered for r in part]
                failed = [f for _, part in gathered for f in part]
        if rank == 0:
            _finish(rows, failed, inputs, info, args, output, model, device, world)
            elapsed = time.perf_counter() - started
            if args.profile:
                _print_profile(stats, elapsed, setup, world)
            explained = len(rows)
            print(
                f"explained {len(rows)} image(s), skipped {len(inputs.skipped) + len(failed)}, in "
                f"{elapsed:.1f} s ({len(rows) / max(elapsed, 1e-9):.1f} images/s): {output / 'report.html'}"
            )
        barrier(context)
    finally:
        if context.rank == 0:
            outputs.record()
        cleanup(context)
    if explained == 0:
        from .outputs import NothingDone

        raise NothingDone(f"explained no image: every input was skipped, see {output / 'skipped.csv'}")
    return 0


def _build_model(args: argparse.Namespace, info: ModelInfo, device: torch.device) -> torch.nn.Module:
    import torch

    from ..models.resnet50 import ResNet50FineTuned

    if args.checkpoint is not None:
        model = ResNet50FineTuned.from_checkpoint(args.checkpoint, enable_gradcam=True)
    else:
        warnings.warn(
            "explaining with random weights (--weights none): predictions and heatmaps are "
            "meaningless; pass --checkpoint PATH for a trained model",
            stacklevel=2,
        )
        torch.manual_seed(args.seed)  # the same random model on every rank and every run
        model = ResNet50FineTuned(info.num_outputs, weights=None, enable_gradcam=True)
    return model.eval().to(device)


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
