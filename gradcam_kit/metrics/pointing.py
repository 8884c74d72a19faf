"""The pointing game per target layer and CAM method, with its ceiling and the center baseline.

:func:`evaluate_pointing` explains each image's ground-truth class at every candidate layer
(``layer1`` to ``layer4`` and the default ``layer4.2.conv3``) in one forward pass of
``ResNet50FineTuned`` per batch for all CAM methods (``CAMEngine.explain_methods``), and scores
the images that have a non-empty mask with the pointing game of
:mod:`gradcam_kit.metrics.localization`: the peak of each map, found at the layer's own
resolution and placed at its receptive field's centre, must lie within ``tolerance_px``
(15 at 224x224, scaled to the input size) of the lesion. Beside every figure stand its
**ceiling** (what a perfect map on that layer's grid scores on the same masks) and the
**center baseline**.

For a multi-label head, :func:`evaluate_findings` plays the game once per finding: each
finding's logit is explained (``class_index``) and scored on the positives that have that
finding's mask; :func:`pool_findings` adds the findings' hits up for :func:`recommend`, and
:func:`format_findings_table` prints them.

:func:`recommend` picks the layer and method that localise best on a selection split, and
:func:`format_table` prints a result. The ``evaluate`` command (:mod:`gradcam_kit.cli.evaluate`)
runs them and writes the recommendation into the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..core.engine import CAMEngine
from ..core.modes import eval_mode
from ..data.multilabel import fold_labels
from .classification import format_metrics, multilabel_metrics, task_metrics
from .localization import (
    POINTING_MODES,
    REFERENCE_SIZE,
    center_baseline,
    pointing_ceiling,
    pointing_game,
    scaled_tolerance,
)

__all__ = [
    "DEFAULT_LAYERS",
    "evaluate_findings",
    "evaluate_pointing",
    "format_findings_table",
    "format_table",
    "pool_findings",
    "recommend",
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
    class_index: int | None = None,
) -> None:
    images, labels, masks, index = _unpack(batch)
    images, labels, masks = images.to(device), labels.to(device), masks.to(device)
    tolerance = tally.tolerance = scaled_tolerance(tolerance_px, tuple(images.shape[-2:]), reference_size)
    has_mask = masks.flatten(1).any(dim=1)
    single_logit = model.fc.out_features == 1
    # One forward and one backward serve every method (CAMEngine.explain_methods).
    if class_index is None:
        class_index = 1 if single_logit else labels  # a single logit: class 1 explains +z (core.scores)
    results = CAMEngine(model, layers, hold_model=False).explain_methods(
        images,
        class_index,
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
    class_index: int | None = None,
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
            :func:`gradcam_kit.viz.layer_strips.write_overlays`.
        progress: tqdm progress bar.
        alignment: where each map unit is drawn: ``"receptive-field"`` or ``"pixel"``
            (see :func:`gradcam_kit.core.engine.upsample`).
        mode: how the peak is found: ``"unit"`` or ``"torchray"`` (see
            :mod:`gradcam_kit.metrics.localization`).
        names: file names of the dataset's samples, for the overlays' titles (with ``index``
            in the batches).
        desc: label of the progress bar.
        class_index: explain this output for every image; ``None``: each image's label
            (the logit itself for a single-logit head).

    Returns:
        a dict with ``classification``, ``pointing_game`` (``{method: {layer: row}}``, a row
        being ``{"hits", "total", "accuracy"}``), ``ceiling`` (``{layer: row}``),
        ``center_baseline`` (a row), ``best`` (``{"method", "layer", "accuracy"}``), the
        tolerance, alignment and mode used and, with ``overlays``, the kept tensors under
        ``"_overlays"``.
    """
    layers, methods = list(layers), list(methods)
    if not layers or not methods:
        raise ValueError("name at least one layer and one method")
    if mode not in POINTING_MODES:
        raise ValueError(f"mode must be one of {POINTING_MODES}, got {mode!r}")
    tally = _Tally(methods, layers)
    options = {
        "layers": layers, "methods": methods, "tolerance_px": tolerance_px, "reference_size": reference_size,
        "device": device, "alignment": alignment, "mode": mode, "overlays": overlays, "names": names,
        "class_index": class_index,
    }
    for batch in _batches(model, loader, desc, progress):
        _score_batch(model, batch, tally, **options)
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


def _batches(model: torch.nn.Module, loader: torch.utils.data.DataLoader, desc: str, progress: bool):
    """The loader's batches, with the model in eval mode, Grad-CAM on and no autograd
    graph kept, all restored afterwards."""
    from tqdm.auto import tqdm

    was_enabled = model.gradcam_enabled
    model.enable_gradcam_mode()
    try:
        with eval_mode(model), torch.no_grad():
            total = len(loader) if hasattr(loader, "__len__") else None
            yield from tqdm(loader, desc=desc, total=total, disable=not progress, leave=False)
    finally:
        if not was_enabled:
            model.disable_gradcam_mode()


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
        "classification": task_metrics(logits, labels),
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
    lines += _pointing_lines(result)
    if recommendation and result["positives_with_masks"]:
        lines.append(_recommendation_line(recommendation))
    return "\n".join(lines)


def _pointing_lines(result: dict[str, object]) -> list[str]:
    """The pointing-game part of :func:`format_table`: its header, the layers x methods rows
    with each layer's ceiling, the center baseline and the best cell."""
    lines = []
    total = result["positives_with_masks"]
    if not total:
        return ["pointing game: no image with a non-empty mask; nothing to score"]
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
    return lines


