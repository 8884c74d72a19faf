"""Which map to trust? CAM methods x faithfulness metrics on one model and dataset.

:func:`compare_methods` explains every image with each method at the model's target layer
and reports, per method:

========================  =====================================================  ==========
column                    what it measures                                       better
========================  =====================================================  ==========
``deletion_auc``          class probability as top pixels are removed (RISE)     lower
``insertion_auc``         class probability as top pixels are inserted (RISE)    higher
``average_drop``          % confidence lost on ``map * image`` (Grad-CAM++)      lower
``increase_in_confidence`` % of images whose confidence rises on ``map * image``  higher
``randomization_corr``    Spearman correlation with the maps of a model whose    lower
                          top stages were re-initialised (Adebayo et al.)
``pointing_game``         % of images whose map maximum falls on the lesion      higher
                          mask (within 15 px at 224 px), where masks exist
``seconds_per_image``     time of the explanation alone (forward + method)       lower
========================  =====================================================  ==========

Every metric runs batched on the device (:mod:`gradcam_kit.metrics.faithfulness`); the explained
class is the model's prediction. :func:`format_markdown` gives the table as markdown and
:func:`write_results` saves it as ``compare.json`` (with the whole randomisation cascade and
the settings), ``compare.csv`` and ``compare.md``. The ``compare`` command
(:mod:`gradcam_kit.cli.compare`) runs them on a dataset.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..core.engine import CAMEngine
from ..core.scores import predicted_class
from ..methods import METHODS, CAMMethod, get_method
from .faithfulness import (
    Explainer,
    auc,
    average_drop,
    cam_explainer,
    confidence_scores,
    deletion_curve,
    increase_in_confidence,
    insertion_curve,
    model_randomization,
    randomization_cascade,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_METHODS",
    "available_methods",
    "compare_methods",
    "default_cascade",
    "format_markdown",
    "scorecam_estimate",
    "write_results",
]

#: The methods that cost one forward and one gradient pass. Score-CAM (one masked forward
#: per channel of the target layer: 2048 at ResNet50's layer4) runs only when named.
DEFAULT_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")

#: (key, header, how to print) of the table's columns.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("deletion_auc", "deletion AUC \u2193", "{:.3f}"),
    ("insertion_auc", "insertion AUC \u2191", "{:.3f}"),
    ("average_drop", "avg drop % \u2193", "{:.1f}"),
    ("increase_in_confidence", "increase in conf. % \u2191", "{:.1f}"),
    ("randomization_corr", "rand. rank corr. \u2193", "{:.3f}"),
    ("pointing_game", "pointing game % \u2191", "{:.1f}"),
    ("seconds_per_image", "s / image", "{:.4f}"),
)


def available_methods(requested: Iterable[str] = (*DEFAULT_METHODS, "scorecam")) -> list[str]:
    """The requested methods that this installation provides (Score-CAM may be absent)."""
    return [name for name in requested if name in METHODS]


def _method(name: str, chunk_size: int) -> CAMMethod:
    """A method instance; Score-CAM scores its masked inputs in chunks of ``chunk_size``."""
    if name == "scorecam":
        return METHODS[name](batch_size=chunk_size)
    return get_method(name)


def default_cascade(model: nn.Module, target_layer: str) -> list[str]:
    """The top-level stages from the output down to the one holding ``target_layer``.

    ``fc, layer4`` for ``layer4.2.conv3``; ``fc, layer4, layer3`` for ``layer3``: the
    randomised stages then always include the target layer's own weights.
    """
    stages = randomization_cascade(model)
    top = target_layer.split(".")[0]
    return stages[: stages.index(top) + 1] if top in stages else stages


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare_methods(
    model: nn.Module,
    batches: Iterable[Sequence[Tensor]],
    methods: Sequence[str],
    *,
    target_layer: str,
    steps: int = 50,
    chunk_size: int = 64,
    cascade: Sequence[str] | None = None,
    tolerance_px: float = 15.0,
    progress: bool = True,
    alignment: str = "receptive-field",
    total: int | None = None,
) -> list[dict[str, object]]:
    """Scores every method on every batch; returns one row (a dict) per method.

    Args:
        model: the classifier, in eval mode, on the device the batches are on.
        batches: ``(images, labels)`` or ``(images, labels, masks)`` batches; ``masks``
            ``(B, H, W)`` bool at the input size, all ``False`` for an image without one.
        methods: method names (see :data:`gradcam_kit.methods.base.METHODS`).
        target_layer: the layer every method explains.
        steps: deletion/insertion steps.
        chunk_size: perturbed images per forward pass.
        cascade: stages re-initialised, in order, for the randomisation check; the row
            reports the correlation after the last one (all of them randomised). Default:
            :func:`default_cascade`.
        tolerance_px: pointing-game tolerance at 224 px (TorchRay's 15 px), scaled to the
            input size.
        progress: show a progress bar over the batches.
        alignment: where map units are drawn (see :func:`gradcam_kit.core.engine.upsample`);
            the pointing game scores the peak at the layer's resolution
            (:mod:`gradcam_kit.metrics.localization`).
        total: the number of batches, for the progress bar's total and ETA.

    Returns:
        Rows with the keys of :data:`COLUMNS` plus ``method``, ``images``,
        ``pointing_images`` and ``randomization_cascade`` (mean correlation per stage).
        ``pointing_game`` is ``None`` when no image has a mask.

    Raises:
        ValueError: an unknown method, or no batches.
    """
    from tqdm.auto import tqdm

    _check_methods(methods)
    cascade = list(default_cascade(model, target_layer) if cascade is None else cascade)
    collected = {method: {key: [] for key in _COLLECTED} for method in methods}
    seconds = dict.fromkeys(methods, 0.0)
    images_seen = 0
    warmed_up = False
    for batch in tqdm(batches, desc="compare", unit="batch", total=total, disable=not progress):
        images = batch[0]
        masks = batch[2].to(images.device) if len(batch) > 2 else None
        with torch.no_grad():
            logits = model(images)
        classes = predicted_class(logits)
        if not warmed_up:
            # First-call costs (allocator, kernel selection for this batch shape) stay out
            # of the first method's timing.
            with torch.no_grad():
                CAMEngine(model, target_layer).explain(images, classes)
            warmed_up = True
        images_seen += images.shape[0]
        for method in methods:
            cam_method = _method(method, chunk_size)
            raw, heatmaps, elapsed = _timed_maps(model, images, classes, target_layer, cam_method, alignment)
            seconds[method] += elapsed
            _score_maps(
                collected[method], model, images, classes, raw, heatmaps, masks,
                explainer=cam_explainer(target_layer, cam_method), steps=steps,
                chunk_size=chunk_size, cascade=cascade, tolerance_px=tolerance_px, alignment=alignment,
            )
    if images_seen == 0:
        raise ValueError("the dataset yielded no images to compare on")
    return [_row(method, collected[method], images_seen, seconds[method], cascade) for method in methods]


#: What :func:`_score_maps` collects per method, batch by batch.
_COLLECTED = ("deletion", "insertion", "original", "explained", "random", "hits")


def _check_methods(methods: Sequence[str]) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {sorted(METHODS)}")
    if not methods:
        raise ValueError("name at least one method to compare")


def _timed_maps(
    model: nn.Module, images: Tensor, classes: Tensor, target_layer: str, cam_method: CAMMethod, alignment: str
) -> tuple[Tensor, Tensor, float]:
    """The raw maps at the layer's resolution, the normalised maps at the input size, and the
    seconds the explanation took (the device synchronised around it)."""
    from ..core.ops import min_max_normalize, upsample

    engine = CAMEngine(model, target_layer, method=cam_method)
    device = images.device
    _synchronize(device)
    start = time.perf_counter()
    with torch.no_grad():
        raw = next(iter(engine.explain(images, classes, output_size=None, normalize=False).heatmaps.values()))
        heatmaps = min_max_normalize(upsample(raw, tuple(images.shape[-2:]), alignment=alignment))
    _synchronize(device)
    return raw, heatmaps, time.perf_counter() - start


def _score_maps(
    store: dict[str, list[Tensor]],
    model: nn.Module,
    images: Tensor,
    classes: Tensor,
    raw: Tensor,
    heatmaps: Tensor,
    masks: Tensor | None,
    *,
    explainer: Explainer,
    steps: int,
    chunk_size: int,
    cascade: list[str],
    tolerance_px: float,
    alignment: str,
) -> None:
    """Appends one batch's per-image scores of one method to ``store`` (kept on the device)."""
    from .localization import pointing_game

    store["deletion"].append(auc(deletion_curve(
        model, images, heatmaps, classes, steps=steps, chunk_size=chunk_size)))
    store["insertion"].append(auc(insertion_curve(
        model, images, heatmaps, classes, steps=steps, chunk_size=chunk_size)))
    original, explained = confidence_scores(model, images, heatmaps, classes, chunk_size=chunk_size)
    store["original"].append(original)
    store["explained"].append(explained)
    store["random"].append(model_randomization(
        model, images, explainer, classes, cascade=cascade
    ).correlations)
    if masks is not None:
        has_mask = masks.flatten(1).any(1)
        hits = pointing_game(raw, masks, tolerance_px, reference_size=224, alignment=alignment)
        store["hits"].append(hits[has_mask])


def _row(
    method: str, collected: dict[str, list[Tensor]], images: int, seconds: float, cascade: list[str]
) -> dict[str, object]:
    """One method's row of the table from its collected scores (the one host copy of them)."""
    store = {k: torch.cat(v) if v else None for k, v in collected.items()}
    random, hits = store["random"], store["hits"]
    return {
        "method": method,
        "images": images,
        "deletion_auc": store["deletion"].mean().item(),
        "insertion_auc": store["insertion"].mean().item(),
        "average_drop": average_drop(store["original"], store["explained"]).item(),
        "increase_in_confidence": increase_in_confidence(store["original"], store["explained"]).item(),
        "randomization_corr": random[:, -1].mean().item(),
        "randomization_cascade": dict(zip(cascade, random.mean(0).tolist(), strict=True)),
        "pointing_game": 100 * hits.float().mean().item() if hits is not None and hits.numel() else None,
        "pointing_images": int(hits.numel()) if hits is not None else 0,
        "seconds_per_image": seconds / images,
    }


def format_markdown(rows: Sequence[dict[str, object]]) -> str:
    """The table as GitHub markdown (an empty cell where a metric does not apply)."""
    header = ["method", *(title for _, title, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|"]
    for row in rows:
        cells = [str(row["method"])]
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            cells.append("" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(
    rows: Sequence[dict[str, object]], output: str | Path, settings: dict[str, object]
) -> dict[str, Path]:
    """Writes ``compare.json`` (rows + settings), ``compare.csv`` and ``compare.md``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = {"json": output / "compare.json", "csv": output / "compare.csv", "md": output / "compare.md"}
    paths["json"].write_text(json.dumps({"settings": settings, "rows": list(rows)}, indent=2))
    keys = ["method", *(k for k, _, _ in COLUMNS), "images", "pointing_images"]
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in keys})
    paths["md"].write_text(format_markdown(rows) + "\n")
    return paths


def scorecam_estimate(model: nn.Module, layer: str, size: int, images: int, chunk_size: int) -> str:
    """How many masked forwards Score-CAM will run, and roughly how long, measured on one chunk.

    Args:
        model: the classifier, on its device.
        layer: the layer Score-CAM explains (its channel count sets the forwards per image).
        size: the input side.
        images: how many images will be explained.
        chunk_size: masked inputs per forward (the probe holds at most 8).

    Returns:
        One line to print before Score-CAM starts.
    """
    from ..core.layers import resolve_layer

    module = resolve_layer(model, layer)[1]
    device = next(model.parameters()).device
    shapes: list[torch.Size] = []
    handle = module.register_forward_hook(lambda _m, _i, output: shapes.append(output.shape))
    probe = torch.zeros(min(chunk_size, 8), 3, size, size, device=device)
    try:
        with torch.no_grad():
            model(probe)  # warm-up, and the layer's channel count
    finally:
        handle.remove()
    channels = shapes[0][1] if shapes and len(shapes[0]) == 4 else None
    with torch.no_grad():
        _synchronize(device)
        start = time.perf_counter()
        model(probe)
        _synchronize(device)
    per_image = (time.perf_counter() - start) / probe.shape[0]
    if channels is None:
        return f"Score-CAM: one masked forward per channel of {layer} per image; this may take long"
    forwards = channels * images
    return (
        f"Score-CAM: {channels} masked forwards per image ({channels} channels at {layer}), "
        f"{forwards:,} in all: about {forwards * per_image / 60:.0f} min on this device"
    )
