"""Figures of the attention maps: the Grad-CAM / Grad-CAM++ / layer-wise grid and overlays.

Two figures per image, as in the ResNet50 Grad-CAM guide the project started from:

* ``attention_maps_<name>.png``: row 1 the original image, Grad-CAM and Grad-CAM++ at the
  model's target layer; row 2 Grad-CAM at the outputs of ``layer1`` .. ``layer4`` (from low-level
  edges to the semantic map that Grad-CAM normally shows).
* ``overlays_<name>.png``: the original | Grad-CAM overlay | Grad-CAM++ overlay.

Titles give the predicted class with its probability and, when the data says it, the true
class. Every map comes from the integrated model (:class:`resnet50.ResNet50FineTuned`):
Grad-CAM and Grad-CAM++ through ``forward(..., gradcam_method=...)`` and the four layer-wise
maps from **one** forward pass with ``gradcam_layers=["layer1", ..., "layer4"]``, for a whole
batch of images at once. Colours come from :mod:`gradcam_kit.viz.render` (RGB lookup tables,
hot = red); matplotlib only lays out the finished uint8 images.

Command: ``python -m gradcam_kit figures --image x.png`` or ``--folder DIR --num-images N``
(:mod:`gradcam_kit.cli.figures`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..core.engine import resolve_class_idx
from ..core.scores import class_probability, predicted_class
from ..methods import method_title
from .render import colormap_lut, images_to_tensor, overlay, to_numpy_images

__all__ = [
    "LAYERS",
    "AttentionMaps",
    "attention_grid_figure",
    "attention_maps",
    "overlays_figure",
    "save_figures",
]

LAYERS: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")
# Layer-wise maps, from early to final features (stage names of He et al., 2016).
LAYER_CAPTIONS = {
    "layer1": "layer1 (conv2_x, early)",
    "layer2": "layer2 (conv3_x, mid-level)",
    "layer3": "layer3 (conv4_x, high-level)",
    "layer4": "layer4 (conv5_x, final)",
}
@dataclass(frozen=True)
class AttentionMaps:
    """Everything one figure shows, for a batch; tensors stay on the model's device.

    Attributes:
        logits: ``(B, num_classes)``.
        class_idx: ``(B,)`` the explained class per image (``None`` for the decision of a
            single-logit head).
        methods: ``{"gradcam": (B, H, W), "gradcam++": (B, H, W)}`` at the target layer.
        layers: ``{"layer1": (B, H, W), ...}`` Grad-CAM at each layer, one forward pass.
        target_layer: the layer the methods explain.
    """

    logits: Tensor
    class_idx: Tensor | None
    methods: dict[str, Tensor]
    layers: dict[str, Tensor]
    target_layer: str


def attention_maps(
    model: nn.Module,
    batch: Tensor,
    class_idx: int | Sequence[int] | Tensor | None = None,
    *,
    methods: Sequence[str] = ("gradcam", "gradcam++"),
    layers: Sequence[str] = LAYERS,
    target_layer: str | None = None,
    alignment: str = "receptive-field",
) -> AttentionMaps:
    """Computes the maps of both figures for a batch with the model's integrated Grad-CAM.

    One forward per method at the target layer, plus one forward for all of ``layers``
    together. Every call explains the same class: the first call's prediction unless
    ``class_idx`` is given. Grad-CAM is switched on for the duration if it was off.

    Args:
        model: a :class:`resnet50.ResNet50FineTuned` (or a model with its ``forward``
            signature and ``enable_gradcam_mode``/``disable_gradcam_mode``).
        batch: ``(B, 3, H, W)`` normalised images.
        class_idx: ``None`` (predicted), an ``int`` or one index per image.
        methods: methods for the first row (one to three).
        layers: layers for the second row.
        target_layer: the layer of the first row (default: the model's own).
        alignment: where map units are drawn (see :func:`gradcam_kit.core.engine.upsample`).

    Raises:
        TypeError: the model has no integrated Grad-CAM.
        ValueError: a bad ``class_idx`` or layer name.
    """
    for attribute in ("enable_gradcam_mode", "disable_gradcam_mode", "gradcam_enabled"):
        if not hasattr(model, attribute):
            raise TypeError(
                f"{type(model).__name__} has no integrated Grad-CAM ({attribute} is missing); "
                "use resnet50.ResNet50FineTuned, e.g. ResNet50FineTuned.from_checkpoint(path)"
            )
    if not 1 <= len(methods) <= 3:
        raise ValueError(f"name one to three CAM methods for the first row, e.g. ('gradcam', 'gradcam++'), got {list(methods)}")
    target = target_layer or getattr(model, "gradcam_target_layer", None)
    options = {"gradcam_alignment": alignment}
    if target_layer is not None:
        options["gradcam_layers"] = target_layer
    was_enabled = model.gradcam_enabled
    model.enable_gradcam_mode()
    try:
        with torch.no_grad():
            first, *others = methods
            logits, heatmap = model(batch, True, class_idx, gradcam_method=first, **options)
            # Pin the class so that every map of the figure explains the same decision.
            classes = resolve_class_idx(class_idx, logits)
            maps = {first: heatmap}
            for method in others:
                maps[method] = model(batch, True, classes, gradcam_method=method, **options)[1]
            _, layer_maps = model(
                batch, True, classes, gradcam_method=first, gradcam_layers=list(layers),
                gradcam_alignment=alignment,
            )
    finally:
        if not was_enabled:
            model.disable_gradcam_mode()
    return AttentionMaps(logits, classes, maps, dict(layer_maps), target or "target layer")


# -- drawing ----------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _show(ax, image: np.ndarray, title: str) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def _colorbar(fig, axes, colormap: int | str) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    # The bar uses the very table the panels were coloured with.
    cmap = ListedColormap(colormap_lut(colormap).numpy() / 255.0)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=axes, fraction=0.025, pad=0.01)
    bar.set_label("attention (normalised)", fontsize=9)


def attention_grid_figure(
    image: np.ndarray,
    colored: dict[str, np.ndarray],
    *,
    title: str = "",
    title_color: str = "black",
    target_layer: str = "layer4",
    colormap: int | str = "jet",
):
    """The 2-row grid: original and each method at the target layer / layer1 .. layer4.

    Args:
        image: uint8 ``(H, W, 3)`` RGB original.
        colored: uint8 ``(H, W, 3)`` coloured heatmaps keyed by one to three method names
            (``"gradcam"``, ...) and ``"layer1"`` .. ``"layer4"`` (from
            :func:`gradcam_kit.viz.render.overlay`); the layer row uses the first method.
        title: the figure's title (prediction and truth).
        title_color: its colour (green: correct prediction, red: wrong).
        target_layer: named in the row-1 panel titles.
        colormap: the colormap the heatmaps were coloured with (for the colour bar).

    Returns:
        A matplotlib ``Figure`` (1300 x 800 pixels at its dpi of 100).
    """
    plt = _pyplot()
    fig = plt.figure(figsize=(13, 8), dpi=100, layout="constrained")
    # 12 columns: row 1 has 3 panels of 4 columns, row 2 has 4 panels of 3 columns.
    grid = fig.add_gridspec(2, 12, height_ratios=[4, 3])
    methods = [key for key in colored if key not in LAYERS]
    width = 12 // (len(methods) + 1)
    row1 = [fig.add_subplot(grid[0, width * i : width * i + width]) for i in range(len(methods) + 1)]
    row2 = [fig.add_subplot(grid[1, 3 * i : 3 * i + 3]) for i in range(4)]
    _show(row1[0], image, "original")
    for ax, method in zip(row1[1:], methods, strict=True):
        _show(ax, colored[method], f"{method_title(method)} ({target_layer})")
    for ax, layer in zip(row2, LAYERS, strict=True):
        _show(ax, colored[layer], f"{method_title(methods[0])} {LAYER_CAPTIONS.get(layer, layer)}")
    _colorbar(fig, row1 + row2, colormap)
    if title:
        fig.suptitle(title, fontsize=13, color=title_color)
    return fig


def overlays_figure(
    image: np.ndarray,
    overlaid: dict[str, np.ndarray],
    *,
    title: str = "",
    title_color: str = "black",
    target_layer: str = "layer4",
    alpha: float = 0.5,
):
    """The 1-row figure: original | one overlay per method (1500 x 560 px for two methods)."""
    plt = _pyplot()
    methods = [key for key in overlaid if key not in LAYERS]
    fig, axes = plt.subplots(1, len(methods) + 1, figsize=(5 * (len(methods) + 1), 5.6), dpi=100, layout="constrained")
    _show(axes[0], image, "original")
    for ax, method in zip(axes[1:], methods, strict=True):
        _show(ax, overlaid[method], f"{method_title(method)} overlay ({target_layer}, alpha {alpha:g})")
    if title:
        fig.suptitle(title, fontsize=13, color=title_color)
    return fig


def _class_name(names: Sequence[str] | None, index: int) -> str:
    return names[index] if names is not None and 0 <= index < len(names) else f"class {index}"


def _titles(
    maps: AttentionMaps,
    class_names: Sequence[str] | None,
    true_labels: Sequence[str | None],
    explicit_class: bool,
) -> list[tuple[str, str]]:
    """``(title, colour)`` per image: prediction (probability), explained class, truth.

    The colour is green for a correct prediction, red for a wrong one, black when the
    truth is unknown.
    """
    logits = maps.logits.float()
    predicted = predicted_class(logits)
    probability = class_probability(logits, predicted)
    explained = maps.class_idx if maps.class_idx is not None else predicted
    # The one host copy of the numbers shown in the titles.
    rows = torch.stack([predicted.float(), probability, explained.float()], 1).cpu().tolist()
    titles = []
    for (pred, prob, target), truth in zip(rows, true_labels, strict=True):
        predicted_name = _class_name(class_names, int(pred))
        text = f"predicted: {predicted_name} ({prob:.2f})"
        if explicit_class:
            text += f"  |  explained: {_class_name(class_names, int(target))}"
        colour = "black"
        if truth is not None:
            text += f"  |  true: {truth}"
            colour = "#1a7f37" if truth == predicted_name else "#c62828"
        titles.append((text, colour))
    return titles


def save_figures(
    model: nn.Module,
    batch: Tensor,
    originals: Sequence[object],
    output_dirs: Sequence[str | os.PathLike],
    names: Sequence[str],
    *,
    class_idx: int | Sequence[int] | Tensor | None = None,
    class_names: Sequence[str] | None = None,
    true_labels: Sequence[str | None] | None = None,
    alpha: float = 0.5,
    colormap: int | str = "jet",
    methods: Sequence[str] = ("gradcam", "gradcam++"),
    target_layer: str | None = None,
    alignment: str = "receptive-field",
) -> list[tuple[Path, Path]]:
    """Computes the maps for a batch and writes both figures for every image.

    Args:
        model: see :func:`attention_maps`.
        batch: ``(B, 3, H, W)`` normalised model inputs.
        originals: the B images to draw on, at their own size (PIL images or arrays); the
            maps are resized to each.
        output_dirs: one folder per image.
        names: one file-name stem per image (``attention_maps_<name>.png``).
        class_idx: the class to explain, ``None`` for the predicted one.
        class_names: names of the model's classes, for the titles.
        true_labels: the true class name per image, or ``None`` entries when unknown.
        alpha: heatmap weight in the overlays.
        colormap: OpenCV colormap name or id.
        methods, target_layer, alignment: see :func:`attention_maps`.

    Returns:
        ``(attention_maps_path, overlays_path)`` per image.
    """
    count = batch.shape[0]
    for what, values in (("originals", originals), ("output_dirs", output_dirs), ("names", names)):
        if len(values) != count:
            raise ValueError(f"got {len(values)} {what} for a batch of {count} images; pass one per image")
    true_labels = list(true_labels) if true_labels is not None else [None] * count
    maps = attention_maps(
        model, batch, class_idx, methods=methods, target_layer=target_layer, alignment=alignment
    )
    titles = _titles(maps, class_names, true_labels, class_idx is not None)
    keys = [*maps.methods, *maps.layers]
    stacked = torch.stack([maps.methods.get(k, maps.layers.get(k)) for k in keys], dim=1)  # (B, methods + 4, H, W)
    plt = _pyplot()
    written = []
    for i in range(count):
        original = originals[i]
        if not isinstance(original, (np.ndarray, Tensor)):
            original = np.array(original)  # a writable copy of a PIL image
        image = images_to_tensor(original, batch.device)
        # All six maps of the image are coloured and blended in one batched call.
        colored, overlaid = overlay(image.expand(len(keys), -1, -1, -1), stacked[i], alpha, colormap)
        colored_np, overlaid_np = to_numpy_images(colored), to_numpy_images(overlaid)
        image_np = to_numpy_images(image)
        folder = Path(output_dirs[i])
        folder.mkdir(parents=True, exist_ok=True)
        grid = attention_grid_figure(
            image_np, dict(zip(keys, colored_np, strict=True)), title=titles[i][0],
            title_color=titles[i][1], target_layer=maps.target_layer, colormap=colormap,
        )
        grid_path = folder / f"attention_maps_{names[i]}.png"
        grid.savefig(grid_path)
        plt.close(grid)
        over = overlays_figure(
            image_np, dict(zip(keys, overlaid_np, strict=True)), title=titles[i][0],
            title_color=titles[i][1], target_layer=maps.target_layer, alpha=alpha,
        )
        over_path = folder / f"overlays_{names[i]}.png"
        over.savefig(over_path)
        plt.close(over)
        written.append((grid_path, over_path))
    return written
