"""``python -m gradcam_kit evaluate``: accuracy, AUROC and the pointing game per target layer.

The evaluate command explains each image's ground-truth class at every candidate layer
(``layer1`` to ``layer4`` and the default ``layer4.2.conv3``) in one forward pass of
``ResNet50FineTuned`` (``model(x, return_gradcam=True, gradcam_layers=[...])``) per CAM
method (``--method gradcam layercam``), and scores the images that have a non-empty mask
with the pointing game of :mod:`gradcam_kit.metrics.localization`: the peak of each map, found at
the layer's own resolution and placed at its receptive field's centre, must lie within
``--tolerance`` px (15 at 224x224, scaled to the input size) of the lesion. Beside every
figure stand its **ceiling** (what a perfect map on that layer's grid scores on the same
masks) and the **center baseline**.

It then picks the layer and method that localise best on the validation split (``--select-on
val``) and writes that recommendation into the checkpoint, so that ``explain``, ``figures``,
``compare``, the demo and ``ResNet50FineTuned.from_checkpoint`` draw with it by default.

A **multi-label** checkpoint (``task: "multilabel"``, written by ``train`` on a multi-label
CSV) is evaluated per finding: each finding's AUROC, sensitivity and specificity at the
checkpoint's threshold, and its pointing game: the maps explain that finding's logit and
are scored on the positives that have that finding's mask (the ``<finding>_mask`` column),
beside the ceiling and the center baseline. The recommendation pools the findings' hits.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..metrics.classification import json_safe
from ..metrics.localization import POINTING_MODES
from ..metrics.pointing import (
    DEFAULT_LAYERS,
    evaluate_findings,
    evaluate_pointing,
    format_findings_table,
    format_table,
    pool_findings,
    recommend,
)
from ..viz.layer_strips import write_overlays

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m gradcam_kit evaluate``."""
    from .options import add_dicom_window_argument

    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by train (best.pt)")
    parser.add_argument("--data", required=True, help="dataset root, split folder, path,label,mask CSV, or multi-label CSV (or a root holding <split>.csv)")
    parser.add_argument("--images", default=None, help="multi-label CSV: folder its image paths start from (default: the CSV's folder)")
    parser.add_argument("--split", default="test", help="split folder inside --data to report on, if present (default: %(default)s)")
    parser.add_argument(
        "--select-on", default="val", metavar="SPLIT",
        help="split that picks the recommended layer and method, written into the checkpoint "
        "(default: %(default)s; 'none': recommend nothing; without that split: the reported one)",
    )
    parser.add_argument("--layers", "--layer", dest="layers", nargs="+", default=list(DEFAULT_LAYERS), help="candidate target layers (default: %(default)s)")
    parser.add_argument(
        "--method", "--methods", dest="methods", nargs="+", default=["gradcam", "gradcam++", "layercam"],
        help="CAM method(s); one forward pass each (default: %(default)s)",
    )
    parser.add_argument("--tolerance", type=float, default=15.0, help="pointing-game tolerance in px at 224x224, scaled to the input size (default: %(default)s)")
    parser.add_argument(
        "--pointing-mode", choices=list(POINTING_MODES), default="unit",
        help="unit: the peak at the layer's resolution, at its receptive field's centre; torchray: "
        "upsample, then the first maximal pixel, as in published figures (default: %(default)s)",
    )
    parser.add_argument("--image-size", "--size", dest="image_size", type=int, default=None, help="input size (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=16, help="(default: %(default)s)")
    parser.add_argument("--workers", "--num-workers", dest="workers", type=int, default=0, help="DataLoader workers (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default: %(default)s)")
    add_dicom_window_argument(parser)
    parser.add_argument("--output", "--out", dest="output", type=Path, default=None,
                        help="folder for evaluation.json and overlays/ (default: the checkpoint's folder)")
    parser.add_argument("--json", default=None, help="where to write the results (default: <checkpoint folder>/evaluation.json)")
    parser.add_argument("--overlays", type=int, default=0, help="write overlays of this many positives (default: %(default)s)")
    parser.add_argument("--overlay-dir", default=None, help="(default: <checkpoint folder>/overlays)")
    parser.add_argument(
        "--alignment", choices=["receptive-field", "pixel"], default="receptive-field",
        help="where each map unit is drawn: on its receptive field's centre, or where the usual "
        "bilinear resize puts it, (s - 1) / 2 px down and right (default: %(default)s)",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace the evaluation.json and overlays/ an earlier evaluate wrote (never other "
        "files); without it, evaluate refuses to replace them",
    )


def _output_folders(args: argparse.Namespace, checkpoint: Path) -> list:
    """Where evaluate writes, checked before any work (see docs/CLI.md, "Output folders").

    ``evaluation.json`` and ``overlays/`` go beside the checkpoint by default, in a folder
    that holds other files (the checkpoint, train's logs): only those two names are
    evaluate's, and an earlier evaluate's copies are replaced only with ``--overwrite``.
    """
    from .outputs import OutputFolder

    if args.output is not None:
        if args.json or args.overlay_dir:
            raise ValueError("--output names the folder for evaluation.json and overlays/; drop --json and --overlay-dir")
        args.json, args.overlay_dir = str(args.output / "evaluation.json"), str(args.output / "overlays")
    json_path = Path(args.json) if args.json else checkpoint.parent / "evaluation.json"
    names = [json_path.name]
    folders = []
    if args.overlay_dir:
        if args.overlays:
            folders.append(OutputFolder(
                args.overlay_dir, command="evaluate", overwrite=args.overwrite, flag="--overlay-dir"
            ))
    elif json_path.parent.resolve() == checkpoint.parent.resolve():
        names.append("overlays")  # an old overlays/ beside a new evaluation.json would mix runs
    else:
        if args.overlays:
            folders.append(OutputFolder(
                checkpoint.parent, command="evaluate", overwrite=args.overwrite,
                flag="--overlay-dir", names=["overlays"],
            ))
    first = OutputFolder(
        json_path.parent, command="evaluate", overwrite=args.overwrite, flag="--json", names=names
    )
    return [first, *folders]


def _split_dir(data: Path, split: str | None) -> str | None:
    if split and split.lower() != "none" and ((data / split).is_dir() or (data / f"{split}.csv").is_file()):
        return split
    return None


def _evaluate_split(model, args, data: Path, split: str | None, metadata: dict, size, mean, std, device, overlays: int) -> dict:
    from ..data.datasets import ImageDataset
    from ..data.preprocess import build_transform

    dataset = ImageDataset.from_source(
        data, split, class_names=model.class_names,  # the checkpoint's (checkpoint_metadata)
        transform=build_transform(size, mean=mean, std=std), mask_size=size, return_index=True,
        dicom_window=args.dicom_window,
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    return evaluate_pointing(
        model, loader, layers=args.layers, methods=args.methods, tolerance_px=args.tolerance,
        device=device, overlays=overlays, progress=args.progress, alignment=args.alignment,
        mode=args.pointing_mode, names=[str(sample.path) for sample in dataset.samples],
        desc=f"evaluate {split or data.name}",
    )


def _run_single(model, args, metadata: dict, size, mean, std, device) -> tuple[dict, dict | None, list | None]:
    """A single-label checkpoint: ``(result, recommendation, kept overlays)``."""
    data = Path(args.data)
    split = _split_dir(data, args.split)
    result = _evaluate_split(model, args, data, split, metadata, size, mean, std, device, args.overlays)
    kept = result.pop("_overlays", None)
    selection, selected_on = result, split or data.name
    select_split = _split_dir(data, args.select_on)
    if args.select_on.lower() == "none":
        selection = None
    elif select_split is not None and select_split != split:
        selection = _evaluate_split(model, args, data, select_split, metadata, size, mean, std, device, 0)
        selected_on = select_split
    recommendation = recommend(selection, selected_on, report=result) if selection is not None else None
    result.update(
        checkpoint=str(Path(args.checkpoint)), data=str(data / split) if split else str(data),
        input_size=list(size), recommended=recommendation,
        selection=None if selection is None or selection is result else {
            k: selection[k] for k in ("pointing_game", "ceiling", "center_baseline", "positives_with_masks")
        },
    )
    return result, recommendation, kept


def _multilabel_source(data: Path, split: str | None) -> Path | None:
    if data.suffix.lower() == ".csv":
        return data
    if split and split.lower() != "none" and (data / f"{split}.csv").is_file():
        return data / f"{split}.csv"
    return None


def _evaluate_findings(model, args, source: Path, metadata: dict, size, mean, std, device) -> dict:
    from ..data.multilabel import LabelPolicy, MultiLabelDataset, read_multilabel_csv
    from ..data.preprocess import build_transform

    findings = [str(f) for f in metadata["findings"]]
    table = read_multilabel_csv(source, findings=findings, images=args.images)
    policy = LabelPolicy.from_description(metadata.get("label_policy"), findings)
    dataset = MultiLabelDataset(
        table.samples, findings, policy, build_transform(size, mean=mean, std=std), mask_size=size,
        return_index=True, dicom_window=args.dicom_window,
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    return evaluate_findings(
        model, loader, findings, layers=args.layers, methods=args.methods, tolerance_px=args.tolerance,
        device=device, alignment=args.alignment, mode=args.pointing_mode, thresholds=metadata.get("thresholds"),
        progress=args.progress, desc=f"evaluate {source.name}",
    )


def _run_findings(model, args, metadata: dict, size, mean, std, device) -> tuple[dict, dict | None, str]:
    """A multi-label checkpoint: ``(result, recommendation, printed table)``.

    Raises:
        FileNotFoundError: ``--data`` is neither a CSV nor a folder holding ``<split>.csv``.
    """
    data = Path(args.data)
    source = _multilabel_source(data, args.split)
    if source is None:
        raise FileNotFoundError(f"no {args.split}.csv in {data}: pass the multi-label CSV with --data, or --split")
    if args.overlays:
        print("--overlays: not drawn for a multi-label checkpoint; explain draws one overlay per finding")
    result = _evaluate_findings(model, args, source, metadata, size, mean, std, device)
    selection, selected_on = result, source.stem
    select_source = _multilabel_source(data, args.select_on) if data.suffix.lower() != ".csv" else None
    if args.select_on.lower() == "none":
        selection = None
    elif select_source is not None and select_source != source:
        selection = _evaluate_findings(model, args, select_source, metadata, size, mean, std, device)
        selected_on = select_source.stem
    recommendation = recommend(
        pool_findings(selection["findings"]), selected_on, report=pool_findings(result["findings"])
    ) if selection is not None else None
    result.update(task="multilabel", checkpoint=str(args.checkpoint), data=str(source), input_size=list(size),
                  thresholds=metadata.get("thresholds"), recommended=recommendation)
    return result, recommendation, format_findings_table(result, recommendation)


def run(args: argparse.Namespace) -> int:
    """Evaluates, prints the table, writes the JSON and the recommendation; returns 0.

    Raises:
        FileExistsError: an earlier evaluate's ``evaluation.json`` or ``overlays/`` is where
            this one would write, and ``--overwrite`` was not given.
    """
    from ..core.device import resolve_device
    from ..models.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, update_checkpoint
    from ..models.resnet50 import ResNet50FineTuned

    checkpoint = Path(args.checkpoint)
    outputs = _output_folders(args, checkpoint)  # before any work: refuse now, not after it
    metadata = load_checkpoint(checkpoint)
    model = ResNet50FineTuned.from_checkpoint(checkpoint)
    device = resolve_device(args.device)
    model.to(device)
    # The checkpoint's size, mean and std as the model read them (checkpoint_metadata).
    size = (args.image_size, args.image_size) if args.image_size else model.input_size or (224, 224)
    mean, std = tuple(model.mean), tuple(model.std)
    if metadata.get("task") == "multilabel":
        result, recommendation, table = _run_findings(model, args, metadata, size, mean, std, device)
        kept = None
    else:
        result, recommendation, kept = _run_single(model, args, metadata, size, mean, std, device)
        table = format_table(result, recommendation)
    print(table)
    if recommendation is not None and metadata.get("format") == CHECKPOINT_FORMAT:
        update_checkpoint(checkpoint, recommended=json_safe(recommendation))
        print(f"written into {checkpoint}: explain, figures, compare and the demo now draw {recommendation['layer']} with {recommendation['method']}")
    elif recommendation is not None:  # a plain state_dict file stays as the user saved it
        print(
            f"not written into {checkpoint} (not a checkpoint train wrote): pass --layer "
            f"{recommendation['layer']} --method {recommendation['method']} to explain and figures"
        )
    json_path = Path(args.json) if args.json else checkpoint.parent / "evaluation.json"
    for folder in outputs:
        folder.clear()
    try:
        with open(json_path, "w") as handle:
            json.dump(json_safe(result), handle, indent=2)
        print(f"results: {json_path}")
        overlay_dir = Path(args.overlay_dir) if args.overlay_dir else checkpoint.parent / "overlays"
        written = write_overlays(
            kept, overlay_dir, mean=mean, std=std, alignment=args.alignment, method=args.methods[0]
        ) if kept else []
    finally:
        for folder in outputs:
            folder.record()
    if kept:
        print(
            f"overlays ({args.methods[0]}: {', '.join(['input', *args.layers])}; mask outline green, "
            f"peak as a white cross): {len(written)} in {overlay_dir}"
        )
    return 0
