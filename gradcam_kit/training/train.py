"""``python -m gradcam_kit train``: fine-tune ``ResNet50FineTuned`` on an ImageFolder or CSV.

One process::

    python -m gradcam_kit train --data data/synthetic --out runs/xray --weights none

Several (GPUs with NCCL, CPU processes with gloo), same flags::

    torchrun --nproc_per_node=2 -m gradcam_kit train --data data/synthetic ...

What it does: reads ``<data>/train`` and ``<data>/val`` (or splits off ``--val-fraction``
when there is no val folder; a CSV ``path,label`` file works the same), checks the data
before anything trains (missing folder or CSV, empty class, a single class, unreadable
image), trains with class-weighted cross-entropy (BCE for ``--num-classes 1``), AdamW or
SGD, a cosine or plateau schedule, early stopping, optional ``--freeze-features`` with
``--unfreeze-after``, AMP on CUDA; logs accuracy, AUROC, sensitivity, specificity and the
confusion matrix of every epoch to ``<out>/history.csv`` and ``<out>/history.json``;
writes ``<out>/best.pt`` (the best epoch, by ``--monitor``) and ``<out>/last.pt`` (also
the optimizer, scheduler, RNG and early-stopping state, for ``--resume``). Both load with
``ResNet50FineTuned(weights=path, num_classes=...)`` or ``ResNet50FineTuned.from_checkpoint``.

Every option can come from a YAML file (``--config run.yaml``) whose keys are the flag
names (``image-size`` or ``image_size``); flags given on the command line win.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from ..core.modes import eval_mode
from ..data.datasets import ImageDataset, Sample, load_split, split_samples, verify_images
from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD, build_transform
from ..metrics.classification import classification_metrics, format_metrics, json_safe
from .distributed import (
    DistributedContext,
    ShardSampler,
    barrier,
    broadcast_buffers,
    cleanup,
    gather_predictions,
    init_distributed,
)

if TYPE_CHECKING:
    from ..cli.outputs import OutputFolder

__all__ = ["DEFAULTS", "SEEN_ENV", "add_arguments", "load_config", "resolve_config", "run"]

#: Set to a folder to make every rank write the training indices it saw per epoch.
SEEN_ENV = "GRADCAM_KIT_DEBUG_SEEN"

# name -> (default, type, help). Flags are the names with "-" for "_".
_OPTIONS: dict[str, tuple[object, object, str]] = {
    "data": (None, str, "ImageFolder root (with train/ and optional val/ folders), class folder root, or path,label CSV"),
    "val_data": (None, str, "validation ImageFolder/CSV (default: <data>/val, else a split of the training data)"),
    "val_fraction": (0.2, float, "share of the training data held out for validation when there is no val set"),
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
    "monitor": ("auroc", ("auroc", "accuracy", "loss"), "validation metric that picks best.pt and drives early stopping"),
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
    "progress": (True, bool, "tqdm progress bars"),
}
DEFAULTS: dict[str, object] = {name: spec[0] for name, spec in _OPTIONS.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m gradcam_kit train`` (defaults resolved in :func:`resolve_config`)."""
    parser.add_argument("--config", default=None, help="YAML file whose keys are these flags' names; flags win")
    for name, (default, kind, help_text) in _OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{help_text} (default: {default})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif isinstance(kind, tuple):
            parser.add_argument(flag, choices=kind, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)


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
    values = dict(DEFAULTS)
    given = {k: v for k, v in vars(args).items() if k in _OPTIONS}
    config_path = getattr(args, "config", None)
    file_values = load_config(config_path) if config_path else {}
    resume = given.get("resume", file_values.get("resume"))
    if resume:
        values.update(_stored_config(resume))
    values.update(file_values)
    values.update(given)
    _validate(values)
    return argparse.Namespace(**values)


def _stored_config(path: str | os.PathLike) -> dict[str, object]:
    from ..models.checkpoint import load_checkpoint

    stored = load_checkpoint(path).get("train_config")
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


