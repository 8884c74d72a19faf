"""train under torchrun with 2 CPU processes (gloo): sharding, metrics and checkpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradcam_kit.data.datasets import ImageDataset
from gradcam_kit.data.preprocess import build_transform
from gradcam_kit.data.synthetic import write_image_folder
from gradcam_kit.metrics.classification import classification_metrics
from gradcam_kit.training.distributed import (
    DistributedContext,
    ShardSampler,
    gather_predictions,
    init_distributed,
)
from gradcam_kit.training.train import SEEN_ENV, BalancedBatchSampler
from resnet50 import ResNet50FineTuned

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_single_process_context_and_helpers(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = init_distributed("cpu")
    assert not context.enabled and context.is_main and context.world_size == 1
    # DistributedSampler pads with repeats: gathering keeps one row per sample index
    indices = torch.tensor([3, 1, 0, 3])
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    kept, kept_logits, kept_targets = gather_predictions(context, indices, logits, torch.tensor([1, 0, 0, 1]))
    assert kept.tolist() == [0, 1, 3] and kept_targets.tolist() == [0, 0, 1]
    torch.testing.assert_close(kept_logits, logits[[2, 1, 0]])
    assert sorted(i for r in range(3) for i in ShardSampler(7, r, 3)) == list(range(7))
    batches = list(BalancedBatchSampler(range(9), 4))
    assert [len(b) for b in batches] == [3, 3, 3]  # never a batch of one for BatchNorm


@pytest.mark.slow
@pytest.mark.subprocess
def test_torchrun_two_cpu_processes(tmp_path):
    data = tmp_path / "data"
    write_image_folder(data, {"train": 12, "val": 5}, size=32, seed=0, progress=False)
    out, seen = tmp_path / "run", tmp_path / "seen"
    env = dict(os.environ, OMP_NUM_THREADS="1", **{SEEN_ENV: str(seen)})
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", "-m", "gradcam_kit", "train",
        "--data", str(data), "--out", str(out), "--weights", "none", "--image-size", "32",
        "--epochs", "1", "--batch-size", "3", "--no-progress", "--device", "cpu",
    ]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("epoch 1/1") == 1  # rank 0 logs alone
    assert "2 process(es)" in result.stdout

    # every training sample seen exactly once in the epoch, split over both ranks
    ranks = [json.loads((seen / f"seen_epoch0_rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 6
    assert sorted(ranks[0] + ranks[1]) == list(range(12))
    history = json.loads((out / "history.json").read_text())
    assert history[0]["train"]["count"] == 12 and history[0]["val"]["count"] == 5

    # the logged metrics equal one process's computation with the saved model
    model = ResNet50FineTuned.from_checkpoint(out / "best.pt").eval()
    state = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    val = ImageDataset.from_source(data, "val", transform=build_transform(32, mean=state["mean"], std=state["std"]))
    images = torch.stack([val[i][0] for i in range(len(val))])
    with torch.no_grad():
        logits = model(images)
    expected = classification_metrics(logits, val.labels)
    logged = history[0]["val"]
    assert logged["confusion_matrix"] == expected["confusion_matrix"]
    for key in ("accuracy", "sensitivity", "specificity", "auroc"):
        assert logged[key] == expected[key] or abs(logged[key] - expected[key]) < 1e-6, key
    assert isinstance(DistributedContext(0, 1, 0, torch.device("cpu"), None).device, torch.device)
