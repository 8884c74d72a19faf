"""Watching the heatmaps while the model trains: TensorBoard and the pointing game per epoch.

After every epoch :class:`TrainingMonitor` can

* score the **pointing game** of Grad-CAM at each candidate layer (``layer1`` to ``layer4``
  and ``layer4.2.conv3``) with its **ceiling** on the validation images that have a mask
  (:func:`gradcam_kit.metrics.pointing.evaluate_pointing`); the figures go into the history
  (``history.json`` rows, ``val_pointing_<layer>`` columns of ``history.csv``) and can pick
  ``best.pt`` (``--monitor val_pointing``);
* write a **TensorBoard** log (``--tensorboard DIR``): the losses and metrics of both splits,
  the pointing figures, and a grid of Grad-CAM overlays at the checkpoint's layer over the
  same validation images every epoch (chosen once with the seed, positives with masks
  first): the inputs on top, their overlays below (RGB, hot = red, lesion outlined in green).

TensorBoard is an optional extra (``pip install gradcam-kit[tensorboard]``), imported only
when ``--tensorboard`` is given.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..data.datasets import ImageDataset, load_mask
from ..metrics.pointing import DEFAULT_LAYERS, evaluate_pointing

if TYPE_CHECKING:
    from .data import TrainingData

__all__ = ["GRID_IMAGES", "TrainingMonitor", "build_monitor", "history_columns", "require_summary_writer"]

log = logging.getLogger(__name__)

#: Validation images shown in the TensorBoard overlay grid.
GRID_IMAGES = 8
_MISSING = "--tensorboard needs the tensorboard package: pip install gradcam-kit[tensorboard]"


def require_summary_writer() -> type:
    """``torch.utils.tensorboard.SummaryWriter``.

    Raises:
        RuntimeError: tensorboard is not installed (the message says how to install it).
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RuntimeError(_MISSING) from None
    return SummaryWriter


def _with_masks(samples: Sequence) -> list[int]:
    return [i for i, sample in enumerate(samples) if sample.mask is not None]


