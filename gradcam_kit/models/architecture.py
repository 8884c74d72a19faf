"""Architecture analysis of a ResNet: stages, output shapes, parameters, the Grad-CAM target.

:func:`analyze` finds, for a given input size, each stage of the network
(stem, layer1..layer4, avgpool, fc) with its output shape and parameter count, the total
(25,557,032 = 25.6 M for torchvision's 1000-class ResNet50; 23,512,130 with the 2-class
head of :class:`resnet50.ResNet50FineTuned`), trainable versus frozen parameters, and which
layer Grad-CAM targets; :func:`format_report` prints it and :func:`draw_architecture` draws
the stages as a diagram (PNG). The ``arch`` command (:mod:`gradcam_kit.cli.arch`) shows them.

Output shapes come from one real forward pass of a ``(1, 3, H, W)`` zero image through the
stages in order, so they are exactly what the model computes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..core.layers import canonical_layer_name
from ..core.modes import eval_mode
from ..explainers.cnn import default_target_layer
from .builder import RESNET_BUILDERS, load_model

__all__ = [
    "RESNET_BUILDERS",
    "ArchitectureReport",
    "StageInfo",
    "analyze",
    "build_model",
    "draw_architecture",
    "format_report",
]

STEM = ("conv1", "bn1", "relu", "maxpool")
STAGE_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
# The usual names of ResNet50's stages (He et al., 2016, Table 1).
PAPER_NAMES = {"stem": "conv1 + pool", "layer1": "conv2_x", "layer2": "conv3_x",
               "layer3": "conv4_x", "layer4": "conv5_x", "avgpool": "global avg pool",
               "fc": "classifier"}


@dataclass(frozen=True)
class StageInfo:
    """One stage of the network."""

    name: str
    output_shape: tuple[int, ...]  # (C, H, W) without the batch dimension; (classes,) for fc
    parameters: int
    trainable: int
    blocks: int  # residual blocks in a layer stage, 0 otherwise


@dataclass(frozen=True)
class ArchitectureReport:
    """Result of :func:`analyze`."""

    model_name: str
    input_shape: tuple[int, int, int]
    stages: list[StageInfo]
    total_parameters: int
    trainable_parameters: int
    target_layer: str | None
    target_shape: tuple[int, ...] | None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def frozen_parameters(self) -> int:
        """Parameters with ``requires_grad=False``."""
        return self.total_parameters - self.trainable_parameters

    def to_dict(self) -> dict[str, object]:
        """Plain data, for JSON."""
        data = asdict(self)
        data["frozen_parameters"] = self.frozen_parameters
        return data


def _count(module: nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _stage_modules(model: nn.Module) -> dict[str, list[nn.Module]]:
    missing = [name for name in (*STEM, "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
               if not isinstance(getattr(model, name, None), nn.Module)]
    if missing:
        raise ValueError(
            f"{type(model).__name__} is not a torchvision-style ResNet: it lacks {missing}; "
            "the architecture analysis needs conv1/bn1/relu/maxpool, layer1..layer4, avgpool and fc"
        )
    stages: dict[str, list[nn.Module]] = {"stem": [getattr(model, n) for n in STEM]}
    for name in STAGE_NAMES[1:]:
        stages[name] = [getattr(model, name)]
    return stages


def analyze(
    model: nn.Module,
    input_size: int | Sequence[int] = 224,
    *,
    model_name: str | None = None,
    target_layer: str | None = None,
) -> ArchitectureReport:
    """Stages, output shapes and parameter counts of a torchvision-style ResNet.

    Args:
        model: a torchvision ``ResNet`` (or :class:`resnet50.ResNet50FineTuned`).
        input_size: ``H`` (square) or ``(H, W)`` of the input image.
        model_name: shown in the report; defaults to the class name.
        target_layer: the Grad-CAM layer to report; default
            :func:`gradcam_kit.explainers.cnn.default_target_layer` (the model's own layer,
            else ``layer4`` for a torchvision ResNet).

    Raises:
        ValueError: the model is not ResNet-shaped, or the input is too small for it (the
            stem and four stages downsample 32 times).
    """
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        height, width = input_size, input_size
    elif isinstance(input_size, Sequence) and len(input_size) == 2:
        height, width = int(input_size[0]), int(input_size[1])
    else:
        raise ValueError(f"input_size must be an int or an (H, W) pair, got {input_size!r}")
    if min(height, width) < 32:
        raise ValueError(
            f"input size {height}x{width} is too small: ResNet downsamples 32x, so use at least 32x32"
        )
    stages = _stage_modules(model)
    target = canonical_layer_name(model, target_layer or default_target_layer(model))
    target_module = dict(model.named_modules()).get(target)
    if target_module is None:
        raise ValueError(f"target layer {target!r} is not in the model; see model.named_modules()")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")

    infos: list[StageInfo] = []
    target_shapes: list[tuple[int, ...]] = []
    x = torch.zeros(1, 3, height, width, device=device)
    # One plain forward, stage by stage, in eval mode so BatchNorm statistics stay as they
    # are; the flags are restored afterwards. A temporary hook reads the target's shape.
    handle = target_module.register_forward_hook(
        lambda _module, _inputs, output: target_shapes.append(tuple(output.shape[1:]))
    )
    try:
        with eval_mode(model), torch.no_grad():
            for name, modules in stages.items():
                if name == "fc":
                    x = torch.flatten(x, 1)
                for module in modules:
                    x = module(x)
                total, trainable = (sum(v) for v in zip(*(_count(m) for m in modules), strict=True))
                blocks = len(modules[0]) if name.startswith("layer") else 0
                infos.append(StageInfo(name, tuple(x.shape[1:]), total, trainable, blocks))
    finally:
        handle.remove()
    total, trainable = _count(model)
    target_shape = target_shapes[0] if target_shapes else None
    return ArchitectureReport(
        model_name=model_name or type(model).__name__,
        input_shape=(3, height, width),
        stages=infos,
        total_parameters=total,
        trainable_parameters=trainable,
        target_layer=target,
        target_shape=target_shape,
    )


def _millions(count: int) -> str:
    return f"{count / 1e6:.1f} M"


def _shape(shape: Sequence[int]) -> str:
    return "\u00d7".join(str(s) for s in shape)


def format_report(report: ArchitectureReport) -> str:
    """The printed table."""
    lines = [
        f"{report.model_name}, input {_shape(report.input_shape)}",
        "",
        f"{'stage':<9}{'':<17}{'blocks':>6}  {'output':<16}{'params':>13}{'trainable':>13}",
        f"{'input':<9}{'':<17}{'':>6}  {_shape(report.input_shape):<16}",
    ]
    for stage in report.stages:
        blocks = str(stage.blocks) if stage.blocks else ""
        lines.append(
            f"{stage.name:<9}{PAPER_NAMES.get(stage.name, ''):<17}{blocks:>6}  "
            f"{_shape(stage.output_shape):<16}{stage.parameters:>13,}{stage.trainable:>13,}"
        )
    total, trainable = report.total_parameters, report.trainable_parameters
    share = 100 * trainable / total if total else 0.0
    lines += [
        "",
        f"total parameters:  {total:,} ({_millions(total)})",
        f"trainable:         {trainable:,} ({share:.2f}%)",
        f"frozen:            {report.frozen_parameters:,}",
    ]
    if report.target_layer:
        target = f"Grad-CAM target:   {report.target_layer}"
        if report.target_shape:
            h, w = report.input_shape[1:]
            fh, fw = report.target_shape[-2:]
            scale = f"{h / fh:g}x" if h / fh == w / fw else f"{h / fh:g}x{w / fw:g}"
            target += (
                f" -> {_shape(report.target_shape)} activation, heatmap upsampled "
                f"{scale} to {h}\u00d7{w}"
            )
        lines.append(target)
    return "\n".join(lines)


def draw_architecture(report: ArchitectureReport, path: str | os.PathLike) -> Path:
    """Draws the stages as boxes (name, output shape, parameters) and saves a PNG.

    Frozen stages are grey, trainable ones green; the stage holding the Grad-CAM target
    layer has a red border.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    boxes = [("input", "image", _shape(report.input_shape), None, None)]
    boxes += [
        (s.name, PAPER_NAMES.get(s.name, ""), _shape(s.output_shape), s.parameters, s.trainable)
        for s in report.stages
    ]
    target_stage = (report.target_layer or "").split(".")[0]
    fig, ax = plt.subplots(figsize=(5.6, 1.05 * len(boxes) + 1.2), dpi=120)
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.9, len(boxes) * 1.3)
    ax.axis("off")
    for i, (name, paper, shape, params, trainable) in enumerate(boxes):
        y = (len(boxes) - 1 - i) * 1.3
        if params is None:
            face = "#cfe2f3"
        elif params == 0:
            face = "#eeeeee"
        elif trainable == params:
            face = "#b6d7a8"
        elif trainable == 0:
            face = "#d9d9d9"
        else:
            face = "#ffe599"
        is_target = name == target_stage
        ax.add_patch(FancyBboxPatch(
            (0.6, y), 8.8, 0.95, boxstyle="round,pad=0.05", facecolor=face,
            edgecolor="#cc0000" if is_target else "#444444", linewidth=2.5 if is_target else 1,
        ))
        label = f"{name}" + (f"  ({paper})" if paper else "")
        ax.text(1.0, y + 0.62, label, fontsize=10, fontweight="bold", va="center")
        ax.text(1.0, y + 0.25, shape, fontsize=9, va="center", family="monospace")
        if params is not None:
            ax.text(9.1, y + 0.25, f"{params:,} params", fontsize=8, va="center", ha="right")
        if is_target:
            ax.text(9.1, y + 0.62, f"Grad-CAM: {report.target_layer}", fontsize=8,
                    color="#cc0000", va="center", ha="right")
        if i:
            ax.add_patch(FancyArrowPatch((5.0, y + 1.3), (5.0, y + 1.0), arrowstyle="-|>",
                                         mutation_scale=10, color="#444444"))
    ax.set_title(
        f"{report.model_name}\n{report.total_parameters:,} parameters, "
        f"{report.trainable_parameters:,} trainable, {report.frozen_parameters:,} frozen",
        fontsize=9,
    )
    from matplotlib.patches import Patch

    ax.legend(
        handles=[Patch(facecolor="#b6d7a8", edgecolor="#444444", label="trainable"),
                 Patch(facecolor="#d9d9d9", edgecolor="#444444", label="frozen"),
                 Patch(facecolor="#ffe599", edgecolor="#444444", label="partly frozen"),
                 Patch(facecolor="white", edgecolor="#cc0000", linewidth=2, label="Grad-CAM target")],
        loc="lower center", ncol=4, fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.04),
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


#: The former name of :func:`~gradcam_kit.models.builder.load_model`.
build_model = load_model
