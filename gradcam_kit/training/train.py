"""Fine-tuning ``ResNet50FineTuned``: the run that ``python -m gradcam_kit train`` starts.

:func:`train` puts the steps together, in the manner of torchvision's classification
reference: :func:`~.config.resolve_config` (options), :func:`~.data.load_data` (samples,
transforms, samplers, loaders), the model, :func:`~.loop.build_criterion`,
:func:`~.loop.build_optimizer`, :func:`~.loop.build_scheduler`, then per epoch
:func:`~.loop.train_one_epoch`, :func:`~.loop.evaluate`, :class:`~.loop.EarlyStopping`
and :func:`~.checkpointing.save_epoch`.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..metrics.classification import format_metrics, json_safe
from ..models import builder as models
from ..models.builder import resolve_weights
from .checkpointing import ResumeState, restore_training, save_epoch
from .config import DEFAULTS, load_config, resolve_config
from .data import BalancedBatchSampler, TrainingData, load_data
from .distributed import DistributedContext, barrier, broadcast_object
from .loop import (
    SEEN_ENV,
    EarlyStopping,
    _seed_epoch,
    _set_frozen,
    build_criterion,
    build_optimizer,
    build_scheduler,
    checkpoint_thresholds,
    evaluate,
    predict,
    set_train_mode,
    step_plateau,
    train_one_epoch,
)
from .monitor import TrainingMonitor, build_monitor, require_summary_writer


class ClearableOutputs(Protocol):
    """What :func:`train` needs of an output folder (the commands pass an ``OutputFolder``)."""

    def clear(self) -> None: ...

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULTS", "SEEN_ENV", "BalancedBatchSampler", "build_model", "load_config", "predict",
    "resolve_config", "train",
]


def build_model(cfg: argparse.Namespace, num_classes: int) -> nn.Module:
    """``ResNet50FineTuned`` started from ``--weights`` (a checkpoint path may hold another head).

    Raises:
        RuntimeError: ImageNet weights neither cached nor downloadable (says to pass --weights none).
        FileNotFoundError: ``--weights`` names a checkpoint file that is not there.
    """
    try:
        return models.build_model(
            "finetuned", weights=cfg.weights, num_classes=num_classes, freeze_features=False,
            target_layer=cfg.target_layer,
        )
    except RuntimeError as err:
        raise RuntimeError(
            f"{err}.\nOffline? Pass --weights none to train from scratch "
            "(or --weights <checkpoint path>)"
        ) from None


@dataclass
class _Parts:
    """The model and what trains it."""

    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    per_step: bool
    scaler: torch.amp.GradScaler
    amp: bool


def _num_classes(cfg: argparse.Namespace, class_names: list[str]) -> int:
    num_classes = cfg.num_classes if cfg.num_classes is not None else len(class_names)
    if num_classes == 1 and len(class_names) != 2:
        raise ValueError(f"--num-classes 1 (a sigmoid head) needs exactly two classes, found {class_names}")
    if num_classes not in (1, len(class_names)):
        raise ValueError(f"--num-classes {num_classes} does not match the {len(class_names)} classes {class_names}")
    return num_classes


def _freeze_choice(cfg: argparse.Namespace) -> tuple[str | None, bool]:
    """``(weights, freeze)``: ``--weights`` as the log shows it and whether the backbone starts frozen."""
    weights = resolve_weights(cfg.weights)
    freeze = cfg.freeze_features if cfg.freeze_features is not None else weights is not None
    if freeze and weights is None:
        raise ValueError(
            "--freeze-features with --weights none would train only the head on random features; "
            "drop --freeze-features (train from scratch) or pass pretrained --weights"
        )
    return (str(cfg.weights) if isinstance(weights, Path) else weights), freeze


def _build_parts(cfg: argparse.Namespace, data: TrainingData, num_classes: int, device: torch.device) -> _Parts:
    torch.manual_seed(cfg.seed)
    # channels_last: faster convolutions with oneDNN and cuDNN (about 9 % per step on 2 CPU cores)
    model = build_model(cfg, num_classes).to(device, memory_format=torch.channels_last)
    criterion = build_criterion(cfg, num_classes, data.train_set.class_counts(), device)
    optimizer = build_optimizer(cfg, model)
    scheduler, per_step = build_scheduler(cfg, optimizer, len(data.train_loader))
    amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    if amp and device.type != "cuda":
        raise ValueError("--amp needs CUDA; drop --amp on CPU")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    return _Parts(model, criterion, optimizer, scheduler, per_step, scaler, amp)


def _metadata(cfg: argparse.Namespace, data: TrainingData, num_classes: int) -> dict[str, object]:
    """What every checkpoint of the run stores besides the weights."""
    return {
        "num_classes": num_classes,
        "class_names": data.class_names,
        "input_size": list(data.size),
        "mean": list(data.mean),
        "std": list(data.std),
        "target_layer": cfg.target_layer,
        "monitor": cfg.monitor,
        "train_config": json_safe({k: v for k, v in vars(cfg).items()}),
        **data.checkpoint_metadata(),  # multi-label: task, findings, label_policy
    }


def _wrap(model: nn.Module, frozen: bool, context: DistributedContext) -> nn.Module:
    """Freezes or thaws the backbone, then wraps in DDP (which registers the trainable parameters)."""
    _set_frozen(model, frozen)
    if not context.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = context.device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _epoch_row(
    epoch: int, parts: _Parts, frozen: bool, train: dict, val: dict, started: float, improved: bool,
    pointing: dict | None = None,
) -> dict:
    row = {
        "epoch": epoch + 1,
        "lr": parts.optimizer.param_groups[0]["lr"],
        "frozen": frozen,
        "train": train,
        "val": val,
        "train_loss": train["loss"],
        "val_loss": val["loss"],
        "seconds": round(time.perf_counter() - started, 2),
        "best": improved,
    }
    if pointing is not None:
        row["val_pointing"] = pointing
    return row


def _pointing_text(figures: dict | None) -> str:
    if not figures or figures.get("best") is None:
        return ""
    return f"  pointing {figures['best']:.2f} at {figures['best_layer']} ({figures['seconds']:.1f}s)"


def _seen_path(epoch: int, rank: int) -> Path | None:
    seen_dir = os.environ.get(SEEN_ENV)
    return Path(seen_dir) / f"seen_epoch{epoch}_rank{rank}.json" if seen_dir else None


def train(
    cfg: argparse.Namespace,
    context: DistributedContext,
    outputs: ClearableOutputs | None = None,
    resume: dict | None = None,
) -> int:
    """Trains as ``cfg`` says; returns 0.

    Args:
        cfg: from :func:`~.config.resolve_config`.
        context: from :func:`~.distributed.init_distributed`.
        outputs: the output folder, cleared before the first write (main process only).
        resume: the ``--resume`` checkpoint, already read (see :func:`~.config.resolve_run`).

    Raises:
        ValueError: bad data or options. FileNotFoundError: missing data or weights.
        RuntimeError: ImageNet weights neither cached nor downloadable.
    """
    main = context.is_main
    device = context.device
    # Progress lines go to the package's logger; the command line prints them (cli.commands).
    log: Callable[..., None] = logger.info if main else (lambda *a, **k: None)
    if cfg.tensorboard and main:
        require_summary_writer()  # a missing package fails before anything is cleared or trained
    data = load_data(cfg, context)
    num_classes = _num_classes(cfg, data.class_names)
    weights, freeze = _freeze_choice(cfg)
    parts = _build_parts(cfg, data, num_classes, device)
    out = Path(cfg.out)
    state = ResumeState(history=[])
    if cfg.resume:
        state = restore_training(
            resume if resume is not None else _read(cfg.resume), parts.model, parts.optimizer,
            parts.scheduler, parts.scaler, class_names=data.class_names, num_classes=num_classes,
            source=cfg.resume,
        )
        log(f"resumed from {cfg.resume} at epoch {state.start_epoch + 1}")
    if main:
        if outputs is not None:
            outputs.clear()
        out.mkdir(parents=True, exist_ok=True)
        counts = data.count_text()
        log(
            f"train: {len(data.train_set)} images ({counts}) from {data.origin}; val: {len(data.val_set)}; "
            f"{context.world_size} process(es) on {device}; weights={weights}; "
            f"{'frozen backbone' if freeze else 'full network'}"
        )
    stopping = EarlyStopping(cfg.monitor, cfg.patience, state.best, state.bad_epochs)
    monitor = build_monitor(cfg, data, parts.model.gradcam_target_layer, device, main=main)
    try:
        _run_epochs(cfg, context, data, parts, stopping, state, freeze, _metadata(cfg, data, num_classes), log, monitor)
    finally:
        if monitor is not None:
            monitor.close()
    if main:
        log(f"best checkpoint: {out / 'best.pt'}  (val {_name(cfg.monitor)} {stopping.best_value:.4f}); log: {out / 'history.csv'}")
    return 0


def _name(monitor: str) -> str:
    return monitor.removeprefix("val_")


def _watch(
    cfg: argparse.Namespace, context: DistributedContext, monitor: TrainingMonitor | None, epoch: int,
    model: nn.Module, metrics: dict,
) -> tuple[dict | None, dict]:
    """``(pointing figures or None, the validation metrics --monitor reads)`` of one epoch."""
    figures = monitor.on_epoch_end(epoch, model, metrics) if monitor is not None else None
    if cfg.monitor != "val_pointing":
        return figures, metrics["val"]
    figures = broadcast_object(context, figures)  # every rank steps the schedule and stops alike
    return figures, dict(metrics["val"], val_pointing=(figures or {}).get("best"))


def _read(path: str) -> dict:
    from ..models.checkpoint import load_checkpoint

    return load_checkpoint(path)


def _run_epochs(
    cfg: argparse.Namespace, context: DistributedContext, data: TrainingData, parts: _Parts,
    stopping: EarlyStopping, state: ResumeState, freeze: bool, metadata: dict, log: Callable[..., None],
    monitor: TrainingMonitor | None = None,
) -> None:
    """Epochs ``state.start_epoch`` to ``cfg.epochs`` (fewer with ``--stop-after`` or early stopping)."""
    out, device, model, history = Path(cfg.out), context.device, parts.model, state.history
    ddp_model: nn.Module = model
    wrapped_frozen: bool | None = None
    for epoch in range(state.start_epoch, cfg.epochs):
        started = time.perf_counter()
        frozen = freeze and (cfg.unfreeze_after is None or epoch < cfg.unfreeze_after)
        if frozen != wrapped_frozen:
            ddp_model = _wrap(model, frozen, context)
            if freeze and not frozen:
                log(f"epoch {epoch + 1}: backbone unfrozen")
            wrapped_frozen = frozen
        _seed_epoch(cfg.seed, epoch, context.rank)
        data.train_sampler.set_epoch(epoch)
        set_train_mode(model, frozen)
        train_metrics = train_one_epoch(
            ddp_model, data.train_loader, parts.criterion, parts.optimizer, device=device,
            context=context, scaler=parts.scaler, scheduler=parts.scheduler if parts.per_step else None,
            amp=parts.amp, progress=context.is_main and cfg.progress,
            desc=f"epoch {epoch + 1}/{cfg.epochs}", seen_path=_seen_path(epoch, context.rank),
        )
        val_metrics = evaluate(model, data.val_loader, parts.criterion, device=device, context=context, amp=parts.amp)
        metrics = {"train": train_metrics, "val": val_metrics, "lr": parts.optimizer.param_groups[0]["lr"]}
        figures, monitored = _watch(cfg, context, monitor, epoch, model, metrics)
        step_plateau(parts.scheduler, parts.per_step, monitored, cfg.monitor)
        improved = stopping.update(monitored, first=epoch == state.start_epoch)
        row = _epoch_row(epoch, parts, frozen, train_metrics, val_metrics, started, improved, figures)
        history.append(row)
        if context.is_main:
            epoch_metadata = dict(
                metadata, epoch=epoch,
                metrics=json_safe({k: v for k, v in row.items() if k in ("train", "val", "val_pointing")}),
                **checkpoint_thresholds(val_metrics),  # multi-label: per finding, chosen on val
            )
            save_epoch(
                out, model, epoch_metadata, improved=improved, optimizer=parts.optimizer,
                scheduler=parts.scheduler, scaler=parts.scaler if parts.amp else None,
                best=stopping.best, bad_epochs=stopping.bad_epochs, history=history,
            )
            log(
                f"epoch {epoch + 1}/{cfg.epochs}  loss {train_metrics['loss']:.4f}/{val_metrics['loss']:.4f}  "
                f"val {format_metrics(val_metrics)}{_pointing_text(figures)}  {row['seconds']:.1f}s{'  *best' if improved else ''}"
            )
        barrier(context)
        if cfg.stop_after is not None and epoch + 1 - state.start_epoch >= cfg.stop_after:
            log(f"stopping after {cfg.stop_after} epoch(s) as asked; continue with --resume {out / 'last.pt'}")
            break
        if stopping.should_stop:
            log(f"early stopping: val {_name(cfg.monitor)} did not improve for {cfg.patience} epochs")
            break

