"""Fine-tuning ``ResNet50FineTuned``: the run that ``python -m gradcam_kit train`` starts.

The steps live in :mod:`.config` (options), :mod:`.data` (samples and batches),
:mod:`.loop` (one epoch, evaluation, loss, optimizer, schedule) and :mod:`.checkpointing`
(history logs, RNG state); :func:`_train` puts them together.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..data.datasets import ImageDataset
from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD, build_transform
from ..metrics.classification import classification_metrics, format_metrics, json_safe
from .checkpointing import _rng_state, _write_history
from .config import DEFAULTS, load_config, resolve_config
from .data import BalancedBatchSampler, _datasets, _floats
from .distributed import (
    DistributedContext,
    ShardSampler,
    barrier,
    broadcast_buffers,
    gather_predictions,
)
from .loop import (
    SEEN_ENV,
    _autocast,
    _loss,
    _loss_value,
    _monitor_value,
    _optimizer,
    _scheduler,
    _seed_epoch,
    _set_frozen,
    _train_mode,
    predict,
)

if TYPE_CHECKING:
    from ..cli.outputs import OutputFolder

__all__ = [
    "DEFAULTS", "SEEN_ENV", "BalancedBatchSampler", "build_model", "load_config", "predict", "resolve_config",
]


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
        if list(state.get("class_names") or []) != class_names or state.get("num_classes") != num_classes:
            raise ValueError(
                f"{cfg.resume} was trained for classes {state.get('class_names')} "
                f"(num_classes={state.get('num_classes')}), this data has {class_names}"
            )
        from ..models.checkpoint import extract_state_dict, load_into

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
