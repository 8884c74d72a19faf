"""What ``train`` writes per epoch and what ``--resume`` reads back.

Every epoch: ``best.pt`` when the monitored metric improved, ``last.pt`` (the model plus the
optimizer, scheduler, AMP scaler, early-stopping state, history and RNG state), and the
history as ``history.json`` and ``history.csv`` (with the pointing game per layer when the
run watches it, see :mod:`.monitor`). :func:`restore_training` puts a
``last.pt`` back into the optimizer, schedule and RNG of a new process.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..metrics.classification import json_safe
from .monitor import history_columns

__all__ = ["ResumeState", "restore_training", "save_epoch"]

_CSV_FIELDS = [
    "epoch", "lr", "frozen", "train_loss", "train_accuracy", "train_auroc", "train_sensitivity",
    "train_specificity", "train_samples", "val_loss", "val_accuracy", "val_auroc",
    "val_sensitivity", "val_specificity", "val_samples", "seconds", "best",
]


def _write_history(out: Path, history: list[dict]) -> None:
    with open(out / "history.json", "w") as handle:
        json.dump(json_safe(history), handle, indent=2)
    pointing = [history_columns(row) for row in history]
    extra = list(dict.fromkeys(name for columns in pointing for name in columns))
    with open(out / "history.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_CSV_FIELDS + extra, extrasaction="ignore")
        writer.writeheader()
        for row, columns in zip(history, pointing):
            flat = dict(row, **columns)
            for split in ("train", "val"):
                for key in ("accuracy", "auroc", "sensitivity", "specificity"):
                    flat[f"{split}_{key}"] = row[split][key]
                flat[f"{split}_samples"] = row[split]["count"]
            writer.writerow(flat)



def _rng_state() -> dict[str, object]:
    state: dict[str, object] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state




def _set_rng_state(rng: Mapping) -> None:
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


@dataclass
class ResumeState:
    """Where a resumed run continues: the next epoch, early stopping, the history so far."""

    start_epoch: int = 0
    best: float = float("-inf")
    bad_epochs: int = 0
    history: list | None = None


def restore_training(
    state: Mapping,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: object | None,
    scaler: torch.amp.GradScaler,
    *,
    class_names: list[str],
    num_classes: int,
    source: str,
) -> ResumeState:
    """Loads a ``last.pt`` (already read) into the model, optimizer, schedule, scaler and RNG.

    Raises:
        ValueError: the checkpoint holds no training state, or was trained for other classes.
    """
    from ..models.checkpoint import checkpoint_metadata, extract_state_dict, load_into

    if "optimizer" not in state or "epoch" not in state:
        raise ValueError(f"{source} holds no training state; resume from the last.pt that train wrote")
    stored = checkpoint_metadata(state, source=str(source))
    if stored.class_names != class_names or stored.num_classes != num_classes:
        raise ValueError(
            f"{source} was trained for classes {stored.class_names} "
            f"(num_classes={stored.num_classes}), this data has {class_names}"
        )
    load_into(model, extract_state_dict(state, source=source), source=source)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    start_epoch = int(state["epoch"]) + 1
    _set_rng_state(state.get("rng") or {})
    return ResumeState(
        start_epoch=start_epoch,
        best=float(state.get("best_metric", float("-inf"))),
        bad_epochs=int(state.get("bad_epochs", 0)),
        history=list(state.get("history") or [])[:start_epoch],
    )


def save_epoch(
    out: Path,
    model: nn.Module,
    metadata: dict,
    *,
    improved: bool,
    optimizer: torch.optim.Optimizer,
    scheduler: object | None,
    scaler: torch.amp.GradScaler | None,
    best: float,
    bad_epochs: int,
    history: list[dict],
) -> None:
    """Writes ``best.pt`` (when ``improved``), ``last.pt`` and the history of one epoch.

    Args:
        metadata: the checkpoint metadata of this epoch (classes, input size, epoch, metrics...).
        scaler: the AMP scaler, ``None`` without AMP.
    """
    from ..models.checkpoint import save_checkpoint

    if improved:
        save_checkpoint(out / "best.pt", model, **metadata)
    save_checkpoint(
        out / "last.pt", model, **metadata,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict() if scheduler is not None else None,
        scaler=scaler.state_dict() if scaler is not None else None,
        best_metric=best, bad_epochs=bad_epochs, history=json_safe(history), rng=_rng_state(),
    )
    _write_history(out, history)