# -- data -------------------------------------------------------------------------------
def _floats(text: object, default: Sequence[float]) -> tuple[float, ...]:
    if text is None:
        return tuple(default)
    values = text if isinstance(text, (list, tuple)) else str(text).split(",")
    parsed = tuple(float(v) for v in values)
    if len(parsed) not in (1, 3):
        raise ValueError(f"mean/std need 1 or 3 numbers, got {text!r}")
    return parsed * 3 if len(parsed) == 1 else parsed


def _datasets(cfg: argparse.Namespace) -> tuple[list[Sample], list[Sample], list[str], str]:
    """Train and val samples; every check that can fail runs here, before training."""
    data = Path(cfg.data)
    if data.suffix.lower() == ".csv" or not (data / "train").is_dir():
        train, names = load_split(data)
        origin = str(data)
    else:
        train, names = load_split(data, "train")
        origin = str(data / "train")
    if len(names) < 2:
        raise ValueError(
            f"{origin} holds a single class {names}; a classifier needs at least two classes "
            "(one folder per class, e.g. normal/ and lesion/)"
        )
    counts = torch.bincount(torch.tensor([s.label for s in train]), minlength=len(names))
    empty = [names[i] for i in range(len(names)) if counts[i] == 0]
    if empty:
        raise ValueError(f"class(es) {empty} have no training images in {origin}")
    if cfg.val_data:
        val, _ = load_split(cfg.val_data, class_names=names)
    elif data.suffix.lower() != ".csv" and (data / "val").is_dir():
        val, _ = load_split(data, "val", class_names=names)
    else:
        train, val = split_samples(train, cfg.val_fraction, seed=cfg.seed)
    verify_images(train + val)
    return train, val, names, origin


