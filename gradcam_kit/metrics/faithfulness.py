"""Faithfulness metrics for saliency maps, batched on the device.

Does a map point at what the model actually uses? Each metric perturbs the input
according to the map and watches the class probability:

* **Deletion / insertion** (Petsiuk et al., "RISE", BMVC 2018, arXiv:1806.07421): pixels
  are removed (replaced by a substrate) or inserted (into a substrate) in the order of the
  map, most salient first, and the class probability is recorded after each step. The area
  under that curve (AUC, x in [0, 1]) is *low* for a faithful map under deletion and *high*
  under insertion. As in the paper, deletion replaces pixels with zeros and insertion starts
  from a blurred copy of the image; both are in the model's input space, so for an
  ImageNet-normalised input "zero" is the dataset's mean colour.
* **Average Drop / Increase in Confidence** (Chattopadhyay et al., "Grad-CAM++", WACV 2018,
  arXiv:1710.11063): the model sees the *explanation map* ``E = map * image`` (computed on
  the normalised input tensor, as pytorch-grad-cam does). With ``Y`` the class probability on
  the image and ``O`` on ``E``: Average Drop ``= 100 * mean(max(0, Y - O) / Y)`` (lower is
  better) and Increase in Confidence ``= 100 * mean(Y < O)`` (higher is better).
* **Model-randomisation sanity check** (Adebayo et al., "Sanity Checks for Saliency Maps",
  NeurIPS 2018, arXiv:1810.03292): the weights of a deep copy of the model are re-initialised
  in cascade from the top (``fc``, then ``layer4``, ``layer3``, ...), and after each step the
  Spearman rank correlation between the original and the new maps is reported. A map that
  explains the model must change when the model does, so the correlation must drop; a map
  that stays put is an edge detector, not an explanation.

Every perturbed image of every step is built on the device from one per-pixel rank tensor;
the forwards run in chunks of ``chunk_size`` images to bound memory. No metric loops over
images in Python, and only the final numbers leave the device.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.engine import CAMEngine, resolve_class_idx
from ..core.ops import upsample
from ..core.scores import class_probability
from ..core.types import ClassIdx
from ..methods.base import CAMMethod

__all__ = [
    "Explainer",
    "RandomizationResult",
    "auc",
    "average_drop",
    "cam_explainer",
    "class_probability",
    "confidence_scores",
    "deletion_curve",
    "increase_in_confidence",
    "insertion_curve",
    "model_randomization",
    "pixel_ranks",
    "randomization_cascade",
    "spearman_correlation",
]

#: ``(model, images, class_idx (B,)) -> (B, H, W) maps``: anything that explains a model.
Explainer = Callable[[nn.Module, Tensor, Tensor], Tensor]


# -- scores ----------------------------------------------------------------------------
def _resolve_classes(model: nn.Module, images: Tensor, class_idx: object) -> Tensor:
    """One class per image: given, or predicted (:func:`gradcam_kit.core.scores.predicted_class`)."""
    if isinstance(class_idx, Tensor) and class_idx.ndim == 1 and class_idx.dtype == torch.long:
        return class_idx.to(images.device)
    with torch.no_grad():
        logits = model(images)
    return resolve_class_idx(class_idx, logits)


def _forward_probability(
    model: nn.Module, images: Tensor, class_idx: Tensor, chunk_size: int
) -> Tensor:
    """Class probabilities for a batch, in chunks; ``class_idx`` has one entry per image."""
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], chunk_size):
            stop = start + chunk_size
            out.append(class_probability(model(images[start:stop]), class_idx[start:stop]))
    return torch.cat(out)


def _check_saliency(images: Tensor, saliency: Tensor) -> Tensor:
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    if saliency.ndim == 4 and saliency.shape[1] == 1:
        saliency = saliency[:, 0]
    if saliency.ndim != 3 or saliency.shape[0] != images.shape[0]:
        raise ValueError(
            f"expected one (H, W) saliency map per image, i.e. shape ({images.shape[0]}, H, W), "
            f"got {tuple(saliency.shape)}"
        )
    # A map at the layer's resolution is resized to the input, as for display.
    return upsample(saliency.detach().float().to(images.device), tuple(images.shape[-2:]))


def _check_chunk(chunk_size: int) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int (images per forward), got {chunk_size!r}")


# -- deletion and insertion -------------------------------------------------------------
def pixel_ranks(saliency: Tensor) -> Tensor:
    """``(B, H, W)`` maps -> ``(B, H*W)`` rank of each pixel, 0 for the most salient.

    Ties are broken by pixel position (a stable sort), so a constant map removes pixels in
    raster order rather than at random.
    """
    flat = saliency.flatten(1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _substrate(images: Tensor, substrate: str | float | Tensor) -> Tensor:
    if isinstance(substrate, Tensor):
        return substrate.to(images.device, images.dtype).expand_as(images)
    if isinstance(substrate, (int, float)) and not isinstance(substrate, bool):
        return torch.full_like(images, float(substrate))
    if substrate == "zero":
        return torch.zeros_like(images)
    if substrate == "blur":
        from torchvision.transforms.v2.functional import gaussian_blur

        # RISE's insertion substrate: a heavy blur (kernel 11, sigma 5 at 224 px), scaled
        # to the image so that a small input is as unrecognisable as a large one.
        side = min(images.shape[-2:])
        kernel = max(3, (side * 11 // 224) | 1)
        return gaussian_blur(images, [kernel, kernel], [max(kernel / 2.2, 0.5)] * 2)
    raise ValueError(
        f"substrate must be 'zero', 'blur', a number or a tensor like the images, got {substrate!r}"
    )


def _perturbation_curve(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    class_idx: object,
    *,
    steps: int,
    insert: bool,
    substrate: str | float | Tensor,
    chunk_size: int,
) -> Tensor:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    _check_chunk(chunk_size)
    saliency = _check_saliency(images, saliency)
    classes = _resolve_classes(model, images, class_idx)
    background = _substrate(images, substrate)
    ranks = pixel_ranks(saliency)  # (B, H*W)
    batch, pixels = ranks.shape
    # Pixels changed after step k: the round(k * pixels / steps) most salient ones.
    counts = torch.div(
        torch.arange(steps + 1, device=images.device) * pixels + steps // 2,
        steps,
        rounding_mode="floor",
    )
    total = (steps + 1) * batch
    probabilities = []
    with torch.no_grad():
        # Perturbed image j of the flattened (step, image) grid is built only when its
        # chunk runs: memory is bounded by chunk_size images, never steps * batch.
        for start in range(0, total, chunk_size):
            index = torch.arange(start, min(start + chunk_size, total), device=images.device)
            step, image = index // batch, index % batch
            changed = (ranks[image] < counts[step][:, None]).view(-1, 1, *images.shape[-2:])
            if insert:
                perturbed = torch.where(changed, images[image], background[image])
            else:
                perturbed = torch.where(changed, background[image], images[image])
            probabilities.append(class_probability(model(perturbed), classes[image]))
    return torch.cat(probabilities).view(steps + 1, batch).T


def deletion_curve(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    class_idx: ClassIdx = None,
    *,
    steps: int = 50,
    substrate: str | float | Tensor = "zero",
    chunk_size: int = 64,
) -> Tensor:
    """Class probability as the most salient pixels are removed first (Petsiuk et al., 2018).

    Args:
        model: the classifier (in the mode it should be evaluated in, usually ``eval()``).
        images: ``(B, C, H, W)`` model inputs.
        saliency: ``(B, H, W)`` maps (any resolution; resized to the input).
        class_idx: the class whose probability is tracked; ``None`` for the predicted one.
        steps: number of deletion steps; step k has removed ``round(k * H * W / steps)`` pixels.
        substrate: what a removed pixel becomes: ``"zero"`` (default, as in RISE),
            ``"blur"``, a number or a tensor like ``images``.
        chunk_size: perturbed images per forward pass (bounds memory).

    Returns:
        ``(B, steps + 1)`` probabilities; column 0 is the intact image.

    Raises:
        ValueError: mismatched shapes, ``steps < 1``, a bad ``chunk_size`` or ``substrate``.
    """
    return _perturbation_curve(
        model, images, saliency, class_idx, steps=steps, insert=False,
        substrate=substrate, chunk_size=chunk_size,
    )


def insertion_curve(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    class_idx: ClassIdx = None,
    *,
    steps: int = 50,
    substrate: str | float | Tensor = "blur",
    chunk_size: int = 64,
) -> Tensor:
    """Class probability as the most salient pixels are inserted into a substrate first.

    Same arguments as :func:`deletion_curve`; the substrate defaults to a blurred copy of the
    image (RISE). Column 0 is the bare substrate, the last column the intact image.
    """
    return _perturbation_curve(
        model, images, saliency, class_idx, steps=steps, insert=True,
        substrate=substrate, chunk_size=chunk_size,
    )


def auc(curve: Tensor) -> Tensor:
    """Trapezoidal area under ``(..., steps + 1)`` curves sampled evenly on x in [0, 1]."""
    if curve.shape[-1] < 2:
        raise ValueError(f"a curve needs at least 2 points, got shape {tuple(curve.shape)}")
    return (curve.sum(-1) - (curve[..., 0] + curve[..., -1]) / 2) / (curve.shape[-1] - 1)


# -- Average Drop / Increase in Confidence ---------------------------------------------
def average_drop(original: Tensor, explained: Tensor) -> Tensor:
    """Average Drop in %, ``100 * mean(max(0, Y - O) / Y)`` (Chattopadhyay et al., 2018).

    Args:
        original: ``(B,)`` class probabilities ``Y`` on the images.
        explained: ``(B,)`` probabilities ``O`` of the same classes on the explanation maps.
    """
    original, explained = _paired(original, explained)
    drop = (original - explained).clamp_min(0) / original.clamp_min(torch.finfo(original.dtype).tiny)
    return 100 * drop.mean()


def increase_in_confidence(original: Tensor, explained: Tensor) -> Tensor:
    """Increase in Confidence in %, ``100 * mean(Y < O)`` (Chattopadhyay et al., 2018)."""
    original, explained = _paired(original, explained)
    return 100 * (original < explained).float().mean()


def _paired(original: Tensor, explained: Tensor) -> tuple[Tensor, Tensor]:
    if original.shape != explained.shape or original.ndim != 1 or original.numel() == 0:
        raise ValueError(
            "expected two non-empty (B,) probability tensors of the same shape, got "
            f"{tuple(original.shape)} and {tuple(explained.shape)}"
        )
    return original.float(), explained.float()


def confidence_scores(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    class_idx: ClassIdx = None,
    *,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """``(Y, O)``: class probabilities on the images and on the explanation maps ``map * image``.

    Feed them to :func:`average_drop` and :func:`increase_in_confidence`. ``saliency`` is
    expected in ``[0, 1]`` (the engine's normalised maps).
    """
    _check_chunk(chunk_size)
    saliency = _check_saliency(images, saliency)
    classes = _resolve_classes(model, images, class_idx)
    both = torch.cat([images, images * saliency[:, None]])
    scores = _forward_probability(model, both, torch.cat([classes, classes]), chunk_size)
    return scores[: images.shape[0]], scores[images.shape[0] :]


# -- model randomisation ------------------------------------------------------------------
def spearman_correlation(first: Tensor, second: Tensor) -> Tensor:
    """Spearman rank correlation per row of two ``(B, ...)`` tensors, ties given mean ranks.

    Tied values share the mean of their ranks (as ``scipy.stats.spearmanr`` does); this
    matters for ReLU'd maps, whose zero regions are large ties. A constant row has no
    ranking, and its correlation is defined as 0 (it shares no order with anything).
    """
    if first.shape != second.shape or first.ndim < 1:
        raise ValueError(
            f"expected two tensors of the same (B, ...) shape, got {tuple(first.shape)} "
            f"and {tuple(second.shape)}"
        )
    rank_a = _mean_ranks(first.detach().flatten(1).double())
    rank_b = _mean_ranks(second.detach().flatten(1).double())
    rank_a = rank_a - rank_a.mean(dim=1, keepdim=True)
    rank_b = rank_b - rank_b.mean(dim=1, keepdim=True)
    numerator = (rank_a * rank_b).sum(1)
    denominator = (rank_a.pow(2).sum(1) * rank_b.pow(2).sum(1)).sqrt()
    correlation = torch.where(denominator > 0, numerator / denominator.clamp_min(1e-300), 0.0)
    return correlation.float()


def _mean_ranks(values: Tensor) -> Tensor:
    """``(B, N)`` -> ranks 0..N-1 per row, tied values sharing their mean rank."""
    sorted_values, order = values.sort(dim=1, stable=True)
    new_group = torch.ones_like(sorted_values, dtype=torch.bool)
    new_group[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    group = new_group.long().cumsum(dim=1) - 1
    positions = torch.arange(values.shape[1], device=values.device, dtype=values.dtype)
    positions = positions.expand_as(values)
    first = torch.zeros_like(values).scatter_reduce(1, group, positions, "amin", include_self=False)
    last = torch.zeros_like(values).scatter_reduce(1, group, positions, "amax", include_self=False)
    mean_rank = ((first + last) / 2).gather(1, group)
    return torch.empty_like(values).scatter_(1, order, mean_rank)


def cam_explainer(
    target_layer: str | nn.Module,
    method: str | CAMMethod = "gradcam",
) -> Explainer:
    """An :data:`Explainer` that runs the engine with ``method`` at ``target_layer``.

    The engine is built on whichever model the explainer is given (so it also works on the
    randomised copies of :func:`model_randomization`) and its hooks are removed afterwards.
    A layer given as a module is looked up by name in the model it is applied to.
    """

    def explain(model: nn.Module, images: Tensor, class_idx: Tensor) -> Tensor:
        layer = target_layer
        if isinstance(layer, nn.Module):
            layer = _module_name(model, layer)
        engine = CAMEngine(model, layer, method=method)
        try:
            with torch.no_grad():
                return next(iter(engine.explain(images, class_idx).heatmaps.values()))
        finally:
            engine.remove()

    return explain


def _module_name(model: nn.Module, module: nn.Module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise ValueError("the target layer module is not part of the model; pass its name instead")


def randomization_cascade(model: nn.Module) -> list[str]:
    """Default cascade: the model's top-level children that hold parameters, output first.

    For a torchvision ResNet: ``fc, layer4, layer3, layer2, layer1, bn1, conv1``.
    """
    return [
        name
        for name, child in reversed(list(model.named_children()))
        if any(True for _ in child.parameters())
    ]


@dataclass(frozen=True)
class RandomizationResult:
    """Result of :func:`model_randomization`.

    Attributes:
        stages: the cascade, in the order it was applied (``stages[i]`` is randomised, along
            with every stage before it, for ``correlations[:, i]``).
        correlations: ``(B, len(stages))`` Spearman rank correlation between each image's
            original map and its map after each cascade step.
    """

    stages: list[str]
    correlations: Tensor

    def mean(self) -> dict[str, float]:
        """Mean correlation per cascade step (host numbers, for reports)."""
        return dict(zip(self.stages, self.correlations.mean(dim=0).tolist(), strict=True))


def _reinitialize(module: nn.Module) -> None:
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()


def model_randomization(
    model: nn.Module,
    images: Tensor,
    explainer: Explainer,
    class_idx: ClassIdx = None,
    *,
    cascade: Sequence[str] | None = None,
    seed: int = 0,
) -> RandomizationResult:
    """Adebayo et al.'s cascading model-randomisation test, on a deep copy of ``model``.

    The stages in ``cascade`` are re-initialised one after the other, top first, each with
    its modules' own ``reset_parameters()`` (Kaiming-uniform convolutions and linears,
    identity BatchNorm with fresh running statistics), and after every step the maps of
    the randomised copy are compared with the original maps by Spearman rank correlation.
    The class explained stays the one explained on the original model.

    Args:
        model: the trained model; it is never modified.
        images: ``(B, C, H, W)`` inputs.
        explainer: ``(model, images, class_idx) -> (B, H, W)`` maps, e.g.
            :func:`cam_explainer`.
        class_idx: the class to explain; ``None`` for the original model's prediction.
        cascade: names of submodules, randomised in this order; default
            :func:`randomization_cascade` (``fc, layer4, layer3, ...`` for a ResNet).
        seed: seeds the re-initialisation (the global RNG is left as it was).

    Returns:
        A :class:`RandomizationResult`.

    Raises:
        ValueError: an unknown stage name, or an empty cascade.
    """
    stages = list(randomization_cascade(model) if cascade is None else cascade)
    if not stages:
        raise ValueError("the randomisation cascade is empty: name at least one submodule, e.g. ['fc']")
    modules = dict(model.named_modules())
    unknown = [name for name in stages if name not in modules or name == ""]
    if unknown:
        children = [name for name, _ in model.named_children()]
        raise ValueError(
            f"unknown stage(s) {unknown} in the randomisation cascade; use names from "
            f"model.named_modules(), e.g. {children[::-1]}"
        )
    classes = _resolve_classes(model, images, class_idx)
    original = explainer(model, images, classes)
    randomized = copy.deepcopy(model)
    randomized_modules = dict(randomized.named_modules())
    devices = [images.device] if images.device.type == "cuda" else []
    correlations = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for name in stages:
            with torch.no_grad():
                _reinitialize(randomized_modules[name])
            correlations.append(spearman_correlation(original, explainer(randomized, images, classes)))
    return RandomizationResult(stages=stages, correlations=torch.stack(correlations, dim=1))
