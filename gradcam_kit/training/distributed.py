"""DistributedDataParallel plumbing for ``train`` and ``evaluate`` under ``torchrun``.

``torchrun --nproc_per_node=N -m gradcam_kit train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them
and joins the process group with NCCL on GPUs and gloo on CPU. Without them everything
runs in one process and these helpers do nothing.

Metrics are computed on the predictions of *all* ranks: :func:`gather_predictions`
collects ``(index, logits, target)`` from every rank and keeps one row per sample index,
so the numbers equal a single-process computation on the same predictions, even when
``DistributedSampler`` pads the last shard with repeated samples. Logging and
checkpoints happen on rank 0 only (:attr:`DistributedContext.is_main`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Sampler

from ..core.device import resolve_device

__all__ = [
    "DistributedContext",
    "ShardSampler",
    "all_gather_variable",
    "barrier",
    "broadcast_buffers",
    "broadcast_object",
    "cleanup",
    "gather_predictions",
    "init_distributed",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands.

    Attributes:
        rank: global rank (0 without torchrun).
        world_size: number of processes (1 without torchrun).
        local_rank: rank on this machine (picks the GPU).
        device: the device this process computes on.
        backend: ``"nccl"``, ``"gloo"`` or ``None`` when not distributed.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def enabled(self) -> bool:
        """Whether a process group is in use."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes checkpoints."""
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistributedContext:
    """Joins the torchrun process group if there is one, else returns a one-process context.

    Args:
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            Under torchrun, ``"cuda"`` means the GPU of this process's ``LOCAL_RANK``.

    Raises:
        ValueError: not a device name.
        RuntimeError: CUDA asked for but unavailable.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistributedContext(0, 1, 0, target, None)
    backend = "nccl" if target.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, target, backend)


def cleanup(context: DistributedContext) -> None:
    """Leaves the process group (no-op without one)."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    """Waits for every rank (no-op without a process group)."""
    if context.enabled:
        dist.barrier()


def broadcast_object(context: DistributedContext, value: object) -> object:
    """Rank 0's ``value`` (a small picklable object) on every rank; ``value`` itself without a
    process group."""
    if not context.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=context.device if context.device.type == "cuda" else None)
    return box[0]


def broadcast_buffers(context: DistributedContext, model: torch.nn.Module) -> None:
    """Copies rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers *before* each forward, so after the last training step each
    rank holds the statistics of its own last batch; evaluating without this would score
    a slightly different model on each rank than the one rank 0 saves.
    """
    if context.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


class ShardSampler(Sampler[int]):
    """Rank ``r`` of ``W`` reads indices ``r, r + W, ...``: every sample exactly once, no padding.

    For evaluation, where ranks may hold different numbers of samples (no backward pass
    has to stay in step). Training uses ``DistributedSampler``.
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def all_gather_variable(context: DistributedContext, tensor: Tensor) -> Tensor:
    """Concatenates ``tensor`` (same trailing shape, any first dimension) from all ranks, in rank order."""
    if not context.enabled:
        return tensor
    # gloo gathers CPU tensors, NCCL device tensors: send from the process's own device.
    tensor = tensor.contiguous().to(context.device)
    size = torch.tensor([tensor.shape[0]], device=context.device)
    sizes = [torch.zeros_like(size) for _ in range(context.world_size)]
    dist.all_gather(sizes, size)
    longest = int(torch.stack(sizes).max())
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=context.device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(context.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(n)] for g, n in zip(gathered, sizes)])


def gather_predictions(
    context: DistributedContext, indices: Tensor, logits: Tensor, targets: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Predictions of all ranks, one row per sample index, sorted by index.

    Args:
        indices: ``(N,)`` dataset indices of this rank's rows.
        logits: ``(N, K)``.
        targets: ``(N,)``.

    Returns:
        ``(indices, logits, targets)`` over the whole dataset. Repeated indices (the
        padding of ``DistributedSampler``) are kept once.
    """
    indices = all_gather_variable(context, indices.long())
    logits = all_gather_variable(context, logits.float())
    targets = all_gather_variable(context, targets.long())
    order = torch.argsort(indices, stable=True)
    indices, logits, targets = indices[order], logits[order], targets[order]
    first = torch.ones_like(indices, dtype=torch.bool)
    first[1:] = indices[1:] != indices[:-1]
    return indices[first], logits[first], targets[first]
