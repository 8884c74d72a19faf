"""The options of ``train``: their table, YAML config files, and what ``--resume`` restores.

Every option can come from a YAML file (``--config run.yaml``) whose keys are the flag
names (``image-size`` or ``image_size``); flags given on the command line win.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["DEFAULTS", "OPTIONS", "load_config", "resolve_config", "resolve_run"]

# name -> (default, type, help). Flags are the names with "-" for "_".
_OPTIONS: dict[str, tuple[object, object, str]] = {
    "data": (None, str, "ImageFolder root (with train/ and optional val/ folders), class folder root, or path,label CSV"),
    "val_data": (None, str, "validation ImageFolder/CSV (default: <data>/val, else a split of the training data)"),
    "val_fraction": (0.2, float, "share of the training data held out for validation when there is no val set"),
    "multilabel": (None, bool, "multi-label data, one CSV column per finding (default: detected: a CSV, or <data>/train.csv, with a path column, no label column, and columns holding only 1/0/-1/blank)"),
    "findings": (None, str, "multi-label: comma-separated finding columns to train on (default: every column holding only 1/0/-1/blank)"),
    "images": (None, str, "multi-label: folder the CSV's relative image paths start from (default: the CSV's folder)"),
    "uncertain": ("ignore", str, "multi-label: what an uncertain (-1) label becomes: ignore (left out of loss and metrics), negative or positive; per finding: ignore,Edema=positive"),
    "blank": ("negative", str, "multi-label: what a blank label becomes: ignore, negative or positive; per finding as for --uncertain"),
    "pos_weight": ("none", str, "multi-label: loss weight of each finding's positives: none, auto (negatives/positives of the train split) or numbers (one, or one per finding)"),
    "out": ("runs/xray", str, "output folder for checkpoints and logs (must be new or empty)"),
    "overwrite": (False, bool, "replace the outputs an earlier run wrote in --out (never other files)"),
    "image_size": (224, int, "square input size in pixels"),
    "batch_size": (32, int, "images per batch and per process"),
    "epochs": (10, int, "number of epochs"),
    "lr": (1e-3, float, "peak learning rate"),
    "weight_decay": (1e-4, float, "weight decay"),
    "optimizer": ("adamw", ("adamw", "sgd"), "optimizer"),
    "momentum": (0.9, float, "SGD momentum"),
    "scheduler": ("cosine", ("cosine", "plateau", "none"), "learning-rate schedule (cosine: per step, after warm-up)"),
    "warmup_epochs": (0.0, float, "linear warm-up length in epochs (cosine schedule)"),
    "plateau_patience": (2, int, "epochs without improvement before the plateau schedule lowers the lr"),
    "patience": (5, int, "early stopping: epochs without improvement of --monitor (0 = off)"),
    "monitor": ("auroc", ("auroc", "mean_auroc", "accuracy", "loss", "val_pointing"), "validation metric that picks best.pt and drives early stopping (multi-label: auroc is the findings' mean AUROC, mean_auroc; val_pointing: the best layer's pointing game on the validation positives with masks)"),
    "weights": ("DEFAULT", str, "backbone start: DEFAULT (ImageNet, needs the cached file), none (random init) or a checkpoint path"),
    "freeze_features": (None, bool, "train only the head (default: on with pretrained weights, off with --weights none)"),
    "unfreeze_after": (None, int, "with --freeze-features: unfreeze the backbone after this many epochs"),
    "num_classes": (None, int, "head outputs (default: number of classes; 1 = single sigmoid logit for two classes)"),
    "class_weights": ("balanced", str, "loss class weights: balanced, none, or comma-separated numbers"),
    "augment": (True, bool, "training augmentation (random shift, scale and rotation; brightness/contrast jitter)"),
    "augment_translate": (0.04, float, "largest random shift, as a fraction of the image side"),
    "augment_scale": (0.05, float, "largest random zoom in or out, as a fraction"),
    "amp": (None, bool, "mixed precision (default: on with CUDA)"),
    "workers": (0, int, "DataLoader worker processes"),
    "seed": (0, int, "seed for splits, shuffling, augmentation and initialisation"),
    "device": ("auto", str, "auto, cpu, cuda or cuda:N"),
    "resume": (None, str, "continue from a last.pt written by train (its whole configuration, optimizer, scheduler, epoch, RNG); flags given again override its options"),
    "stop_after": (None, int, "stop after this many epochs of this run (the schedule still spans --epochs); continue later with --resume"),
    "target_layer": ("layer4.2.conv3", str, "Grad-CAM layer stored in the checkpoint (used by from_checkpoint)"),
    "mean": (None, str, "comma-separated normalisation mean (default: the ImageNet weights')"),
    "std": (None, str, "comma-separated normalisation std (default: the ImageNet weights')"),
    "dicom_window": (None, str, "DICOM window CENTER,WIDTH (after rescale slope/intercept) replacing each file's own VOI LUT or window (default: the file's)"),
    "progress": (True, bool, "tqdm progress bars"),
    "tensorboard": (None, str, "TensorBoard log folder: losses, metrics, Grad-CAM overlays of fixed validation images and the pointing game per layer, every epoch (pip install gradcam-kit[tensorboard])"),
    "watch_pointing": (None, bool, "score the pointing game per layer (Grad-CAM, with its ceiling) on the validation positives with masks every epoch, into history.csv/json (default: on with --tensorboard or --monitor val_pointing)"),
}
DEFAULTS: dict[str, object] = {name: spec[0] for name, spec in _OPTIONS.items()}
#: The option table: name -> (default, type or choices, help).
OPTIONS = _OPTIONS


def load_config(path: str | os.PathLike) -> dict[str, object]:
    """Reads a YAML config whose keys are flag names (``-`` or ``_``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a mapping, or an unknown key (the message lists the valid ones).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    with open(path) as handle:
        loaded = yaml.safe_load(handle) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"config {path} must be a mapping of flag names to values, got {type(loaded).__name__}")
    config = {str(k).replace("-", "_"): v for k, v in loaded.items()}
    unknown = sorted(set(config) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {path}; valid keys: {sorted(_OPTIONS)}")
    for name, value in config.items():
        kind = _OPTIONS[name][1]
        if value is None or isinstance(kind, tuple):
            continue
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} in {path} must be true or false, got {value!r}")
            continue
        try:  # YAML reads "2e-3" as a string; the flag's own type decides
            config[name] = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} in {path} must be of type {kind.__name__}, got {value!r}") from None
    return config


