"""One epoch of training, evaluation, and the factories of its parts (loss, optimizer, schedule)."""

from __future__ import annotations

import argparse
import math

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

__all__ = ["SEEN_ENV", "predict"]

#: Set to a folder to make every rank write the training indices it saw per epoch.
SEEN_ENV = "GRADCAM_KIT_DEBUG_SEEN"

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


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.float16, enabled=enabled)


def predict(model: nn.Module, loader: DataLoader, device: torch.device, *, amp: bool = False, progress: bool = False, desc: str = "eval") -> tuple[Tensor, Tensor, Tensor]:
    """``(indices, logits, targets)`` of this process's shard, in eval mode, without gradients."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    indices, logits, targets = [], [], []
    try:
        with torch.no_grad():
            for images, labels, index in tqdm(loader, desc=desc, disable=not progress, leave=False):
                with _autocast(device, amp):
                    output = model(images.to(device, non_blocking=True, memory_format=torch.channels_last))
                logits.append(output.float())
                targets.append(labels.to(device))
                indices.append(index.to(device))
    finally:
        model.train(was_training)
    if not logits:  # an empty shard (more processes than validation images)
        empty = torch.zeros(0, dtype=torch.long, device=device)
        outputs = _unwrap(model).fc.out_features
        return empty, torch.zeros(0, outputs, device=device), empty
    return torch.cat(indices), torch.cat(logits), torch.cat(targets)


def _monitor_value(metrics: dict, monitor: str) -> float:
    value = metrics[monitor]
    if value is None or math.isnan(value):
        return float("nan")
    return -value if monitor == "loss" else value


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    # Each epoch's randomness depends only on (seed, epoch, rank), so --resume replays
    # exactly what an uninterrupted run would have done.
    torch.manual_seed(seed + 100_003 * (epoch + 1) + rank)

