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
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..core.engine import CAMEngine
from ..core.modes import eval_mode
from ..metrics.classification import classification_metrics, format_metrics, json_safe
from ..metrics.localization import (
    POINTING_MODES,
    REFERENCE_SIZE,
    center_baseline,
    point_hits,
    pointing_ceiling,
    pointing_game,
    scaled_tolerance,
)
from ..viz.layer_strips import write_overlays

__all__ = [
    "DEFAULT_LAYERS",
    "add_arguments",
    "center_baseline",
    "evaluate_pointing",
    "point_hits",
    "pointing_ceiling",
    "pointing_game",
    "recommend",
    "run",
    "scaled_tolerance",
]

DEFAULT_LAYERS: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4", "layer4.2.conv3")


class _Tally:
    """Running hit counts of one evaluation, kept on the device until the end."""

    def __init__(self, methods: Sequence[str], layers: Sequence[str]) -> None:
        self.hits = {(method, layer): [] for method in methods for layer in layers}
        self.ceiling: dict[str, list[Tensor]] = {layer: [] for layer in layers}
        self.grids: dict[str, tuple[int, int]] = {}
        self.centre: list[Tensor] = []
        self.scored: list[Tensor] = []
        self.logits: list[Tensor] = []
        self.labels: list[Tensor] = []
        self.kept: list[tuple[Tensor, Tensor, dict[str, Tensor], list[str]]] = []
        self.kept_count = 0
        self.tolerance: float | None = None


def _unpack(batch: Sequence) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    if len(batch) == 4:
        return batch[0], batch[1], batch[2], batch[3]
    images, labels, masks = batch
    return images, labels, masks, None


def _score_batch(
    model: torch.nn.Module,
    batch: Sequence,
    tally: _Tally,
    *,
    layers: list[str],
    methods: list[str],
    tolerance_px: float,
    reference_size: int,
    device: torch.device | str,
    alignment: str,
    mode: str,
    overlays: int,
    names: Sequence[str] | None,
) -> None:
    images, labels, masks, index = _unpack(batch)
    images, labels, masks = images.to(device), labels.to(device), masks.to(device)
    tolerance = tally.tolerance = scaled_tolerance(tolerance_px, tuple(images.shape[-2:]), reference_size)
    has_mask = masks.flatten(1).any(dim=1)
    single_logit = model.fc.out_features == 1
    # One forward and one backward serve every method (CAMEngine.explain_methods).
    results = CAMEngine(model, layers, hold_model=False).explain_methods(
        images,
        1 if single_logit else labels,  # a single logit: class 1 explains +z (core.scores)
        methods=methods,
        output_size=None,
        normalize=False,
    )
    for method in methods:
        logits, maps = results[method].logits, results[method].heatmaps
        for layer in layers:
            tally.hits[method, layer].append(
                pointing_game(maps[layer], masks, tolerance, alignment=alignment, mode=mode)
            )
        if method != methods[0]:
            continue
        tally.logits.append(logits.float())
        for layer in layers:
            grid = tally.grids[layer] = tuple(maps[layer].shape[-2:])
            tally.ceiling[layer].append(pointing_ceiling(masks, grid, tolerance, alignment=alignment))
        if tally.kept_count < overlays:
            chosen = has_mask.nonzero()[:, 0][: overlays - tally.kept_count]
            if chosen.numel():
                titles = [
                    Path(names[int(index[i])]).name if names is not None and index is not None else f"image {tally.kept_count + n}"
                    for n, i in enumerate(chosen.tolist())
                ]
                tally.kept.append((images[chosen], masks[chosen], {k: v[chosen] for k, v in maps.items()}, titles))
                tally.kept_count += chosen.numel()
    tally.labels.append(labels)
    tally.scored.append(has_mask)
    tally.centre.append(center_baseline(masks, tolerance))