#: Options of one invocation that ``--resume`` does not take from the interrupted run.
_NOT_RESUMED = ("resume", "stop_after", "config", "overwrite")


def resolve_config(args: argparse.Namespace) -> argparse.Namespace:
    """Defaults, then the run configuration stored in ``--resume``'s checkpoint, then the YAML
    ``--config``, then flags given on the command line.

    ``train --resume runs/x/last.pt`` alone therefore continues the run with its own data,
    output folder, schedule and every other option; a flag given again overrides it.
    """
    return resolve_run(args)[0]


def resolve_run(args: argparse.Namespace) -> tuple[argparse.Namespace, dict | None]:
    """:func:`resolve_config`, and the ``--resume`` checkpoint it read (read once, for the run).

    Returns:
        ``(config, checkpoint)``; ``checkpoint`` is ``None`` without ``--resume``.

    Raises:
        FileNotFoundError: no config file, or no checkpoint at ``--resume``.
        ValueError: a bad config file or option value.
    """
    values = dict(DEFAULTS)
    given = {k: v for k, v in vars(args).items() if k in _OPTIONS}
    config_path = getattr(args, "config", None)
    file_values = load_config(config_path) if config_path else {}
    resume = given.get("resume", file_values.get("resume"))
    checkpoint = None
    if resume:
        from ..models.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(resume)
        values.update(_stored_config(checkpoint))
    values.update(file_values)
    values.update(given)
    _validate(values)
    return argparse.Namespace(**values), checkpoint


def _stored_config(checkpoint: dict) -> dict[str, object]:
    stored = checkpoint.get("train_config")
    if not isinstance(stored, dict):
        return {}
    return {k: v for k, v in stored.items() if k in _OPTIONS and k not in _NOT_RESUMED}


def _validate(values: dict[str, object]) -> None:
    for name, (_, kind, _) in _OPTIONS.items():
        value = values[name]
        if isinstance(kind, tuple) and value not in kind:
            raise ValueError(f"{name} must be one of {kind}, got {value!r}")
    if not values["data"]:
        raise ValueError("no training data: pass --data <ImageFolder root or CSV> (or set data: in --config)")
    for name in ("image_size", "batch_size", "epochs"):
        if isinstance(values[name], bool) or not isinstance(values[name], int) or values[name] < 1:
            raise ValueError(f"{name} must be a positive integer, got {values[name]!r}")
    if not 0 <= float(values["augment_translate"]) < 1 or not 0 <= float(values["augment_scale"]) < 1:
        raise ValueError(
            f"augment_translate and augment_scale must lie in [0, 1), got "
            f"{values['augment_translate']} and {values['augment_scale']}"
        )
    if values["lr"] is None or float(values["lr"]) <= 0:
        raise ValueError(f"lr must be positive, got {values['lr']!r}")
    if values["unfreeze_after"] is not None and int(values["unfreeze_after"]) < 0:
        raise ValueError(f"unfreeze_after must be >= 0, got {values['unfreeze_after']}")

