"""One model builder and one weights resolver, in the manner of ``torchvision.models.get_model``.

:func:`build_model` builds :class:`~gradcam_kit.models.resnet50.ResNet50FineTuned`
(``"finetuned"``) or a torchvision ResNet by name, with keyword-only options;
:func:`resolve_weights` turns every spelling of ``weights`` the commands accept into one
of: no weights, a torchvision weights name, or a checkpoint path
(:func:`is_checkpoint_path` is the one rule that tells a path from a name).
:func:`load_model` is what the commands print: the model and a one-line description.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from .modules import freeze_backbone

__all__ = [
    "MODEL_NAMES",
    "RESNET_BUILDERS",
    "build_model",
    "is_checkpoint_path",
    "load_model",
    "resolve_weights",
]

#: torchvision builders :func:`build_model` accepts besides ``"finetuned"``.
RESNET_BUILDERS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
MODEL_NAMES = ("finetuned", *RESNET_BUILDERS)
#: Spellings of "no weights" (random initialisation).
NO_WEIGHTS = ("none", "null", "scratch", "")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def _is_weights_name(text: str) -> bool:
    from torchvision.models import ResNet50_Weights

    name = text.strip()
    if "_Weights." in name:
        name = name.split("_Weights.", 1)[1]
    return name in ResNet50_Weights.__members__ or name.lower() == "imagenet"


def is_checkpoint_path(weights: object) -> bool:
    """Whether ``weights`` names a checkpoint file rather than weights: the one rule.

    A ``PathLike`` is a path. A string is a path unless it says "no weights"
    (:data:`NO_WEIGHTS`) or is a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V2``,
    ``ResNet50_Weights.IMAGENET1K_V2``, ``imagenet``), even if a file of that name exists;
    otherwise it is one when it holds a path separator, ends in a checkpoint suffix
    (:data:`CHECKPOINT_SUFFIXES`) or names an existing file.
    """
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str) or weights.strip().lower() in NO_WEIGHTS or _is_weights_name(weights):
        return False
    return (
        "/" in weights or os.sep in weights
        or Path(weights).suffix.lower() in CHECKPOINT_SUFFIXES or Path(weights).is_file()
    )


def resolve_weights(weights: object) -> object:
    """One meaning for every spelling of ``weights``.

    Args:
        weights: ``None``/``"none"`` (random initialisation), ``"DEFAULT"``/``"imagenet"``
            or another torchvision weights name such as ``"IMAGENET1K_V2"`` (or a
            ``WeightsEnum`` member), or the path of a checkpoint file.

    Returns:
        ``None``, a weights name (``"imagenet"`` becomes ``"DEFAULT"``), a ``WeightsEnum``
        member as given, or a ``Path``.

    Raises:
        FileNotFoundError: a checkpoint path where there is no file.
    """
    if weights is None or (isinstance(weights, str) and weights.strip().lower() in NO_WEIGHTS):
        return None
    if is_checkpoint_path(weights):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"no checkpoint file at {path}; pass DEFAULT (ImageNet), IMAGENET1K_V2, none "
                "or the path of an existing checkpoint"
            )
        return path
    if isinstance(weights, str):
        return "DEFAULT" if weights.strip().lower() == "imagenet" else weights.strip()
    return weights


def _head_size(state: Mapping[str, Tensor]) -> int | None:
    heads = [v for k, v in state.items() if k == "fc.weight" or k.endswith(".fc.weight")]
    return int(heads[0].shape[0]) if heads else None


def _load_backbone(model: nn.Module, path: Path) -> None:
    """Loads a checkpoint; a head of another size is replaced by the model's new one."""
    from .checkpoint import extract_state_dict, load_checkpoint, load_into

    state = extract_state_dict(load_checkpoint(path), source=str(path))
    head = {k: v for k, v in model.state_dict().items() if k.startswith("fc.")}
    if any(k.endswith("fc.weight") and v.shape != head["fc.weight"].shape for k, v in state.items()):
        # A backbone trained for another task: keep its features, start a new head.
        state = {k: v for k, v in state.items() if not k.split(".")[-2:-1] == ["fc"]} | head
    load_into(model, state, source=str(path))


def _finetuned(weights: object, num_classes: int | None, options: dict) -> nn.Module:
    from .resnet50 import ResNet50FineTuned

    if isinstance(weights, Path):
        if num_classes is None:  # the checkpoint's own model: its head, metadata and layer
            return ResNet50FineTuned.from_checkpoint(weights, **options)
        model = ResNet50FineTuned(num_classes, weights=None, **options)
        _load_backbone(model, weights)
        return model
    if weights is not None and num_classes in (None, 1000):
        # ImageNet's own head too, so predictions are ImageNet classes.
        from torchvision.models import ResNet50_Weights

        from .checkpoint import torchvision_state_dict
        from .resnet50 import _imagenet_weights

        enum = _imagenet_weights(weights)
        model = ResNet50FineTuned(1000, weights=None, **options)
        model.load_state_dict(torchvision_state_dict(enum, progress=options.get("progress", True)))
        model.class_names = list(ResNet50_Weights.DEFAULT.meta["categories"])
        return model
    return ResNet50FineTuned(2 if num_classes is None else num_classes, weights=weights, **options)