def evaluate_pointing(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    *,
    layers: Sequence[str] = DEFAULT_LAYERS,
    methods: Sequence[str] = ("gradcam",),
    tolerance_px: float = 15.0,
    reference_size: int = REFERENCE_SIZE,
    device: torch.device | str = "cpu",
    overlays: int = 0,
    progress: bool = True,
    alignment: str = "receptive-field",
    mode: str = "unit",
    names: Sequence[str] | None = None,
    desc: str = "evaluate",
) -> dict[str, object]:
    """Classification metrics and the pointing game per method and layer of a ``ResNet50FineTuned``.

    Args:
        model: the model (Grad-CAM is enabled for the call and disabled again).
        loader: yields ``(images, labels, masks)`` or ``(images, labels, masks, index)``;
            masks at the input size.
        layers: candidate target layers, all explained in one forward pass per batch and method.
        methods: CAM method names (``"gradcam"``, ``"layercam"``, ...).
        tolerance_px: pointing-game tolerance at ``reference_size``.
        reference_size: image side the tolerance refers to.
        device: where to compute.
        overlays: keep this many positive images with the first method's maps for
            :func:`write_overlays`.
        progress: tqdm progress bar.
        alignment: where each map unit is drawn: ``"receptive-field"`` or ``"pixel"``
            (see :func:`gradcam_kit.core.engine.upsample`).
        mode: how the peak is found: ``"unit"`` or ``"torchray"`` (see
            :mod:`gradcam_kit.metrics.localization`).
        names: file names of the dataset's samples, for the overlays' titles (with ``index``
            in the batches).
        desc: label of the progress bar.

    Returns:
        a dict with ``classification``, ``pointing_game`` (``{method: {layer: row}}``, a row
        being ``{"hits", "total", "accuracy"}``), ``ceiling`` (``{layer: row}``),
        ``center_baseline`` (a row), ``best`` (``{"method", "layer", "accuracy"}``), the
        tolerance, alignment and mode used and, with ``overlays``, the kept tensors under
        ``"_overlays"``.
    """
    from tqdm.auto import tqdm

    layers, methods = list(layers), list(methods)
    if not layers or not methods:
        raise ValueError("name at least one layer and one method")
    if mode not in POINTING_MODES:
        raise ValueError(f"mode must be one of {POINTING_MODES}, got {mode!r}")
    tally = _Tally(methods, layers)
    was_enabled = model.gradcam_enabled
    model.enable_gradcam_mode()
    try:
        with eval_mode(model), torch.no_grad():
            total = len(loader) if hasattr(loader, "__len__") else None
            for batch in tqdm(loader, desc=desc, total=total, disable=not progress, leave=False):
                _score_batch(
                    model, batch, tally, layers=layers, methods=methods, tolerance_px=tolerance_px,
                    reference_size=reference_size, device=device, alignment=alignment, mode=mode,
                    overlays=overlays, names=names,
                )
    finally:
        if not was_enabled:
            model.disable_gradcam_mode()
    if not tally.logits:
        raise ValueError("the dataset is empty: nothing to evaluate")
    result = _summarise(tally, methods, layers)
    result.update(
        tolerance_px_at_reference=tolerance_px, reference_size=reference_size,
        alignment=alignment, pointing_mode=mode,
    )
    if tally.kept:
        result["_overlays"] = tally.kept
    return result


def _summarise(tally: _Tally, methods: list[str], layers: list[str]) -> dict[str, object]:
    logits, labels, scored = torch.cat(tally.logits), torch.cat(tally.labels), torch.cat(tally.scored)
    total = int(scored.sum())
    keys = list(tally.hits)
    counts = torch.stack(
        [torch.cat(tally.hits[key])[scored].sum() for key in keys]
        + [torch.cat(tally.ceiling[layer])[scored].sum() for layer in layers]
        + [torch.cat(tally.centre)[scored].sum()]
    ).tolist()  # the one host transfer of the scores

    def row(count: int) -> dict[str, object]:
        return {"hits": int(count), "total": total, "accuracy": count / total if total else None}

    table: dict[str, dict[str, dict[str, object]]] = {method: {} for method in methods}
    for (method, layer), count in zip(keys, counts[: len(keys)]):
        table[method][layer] = row(count)
    ceiling = {layer: row(c) for layer, c in zip(layers, counts[len(keys) : len(keys) + len(layers)])}
    best_method, best_layer = max(keys, key=lambda key: table[key[0]][key[1]]["hits"])
    return {
        "classification": classification_metrics(logits, labels),
        "methods": methods,
        "layers": layers,
        "grids": {layer: list(grid) for layer, grid in tally.grids.items()},
        "images": int(labels.numel()),
        "positives_with_masks": total,
        "tolerance_px": tally.tolerance,
        "pointing_game": table,
        "ceiling": ceiling,
        "center_baseline": row(counts[-1]),
        "best": {
            "method": best_method, "layer": best_layer,
            "accuracy": table[best_method][best_layer]["accuracy"],
        } if total else None,
    }


