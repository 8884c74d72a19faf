"""``python -m gradcam_kit evaluate``: accuracy, AUROC and the pointing game per target layer.

The pointing game (Zhang et al., "Top-down neural attention by excitation backprop",
2016, as implemented in TorchRay's benchmark) asks whether a saliency map's maximum
falls on the object: a **hit** when the pixel with the highest value lies within
``tolerance`` pixels (15 at 224x224) of the ground-truth mask. Its **center baseline**
always points at the image centre; a map is only informative when it beats it.

The evaluate command explains each image's ground-truth class at every candidate layer
(``layer1`` to ``layer4`` and the default ``layer4.2.conv3``) in one forward pass of
``ResNet50FineTuned`` (``model(x, return_gradcam=True, gradcam_layers=[...])``) per CAM
method (``--method gradcam layercam``), and scores the images that have a non-empty
mask. The tolerance scales with the input size (``15 * 96 / 224`` px at 96x96), so
figures stay comparable across resolutions.

:func:`pointing_game` and :func:`center_baseline` work on any ``(B, H, W)`` maps and masks.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .metrics import classification_metrics, format_metrics, json_safe

__all__ = [
    "DEFAULT_LAYERS",
    "add_arguments",
    "center_baseline",
    "evaluate_pointing",
    "point_hits",
    "pointing_game",
    "run",
    "scaled_tolerance",
]

DEFAULT_LAYERS: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4", "layer4.2.conv3")
REFERENCE_SIZE = 224


def scaled_tolerance(tolerance_px: float, size: Sequence[int] | int, reference_size: int = REFERENCE_SIZE) -> float:
    """``tolerance_px`` at ``reference_size`` converted to an image of ``size`` (shorter side)."""
    side = size if isinstance(size, int) else min(size)
    return float(tolerance_px) * side / reference_size


def _check_masks(masks: Tensor, shape: torch.Size | None = None) -> Tensor:
    if masks.ndim != 3:
        raise ValueError(f"masks must be (B, H, W), got {tuple(masks.shape)}")
    if shape is not None and masks.shape != shape:
        raise ValueError(
            f"heatmaps {tuple(shape)} and masks {tuple(masks.shape)} differ; resize the masks "
            "to the heatmaps' size (nearest neighbour) first"
        )
    return masks.bool()


def point_hits(points: Tensor, masks: Tensor, tolerance_px: float) -> Tensor:
    """Whether each ``(y, x)`` point lies within ``tolerance_px`` of its mask.

    Args:
        points: ``(B, 2)`` integer ``(row, column)`` pixel positions.
        masks: ``(B, H, W)`` bool masks; an empty mask is never hit.
        tolerance_px: the largest distance (pixels, Euclidean) that still counts as a hit.

    Returns:
        ``(B,)`` bool.
    """
    masks = _check_masks(masks)
    if tolerance_px < 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}")
    _, height, width = masks.shape
    rows = torch.arange(height, device=masks.device, dtype=torch.float32)
    cols = torch.arange(width, device=masks.device, dtype=torch.float32)
    points = points.to(device=masks.device, dtype=torch.float32)
    distance2 = (rows[None, :, None] - points[:, 0, None, None]) ** 2 + (
        cols[None, None, :] - points[:, 1, None, None]
    ) ** 2
    nearest = distance2.masked_fill(~masks, float("inf")).flatten(1).amin(dim=1)
    return nearest <= float(tolerance_px) ** 2


def pointing_game(
    heatmaps: Tensor,
    masks: Tensor,
    tolerance_px: float = 15.0,
    *,
    reference_size: int | None = None,
) -> Tensor:
    """Pointing-game hits: the maximum of each heatmap lies within ``tolerance_px`` of its mask.

    Args:
        heatmaps: ``(B, H, W)`` saliency maps (any scale; only the arg-max matters; the
            first maximum in row-major order wins a tie).
        masks: ``(B, H, W)`` bool ground truth at the heatmaps' size.
        tolerance_px: tolerance in pixels of these maps, or at ``reference_size`` if given.
        reference_size: the image side ``tolerance_px`` refers to (TorchRay: 15 px at
            224): the tolerance is scaled to the maps' shorter side.

    Returns:
        ``(B,)`` bool hits. Images with an empty mask count as misses; leave them out of
        the score (see :func:`evaluate_pointing`).
    """
    if heatmaps.ndim != 3:
        raise ValueError(f"heatmaps must be (B, H, W), got {tuple(heatmaps.shape)}")
    masks = _check_masks(masks, heatmaps.shape)
    if reference_size is not None:
        tolerance_px = scaled_tolerance(tolerance_px, tuple(heatmaps.shape[-2:]), reference_size)
    width = heatmaps.shape[-1]
    flat_max = heatmaps.detach().flatten(1).argmax(dim=1)
    points = torch.stack([flat_max // width, flat_max % width], dim=1)
    return point_hits(points, masks, tolerance_px)


def center_baseline(
    masks: Tensor, tolerance_px: float = 15.0, *, reference_size: int | None = None
) -> Tensor:
    """Hits of the baseline that always points at the image centre (``(H // 2, W // 2)``)."""
    masks = _check_masks(masks)
    height, width = masks.shape[-2:]
    if reference_size is not None:
        tolerance_px = scaled_tolerance(tolerance_px, (height, width), reference_size)
    centre = torch.tensor([[height // 2, width // 2]], device=masks.device).expand(masks.shape[0], 2)
    return point_hits(centre, masks, tolerance_px)


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
    alignment: str = "pixel",
) -> dict[str, object]:
    """Classification metrics and the pointing game per method and layer of a ``ResNet50FineTuned``.

    Args:
        model: the model (Grad-CAM is enabled for the call and disabled again).
        loader: yields ``(images, labels, masks)``; masks at the input size.
        layers: candidate target layers, all explained in one forward pass per batch and method.
        methods: CAM method names (``"gradcam"``, ``"layercam"``, ...).
        tolerance_px: pointing-game tolerance at ``reference_size``.
        reference_size: image side the tolerance refers to.
        device: where to compute.
        overlays: keep this many positive images with the first method's maps for
            :func:`write_overlays`.
        progress: tqdm progress bar.
        alignment: how maps are upsampled: ``"pixel"`` or ``"receptive-field"`` (see
            :func:`gradcam_kit.engine.upsample`).

    Returns:
        a dict with ``classification``, ``pointing_game`` (``{method: {layer: row}}``, a row
        being ``{"hits", "total", "accuracy"}``), ``center_baseline`` (a row), ``best``
        (``{"method", "layer", "accuracy"}``), the tolerance used and, with ``overlays``, the
        kept tensors under ``"_overlays"``.
    """
    from tqdm.auto import tqdm

    layers, methods = list(layers), list(methods)
    if not layers or not methods:
        raise ValueError("name at least one layer and one method")
    was_training, was_enabled = model.training, model.gradcam_enabled
    model.eval()
    model.enable_gradcam_mode()
    logits_all, labels_all = [], []
    hits = {(method, layer): [] for method in methods for layer in layers}
    centre_hits, scored = [], []
    kept: list[tuple[Tensor, Tensor, dict[str, Tensor]]] = []
    kept_count = 0
    tolerance = None
    try:
        with torch.no_grad():
            for images, labels, masks in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
                images, labels, masks = images.to(device), labels.to(device), masks.to(device)
                tolerance = scaled_tolerance(tolerance_px, tuple(images.shape[-2:]), reference_size)
                has_mask = masks.flatten(1).any(dim=1)
                single_logit = model.fc.out_features == 1
                for method in methods:
                    logits, maps = model(
                        images,
                        return_gradcam=True,
                        gradcam_class_idx=0 if single_logit else labels,
                        gradcam_layers=layers,
                        gradcam_method=method,
                        gradcam_alignment=alignment,
                    )
                    for layer in layers:
                        hits[method, layer].append(pointing_game(maps[layer], masks, tolerance))
                    if method == methods[0]:
                        logits_all.append(logits.float())
                        if kept_count < overlays:
                            chosen = has_mask.nonzero()[:, 0][: overlays - kept_count]
                            if chosen.numel():
                                kept.append((images[chosen], masks[chosen], {k: v[chosen] for k, v in maps.items()}))
                                kept_count += chosen.numel()
                labels_all.append(labels)
                scored.append(has_mask)
                centre_hits.append(center_baseline(masks, tolerance))
    finally:
        model.train(was_training)
        if not was_enabled:
            model.disable_gradcam_mode()
    if not logits_all:
        raise ValueError("the dataset is empty: nothing to evaluate")
    logits, labels, scored_mask = torch.cat(logits_all), torch.cat(labels_all), torch.cat(scored)
    total = int(scored_mask.sum())
    keys = list(hits)
    counts = torch.stack(
        [torch.cat(hits[key])[scored_mask].sum() for key in keys] + [torch.cat(centre_hits)[scored_mask].sum()]
    ).tolist()  # the one host transfer of the scores

    def row(count: int) -> dict[str, object]:
        return {"hits": int(count), "total": total, "accuracy": count / total if total else None}

    table: dict[str, dict[str, dict[str, object]]] = {method: {} for method in methods}
    for (method, layer), count in zip(keys, counts[:-1]):
        table[method][layer] = row(count)
    best_method, best_layer = max(keys, key=lambda key: table[key[0]][key[1]]["hits"])
    result: dict[str, object] = {
        "classification": classification_metrics(logits, labels),
        "methods": methods,
        "layers": layers,
        "images": int(labels.numel()),
        "positives_with_masks": total,
        "tolerance_px": tolerance,
        "tolerance_px_at_reference": tolerance_px,
        "reference_size": reference_size,
        "pointing_game": table,
        "center_baseline": row(counts[-1]),
        "best": {
            "method": best_method, "layer": best_layer,
            "accuracy": table[best_method][best_layer]["accuracy"],
        } if total else None,
    }
    if kept:
        result["_overlays"] = kept
    return result


def write_overlays(
    kept: list[tuple[Tensor, Tensor, dict[str, Tensor]]],
    out_dir: str | Path,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    scale: int = 2,
) -> list[Path]:
    """One PNG per image: the input, then the overlay of each layer (mask outline in green,
    the map's maximum as a white cross). Returns the paths written."""
    from PIL import Image

    from .preprocess import denormalize
    from .render import overlay, to_numpy_images

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    index = 0
    for images, masks, maps in kept:
        base = denormalize(images, mean=mean, std=std)
        floats = masks.float()[:, None]
        outline = (F.max_pool2d(floats, 3, 1, 1) - floats)[:, 0].bool()
        panels = [base]
        for heatmap in maps.values():
            _, overlaid = overlay(base, heatmap)
            overlaid = overlaid.clone()
            overlaid[outline] = torch.tensor([0, 255, 0], dtype=torch.uint8, device=overlaid.device)
            width = heatmap.shape[-1]
            peak = heatmap.flatten(1).argmax(dim=1)
            rows, cols = peak // width, peak % width
            for offset in range(-2, 3):  # a small cross at each map's maximum
                overlaid[torch.arange(len(rows)), (rows + offset).clamp(0, heatmap.shape[-2] - 1), cols] = 255
                overlaid[torch.arange(len(rows)), rows, (cols + offset).clamp(0, width - 1)] = 255
            panels.append(overlaid)
        strips = torch.cat(panels, dim=2)
        if scale > 1:
            strips = strips.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
        for strip in to_numpy_images(strips):
            path = out_dir / f"overlay_{index:03d}.png"
            Image.fromarray(strip).save(path)
            written.append(path)
            index += 1
    return written


def format_table(result: dict[str, object]) -> str:
    """The printed summary: classification line, then a layers x methods pointing-game table."""
    lines = [f"classification ({result['images']} images): {format_metrics(result['classification'])}"]
    total = result["positives_with_masks"]
    if not total:
        lines.append("pointing game: no image with a non-empty mask; nothing to score")
        return "\n".join(lines)
    lines.append(
        f"pointing game on {total} positives with masks (hit: the map's maximum within "
        f"{result['tolerance_px']:.1f} px of the mask = {result['tolerance_px_at_reference']:g} px at "
        f"{result['reference_size']}x{result['reference_size']}):"
    )
    methods, table = result["methods"], result["pointing_game"]
    lines.append(f"  {'layer':<18}" + "".join(f"{m:>12}" for m in methods))
    for layer in result["layers"]:
        cells = "".join(f"{table[m][layer]['accuracy']:>12.3f}" for m in methods)
        lines.append(f"  {layer:<18}{cells}")
    lines.append(f"  {'center baseline':<18}{result['center_baseline']['accuracy']:>12.3f}")
    best = result["best"]
    lines.append(f"  best: {best['layer']} with {best['method']} ({best['accuracy']:.3f})")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m gradcam_kit evaluate``."""
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by train (best.pt)")
    parser.add_argument("--data", required=True, help="dataset root, split folder or path,label,mask CSV")
    parser.add_argument("--split", default="test", help="split folder inside --data, if present (default: %(default)s)")
    parser.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS), help="candidate target layers (default: %(default)s)")
    parser.add_argument(
        "--method", "--methods", dest="methods", nargs="+", default=["gradcam"],
        help="CAM method(s), e.g. gradcam layercam gradcam++; one forward pass each (default: %(default)s)",
    )
    parser.add_argument("--tolerance", type=float, default=15.0, help="pointing-game tolerance in px at 224x224, scaled to the input size (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=None, help="input size (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=16, help="(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default: %(default)s)")
    parser.add_argument("--json", default=None, help="where to write the results (default: <checkpoint folder>/evaluation.json)")
    parser.add_argument("--overlays", type=int, default=0, help="write overlays of this many positives (default: %(default)s)")
    parser.add_argument("--overlay-dir", default=None, help="(default: <checkpoint folder>/overlays)")
    parser.add_argument(
        "--alignment", choices=["pixel", "receptive-field"], default="pixel",
        help="upsampling of the maps: the usual bilinear resize, or each unit on its receptive "
        "field's centre (default: %(default)s)",
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


def run(args: argparse.Namespace) -> int:
    """Evaluates, prints the table, writes the JSON; returns 0.

    Raises:
        FileExistsError: an earlier evaluate's ``evaluation.json`` or ``overlays/`` is where
            this one would write, and ``--overwrite`` was not given.
    """
    from resnet50 import ResNet50FineTuned

    from .checkpoint import load_checkpoint
    from .data import ImageDataset
    from .preprocess import IMAGENET_MEAN, IMAGENET_STD, build_transform

    checkpoint = Path(args.checkpoint)
    outputs = _output_folders(args, checkpoint)  # before any work: refuse now, not after it
    metadata = load_checkpoint(checkpoint)
    model = ResNet50FineTuned.from_checkpoint(checkpoint)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    model.to(device)
    size = args.image_size or metadata.get("input_size") or 224
    size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    mean = tuple(metadata.get("mean") or IMAGENET_MEAN)
    std = tuple(metadata.get("std") or IMAGENET_STD)
    data = Path(args.data)
    split = args.split if args.split and ((data / args.split).is_dir() or (data / f"{args.split}.csv").is_file()) else None
    dataset = ImageDataset.from_source(
        data, split, class_names=metadata.get("class_names"),
        transform=build_transform(size, mean=mean, std=std), mask_size=size,
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    result = evaluate_pointing(
        model, loader, layers=args.layers, methods=args.methods, tolerance_px=args.tolerance,
        device=device, overlays=args.overlays, progress=args.progress, alignment=args.alignment,
    )
    kept = result.pop("_overlays", None)
    result.update(
        checkpoint=str(checkpoint), data=str(data / split) if split else str(data),
        input_size=list(size), alignment=args.alignment,
    )
    print(format_table(result))
    json_path = Path(args.json) if args.json else checkpoint.parent / "evaluation.json"
    for folder in outputs:
        folder.clear()
    try:
        with open(json_path, "w") as handle:
            json.dump(json_safe(result), handle, indent=2)
        print(f"results: {json_path}")
        overlay_dir = Path(args.overlay_dir) if args.overlay_dir else checkpoint.parent / "overlays"
        written = write_overlays(kept, overlay_dir, mean=mean, std=std) if kept else []
    finally:
        for folder in outputs:
            folder.record()
    if kept:
        print(
            f"overlays ({args.methods[0]}: {', '.join(['input', *args.layers])}; mask outline green, "
            f"maximum as a white cross): {len(written)} in {overlay_dir}"
        )
    return 0