class BalancedBatchSampler(Sampler[list[int]]):
    """Cuts the sampler's order into ``ceil(n / batch_size)`` batches of near-equal size.

    Every sample is used once per epoch and no batch holds a single image (BatchNorm in
    train mode needs two), unless the whole shard is one image.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        for chunk in order.tensor_split(len(self)):
            yield chunk.tolist()

    def __len__(self) -> int:
        return max(1, math.ceil(len(self.sampler) / self.batch_size))


# -- model ------------------------------------------------------------------------------
def _weights_choice(weights: object) -> str | None:
    if weights is None or str(weights).lower() in ("none", "null", "scratch", ""):
        return None
    if str(weights).lower() == "imagenet":  # the other commands' spelling of DEFAULT
        return "DEFAULT"
    return str(weights)


def build_model(cfg: argparse.Namespace, num_classes: int) -> nn.Module:
    """``ResNet50FineTuned`` started from ``--weights`` (a checkpoint path may hold another head)."""
    from ..models.checkpoint import extract_state_dict, load_checkpoint, load_into
    from ..models.resnet50 import ResNet50FineTuned

    weights = _weights_choice(cfg.weights)
    looks_like_path = weights is not None and (
        Path(weights).exists() or os.sep in weights or Path(weights).suffix in (".pt", ".pth", ".ckpt", ".bin")
    )
    if not looks_like_path:
        try:
            return ResNet50FineTuned(
                num_classes, freeze_features=False, weights=weights, target_layer=cfg.target_layer
            )
        except RuntimeError as err:
            raise RuntimeError(
                f"{err}.\nOffline? Pass --weights none to train from scratch "
                "(or --weights <checkpoint path>)"
            ) from None
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"--weights {weights}: no such checkpoint file; pass DEFAULT, none or a path")
    model = ResNet50FineTuned(num_classes, freeze_features=False, weights=None, target_layer=cfg.target_layer)
    state = extract_state_dict(load_checkpoint(path), source=str(path))
    head = {k: v for k, v in model.state_dict().items() if k.startswith("fc.")}
    if any(k.endswith("fc.weight") and v.shape != head["fc.weight"].shape for k, v in state.items()):
        # A backbone trained for another task: keep its features, start a new head.
        state = {k: v for k, v in state.items() if not k.split(".")[-2:-1] == ["fc"]} | head
    load_into(model, state, source=str(path))
    return model


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(getattr(model, "module", None), nn.Module) else model


def _set_frozen(model: nn.Module, frozen: bool) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not frozen or name.startswith("fc."))


def _train_mode(model: nn.Module, frozen: bool) -> None:
    # A frozen backbone keeps its BatchNorm statistics: only the head trains.
    model.train()
    if frozen:
        model.eval()
        model.fc.train()


def _loss(cfg: argparse.Namespace, num_classes: int, counts: Tensor, device: torch.device) -> nn.Module:
    choice = str(cfg.class_weights).strip().lower()
    if choice == "none":
        weights = None
    elif choice == "balanced":
        weights = counts.sum() / (len(counts) * counts.clamp_min(1).double())
    else:
        weights = torch.tensor([float(v) for v in choice.split(",")], dtype=torch.float64)
        if weights.numel() != len(counts):
            raise ValueError(f"--class-weights needs {len(counts)} numbers, got {cfg.class_weights!r}")
    if num_classes == 1:
        pos_weight = None if weights is None else (weights[1] / weights[0]).float().reshape(1).to(device)
        return nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    return nn.CrossEntropyLoss(weight=None if weights is None else weights.float().to(device))


def _loss_value(criterion: nn.Module, logits: Tensor, targets: Tensor) -> Tensor:
    if isinstance(criterion, nn.BCEWithLogitsLoss):
        return criterion(logits[:, 0], targets.float())
    return criterion(logits, targets)


def _optimizer(cfg: argparse.Namespace, model: nn.Module) -> torch.optim.Optimizer:
    # Every parameter is registered, frozen ones too: they have no gradient and are skipped
    # until --unfreeze-after turns them on, and --resume restores one fixed structure.
    # The fused kernels update every parameter in one pass: on two CPU cores a ResNet50
    # AdamW step takes 17 ms instead of 64 ms (about 1.8 s of a 38-step epoch).
    fused = _can_fuse(model)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
            nesterov=cfg.momentum > 0, fused=fused,
        )
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def _can_fuse(model: nn.Module) -> bool | None:
    """``True`` where torch has fused optimizer kernels for every parameter, else ``None``."""
    return True if all(
        p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
        for p in model.parameters()
    ) else None


def _scheduler(cfg: argparse.Namespace, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """``(scheduler, per_step)``."""
    if cfg.scheduler == "plateau":
        mode = "min" if cfg.monitor == "loss" else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.1, patience=cfg.plateau_patience), False
    if cfg.scheduler == "none":
        return None, False
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    if warmup <= 0:
        return cosine, True
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.05, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup]), True


# -- loops ------------------------------------------------------------------------------
def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.float16, enabled=enabled)


def predict(model: nn.Module, loader: DataLoader, device: torch.device, *, amp: bool = False, progress: bool = False, desc: str = "eval") -> tuple[Tensor, Tensor, Tensor]:
    """``(indices, logits, targets)`` of this process's shard, in eval mode, without gradients."""
    from tqdm.auto import tqdm

    indices, logits, targets = [], [], []
    with eval_mode(model):  # every submodule's train/eval flag comes back afterwards
        with torch.no_grad():
            for images, labels, index in tqdm(loader, desc=desc, disable=not progress, leave=False):
                with _autocast(device, amp):
                    output = model(images.to(device, non_blocking=True, memory_format=torch.channels_last))
                logits.append(output.float())
                targets.append(labels.to(device))
                indices.append(index.to(device))
    if not logits:  # an empty shard (more processes than validation images)
        empty = torch.zeros(0, dtype=torch.long, device=device)
        outputs = _unwrap(model).fc.out_features
        return empty, torch.zeros(0, outputs, device=device), empty
    return torch.cat(indices), torch.cat(logits), torch.cat(targets)