def _torchvision(name: str, weights: object, num_classes: int | None, progress: bool) -> nn.Module:
    import torchvision.models as tvm

    builder = getattr(tvm, name)
    if isinstance(weights, Path):
        from .checkpoint import extract_state_dict, load_checkpoint

        stored = _head_size(extract_state_dict(load_checkpoint(weights), source=str(weights)))
        model = builder(weights=None, num_classes=num_classes or stored or 1000)
        _load_backbone(model, weights)
        return model
    if weights is None:
        return builder(weights=None, num_classes=num_classes or 1000)
    from .checkpoint import torchvision_state_dict

    try:
        enum = tvm.get_model_weights(name).verify(weights)
    except (KeyError, ValueError, TypeError):
        raise ValueError(
            f"unknown weights {weights!r} for {name}: pass none, DEFAULT, one of "
            f"{list(tvm.get_model_weights(name).__members__)} or a checkpoint path"
        ) from None
    model = builder(weights=None)
    model.load_state_dict(torchvision_state_dict(enum, progress=progress))
    if (num_classes or 1000) != 1000:
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def build_model(
    name: str = "finetuned",
    *,
    weights: object = None,
    num_classes: int | None = None,
    freeze_features: bool | None = None,
    target_layer: str | None = None,
    progress: bool = True,
) -> nn.Module:
    """Builds a model by name, like ``torchvision.models.get_model``.

    Args:
        name: ``"finetuned"`` for :class:`~gradcam_kit.models.resnet50.ResNet50FineTuned`,
            or a torchvision ResNet builder (:data:`RESNET_BUILDERS`).
        weights: see :func:`resolve_weights`. A checkpoint with ``num_classes=None`` is the
            saved model itself (head, class names, Grad-CAM layer); with ``num_classes`` it
            is a start whose head is replaced when its size differs.
        num_classes: outputs of the head; ``None``: the checkpoint's, 1000 with ImageNet
            weights (keeping ImageNet's head), else 2 (``finetuned``) or 1000 (torchvision).
            ImageNet weights keep ImageNet's head whenever ``num_classes`` is 1000.
        freeze_features: freeze every parameter but the head's; ``None`` keeps the model's
            default (frozen for ``finetuned``, trainable for torchvision builders).
        target_layer: ``finetuned`` only: the layer Grad-CAM explains.
        progress: a progress bar while ImageNet weights download.

    Raises:
        ValueError: an unknown model or weights name, or a checkpoint that does not fit.
        FileNotFoundError: a checkpoint path without a file.
        RuntimeError: ImageNet weights neither cached nor downloadable.
    """
    resolved = resolve_weights(weights)
    if name == "finetuned":
        options: dict[str, object] = {"progress": progress}
        if freeze_features is not None:
            options["freeze_features"] = freeze_features
        if target_layer is not None:
            options["target_layer"] = target_layer
        return _finetuned(resolved, num_classes, options)
    if name not in RESNET_BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose 'finetuned' or one of {list(RESNET_BUILDERS)}")
    if target_layer is not None:
        raise ValueError("target_layer is an option of the 'finetuned' model only")
    model = _torchvision(name, resolved, num_classes, progress)
    if freeze_features:
        freeze_backbone(model, head="fc")
    return model


def load_model(
    *,
    checkpoint: str | os.PathLike | None = None,
    model: str = "resnet50",
    weights: str = "none",
    num_classes: int = 1000,
    freeze_features: bool | None = None,
) -> tuple[nn.Module, str]:
    """The model a command works on, and a one-line description of it for its output.

    Args:
        checkpoint: a checkpoint of ``ResNet50FineTuned`` (overrides the rest).
        model: without a checkpoint: a name for :func:`build_model`.
        weights: without a checkpoint: see :func:`resolve_weights`.
        num_classes: without a checkpoint: outputs of the head.
        freeze_features: see :func:`build_model`.

    Raises:
        ValueError, FileNotFoundError, RuntimeError: as :func:`build_model`.
    """
    if checkpoint is not None:
        built = build_model("finetuned", weights=Path(checkpoint), freeze_features=freeze_features)
        return built, f"ResNet50FineTuned from {checkpoint} ({built.fc.out_features} classes)"
    built = build_model(model, weights=weights, num_classes=num_classes, freeze_features=freeze_features)
    kind = "ResNet50FineTuned" if model == "finetuned" else f"torchvision {model}"
    return built, f"{kind} ({num_classes} classes, weights={weights})"
