"""ResNet50 for fine-tuning (e.g. chest X-rays: NORMAL vs PNEUMONIA) with Grad-CAM built in.

``ResNet50FineTuned`` *is* a torchvision ``ResNet`` (same modules, same ``state_dict``
keys) with a fresh ``Linear(2048, num_classes)`` head. Grad-CAM comes from the
:mod:`gradcam_kit` engine: ``forward(x, return_gradcam=True)`` returns the logits and a
heatmap from one forward pass, in eval or train mode, under ``torch.no_grad()`` and with a
frozen backbone. See README_GRADCAM.md.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models import ResNet50_Weights
from torchvision.models.resnet import Bottleneck, ResNet

from ..core.engine import CAMEngine, CAMOutput
from ..core.hooks import _capture_hook
from ..core.types import ClassIdx, ScoreFn
from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD, denormalize, preprocess
from ..methods.base import CAMMethod
from ..viz.render import images_to_tensor, overlay, to_numpy_images
from .checkpoint import (
    checkpoint_metadata,
    explanation_choice,
    extract_state_dict,
    load_checkpoint,
    load_into,
    torchvision_state_dict,
)
from .modules import freeze_backbone

__all__ = ["DEFAULT_TARGET_LAYER", "ResNet50FineTuned", "preprocess"]

DEFAULT_TARGET_LAYER = "layer4.2.conv3"  # resnet50.layer4[-1].conv3


class ResNet50FineTuned(ResNet):
    """torchvision ResNet50 with a new classification head and integrated Grad-CAM.

    Args:
        num_classes: outputs of the new head. ``1`` gives a single (sigmoid) logit.
        freeze_features: freeze every parameter except the new head's.
        enable_gradcam: register the Grad-CAM hooks now (see :meth:`enable_gradcam_mode`).
        weights: ``"DEFAULT"`` (ImageNet weights, the usual start for fine-tuning), another
            ``ResNet50_Weights`` member or name such as ``"IMAGENET1K_V2"``, ``None`` for
            random initialisation, or the path of a checkpoint of this model (which then
            includes the head).
        target_layer: the layer Grad-CAM explains, by name or ``layer4[-1].conv3`` form.
            ``None``: ``layer4[-1].conv3``, or, when ``weights`` is a checkpoint, the layer it
            names (the one ``evaluate`` recommended, else the one ``train`` stored); see
            :attr:`gradcam_choice`.
        gradcam_method: ``"gradcam"`` or another method of :mod:`gradcam_kit.methods`; can be
            changed per call. ``None``: Grad-CAM, or the checkpoint's recommended method.
        progress: show a progress bar while ImageNet weights download (as torchvision's).
        zero_init_residual, norm_layer, replace_stride_with_dilation: torchvision's
            ``ResNet`` options, passed through (e.g. ``norm_layer=FrozenBatchNorm2d``,
            ``replace_stride_with_dilation=[False, False, True]`` for a stride-16 ``layer4``).

    Raises:
        RuntimeError: ImageNet weights were asked for but are neither cached nor
            downloadable; the message says where to put the file.
        ValueError: a checkpoint that does not fit (names the file and the mismatch), an
            unknown weights name, an unknown layer name (with suggestions) or
            ``num_classes < 1``.
        FileNotFoundError: ``weights`` names a checkpoint path where there is no file.
    """

    def __init__(
        self,
        num_classes: int = 2,
        freeze_features: bool = True,
        enable_gradcam: bool = False,
        *,
        weights: ResNet50_Weights | str | os.PathLike | None = "DEFAULT",
        target_layer: str | None = None,
        gradcam_method: str | CAMMethod | None = None,
        progress: bool = True,
        zero_init_residual: bool = False,
        norm_layer: Callable[..., nn.Module] | None = None,
        replace_stride_with_dilation: list[bool] | None = None,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        super().__init__(
            Bottleneck, [3, 4, 6, 3], zero_init_residual=zero_init_residual,
            norm_layer=norm_layer, replace_stride_with_dilation=replace_stride_with_dilation,
        )
        checkpoint = _checkpoint_path(weights)
        if checkpoint is None and weights is not None:
            self.load_state_dict(torchvision_state_dict(_imagenet_weights(weights), progress=progress))
        self.fc = nn.Linear(self.fc.in_features, num_classes)
        self.class_names: list[str] | None = None
        self.input_size: tuple[int, int] | None = None
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        loaded: dict = {}
        if checkpoint is not None:
            loaded = load_checkpoint(checkpoint)
            load_into(self, extract_state_dict(loaded, source=str(checkpoint)), source=str(checkpoint))
            self._read_metadata(loaded)
        if freeze_features:
            freeze_backbone(self, head="fc")
        choice = explanation_choice(loaded, DEFAULT_TARGET_LAYER)
        if target_layer is not None or gradcam_method is not None:
            choice = {
                "layer": target_layer or choice["layer"],
                "method": gradcam_method or choice["method"],
                "source": "chosen by the caller",
            }
        #: ``{"layer", "method", "source"}``: what Grad-CAM explains by default, and why.
        self.gradcam_choice: dict[str, object] = choice
        # A weak reference back to the model: no cycle, so `del model` frees it at once.
        self._gradcam = CAMEngine(self, choice["layer"], method=choice["method"], hold_model=False)
        if enable_gradcam:
            self.enable_gradcam_mode()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs: object) -> ResNet50FineTuned:
        """Builds the model with the head size stored in a checkpoint.

        The size comes from the checkpoint's ``num_classes`` entry (written by
        :func:`gradcam_kit.models.checkpoint.save_checkpoint`), else from the shape of its
        ``fc.weight`` (also under a ``module.`` prefix). Other keyword arguments go to the
        constructor: ``from_checkpoint(path)`` is ``ResNet50FineTuned(num_classes,
        weights=path)`` with the head size read for you, and both explain the layer and
        method the checkpoint names (see :attr:`gradcam_choice`).

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is unreadable, holds no state_dict, or does not fit.
        """
        loaded = load_checkpoint(path)
        if "num_classes" in kwargs:  # an explicit value wins, even 0 (which is refused)
            num_classes = kwargs.pop("num_classes")
        else:
            num_classes = checkpoint_metadata(loaded, source=str(path)).num_classes
            if num_classes is None:
                extract_state_dict(loaded, source=str(path))  # no state_dict at all: say that
                raise ValueError(
                    f"checkpoint {path} holds no fc.weight to read the number of classes "
                    "from; pass num_classes=... or load it with "
                    "ResNet50FineTuned(num_classes, weights=path)"
                )
        return cls(num_classes, weights=path, **kwargs)

    def _read_metadata(self, loaded: dict) -> None:
        metadata = checkpoint_metadata(loaded)
        self.class_names, self.input_size = metadata.class_names, metadata.input_size
        if metadata.mean is not None:
            self.mean, self.std = metadata.mean, metadata.std

    def preprocess(self, image: object, *, device: torch.device | str | None = None) -> Tensor:
        """One image -> a ``(1, 3, H, W)`` batch at the size and normalisation this model was
        trained with (stored in its checkpoint; else 224x224 and ImageNet's mean and std).

        Args:
            image: a path, PIL image, array or uint8 tensor (see :func:`preprocess`).
            device: where to put the batch (default: the model's device).
        """
        from ..data.preprocess import build_transform, load_image, to_8bit

        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        elif not isinstance(image, Tensor):
            image = to_8bit(image)
        transform = build_transform(self.input_size or 224, mean=self.mean, std=self.std)
        if device is None:
            device = next(self.parameters()).device
        return transform(image).unsqueeze(0).to(device)

    # -- timm-style split: features, then head --------------------------------------
    def forward_features(self, x: Tensor) -> Tensor:
        """Input -> ``layer4`` output ``(B, 2048, H/32, W/32)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, features: Tensor) -> Tensor:
        """``layer4`` output -> logits ``(B, num_classes)``."""
        return self.fc(torch.flatten(self.avgpool(features), 1))

    def forward(
        self,
        x: Tensor,
        return_gradcam: bool = False,
        gradcam_class_idx: ClassIdx = None,
        **gradcam_options: Any,
    ) -> Tensor | tuple[Tensor, Tensor | dict[str, Tensor]]:
        """Logits, and optionally a Grad-CAM heatmap from the same forward pass.

        Args:
            x: ``(B, 3, H, W)`` normalised images (see :func:`preprocess`).
            return_gradcam: also return the heatmap.
            gradcam_class_idx: ``None`` explains each image's predicted class; an ``int``
                (or a numpy integer) one class for all; a sequence/tensor/array one class
                per image.
            **gradcam_options: the options of :meth:`explain`, prefixed ``gradcam_``:
                ``gradcam_method`` (``"gradcam++"``, ``"layercam"``, ...),
                ``gradcam_layers`` (e.g. ``["layer1", "layer2", "layer3", "layer4"]``: the
                heatmap is then a ``{layer: map}`` dict, all from the same forward pass),
                ``gradcam_raw`` (the map at the layer's own resolution, after ReLU, not
                normalised), ``gradcam_score_fn`` (``logits -> (B,)`` scores to explain
                instead of a class, e.g. ``lambda z: -z[:, 0]``) and ``gradcam_alignment``
                (``"receptive-field"``, the default, or ``"pixel"``, see :meth:`explain`).
                They are keyword arguments collected here, not named parameters, so that
                export tools that fill every named parameter positionally (the TorchScript
                ONNX exporter) see the plain ``forward(x)``.

        Returns:
            ``logits`` if ``return_gradcam`` is false; else ``(logits, heatmap)`` where
            ``heatmap`` is float32 ``(B, H, W)`` in ``[0, 1]`` on ``x``'s device (detached).

        Raises:
            RuntimeError: ``return_gradcam=True`` while Grad-CAM is disabled.
            ValueError: a bad ``gradcam_class_idx`` (wrong length, out of range, non-integer)
                or an input holding NaN/Inf.
            TypeError: an unknown ``gradcam_`` option.
        """
        # torch.fx.symbolic_trace passes Proxies for every argument: it traces the plain model.
        if isinstance(return_gradcam, torch.fx.Proxy):
            return self._forward_impl(x)
        options = _explain_options(gradcam_options)
        if not return_gradcam:
            return self._forward_impl(x)
        result = self.explain(x, gradcam_class_idx, **options)
        layers = options.get("layers")
        if layers is None or isinstance(layers, str):
            return result.logits, next(iter(result.heatmaps.values()))
        return result.logits, result.heatmaps

    def explain(
        self,
        x: Tensor,
        class_idx: ClassIdx = None,
        *,
        method: str | CAMMethod | None = None,
        layers: str | Sequence[str] | None = None,
        raw: bool = False,
        score_fn: ScoreFn | None = None,
        alignment: str = "receptive-field",
    ) -> CAMOutput:
        """The full Grad-CAM result of one forward pass (what ``forward`` returns a part of).

        Args:
            x: ``(B, 3, H, W)`` normalised images.
            class_idx: as ``forward``'s ``gradcam_class_idx``.
            method: method for this call (``"gradcam++"``, ``"layercam"``, ...).
            layers: explain these layers instead of the target layer.
            raw: maps at the layers' own resolution (7x7 for a 224x224 input), after ReLU
                and before any normalisation.
            score_fn: ``logits -> (B,)`` scores to explain instead of a class.
            alignment: ``"receptive-field"`` (default) puts each unit of the map on the
                centre of its receptive field, exact for ResNets; ``"pixel"`` is the usual
                bilinear resize of pytorch-grad-cam and torchcam, which draws every unit
                (s - 1) / 2 px down and right of it (15.5 px for ``layer4`` at 224x224); see
                :func:`gradcam_kit.core.engine.upsample`.

        Returns:
            A :class:`~gradcam_kit.core.engine.CAMOutput`: ``logits``, ``heatmaps``
            ``{layer: (B, H, W)}`` and the explained ``class_idx``.

        Raises:
            RuntimeError: Grad-CAM is disabled.
            ValueError: a bad class index or an input holding NaN/Inf.
        """
        if not self.gradcam_enabled:
            raise RuntimeError(
                "Grad-CAM is disabled: construct the model with enable_gradcam=True "
                "or call model.enable_gradcam_mode() before forward(..., return_gradcam=True)"
            )
        return self._gradcam.explain(
            x,
            class_idx,
            layers=layers,
            method=method,
            output_size=None if raw else "input",
            normalize=not raw,
            score_fn=score_fn,
            forward=self._forward_impl,
            alignment=alignment,
        )

    def __prepare_scriptable__(self) -> ResNet:
        """What ``torch.jit.script`` compiles: the plain network, ``forward(x) -> logits``.

        A torchvision ``ResNet`` sharing this model's parameters and buffers, without the
        Grad-CAM hooks (Python code TorchScript cannot compile). Grad-CAM needs autograd at
        run time, so it stays with the eager model.
        """
        return _without_capture_hooks(self, as_class=ResNet, drop=("_gradcam", "class_names"))

    # -- Grad-CAM switch --------------------------------------------------------------
    @property
    def gradcam_enabled(self) -> bool:
        """Whether the Grad-CAM hooks are registered."""
        return self._gradcam.attached

    @property
    def gradcam_target_layer(self) -> str:
        """Dotted name of the layer Grad-CAM explains (``"layer4.2.conv3"`` by default)."""
        return next(iter(self._gradcam.layers))

    def enable_gradcam_mode(self) -> None:
        """Registers the hook on the target layer. Calling it again changes nothing."""
        self._gradcam.attach()

    def disable_gradcam_mode(self) -> None:
        """Removes every Grad-CAM hook. Calling it again changes nothing.

        No tensor is kept between calls, so there is nothing else to free.
        """
        self._gradcam.remove()

    # -- visualisation ----------------------------------------------------------------
    def get_gradcam_overlay(
        self,
        input_image: Tensor,
        original_image: object = None,
        alpha: float = 0.5,
        colormap: int | str = cv2.COLORMAP_JET,
        *,
        class_idx: ClassIdx = None,
    ) -> tuple[np.ndarray, np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]] | None:
        """Colours the Grad-CAM heatmap and lays it over the original image.

        Args:
            input_image: the model input, ``(3, H, W)`` or ``(B, 3, H, W)``.
            original_image: what to draw on, at its own size: a PIL image or an array
                (grayscale or RGB, uint8 or float in [0, 1]); for a batch, a list of them.
                ``None`` draws on the de-normalised input.
            alpha: the heatmap's weight in the overlay (0 = image only, 1 = heatmap only).
            colormap: an OpenCV colormap id (``cv2.COLORMAP_JET``) or name (``"jet"``).
            class_idx: class to explain, as for ``forward``'s ``gradcam_class_idx``.

        Returns:
            ``(colored_heatmap, overlaid_image)``: uint8 **RGB** ``(H, W, 3)`` numpy arrays at
            the original image's size. For a batch of B > 1, two lists of B such arrays.
            ``None`` (with a warning) when Grad-CAM is disabled, as in the original API.

        Raises:
            TypeError: ``input_image`` is not a tensor.
            ValueError: a bad shape, class index, ``alpha`` or original image (e.g. a float
                image outside [0, 1], or a list whose length differs from the batch).
        """
        if not self.gradcam_enabled:
            warnings.warn(
                "Grad-CAM is disabled, so get_gradcam_overlay returns None: construct the model "
                "with enable_gradcam=True or call model.enable_gradcam_mode()",
                stacklevel=2,
            )
            return None
        if self.training:
            warnings.warn(
                "get_gradcam_overlay on a model in train mode: BatchNorm uses the statistics of "
                "this batch, so the prediction and heatmap differ from inference; call "
                "model.eval() first",
                stacklevel=2,
            )
        if not isinstance(input_image, Tensor):
            raise TypeError(
                f"input_image must be the model input, a (3, H, W) or (B, 3, H, W) tensor, got "
                f"{type(input_image).__name__}; make one with preprocess(image) and pass the "
                "image itself as original_image"
            )
        batch = input_image.unsqueeze(0) if input_image.ndim == 3 else input_image
        if batch.ndim != 4:
            raise ValueError(f"expected a (3, H, W) or (B, 3, H, W) input, got {tuple(input_image.shape)}")
        with torch.no_grad():
            _, heatmaps = self(batch, return_gradcam=True, gradcam_class_idx=class_idx)
        if original_image is None:
            colored, overlaid = overlay(denormalize(batch), heatmaps, alpha, colormap)
            pairs = [(to_numpy_images(c), to_numpy_images(o)) for c, o in zip(colored, overlaid)]
        else:
            originals = original_image if isinstance(original_image, (list, tuple)) else [original_image]
            if len(originals) != batch.shape[0]:
                raise ValueError(
                    f"got {len(originals)} original image(s) for a batch of {batch.shape[0]}; "
                    "pass one per input image (a list for a batch) or None"
                )
            pairs = []
            for image, heatmap in zip(originals, heatmaps):
                colored, overlaid = overlay(
                    images_to_tensor(image, heatmap.device)[None], heatmap[None], alpha, colormap
                )
                pairs.append((to_numpy_images(colored[0]), to_numpy_images(overlaid[0])))
        if len(pairs) == 1:
            return pairs[0]
        return [c for c, _ in pairs], [o for _, o in pairs]


