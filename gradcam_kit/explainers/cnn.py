"""Explaining any torchvision classification CNN (and ViT) at layers named by string.

:func:`explain` is the one-call form; :class:`GradCAMExplainer` keeps hooks registered for
repeated calls. Both run on :class:`~gradcam_kit.core.engine.CAMEngine`, so they share its
guarantees: one forward pass per call, the graph cut at the target layer, frozen models and
``torch.no_grad()`` work, train/eval flags and parameters' ``.grad`` are never touched.

Default target layers (:func:`default_target_layer`, the one owner of this choice, also
used by the ``arch`` and ``compare`` commands): a model that names its own Grad-CAM layer
(``gradcam_target_layer``, as :class:`~gradcam_kit.models.resnet50.ResNet50FineTuned` does,
``layer4.2.conv3`` or its checkpoint's choice) is explained there; any other model at its
family's layer, chosen as in pytorch-grad-cam's and torchcam's recommendations: the output
of the last convolutional stage, i.e. the tensor the classifier's pooling reads.

=====================================  ==========================================
family                                 default layer
=====================================  ==========================================
ResNet / ResNeXt / Wide ResNet         ``layer4``
DenseNet (CheXNet = densenet121)       ``features``, after the ReLU that torchvision
                                       applies functionally (see below)
EfficientNet, MobileNet V2/V3,         ``features``
ConvNeXt, SqueezeNet
VGG, AlexNet                           last ``ReLU`` of ``features`` (before the
                                       final max-pool, ``relu5_3`` in VGG16)
RegNet                                 ``trunk_output``
ShuffleNet V2                          ``conv5``
MNASNet                                ``layers``
GoogLeNet / Inception v3               ``inception5b`` / ``Mixed_7c``
VisionTransformer                      ``encoder.layers.<last>.ln_1`` (tokens)
anything else                          the last ``nn.Conv2d``
=====================================  ==========================================

torchvision's DenseNet applies its last ReLU as a function (``F.relu(self.features(x))``),
so no module outputs the tensor its pooled linear head reads. The explainers rectify the
output of ``features`` while they explain it (a forward hook that applies the same ReLU:
the model's output is unchanged, as ReLU is idempotent), so CAM at the default layer is the
exact CAM of the head, as torchcam's convention of explaining the pooled tensor asks. The
gradient there is still masked by the model's own functional ReLU where the features are
zero, so Grad-CAM's weights are ``W[c] / (h w)`` only over the active positions.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from torchvision import models as tv

from ..core.engine import CAMEngine, CAMOutput
from ..core.hooks import _remove_handles
from ..core.layers import resolve_layers
from ..core.types import ClassIdx, LayerSpec, OutputSize, ScoreFn
from ..methods import CAMMethod, ClassActivationMap, get_method

__all__ = ["GradCAMExplainer", "classifier_head", "default_alignment", "default_target_layer", "explain"]



def default_target_layer(model: nn.Module) -> str:
    """The layer a CAM explains by default for ``model`` (see the module docstring).

    The rule: the model's own ``gradcam_target_layer`` when it has one (a string); else the
    layer of its family in the module docstring's table (``layer4`` for every torchvision
    ResNet, ``features`` for DenseNet, ...); else its last ``nn.Conv2d``.

    Raises:
        ValueError: the model has no convolution and is not a known family; pass layers.
    """
    own = getattr(model, "gradcam_target_layer", None)
    if isinstance(own, str):
        return own
    if isinstance(model, tv.VisionTransformer):
        from .vit import default_vit_layer

        return default_vit_layer(model)
    if isinstance(model, tv.ResNet):
        return "layer4"
    if isinstance(model, (tv.VGG, tv.AlexNet)):
        relus = [n for n, m in model.features.named_children() if isinstance(m, nn.ReLU)]
        if relus:
            return f"features.{relus[-1]}"
    family_layers = (
        ((tv.DenseNet, tv.EfficientNet, tv.MobileNetV2, tv.MobileNetV3, tv.ConvNeXt,
          tv.SqueezeNet), "features"),
        ((tv.RegNet,), "trunk_output"),
        ((tv.ShuffleNetV2,), "conv5"),
        ((tv.MNASNet,), "layers"),
        ((tv.GoogLeNet,), "inception5b"),
        ((tv.Inception3,), "Mixed_7c"),
    )
    for families, layer in family_layers:
        if isinstance(model, families):
            return layer
    convolutions = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convolutions:
        raise ValueError(
            f"cannot choose a default target layer for {type(model).__name__}: it has no "
            "nn.Conv2d; pass layers=... (see model.named_modules())"
        )
    return convolutions[-1]


#: Families whose strided layers pad by ``k // 2``: unit ``i`` of a stride-``s`` map is centred
#: on input pixel ``s * i`` (measured: within 2 px at 1024x1024, see docs/METHODS.md).
_CENTRED_FAMILIES = (
    tv.ResNet, tv.DenseNet, tv.ConvNeXt, tv.EfficientNet, tv.MobileNetV2, tv.MobileNetV3,
    tv.RegNet, tv.ShuffleNetV2, tv.MNASNet, tv.VGG,
)


def default_alignment(model: nn.Module) -> str:
    """``"receptive-field"`` for the families where it is exact, else ``"pixel"``.

    See :func:`gradcam_kit.core.engine.upsample`; AlexNet, SqueezeNet, GoogLeNet, Inception and
    unknown models keep the usual bilinear resize.
    """
    return "receptive-field" if isinstance(model, _CENTRED_FAMILIES) else "pixel"


def classifier_head(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` (``fc`` of a ResNet, ``classifier`` of a DenseNet).

    CAM (Zhou et al.) is exact only when that layer directly follows a global average pool
    of the target layer, as in ResNet, DenseNet and EfficientNet; the channel check in
    :class:`~gradcam_kit.methods.ClassActivationMap` catches most other cases.

    Raises:
        ValueError: the model has no ``nn.Linear``.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"CAM needs a linear classifier, {type(model).__name__} has none; "
            "use a gradient method such as 'gradcam'"
        )
    return linears[-1]


def _rectify_output(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    return F.relu(output)


def relu_follows(model: nn.Module, name: str) -> bool:
    """Whether ``model`` applies a functional ReLU to layer ``name``'s output (DenseNet's
    ``features``), which the explainers then apply themselves (see the module docstring)."""
    return isinstance(model, tv.DenseNet) and name == "features"


def _rectify(model: nn.Module, names: Sequence[str]) -> list[RemovableHandle]:
    # prepend=True: the capture hook, registered before or after, sees the rectified output.
    return [
        model.get_submodule(name).register_forward_hook(_rectify_output, prepend=True)
        for name in names if relu_follows(model, name)
    ]


def _method(model: nn.Module, method: str | CAMMethod) -> CAMMethod:
    if isinstance(method, str) and method.lower().replace("-", "").replace("_", "") == "cam":
        return ClassActivationMap(classifier_head(model))
    return get_method(method)


class GradCAMExplainer:
    """Explains a classification model at named layers with any CAM method.

    Args:
        model: any torchvision classification CNN (``resnet18``, ``densenet121``,
            ``efficientnet_b0``, ``convnext_tiny``, ``mobilenet_v3_small``, ``vgg16``, ...)
            or ``VisionTransformer``; never modified.
        layers: a layer name (``"layer4"``, ``"features.denseblock4"``,
            ``"layer4[-1].conv2"``), a submodule, or a sequence of them; default
            :func:`default_target_layer`. Misspelt names raise ``ValueError`` with the
            closest valid names.
        method: ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"hirescam"``,
            ``"layercam"``, ``"scorecam"``, ``"cam"`` (the classifier's weights) or a
            :class:`~gradcam_kit.methods.CAMMethod`.

    Use it directly (hooks live for each call only) or as a context manager / with
    :meth:`attach` to keep the hooks registered between calls::

        with GradCAMExplainer(densenet121(), method="gradcam++") as explainer:
            heatmap = explainer(x).heatmaps["features"]
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | None = None,
        method: str | CAMMethod = "gradcam",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.layers = resolve_layers(model, default_target_layer(model) if layers is None else layers)
        self.method = _method(model, method)
        self.is_vit = isinstance(model, tv.VisionTransformer)
        # A ViT's token grid depends on the input size, so its engine is built per call.
        self._engine = None if self.is_vit else CAMEngine(model, list(self.layers.values()), method=self.method)
        self._rectifiers: list[RemovableHandle] = []  # mutated in place: see the finalizer
        weakref.finalize(self, _remove_handles, self._rectifiers)

    # -- hook lifecycle -------------------------------------------------------------
    def attach(self) -> GradCAMExplainer:
        """Keeps the hooks registered between calls (no-op for a ViT or if attached)."""
        if self._engine is not None:
            if not self._engine.attached:
                self._rectifiers.extend(_rectify(self.model, list(self.layers)))
            self._engine.attach()
        return self

    def remove(self) -> None:
        """Removes the hooks (idempotent)."""
        if self._engine is not None:
            self._engine.remove()
        _remove_handles(self._rectifiers)

    def __enter__(self) -> GradCAMExplainer:
        return self.attach()

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    # -- explaining -----------------------------------------------------------------
    def explain(
        self,
        x: Tensor,
        class_idx: ClassIdx = None,
        *,
        layers: LayerSpec | None = None,
        method: str | CAMMethod | None = None,
        output_size: OutputSize = "input",
        normalize: bool = True,
        score_fn: ScoreFn | None = None,
        alignment: str | None = None,
    ) -> CAMOutput:
        """One forward pass; logits and a ``{layer: (B, H, W)}`` map per layer.

        Args:
            x: ``(B, C, H, W)`` input batch.
            class_idx: ``None`` (each image's prediction), an int, or one per image.
            layers: other layers for this call only.
            method: another method for this call only (``"cam"`` accepted).
            output_size: ``"input"``, ``(h, w)`` or ``None`` for each layer's resolution.
            normalize: per-image min-max normalisation to ``[0, 1]``.
            score_fn: ``logits -> (B,)`` scores to explain instead of a class.
            alignment: where map units are drawn; ``None``: :func:`default_alignment`.

        Raises:
            ValueError: an unknown layer (with suggestions), a bad class index or method.
        """
        cam_method = None if method is None else _method(self.model, method)
        alignment = alignment or default_alignment(self.model)
        if self.is_vit:
            from .vit import TokensToGrid, patch_grid_size

            targets = self.layers if layers is None else resolve_layers(self.model, layers)
            engine = CAMEngine(
                self.model,
                list(targets.values()),
                method=cam_method or self.method,
                reshape=TokensToGrid(patch_grid_size(self.model, x)),
            )
            return engine.explain(
                x, class_idx, output_size=output_size, normalize=normalize, score_fn=score_fn,
                alignment=alignment,
            )
        names = list(self.layers) if layers is None else list(resolve_layers(self.model, layers))
        attached = self._engine.attached and layers is None
        temporary = [] if attached else _rectify(self.model, names)
        try:
            return self._engine.explain(
                x,
                class_idx,
                layers=layers,
                method=cam_method,
                output_size=output_size,
                normalize=normalize,
                score_fn=score_fn,
                alignment=alignment,
            )
        finally:
            _remove_handles(temporary)

    __call__ = explain

    def __repr__(self) -> str:
        return (
            f"GradCAMExplainer(model={type(self.model).__name__}, "
            f"layers={list(self.layers)}, method={self.method!r})"
        )


def explain(
    model: nn.Module,
    x: Tensor,
    layers: LayerSpec | None = None,
    method: str | CAMMethod = "gradcam",
    class_idx: ClassIdx = None,
    *,
    output_size: OutputSize = "input",
    normalize: bool = True,
    score_fn: ScoreFn | None = None,
    alignment: str | None = None,
) -> CAMOutput:
    """Explains ``model``'s decision on ``x`` at ``layers`` in one forward pass.

    Args:
        model: any torchvision classification CNN or ``VisionTransformer``.
        x: ``(B, C, H, W)`` input batch.
        layers: layer name(s) or module(s); default :func:`default_target_layer`.
        method: a method name (``"gradcam"``, ``"gradcam++"``, ``"scorecam"``, ``"cam"``,
            ...) or a :class:`~gradcam_kit.methods.CAMMethod`.
        class_idx: ``None`` (each image's prediction), an int, or one per image.
        output_size: ``"input"``, ``(h, w)`` or ``None`` for each layer's resolution.
        normalize: per-image min-max normalisation to ``[0, 1]``.
        score_fn: ``logits -> (B,)`` scores to explain instead of a class.
        alignment: where map units are drawn: ``"receptive-field"`` or ``"pixel"``;
            ``None``: :func:`default_alignment` of the model's family.

    Returns:
        A :class:`~gradcam_kit.core.engine.CAMOutput`: ``logits``, ``heatmaps`` ``{layer: (B, H, W)}``
        and the explained ``class_idx``.

    Raises:
        ValueError: an unknown layer (the message suggests close names), a bad class index
            or an unknown method.
    """
    return GradCAMExplainer(model, layers, method).explain(
        x, class_idx, output_size=output_size, normalize=normalize, score_fn=score_fn,
        alignment=alignment,
    )