def recommend(selection: dict[str, object], split: str, report: dict[str, object] | None = None) -> dict[str, object] | None:
    """The layer and method to explain with: the best pointing figure on ``selection``.

    Ties go to the first layer and method in the order evaluated. Returns ``None`` when the
    selection split has no image with a mask. ``report`` (another split's result) adds that
    split's figure for the same layer and method.
    """
    best = selection.get("best")
    if not best:
        return None
    layer, method = best["layer"], best["method"]
    recommendation = {
        "layer": layer,
        "method": method,
        "alignment": selection["alignment"],
        "pointing": best["accuracy"],
        "ceiling": selection["ceiling"][layer]["accuracy"],
        "center_baseline": selection["center_baseline"]["accuracy"],
        "split": split,
        "images": selection["positives_with_masks"],
        "tolerance_px": selection["tolerance_px"],
        "pointing_mode": selection["pointing_mode"],
    }
    if report is not None and report is not selection and method in report["pointing_game"]:
        row = report["pointing_game"][method].get(layer)
        if row is not None:
            recommendation["report_pointing"] = row["accuracy"]
    return recommendation


def format_table(result: dict[str, object], recommendation: dict[str, object] | None = None) -> str:
    """The printed summary: classification line, then a layers x methods pointing-game table
    with each layer's ceiling and the center baseline."""
    lines = [f"classification ({result['images']} images): {format_metrics(result['classification'])}"]
    total = result["positives_with_masks"]
    if not total:
        lines.append("pointing game: no image with a non-empty mask; nothing to score")
        return "\n".join(lines)
    peak = (
        "the map's peak, found at the layer's resolution" if result["pointing_mode"] == "unit"
        else "the first maximal pixel of the upsampled map (torchray mode; the ceiling is unit mode's)"
    )
    lines.append(
        f"pointing game on {total} positives with masks (hit: {peak}, {result['alignment']} "
        f"alignment, within {result['tolerance_px']:.1f} px of the mask = "
        f"{result['tolerance_px_at_reference']:g} px at {result['reference_size']}x{result['reference_size']}):"
    )
    methods, table = result["methods"], result["pointing_game"]
    lines.append(f"  {'layer':<16}{'grid':>7}" + "".join(f"{m:>11}" for m in methods) + f"{'ceiling':>10}")
    for layer in result["layers"]:
        grid = "x".join(str(g) for g in result["grids"].get(layer, ()))
        cells = "".join(f"{table[m][layer]['accuracy']:>11.3f}" for m in methods)
        lines.append(f"  {layer:<16}{grid:>7}{cells}{result['ceiling'][layer]['accuracy']:>10.3f}")
    lines.append(f"  {'center baseline':<23}{result['center_baseline']['accuracy']:>11.3f}")
    best = result["best"]
    lines.append(f"  best here: {best['layer']} with {best['method']} ({best['accuracy']:.3f})")
    if recommendation:
        lines.append(_recommendation_line(recommendation))
    return "\n".join(lines)


def _recommendation_line(rec: dict[str, object]) -> str:
    text = (
        f"recommended: {rec['layer']} with {rec['method']}: pointing {rec['pointing']:.2f} on "
        f"{rec['split']} (ceiling {rec['ceiling']:.2f}, center baseline {rec['center_baseline']:.2f})"
    )
    if rec.get("report_pointing") is not None:
        text += f"; {rec['report_pointing']:.2f} on the reported split"
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m gradcam_kit evaluate``."""
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by train (best.pt)")
    parser.add_argument("--data", required=True, help="dataset root, split folder or path,label,mask CSV")
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
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default: %(default)s)")
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
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    return evaluate_pointing(
        model, loader, layers=args.layers, methods=args.methods, tolerance_px=args.tolerance,
        device=device, overlays=overlays, progress=args.progress, alignment=args.alignment,
        mode=args.pointing_mode, names=[str(sample.path) for sample in dataset.samples],
        desc=f"evaluate {split or data.name}",
    )


def run(args: argparse.Namespace) -> int:
    """Evaluates, prints the table, writes the JSON and the recommendation; returns 0.

    Raises:
        FileExistsError: an earlier evaluate's ``evaluation.json`` or ``overlays/`` is where
            this one would write, and ``--overwrite`` was not given.
    """
    from ..models.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, update_checkpoint
    from ..models.resnet50 import ResNet50FineTuned

    checkpoint = Path(args.checkpoint)
    outputs = _output_folders(args, checkpoint)  # before any work: refuse now, not after it
    metadata = load_checkpoint(checkpoint)
    model = ResNet50FineTuned.from_checkpoint(checkpoint)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    model.to(device)
    # The checkpoint's size, mean and std as the model read them (checkpoint_metadata).
    size = (args.image_size, args.image_size) if args.image_size else model.input_size or (224, 224)
    mean, std = tuple(model.mean), tuple(model.std)
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
        checkpoint=str(checkpoint), data=str(data / split) if split else str(data),
        input_size=list(size), recommended=recommendation,
        selection=None if selection is None or selection is result else {
            k: selection[k] for k in ("pointing_game", "ceiling", "center_baseline", "positives_with_masks")
        },
    )
    print(format_table(result, recommendation))
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