_CSV_FIELDS = [
    "epoch", "lr", "frozen", "train_loss", "train_accuracy", "train_auroc", "train_sensitivity",
    "train_specificity", "train_samples", "val_loss", "val_accuracy", "val_auroc",
    "val_sensitivity", "val_specificity", "val_samples", "seconds", "best",
]


def _write_history(out: Path, history: list[dict]) -> None:
    with open(out / "history.json", "w") as handle:
        json.dump(json_safe(history), handle, indent=2)
    with open(out / "history.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            flat = dict(row)
            for split in ("train", "val"):
                for key in ("accuracy", "auroc", "sensitivity", "specificity"):
                    flat[f"{split}_{key}"] = row[split][key]
                flat[f"{split}_samples"] = row[split]["count"]
            writer.writerow(flat)


def _monitor_value(metrics: dict, monitor: str) -> float:
    value = metrics[monitor]
    if value is None or math.isnan(value):
        return float("nan")
    return -value if monitor == "loss" else value


def _rng_state() -> dict[str, object]:
    state: dict[str, object] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    # Each epoch's randomness depends only on (seed, epoch, rank), so --resume replays
    # exactly what an uninterrupted run would have done.
    torch.manual_seed(seed + 100_003 * (epoch + 1) + rank)


def run(args: argparse.Namespace) -> int:
    """Trains; returns 0. Raises ``ValueError``/``FileNotFoundError``/``RuntimeError`` on bad input."""
    from ..cli.outputs import OutputFolder

    cfg = resolve_config(args)
    # Checked before any work; cleared (with --overwrite) only once the data is known good.
    # An earlier run's evaluation.json and overlays describe another model: they go too.
    outputs = OutputFolder(
        cfg.out, command="train", overwrite=bool(cfg.overwrite), flag="--out",
        keep_own=bool(cfg.resume) and _inside(cfg.resume, cfg.out),
    )
    context = init_distributed(cfg.device)
    try:
        return _train(cfg, context, outputs)
    except KeyboardInterrupt:
        if context.is_main:
            last = Path(cfg.out) / "last.pt"
            hint = f"resume with: python -m gradcam_kit train --resume {last}" if last.is_file() else "no epoch had finished, so there is nothing to resume"
            print(f"\ntrain: interrupted; {hint}", file=sys.stderr)
        return 130
    finally:
        if context.is_main:
            outputs.record()
        cleanup(context)


def _inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    return Path(folder).resolve() in Path(path).resolve().parents


def _train(
    cfg: argparse.Namespace, context: DistributedContext, outputs: OutputFolder | None = None
) -> int:
    from tqdm.auto import tqdm

    from ..models.checkpoint import load_checkpoint, save_checkpoint

    main = context.is_main
    device = context.device
    log = print if main else (lambda *a, **k: None)
    train_samples, val_samples, class_names, origin = _datasets(cfg)
    num_classes = cfg.num_classes if cfg.num_classes is not None else len(class_names)
    if num_classes == 1 and len(class_names) != 2:
        raise ValueError(f"--num-classes 1 (a sigmoid head) needs exactly two classes, found {class_names}")
    if num_classes not in (1, len(class_names)):
        raise ValueError(f"--num-classes {num_classes} does not match the {len(class_names)} classes {class_names}")
    weights = _weights_choice(cfg.weights)
    freeze = cfg.freeze_features if cfg.freeze_features is not None else weights is not None
    if freeze and weights is None:
        raise ValueError(
            "--freeze-features with --weights none would train only the head on random features; "
            "drop --freeze-features (train from scratch) or pass pretrained --weights"
        )
    size = (cfg.image_size, cfg.image_size)
    mean, std = _floats(cfg.mean, IMAGENET_MEAN), _floats(cfg.std, IMAGENET_STD)
    augment = []
    if cfg.augment:
        from torchvision.transforms import v2

        augment = [
            v2.RandomAffine(
                degrees=5,
                translate=(cfg.augment_translate, cfg.augment_translate),
                scale=(1 - cfg.augment_scale, 1 + cfg.augment_scale),
            ),
            v2.ColorJitter(brightness=0.15, contrast=0.15),
        ]
    train_set = ImageDataset(train_samples, class_names, build_transform(size, mean=mean, std=std, augment=augment), return_index=True)
    val_set = ImageDataset(val_samples, class_names, build_transform(size, mean=mean, std=std), return_index=True)

    torch.manual_seed(cfg.seed)
    # channels_last: faster convolutions with oneDNN and cuDNN (about 9 % per step on 2 CPU cores)
    model = build_model(cfg, num_classes).to(device, memory_format=torch.channels_last)
    train_sampler = DistributedSampler(
        train_set, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=cfg.seed
    )
    loader_options = {"num_workers": cfg.workers, "pin_memory": device.type == "cuda", "persistent_workers": cfg.workers > 0}
    train_loader = DataLoader(train_set, batch_sampler=BalancedBatchSampler(train_sampler, cfg.batch_size), **loader_options)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, sampler=ShardSampler(len(val_set), context.rank, context.world_size), **loader_options)
    criterion = _loss(cfg, num_classes, train_set.class_counts(), device)
    optimizer = _optimizer(cfg, model)
    scheduler, per_step = _scheduler(cfg, optimizer, len(train_loader))
    amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    if amp and device.type != "cuda":
        raise ValueError("--amp needs CUDA; drop --amp on CPU")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    out = Path(cfg.out)
    start_epoch, best, bad_epochs, history = 0, float("-inf"), 0, []
    if cfg.resume:
        state = load_checkpoint(cfg.resume)
        if "optimizer" not in state or "epoch" not in state:
            raise ValueError(f"{cfg.resume} holds no training state; resume from the last.pt that train wrote")
        from ..models.checkpoint import checkpoint_metadata, extract_state_dict, load_into

        stored = checkpoint_metadata(state, source=str(cfg.resume))
        if stored.class_names != class_names or stored.num_classes != num_classes:
            raise ValueError(
                f"{cfg.resume} was trained for classes {stored.class_names} "
                f"(num_classes={stored.num_classes}), this data has {class_names}"
            )

        load_into(model, extract_state_dict(state, source=cfg.resume), source=cfg.resume)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        best = float(state.get("best_metric", float("-inf")))
        bad_epochs = int(state.get("bad_epochs", 0))
        history = list(state.get("history") or [])[:start_epoch]
        rng = state.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        log(f"resumed from {cfg.resume} at epoch {start_epoch + 1}")

    if main:
        if outputs is not None:
            outputs.clear()
        out.mkdir(parents=True, exist_ok=True)
        counts = ", ".join(f"{n} {name}" for name, n in zip(class_names, train_set.class_counts().tolist()))
        log(
            f"train: {len(train_set)} images ({counts}) from {origin}; val: {len(val_set)}; "
            f"{context.world_size} process(es) on {device}; weights={weights}; "
            f"{'frozen backbone' if freeze else 'full network'}"
        )
    seen_dir = os.environ.get(SEEN_ENV)
    metadata = {
        "num_classes": num_classes,
        "class_names": class_names,
        "input_size": list(size),
        "mean": list(mean),
        "std": list(std),
        "target_layer": cfg.target_layer,
        "monitor": cfg.monitor,
        "train_config": json_safe({k: v for k, v in vars(cfg).items()}),
    }
    ddp_model: nn.Module = model
    wrapped_frozen: bool | None = None
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        frozen = freeze and (cfg.unfreeze_after is None or epoch < cfg.unfreeze_after)
        if frozen != wrapped_frozen:  # DDP registers the trainable parameters when it wraps
            _set_frozen(model, frozen)
            if context.enabled:
                from torch.nn.parallel import DistributedDataParallel

                ddp_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
            if freeze and not frozen:
                log(f"epoch {epoch + 1}: backbone unfrozen")
            wrapped_frozen = frozen
        _seed_epoch(cfg.seed, epoch, context.rank)
        train_sampler.set_epoch(epoch)
        _train_mode(model, frozen)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        indices, logits_seen, targets_seen = [], [], []
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (main and cfg.progress), leave=False)
        for images, labels, index in bar:
            images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with _autocast(device, amp):
                logits = ddp_model(images)
                loss = _loss_value(criterion, logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if per_step:
                scheduler.step()
            loss_sum += loss.detach().double() * labels.shape[0]
            indices.append(index.to(device))
            logits_seen.append(logits.detach().float())
            targets_seen.append(labels)
        bar.close()
        seen = torch.cat(indices)
        if seen_dir:
            Path(seen_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(seen_dir) / f"seen_epoch{epoch}_rank{context.rank}.json", "w") as handle:
                json.dump(seen.tolist(), handle)
        _, train_logits, train_targets = gather_predictions(context, seen, torch.cat(logits_seen), torch.cat(targets_seen))
        loss_total = loss_sum.clone()
        batch_count = torch.tensor(float(seen.numel()), device=device, dtype=torch.float64)
        if context.enabled:
            import torch.distributed as dist

            dist.all_reduce(loss_total)
            dist.all_reduce(batch_count)
        train_metrics = classification_metrics(train_logits, train_targets)
        train_metrics["loss"] = float(loss_total / batch_count.clamp_min(1))

        broadcast_buffers(context, model)  # every rank evaluates the model rank 0 saves
        _, val_logits, val_targets = gather_predictions(context, *predict(model, val_loader, device, amp=amp))
        val_metrics = classification_metrics(val_logits, val_targets)
        val_metrics["loss"] = float(_loss_value(criterion, val_logits, val_targets)) if val_targets.numel() else float("nan")
        if scheduler is not None and not per_step:
            value = _monitor_value(val_metrics, cfg.monitor)
            scheduler.step(val_metrics[cfg.monitor] if not math.isnan(value) else 0.0)
        value = _monitor_value(val_metrics, cfg.monitor)
        if math.isnan(value):  # e.g. AUROC of a one-class validation set: keep the first epoch
            improved = math.isinf(best) and epoch == start_epoch
        else:
            improved = value > best
            best = max(best, value)
        bad_epochs = 0 if improved else bad_epochs + 1
        row = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "frozen": frozen,
            "train": train_metrics,
            "val": val_metrics,
            "train_loss": train_metrics["loss"],
            "val_loss": val_metrics["loss"],
            "seconds": round(time.perf_counter() - started, 2),
            "best": improved,
        }
        history.append(row)
        if main:
            epoch_metadata = dict(metadata, epoch=epoch, metrics=json_safe({"train": train_metrics, "val": val_metrics}))
            if improved:
                save_checkpoint(out / "best.pt", model, **epoch_metadata)
            save_checkpoint(
                out / "last.pt", model, **epoch_metadata,
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict() if scheduler is not None else None,
                scaler=scaler.state_dict() if amp else None,
                best_metric=best, bad_epochs=bad_epochs, history=json_safe(history), rng=_rng_state(),
            )
            _write_history(out, history)
            log(
                f"epoch {epoch + 1}/{cfg.epochs}  loss {train_metrics['loss']:.4f}/{val_metrics['loss']:.4f}  "
                f"val {format_metrics(val_metrics)}  {row['seconds']:.1f}s{'  *best' if improved else ''}"
            )
        barrier(context)
        if cfg.stop_after is not None and epoch + 1 - start_epoch >= cfg.stop_after:
            log(f"stopping after {cfg.stop_after} epoch(s) as asked; continue with --resume {out / 'last.pt'}")
            break
        if cfg.patience > 0 and bad_epochs >= cfg.patience:
            log(f"early stopping: val {cfg.monitor} did not improve for {cfg.patience} epochs")
            break
    if main:
        log(f"best checkpoint: {out / 'best.pt'}  (val {cfg.monitor} {abs(best) if not math.isinf(best) else float('nan'):.4f}); log: {out / 'history.csv'}")
    return 0