class TrainingMonitor:
    """What the run watches after every epoch (see the module docstring).

    Args:
        val_set: the validation dataset (its transform, without augmentation, is reused).
        size: the input size ``(H, W)``.
        mean, std: the normalisation, to draw the inputs back.
        device: where the model is.
        tensorboard: folder of the TensorBoard log; ``None``: no log.
        pointing: score the pointing game per layer every epoch (needs masks).
        layers: the layers scored; the checkpoint's layer is added when missing.
        target_layer: the layer the overlay grid shows (the checkpoint's).
        seed: picks the grid's images.
        batch_size, workers: of the pointing pass's loader.
        grid_images: how many validation images the grid shows.

    Raises:
        RuntimeError: ``tensorboard`` is set but the package is not installed.
    """

    def __init__(
        self,
        val_set: ImageDataset,
        *,
        size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        tensorboard: str | Path | None = None,
        pointing: bool = False,
        layers: Sequence[str] = DEFAULT_LAYERS,
        target_layer: str = "layer4.2.conv3",
        seed: int = 0,
        batch_size: int = 32,
        workers: int = 0,
        grid_images: int = GRID_IMAGES,
    ) -> None:
        self.size, self.mean, self.std, self.device = tuple(size), tuple(mean), tuple(std), device
        self.target_layer = target_layer
        self.layers = list(layers) + ([target_layer] if target_layer not in layers else [])
        self._writer = require_summary_writer()(log_dir=str(tensorboard)) if tensorboard is not None else None
        self._pointing_loader = self._positives_loader(val_set, batch_size, workers) if pointing else None
        self._grid = self._grid_images(val_set, seed, grid_images) if self._writer is not None else None

    @property
    def pointing(self) -> bool:
        """Whether the pointing game is scored every epoch."""
        return self._pointing_loader is not None

    def _positives_loader(self, val_set: ImageDataset, batch_size: int, workers: int):
        chosen = [val_set.samples[i] for i in _with_masks(val_set.samples)]
        dataset = ImageDataset(
            chosen, val_set.classes, val_set.transform, mask_size=self.size, dicom_window=val_set.dicom_window
        )
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)

    def _grid_images(self, val_set: ImageDataset, seed: int, count: int) -> tuple[Tensor, Tensor, Tensor, list[str]]:
        """``(images, labels, masks, names)`` of the grid: a seeded order, images with masks first."""
        order = torch.randperm(len(val_set), generator=torch.Generator().manual_seed(seed)).tolist()
        masked = set(_with_masks(val_set.samples))
        order = [i for i in order if i in masked] + [i for i in order if i not in masked]
        images, labels, masks, names = [], [], [], []
        for index in order[:count]:
            sample = val_set.samples[index]
            item = val_set[index]
            images.append(item[0])
            labels.append(int(item[1]))
            masks.append(
                load_mask(sample.mask, self.size) if sample.mask is not None
                else torch.zeros(self.size, dtype=torch.bool)
            )
            names.append(f"{val_set.classes[sample.label]}/{Path(sample.path).name}")
        if not images:
            return torch.zeros(0, 3, *self.size), torch.zeros(0, dtype=torch.long), torch.zeros(0, *self.size, dtype=torch.bool), []
        self._writer.add_text(
            "overlays/images",
            f"Grad-CAM at {self.target_layer}, ground-truth class; columns, left to right: "
            + ", ".join(f"`{name}`" for name in names),
            0,
        )
        return torch.stack(images), torch.tensor(labels), torch.stack(masks), names

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: Mapping[str, object]) -> dict | None:
        """Scores and logs one finished epoch.

        Args:
            epoch: the epoch's index (0-based; TensorBoard's step is ``epoch + 1``).
            model: the unwrapped ``ResNet50FineTuned`` (its train/eval mode is restored).
            metrics: ``{"train": {...}, "val": {...}, "lr": float}`` as the history logs them.

        Returns:
            the pointing figures (see :func:`pointing_figures`), or ``None`` when the
            pointing game is not scored.
        """
        was_training = model.training
        model.eval()
        try:
            figures = self._score(model) if self.pointing else None
            if self._writer is not None:
                self._log(epoch + 1, model, metrics, figures)
        finally:
            model.train(was_training)
        return figures

    def _score(self, model: nn.Module) -> dict:
        started = time.perf_counter()
        result = evaluate_pointing(
            model, self._pointing_loader, layers=self.layers, device=self.device, progress=False,
            desc="pointing",
        )
        figures = pointing_figures(result)
        figures["seconds"] = round(time.perf_counter() - started, 2)
        return figures

    def _log(self, step: int, model: nn.Module, metrics: Mapping[str, object], figures: dict | None) -> None:
        writer = self._writer
        for split in ("train", "val"):
            for key, value in (metrics.get(split) or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "count":
                    writer.add_scalar(f"{key}/{split}", value, step)
        if metrics.get("lr") is not None:
            writer.add_scalar("lr", metrics["lr"], step)
        if figures is not None:
            for layer in self.layers:
                _scalar(writer, f"val_pointing/{layer}", figures["layers"][layer], step)
                _scalar(writer, f"val_pointing_ceiling/{layer}", figures["ceiling"][layer], step)
            _scalar(writer, "val_pointing/best", figures["best"], step)
            _scalar(writer, "val_pointing/center_baseline", figures["center_baseline"], step)
        if self._grid is not None and len(self._grid[3]):
            writer.add_image(f"overlays/{self.target_layer}", self.overlay_grid(model), step, dataformats="HWC")
        writer.flush()

    def overlay_grid(self, model: nn.Module) -> Tensor:
        """uint8 ``(2 H, N W, 3)`` RGB: the grid's inputs on top, their Grad-CAM overlays below."""
        from ..data.preprocess import denormalize
        from ..viz.layer_strips import draw_mask_outlines
        from ..viz.render import overlay

        images, labels, masks, _ = self._grid
        images = images.to(self.device, memory_format=torch.channels_last)
        class_idx = 0 if model.fc.out_features == 1 else labels.to(self.device)
        was_enabled = model.gradcam_enabled
        model.enable_gradcam_mode()
        try:
            with torch.no_grad():
                result = model.explain(images, class_idx, layers=self.target_layer)
        finally:
            if not was_enabled:
                model.disable_gradcam_mode()
        (heatmaps,) = result.heatmaps.values()
        base = denormalize(images, mean=self.mean, std=self.std)
        _, overlaid = overlay(base, heatmaps)
        draw_mask_outlines(overlaid, masks)
        return torch.cat([torch.cat(list(base), dim=1), torch.cat(list(overlaid), dim=1)], dim=0).cpu()

    def close(self) -> None:
        """Flushes and closes the TensorBoard log (safe to call twice)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _scalar(writer, tag: str, value: float | None, step: int) -> None:
    if value is not None:
        writer.add_scalar(tag, value, step)


def pointing_figures(result: Mapping) -> dict:
    """The per-epoch summary of an :func:`evaluate_pointing` result (Grad-CAM).

    Returns:
        ``{"layers": {layer: pointing}, "ceiling": {layer: ceiling}, "center_baseline",
        "best_layer", "best", "positives"}``; figures are ``None`` without a scored image.
    """
    table = result["pointing_game"]["gradcam"]
    best = result.get("best") or {}
    return {
        "layers": {layer: row["accuracy"] for layer, row in table.items()},
        "ceiling": {layer: row["accuracy"] for layer, row in result["ceiling"].items()},
        "center_baseline": result["center_baseline"]["accuracy"],
        "best_layer": best.get("layer"),
        "best": best.get("accuracy"),
        "positives": result["positives_with_masks"],
    }


def history_columns(row: Mapping) -> dict[str, object]:
    """The ``history.csv`` columns of a history row's ``val_pointing`` figures (none without).

    ``val_pointing_<layer>`` and ``val_pointing_ceiling_<layer>`` per layer, then
    ``val_pointing_best``, ``val_pointing_best_layer`` and ``val_pointing_seconds``.
    """
    figures = row.get("val_pointing")
    if not figures:
        return {}
    columns: dict[str, object] = {f"val_pointing_{layer}": value for layer, value in figures["layers"].items()}
    columns.update({f"val_pointing_ceiling_{layer}": value for layer, value in figures["ceiling"].items()})
    columns.update(
        val_pointing_best=figures.get("best"), val_pointing_best_layer=figures.get("best_layer"),
        val_pointing_seconds=figures.get("seconds"),
    )
    return columns


def build_monitor(
    cfg: argparse.Namespace, data: TrainingData, target_layer: str, device: torch.device, *, main: bool = True
) -> TrainingMonitor | None:
    """The monitor the options ask for, or ``None`` (no ``--tensorboard``, no pointing game).

    Args:
        cfg: the run's options.
        data: from :func:`~.data.load_data` (its validation set, size and normalisation).
        target_layer: the model's Grad-CAM layer (``model.gradcam_target_layer``).
        device: where the model is.
        main: whether this is the process that logs (rank 0); the others only check the options.

    ``--watch-pointing`` defaults to on with ``--tensorboard`` or ``--monitor val_pointing``
    and needs validation images with masks; without masks it is dropped with a warning.

    Raises:
        ValueError: ``--monitor val_pointing`` without masks on the validation split, or
            with ``--no-watch-pointing``.
        RuntimeError: ``--tensorboard`` without the tensorboard package.
    """
    val_set = data.val_set
    by_pointing = cfg.monitor == "val_pointing"
    pointing = cfg.watch_pointing if cfg.watch_pointing is not None else bool(cfg.tensorboard) or by_pointing
    if by_pointing and not pointing:
        raise ValueError("--monitor val_pointing needs the pointing game every epoch; drop --no-watch-pointing")
    if pointing and not _with_masks(val_set.samples):
        if by_pointing:
            raise ValueError(
                "--monitor val_pointing needs validation images with lesion masks (e.g. "
                "<data>/masks/val/<class>/<image>_mask.png, or a mask column in the CSV); none were found"
            )
        if cfg.watch_pointing:
            log.warning("no validation image has a mask: the pointing game is not scored")
        pointing = False
    if not main or (not pointing and not cfg.tensorboard):
        return None
    return TrainingMonitor(
        val_set, size=data.size, mean=data.mean, std=data.std, device=device,
        tensorboard=cfg.tensorboard, pointing=pointing, target_layer=target_layer, seed=cfg.seed,
        batch_size=cfg.batch_size, workers=cfg.workers,
    )

