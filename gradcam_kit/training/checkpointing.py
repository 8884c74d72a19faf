"""What ``train`` writes per epoch besides the checkpoints: the history logs and the RNG state."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from ..metrics.classification import json_safe

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



def _rng_state() -> dict[str, object]:
    state: dict[str, object] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


