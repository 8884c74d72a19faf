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

A **multi-label** checkpoint (``train`` on a multi-label CSV) is explained per finding: one
heatmap, in its own overlay file, for each finding at or above its threshold (stored in
the checkpoint), or for each finding named with ``--findings a,b``; ``predictions.csv``
holds one probability column per finding, and the report filters by finding
(:mod:`gradcam_kit.viz.findings`). A multi-label CSV as input (one column per finding)
also gives each image's true findings.

Under ``torchrun`` every rank explains its share of the inputs and writes its overlays;
rank 0 gathers the rows and writes ``predictions.csv``, ``skipped.csv``, the contact sheet
and ``report.html``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

# torch, numpy and the modules built on them are imported where they are used, so that
# `gradcam-kit explain --help` does not import torch (about 2 s of a 2-core start-up);
# gradcam_kit.viz.overlays imports them inside its functions too.
from ..data.layouts import LAYOUTS
from ..viz.findings import FindingsChoice, explain_findings, write_findings_results
from ..viz.overlays import (
    STAGES,
    ModelInfo,
    OverlayOptions,
    display_size,
    explain_images,
    write_results,
)
from .options import add_dicom_window_argument, add_map_arguments

if TYPE_CHECKING:
    import torch

    from ..data.inputs import InputItem, Inputs
    from ..viz.overlays import ExplainStats

__all__ = ["add_arguments", "run"]

RESULT_NAMES = ("predictions.csv", "skipped.csv", "report.html", "contact_sheet.png", "overlays")


def __getattr__(name: str) -> object:  # Geometry, compose_canvases, ...: now in gradcam_kit.viz.canvas
    from .._legacy import moved_attribute

    return moved_attribute(__name__, name)


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
    model.add_argument(
        "--findings", default=None, metavar="A,B",
        help="multi-label checkpoint: explain these findings for every image (default: each finding at or above its threshold)",
    )
    add_map_arguments(model)
    model.add_argument("--image-size", "--size", dest="size", type=int, default=None, help="model input size (default: the checkpoint's, else 224)")
    model.add_argument(
        "--memory-format", choices=["channels_last", "contiguous"], default="channels_last",
        help="layout of the model's tensors (channels_last: faster convolutions with oneDNN and cuDNN)",
    )
    model.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available; under torchrun each rank's own GPU)")

    data = parser.add_argument_group("input")
    data.add_argument("--layout", choices=LAYOUTS, default="auto", help="how to read INPUT (default: guess)")
    data.add_argument("--images", type=Path, default=None, help="multi-label CSV input: folder its image paths start from (default: the CSV's folder)")
    data.add_argument("--random", type=int, default=None, metavar="N", help="explain N inputs drawn at random (see --seed)")
    data.add_argument("--index", type=int, nargs="+", default=None, metavar="I", help="explain only these inputs (positions in the sorted list)")
    data.add_argument("--seed", type=int, default=0, help="seed of --random")
    data.add_argument("--batch-size", type=int, default=16)
    data.add_argument("--workers", "--num-workers", dest="num_workers", type=int, default=None, help="DataLoader decode workers (default: min(4, CPUs))")
    add_dicom_window_argument(data)

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
    out.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


# -- set-up, all before any image is decoded --------------------------------------------
def _read_model_info(args: argparse.Namespace, inputs: Inputs) -> ModelInfo:
    from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD
    from ..models.checkpoint import checkpoint_metadata, extract_state_dict, load_checkpoint

    if (args.checkpoint is None) == (args.weights is None):
        raise ValueError(
            "pass --checkpoint PATH (a checkpoint written by `train`), or --weights none to "
            "run with random weights"
        )
    findings = thresholds = None  # a multi-label checkpoint's finding names and thresholds
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
        if loaded.get("task") == "multilabel":
            findings, thresholds = [str(f) for f in loaded["findings"]], loaded.get("thresholds")
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
    return ModelInfo(class_names, names_known, num_outputs, size, list(mean), list(std), source, findings, thresholds)


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
    from .options import select_positions

    positions = select_positions(len(items), index=args.index, random_count=args.random, seed=args.seed)
    return [items[i] for i in positions]


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