_FORWARD_OPTIONS = {
    "gradcam_method": "method",
    "gradcam_layers": "layers",
    "gradcam_raw": "raw",
    "gradcam_score_fn": "score_fn",
    "gradcam_alignment": "alignment",
}


def _explain_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(_FORWARD_OPTIONS))
    if unknown:
        raise TypeError(
            f"forward() got unexpected keyword argument(s) {unknown}; the Grad-CAM options are "
            f"{sorted(_FORWARD_OPTIONS)}"
        )
    return {_FORWARD_OPTIONS[k]: v for k, v in options.items()}


def _without_capture_hooks(
    module: nn.Module, *, as_class: type | None = None, drop: Sequence[str] = ()
) -> nn.Module:
    """A shallow copy of ``module`` whose tree holds no Grad-CAM capture hook.

    Only the modules on a path to a hooked module are copied (their ``__dict__``, sharing
    parameters, buffers and the other children); everything else is the original object.
    """
    hooked = any(_capture_hook in m._forward_hooks.values() for m in module.modules())
    if not hooked and as_class is None:
        return module
    clone = (as_class or type(module)).__new__(as_class or type(module))
    clone.__dict__.update({k: v for k, v in module.__dict__.items() if k not in drop})
    kept = {k: h for k, h in module._forward_hooks.items() if h is not _capture_hook}
    clone._forward_hooks = OrderedDict(kept)
    for attribute in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called"):
        if hasattr(module, attribute):
            setattr(clone, attribute, OrderedDict(
                (k, v) for k, v in getattr(module, attribute).items() if k in kept
            ))
    clone._modules = OrderedDict(
        (name, None if child is None else _without_capture_hooks(child))
        for name, child in module._modules.items()
    )
    return clone


def _imagenet_weights(weights: object) -> ResNet50_Weights:
    try:
        return ResNet50_Weights.verify(weights)
    except (KeyError, ValueError, TypeError):
        raise ValueError(
            f"unknown weights {weights!r}: pass None (random initialisation), one of "
            f"{list(ResNet50_Weights.__members__)}, a ResNet50_Weights member, or the path of "
            "an existing checkpoint file"
        ) from None


def _checkpoint_path(weights: object) -> Path | None:
    from .builder import is_checkpoint_path  # the one rule that tells a path from a name

    return Path(weights) if is_checkpoint_path(weights) else None
