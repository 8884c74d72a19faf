"""Reading and writing checkpoints, and fetching torchvision weights without ever hanging.

A checkpoint may be a plain ``state_dict`` or a dict that holds one under ``state_dict``,
``model_state_dict``, ``model`` or ``params`` (the layouts written by common training
loops), with or without the ``module.`` prefix that DataParallel/DDP add. Files are read
with ``torch.load(..., weights_only=True)``: no code in a checkpoint is ever executed.

The checkpoints this project writes (:func:`save_checkpoint`) hold the ``state_dict``
plus metadata: ``num_classes``, ``class_names``, ``input_size``, ``mean``, ``std``,
``target_layer``, the library versions and, once ``evaluate`` ran, ``recommended``.
:func:`checkpoint_metadata` is the one reader of that metadata.
"""

from __future__ import annotations

import numbers
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from .modules import unwrap_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointMetadata",
    "checkpoint_metadata",
    "explanation_choice",
    "extract_state_dict",
    "load_checkpoint",
    "load_into",
    "save_checkpoint",
    "torchvision_state_dict",
    "update_checkpoint",
]

CHECKPOINT_FORMAT = "gradcam_kit/1"
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "params")
# Prefixes stripped when they stop a checkpoint from matching: DataParallel/DDP, and
# wrappers that kept the torchvision network as an attribute.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "resnet50.", "backbone.", "resnet.")
OFFLINE_ENV = "GRADCAM_KIT_OFFLINE"


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Reads a checkpoint file safely and returns the loaded object as a dict.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable torch checkpoint (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        # weights_only refusals name the offending global on a later line: keep that one.
        detail = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else "")
        raise ValueError(
            f"cannot read checkpoint {path} ({type(err).__name__}: {detail[:160]}); expected a "
            "file written by torch.save() holding a state_dict, not truncated or corrupt"
        ) from None
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"checkpoint {path} holds a {type(loaded).__name__}, not a state_dict; "
            "save model.state_dict() rather than the model object"
        )
    return dict(loaded)


def extract_state_dict(checkpoint: Mapping, *, source: str = "checkpoint") -> dict[str, Tensor]:
    """Finds the ``state_dict`` inside a loaded checkpoint (see the module docstring)."""
    for key in STATE_DICT_KEYS:
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping) and inner and all(
            isinstance(v, Tensor) for v in inner.values()
        ):
            return dict(inner)
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, Tensor)}
    if tensors and len(tensors) == len(checkpoint):
        return tensors
    raise ValueError(
        f"{source} holds no state_dict: expected a mapping of tensors, or one under "
        f"{', '.join(repr(k) for k in STATE_DICT_KEYS)}; found keys {sorted(checkpoint)[:8]}"
    )