def _print_profile(stats: ExplainStats, elapsed: float, setup: float, world: int) -> None:
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
    from ..training.distributed import barrier, cleanup, init_distributed

    started = time.perf_counter()
    _check_options(args)
    inputs, truth = _collect(args)
    info = _read_model_info(args, inputs)
    choice = _findings_choice(args, info, truth)
    items = _select(inputs.items if choice else _match_labels(inputs, info, args.input), args)
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
        options = _overlay_options(args, info, class_idx)
        if choice is not None:
            rows, failed, stats = explain_findings(
                items[rank::world], model, info, options, device, output, inputs.root, choice,
                show_progress=rank == 0 and args.progress,
            )
        else:
            rows, failed, stats = explain_images(
                items[rank::world], model, info, options, device, output, inputs.root,
                show_progress=rank == 0 and args.progress,
            )
        if world > 1:
            rows, failed = _gather(rows, failed, rank, world)
        if rank == 0:
            common = {"display": options.display, "details": _report_details(args, info, device, world),
                      "grid": args.grid, "page_size": args.page_size}
            if choice is not None:
                write_findings_results(output, rows, failed, inputs=inputs, choice=choice, **common)
            else:
                write_results(output, rows, failed, inputs=inputs, class_names=info.class_names, **common)
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


def _collect(args: argparse.Namespace) -> tuple[Inputs, dict[int, dict[str, int | None]]]:
    """The inputs, and each image's findings when INPUT is a multi-label CSV."""
    from ..data.inputs import collect_inputs
    from ..data.multilabel import is_multilabel_csv, multilabel_inputs

    if args.layout in ("auto", "csv") and args.input.suffix.lower() == ".csv" and is_multilabel_csv(args.input):
        return multilabel_inputs(args.input, images=args.images)
    return collect_inputs(args.input, layout=args.layout), {}


def _findings_choice(args: argparse.Namespace, info: ModelInfo, truth: dict) -> FindingsChoice | None:
    """What a multi-label checkpoint explains; ``None`` for a single-label one.

    Raises:
        ValueError: ``--findings`` with a single-label model, ``--class-idx`` with a
            multi-label one, or a finding the model does not have.
    """
    if info.findings is None:
        if args.findings:
            raise ValueError("--findings needs a multi-label checkpoint (one trained on a multi-label CSV); use --class-idx")
        return None
    if args.class_idx is not None:
        raise ValueError(f"--class-idx does not apply to a multi-label checkpoint; name findings with --findings (from {info.findings})")
    named = [f.strip() for f in args.findings.split(",") if f.strip()] if args.findings else None
    labels = {i: tuple(row.get(f) for f in info.findings) for i, row in truth.items()}
    return FindingsChoice(info.findings, info.thresholds, named=named, truth=labels)


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


def _overlay_options(args: argparse.Namespace, info: ModelInfo, class_idx: int | None) -> OverlayOptions:
    """The library's options from the command line (after ``args.choice`` is resolved)."""
    return OverlayOptions(
        method=args.choice["method"],
        layer=args.choice["layer"],
        alignment=args.alignment,
        display=display_size(args.display_size, info.size),
        class_idx=class_idx,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        memory_format=args.memory_format,
        alpha=args.alpha,
        colormap=int(args.colormap) if args.colormap.isdigit() else args.colormap,
        png_compression=args.png_compression,
        writers=args.writers,
        profile=args.profile,
        dicom_window=args.dicom_window,
    )


def _gather(rows: list[dict], failed: list[tuple[str, str]], rank: int, world: int) -> tuple[list[dict], list]:
    """Every rank's rows and failures on rank 0 (other ranks get their own back)."""
    import torch.distributed as dist

    gathered: list | None = [None] * world if rank == 0 else None
    dist.gather_object((rows, failed), gathered, dst=0)
    if rank != 0:
        return rows, failed
    return [r for part, _ in gathered for r in part], [f for _, part in gathered for f in part]


def _report_details(args: argparse.Namespace, info: ModelInfo, device: torch.device, world: int) -> dict[str, str]:
    """The ``name: value`` lines of the report's header."""
    return {
        "input": str(args.input),
        "model": info.source,
        "layer": args.choice["layer"],
        "method": f"{_method_title(args.choice['method'])} ({args.choice['source']})",
        "alignment": args.alignment,
        "size": f"{info.size[0]}x{info.size[1]}",
        "device": f"{device}" + (f" x {world} ranks" if world > 1 else ""),
        **({"thresholds": ", ".join(
            f"{f} {t:.2f}" for f, t in zip(info.findings, info.thresholds or [0.5] * len(info.findings))
        )} if info.findings else {}),
    }