def _recommendation_line(rec: dict[str, object]) -> str:
    text = (
        f"recommended: {rec['layer']} with {rec['method']}: pointing {rec['pointing']:.2f} on "
        f"{rec['split']} (ceiling {rec['ceiling']:.2f}, center baseline {rec['center_baseline']:.2f})"
    )
    if rec.get("report_pointing") is not None:
        text += f"; {rec['report_pointing']:.2f} on the reported split"
    return text


def evaluate_findings(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    findings: Sequence[str],
    *,
    layers: Sequence[str] = DEFAULT_LAYERS,
    methods: Sequence[str] = ("gradcam",),
    tolerance_px: float = 15.0,
    reference_size: int = REFERENCE_SIZE,
    device: torch.device | str = "cpu",
    alignment: str = "receptive-field",
    mode: str = "unit",
    thresholds: Sequence[float] | None = None,
    progress: bool = True,
    desc: str = "evaluate",
) -> dict[str, object]:
    """The pointing game of each finding of a multi-label head, in one pass over the data.

    For finding ``k`` the maps explain logit ``k`` and are scored on the images whose mask
    of finding ``k`` is non-empty (its positives with a mask), with each layer's ceiling
    and the center baseline on the same masks, as :func:`evaluate_pointing` does.

    Args:
        model: a multi-label ``ResNet50FineTuned`` (one output per finding).
        loader: yields ``(images, target, mask, finding_masks, index)``
            (:class:`gradcam_kit.data.multilabel.MultiLabelDataset` with ``mask_size`` and
            ``return_index``); ``finding_masks`` is bool ``(B, F, H, W)``.
        findings: the findings' names, in output order.
        layers, methods, tolerance_px, reference_size, device, alignment, mode, progress,
            desc: as for :func:`evaluate_pointing`.
        thresholds: per-finding probability thresholds for sensitivity and specificity
            (default 0.5).

    Returns:
        ``{"classification": multi-label metrics, "findings": {name: result}, "images"}``,
        each result as :func:`evaluate_pointing`'s, without ``classification``.
    """
    layers, methods = list(layers), list(methods)
    if mode not in POINTING_MODES:
        raise ValueError(f"mode must be one of {POINTING_MODES}, got {mode!r}")
    tallies = [_Tally(methods, layers) for _ in findings]
    options = {
        "layers": layers, "methods": methods, "tolerance_px": tolerance_px, "reference_size": reference_size,
        "device": device, "alignment": alignment, "mode": mode, "overlays": 0, "names": None,
    }
    for images, target, label_mask, masks, index in _batches(model, loader, desc, progress):
        labels = fold_labels(target, label_mask)
        for k, tally in enumerate(tallies):
            # a single finding is a single logit: its class 1 explains +z (core.scores)
            explained = 1 if model.fc.out_features == 1 else k
            _score_batch(model, (images, labels, masks[:, k], index), tally, class_index=explained, **options)
    if not tallies or not tallies[0].logits:
        raise ValueError("the dataset is empty: nothing to evaluate")
    per_finding = {}
    for name, tally in zip(findings, tallies):
        result = _summarise(tally, methods, layers)
        result.pop("classification")
        result.update(
            tolerance_px_at_reference=tolerance_px, reference_size=reference_size,
            alignment=alignment, pointing_mode=mode,
        )
        per_finding[name] = result
    logits, labels = torch.cat(tallies[0].logits), torch.cat(tallies[0].labels)
    cut = torch.tensor(list(thresholds), dtype=torch.float64) if thresholds is not None else None
    return {
        "classification": multilabel_metrics(logits, labels, list(findings), cut),
        "findings": per_finding,
        "images": int(labels.shape[0]),
    }


def pool_findings(per_finding: dict[str, dict[str, object]]) -> dict[str, object]:
    """The findings' pointing games added up, hit by hit, in the form :func:`recommend` reads."""
    results = list(per_finding.values())
    first = results[0]
    total = sum(r["positives_with_masks"] for r in results)

    def row(rows: list[dict]) -> dict[str, object]:
        hits = sum(r["hits"] for r in rows)
        return {"hits": hits, "total": total, "accuracy": hits / total if total else None}

    table = {
        method: {layer: row([r["pointing_game"][method][layer] for r in results]) for layer in first["layers"]}
        for method in first["methods"]
    }
    keys = [(m, layer) for m in first["methods"] for layer in first["layers"]]
    best_method, best_layer = max(keys, key=lambda key: table[key[0]][key[1]]["hits"])
    return {
        **{k: first[k] for k in ("methods", "layers", "grids", "tolerance_px", "alignment", "pointing_mode",
                                 "tolerance_px_at_reference", "reference_size")},
        "positives_with_masks": total,
        "pointing_game": table,
        "ceiling": {layer: row([r["ceiling"][layer] for r in results]) for layer in first["layers"]},
        "center_baseline": row([r["center_baseline"] for r in results]),
        "best": {"method": best_method, "layer": best_layer, "accuracy": table[best_method][best_layer]["accuracy"]} if total else None,
    }


def format_findings_table(result: dict[str, object], recommendation: dict[str, object] | None = None) -> str:
    """The printed summary of :func:`evaluate_findings`: the classification line, each
    finding's AUROC and pointing-game table, and the recommendation."""
    metrics = result["classification"]
    lines = [f"classification ({result['images']} images): {format_metrics(metrics)}"]
    for name, finding in result["findings"].items():
        row = metrics["per_finding"][name]
        auroc = "nan" if row["auroc"] is None or row["auroc"] != row["auroc"] else f"{row['auroc']:.3f}"
        lines.append(
            f"\n{name}: AUROC {auroc} ({row['positives']} positive, {row['negatives']} negative); "
            f"pointing game explaining the {name} logit:"
        )
        lines += ["  " + line for line in _pointing_lines(finding)]
    if recommendation:
        lines.append("\n" + _recommendation_line(recommendation) + " (all findings' hits together)")
    return "\n".join(lines)