def _adapt_keys(state_dict: dict[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    keys = set(state_dict)
    for _ in range(3):  # e.g. "module.resnet50.conv1.weight"
        if keys & expected:
            break
        for prefix in WRAPPER_PREFIXES:
            if keys and all(k.startswith(prefix) for k in keys):
                state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
                keys = set(state_dict)
                break
        else:
            break
    return state_dict


def load_into(model: nn.Module, state_dict: Mapping[str, Tensor], *, source: str) -> None:
    """Loads ``state_dict`` into ``model`` strictly, with an error that names what differs.

    Raises:
        ValueError: missing/unexpected keys or mismatched shapes (e.g. a head trained for a
            different number of classes); the message names ``source`` and the mismatch.
    """
    own = model.state_dict()
    state_dict = _adapt_keys(dict(state_dict), set(own))
    # BatchNorm's step counter, which FrozenBatchNorm2d (a norm_layer option) does not keep.
    state_dict = {
        k: v for k, v in state_dict.items()
        if k in own or not k.endswith(".num_batches_tracked")
    }
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    problems = []
    if shapes:
        hint = ""
        if any(k.startswith("fc.") for k in (s.split(":")[0] for s in shapes)):
            ckpt_classes = state_dict["fc.weight"].shape[0] if "fc.weight" in state_dict else "?"
            hint = f" (the checkpoint's head has {ckpt_classes} classes: pass num_classes={ckpt_classes})"
        problems.append("shape mismatch " + "; ".join(shapes[:5]) + hint)
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
    if problems:
        raise ValueError(f"checkpoint {source} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **metadata: object) -> Path:
    """Writes ``model``'s ``state_dict`` with metadata, loadable with ``weights_only=True``.

    Metadata values must be plain Python data (numbers, strings, lists, dicts) or tensors.
    The file is written to a temporary name first and renamed, so an interrupted save
    never leaves a corrupt checkpoint behind.
    """
    import torchvision

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": state_dict,
        "versions": {
            "torch": str(torch.__version__),  # TorchVersion is not weights_only-loadable
            "torchvision": torchvision.__version__,
            "python": sys.version.split()[0],
        },
        **metadata,
    }
    return _write_atomically(payload, path)


def _cached_weights_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _reachable(url: str, timeout: float = 3.0) -> str | None:
    """Returns ``None`` if the weights' host answers, else why not (never blocks long)."""
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        return f"{OFFLINE_ENV} is set"
    host = urlparse(url).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return None
    except OSError as err:
        return f"{host} is unreachable ({err})"


def torchvision_state_dict(weights: object, *, progress: bool = True) -> dict[str, Tensor]:
    """The state_dict of a torchvision ``WeightsEnum``, from the cache or a bounded download.

    Raises:
        RuntimeError: the weights are not cached and cannot be downloaded; the message says
            where to put the file or to pass ``weights=None``.
    """
    cached = _cached_weights_path(weights.url)
    if not cached.is_file():
        why = _reachable(weights.url)
        if why is not None:
            raise RuntimeError(
                f"torchvision weights {weights} are not in the cache and cannot be downloaded: "
                f"{why}. Either download {weights.url} to {cached} (or set TORCH_HOME to a "
                "folder holding hub/checkpoints/), pass weights='<path to a checkpoint>', "
                "or pass weights=None for a randomly initialised backbone"
            )
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30.0)  # a stalled download fails instead of hanging forever
    try:
        return weights.get_state_dict(progress=progress, check_hash=True)
    finally:
        socket.setdefaulttimeout(previous)


def _write_atomically(payload: dict, path: Path) -> Path:
    """``torch.save`` to a temporary name, then rename: never a half-written checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def update_checkpoint(path: str | os.PathLike, **metadata: object) -> Path:
    """Adds or replaces metadata entries of a checkpoint file, keeping everything else.

    Written to a temporary name and renamed, like :func:`save_checkpoint`.
    """
    path = Path(path)
    payload = load_checkpoint(path)
    payload.update(metadata)
    return _write_atomically(payload, path)


@dataclass(frozen=True)
class CheckpointMetadata:
    """What a checkpoint says about its model, read by :func:`checkpoint_metadata`.

    Every field is ``None`` when the checkpoint does not say it (or says it in a form that
    cannot be used); callers then fall back to their own defaults (ImageNet's mean and
    std, 224 px, ...).

    Attributes:
        num_classes: outputs of the head: the stored ``num_classes``, else the rows of
            ``fc.weight`` (also under a wrapper prefix such as ``module.``).
        class_names: the stored names, as strings, when there is one per class (two for a
            single-logit head).
        input_size: ``(H, W)``; a stored int ``s`` or ``[s]`` is ``(s, s)``.
        mean: 3 per-channel numbers (one stored number is repeated), given together with
            ``std``: both are ``None`` unless both are valid.
        std: as ``mean``.
        target_layer: the Grad-CAM layer ``train`` stored.
        recommended: the ``{"layer", "method", ...}`` that ``evaluate`` wrote.
    """

    num_classes: int | None = None
    class_names: list[str] | None = None
    input_size: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    target_layer: str | None = None
    recommended: dict | None = None


def checkpoint_metadata(checkpoint: Mapping, *, source: str = "checkpoint") -> CheckpointMetadata:
    """The metadata of a loaded checkpoint (:func:`load_checkpoint`'s dict), checked once.

    Args:
        checkpoint: the loaded checkpoint.
        source: names the checkpoint in errors (its path).

    Returns:
        a :class:`CheckpointMetadata`; see it for the rule of each field.
    """
    num_classes = checkpoint.get("num_classes")
    if not _is_int(num_classes):
        num_classes = _head_rows(checkpoint, source)
    names = checkpoint.get("class_names")
    class_names = None
    if isinstance(names, (list, tuple)) and (num_classes is None or len(names) == max(num_classes, 2)):
        class_names = [str(n) for n in names]
    mean, std = _three(checkpoint.get("mean")), _three(checkpoint.get("std"))
    if mean is None or std is None:
        mean = std = None
    layer = checkpoint.get("target_layer")
    recommended = checkpoint.get("recommended")
    return CheckpointMetadata(
        num_classes=None if num_classes is None else int(num_classes),
        class_names=class_names,
        input_size=_size(checkpoint.get("input_size")),
        mean=mean,
        std=std,
        target_layer=str(layer) if layer else None,
        recommended=dict(recommended) if isinstance(recommended, Mapping) and recommended.get("layer") else None,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _head_rows(checkpoint: Mapping, source: str) -> int | None:
    try:
        state_dict = extract_state_dict(checkpoint, source=source)
    except ValueError:
        return None
    heads = [v for k, v in state_dict.items() if k == "fc.weight" or k.endswith(".fc.weight")]
    return int(heads[0].shape[0]) if heads else None


def _size(value: object) -> tuple[int, int] | None:
    if _is_int(value):
        return (int(value), int(value))
    if isinstance(value, (list, tuple)) and len(value) in (1, 2) and all(_is_int(v) for v in value):
        return (int(value[0]), int(value[-1]))
    return None


def _three(value: object) -> tuple[float, float, float] | None:
    if not isinstance(value, (list, tuple)) or len(value) not in (1, 3):
        return None
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        return None
    values = tuple(float(v) for v in value)
    return values * 3 if len(values) == 1 else values


def explanation_choice(checkpoint: Mapping, default_layer: str = "layer4.2.conv3") -> dict[str, object]:
    """The layer and method a checkpoint says to explain with, and why.

    The one rule every loader follows: the recommendation ``evaluate`` wrote (the layer and
    method that localised best on a validation split), else the ``target_layer`` stored by
    ``train``, else ``default_layer`` with Grad-CAM.

    Returns:
        ``{"layer", "method", "source"}``; ``source`` is a short sentence for logs and
        report headers, e.g. ``"recommended by evaluate: pointing 0.94 on val"``.
    """
    metadata = checkpoint_metadata(checkpoint)
    recommended = metadata.recommended
    if recommended is not None:
        pointing = recommended.get("pointing")
        figure = f"pointing {pointing:.2f}" if isinstance(pointing, (int, float)) else "pointing"
        return {
            "layer": str(recommended["layer"]),
            "method": str(recommended.get("method") or "gradcam"),
            "source": f"recommended by evaluate: {figure} on {recommended.get('split', '?')}",
        }
    if metadata.target_layer is not None:
        return {"layer": metadata.target_layer, "method": "gradcam", "source": "stored in the checkpoint by train"}
    return {"layer": default_layer, "method": "gradcam", "source": "the default layer"}
