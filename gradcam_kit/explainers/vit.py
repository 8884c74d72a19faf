"""Explaining Vision Transformers: Grad-CAM on tokens, CLS attention and attention rollout.

Written for torchvision's :class:`~torchvision.models.VisionTransformer` (``vit_b_16`` or a
small one built with random weights), at any input size divisible by the patch size that
the model accepts. Three maps:

- :func:`vit_gradcam`: Grad-CAM (or any method of :mod:`gradcam_kit.methods`) at a block's
  tokens, turned into a ``(B, D, H/p, W/p)`` grid by :class:`TokensToGrid` (the CLS token is
  dropped) through the engine's ``reshape=`` hook. The default layer is the last block's
  ``ln_1``: the last block's *output* tokens other than CLS do not reach the head, so their
  gradient is zero.
- :func:`cls_attention_map`: the last block's attention from the CLS token to each patch,
  averaged over heads.
- :func:`attention_rollout`: Abnar & Zuidema (ACL 2020, arXiv:2005.00928): per block, the
  head-averaged attention plus the identity (the residual connection), rows renormalised,
  multiplied through the blocks; the CLS row over the patches is the map.

:class:`AttentionRecorder` captures attention weights without changing the model's outputs:
torchvision's ``EncoderBlock`` asks its ``nn.MultiheadAttention`` for no weights, so a
forward hook recomputes them from the same inputs (``need_weights=True``,
``average_attn_weights=False``) and leaves the module's own output untouched. Hooks are
removed in ``finally``. :func:`patch_grid_figure` draws the seed's patch-grid picture.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..core.engine import CAMEngine, CAMOutput
from ..core.layers import resolve_layers
from ..core.ops import min_max_normalize, upsample
from ..core.types import ClassIdx, LayerSpec, OutputSize, ScoreFn
from ..methods.base import CAMMethod
from ..viz.render import blend, colorize, images_to_tensor, overlay, to_numpy_images

__all__ = [
    "AttentionRecorder",
    "TokensToGrid",
    "attention_rollout",
    "capture_attention",
    "cls_attention_map",
    "default_vit_layer",
    "patch_grid_figure",
    "patch_grid_size",
    "rollout_matrix",
    "vit_gradcam",
    "write_vit_figures",
]

HEAD_FUSIONS = ("mean", "max", "min")


def _patch_size(model: nn.Module) -> int:
    patch = getattr(model, "patch_size", None)
    if isinstance(patch, (tuple, list)):
        if len(set(patch)) != 1:
            raise ValueError(f"non-square patches {tuple(patch)} are not supported")
        patch = patch[0]
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise ValueError(
            f"{type(model).__name__} has no integer `patch_size` attribute; "
            "pass a torchvision VisionTransformer (e.g. torchvision.models.vit_b_16)"
        )
    return patch


def patch_grid_size(model: nn.Module, x: Tensor) -> tuple[int, int]:
    """The ``(rows, cols)`` patch grid of input ``x`` for ``model.patch_size``.

    Raises:
        ValueError: the input's height or width is not a multiple of the patch size.
    """
    patch = _patch_size(model)
    height, width = x.shape[-2:]
    if height % patch or width % patch:
        raise ValueError(
            f"input size {height}x{width} is not divisible by the patch size {patch}; "
            f"resize or pad the image to a multiple of {patch}"
        )
    return height // patch, width // patch


class TokensToGrid:
    """Turns ``(B, T, D)`` tokens into a ``(B, D, rows, cols)`` grid, dropping prefix tokens.

    Args:
        grid: ``(rows, cols)`` of patches.
        prefix_tokens: tokens before the patches (1: the CLS token of torchvision's ViT).
    """

    def __init__(self, grid: tuple[int, int], prefix_tokens: int = 1) -> None:
        self.grid = (int(grid[0]), int(grid[1]))
        self.prefix_tokens = int(prefix_tokens)

    def __call__(self, tokens: Tensor) -> Tensor:
        rows, cols = self.grid
        expected = self.prefix_tokens + rows * cols
        if tokens.ndim != 3 or tokens.shape[1] != expected:
            raise ValueError(
                f"expected tokens of shape (B, {expected}, D) for a {rows}x{cols} patch grid "
                f"plus {self.prefix_tokens} prefix token(s), got {tuple(tokens.shape)}; "
                "target a transformer block (or its norm layer), not the head"
            )
        patches = tokens[:, self.prefix_tokens :]
        return patches.unflatten(1, (rows, cols)).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"TokensToGrid(grid={self.grid}, prefix_tokens={self.prefix_tokens})"


def _encoder_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    encoder = getattr(model, "encoder", None)
    blocks = getattr(encoder, "layers", None)
    if not isinstance(blocks, nn.Module) or not list(blocks.children()):
        raise ValueError(
            f"{type(model).__name__} has no `encoder.layers`; pass a torchvision "
            "VisionTransformer or name the layer explicitly"
        )
    return [(f"encoder.layers.{name}", block) for name, block in blocks.named_children()]


def default_vit_layer(model: nn.Module) -> str:
    """``encoder.layers.<last>.ln_1``: the last block's tokens that attention mixes into CLS."""
    name, block = _encoder_blocks(model)[-1]
    if not isinstance(getattr(block, "ln_1", None), nn.Module):
        raise ValueError(f"block {name!r} has no `ln_1`; name the target layer explicitly")
    return f"{name}.ln_1"


def _attention_modules(model: nn.Module) -> dict[str, nn.MultiheadAttention]:
    found = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.MultiheadAttention)
    }
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no nn.MultiheadAttention module; "
            "pass a torchvision VisionTransformer"
        )
    return found


def vit_gradcam(
    model: nn.Module,
    x: Tensor,
    class_idx: ClassIdx = None,
    *,
    layer: str | nn.Module | None = None,
    method: str | CAMMethod = "gradcam",
    output_size: OutputSize = "input",
    normalize: bool = True,
    score_fn: ScoreFn | None = None,
) -> CAMOutput:
    """A CAM of a Vision Transformer through a token -> patch-grid reshape.

    Args:
        model: a torchvision ``VisionTransformer``.
        x: ``(B, 3, H, W)`` with ``H`` and ``W`` multiples of the patch size.
        class_idx: as for :meth:`~gradcam_kit.core.engine.CAMEngine.explain`.
        layer: the token layer to explain; default :func:`default_vit_layer`.
        method: any method name or instance (``"gradcam"``, ``"layercam"``, ...).
        output_size: ``"input"``, ``(h, w)`` or ``None`` for the patch grid.
        normalize: per-image min-max normalisation.
        score_fn: ``logits -> (B,)`` scores to explain instead of a class.

    Returns:
        A :class:`~gradcam_kit.core.engine.CAMOutput` with one map, keyed by the layer name.
    """
    grid = patch_grid_size(model, x)
    target = default_vit_layer(model) if layer is None else layer
    engine = CAMEngine(model, target, method=method, reshape=TokensToGrid(grid))
    return engine.explain(
        x, class_idx, output_size=output_size, normalize=normalize, score_fn=score_fn
    )


class AttentionRecorder:
    """Records attention weights ``(B, heads, T, T)`` of ``nn.MultiheadAttention`` modules.

    Args:
        model: the transformer.
        layers: attention modules (names or modules) to record; default every
            ``nn.MultiheadAttention`` in ``model``, in forward order.

    Use as a context manager; hooks are removed on exit, also after an exception::

        with AttentionRecorder(model) as recorder:
            logits = model(x)
        weights = recorder.weights  # {name: (B, heads, T, T)}

    The module's own output is never replaced: the weights are recomputed from the same
    inputs by calling the module's ``forward`` (which runs no hooks) with
    ``need_weights=True, average_attn_weights=False``, under ``torch.no_grad()``. Capturing
    therefore costs one more attention product per recorded block and leaves the logits
    bit-for-bit unchanged.

    Raises:
        ValueError: a named layer is not an ``nn.MultiheadAttention`` or the model has none.
    """

    def __init__(
        self, model: nn.Module, layers: LayerSpec | None = None
    ) -> None:
        if layers is None:
            self.modules: dict[str, nn.Module] = dict(_attention_modules(model))
        else:
            self.modules = resolve_layers(model, layers)
            wrong = [n for n, m in self.modules.items() if not isinstance(m, nn.MultiheadAttention)]
            if wrong:
                raise ValueError(
                    f"layer(s) {wrong} are not nn.MultiheadAttention; name the attention "
                    f"modules, e.g. {next(iter(_attention_modules(model)))!r}"
                )
        self.weights: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def attach(self) -> AttentionRecorder:
        """Registers the hooks (no-op if registered) and clears earlier weights."""
        if not self._handles:
            self.weights = {}
            self._handles = [
                module.register_forward_hook(
                    functools.partial(self._record, name), with_kwargs=True
                )
                for name, module in self.modules.items()
            ]
        return self

    def remove(self) -> None:
        """Removes every hook (idempotent); recorded weights stay readable."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def __enter__(self) -> AttentionRecorder:
        return self.attach()

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def _record(
        self, name: str, module: nn.Module, args: tuple, kwargs: dict, output: object
    ) -> None:
        call_kwargs = dict(kwargs, need_weights=True, average_attn_weights=False)
        with torch.no_grad():
            _, weights = module.forward(*args, **call_kwargs)
        self.weights[name] = weights
        # Returning None keeps the module's own output: the forward is unchanged.


def capture_attention(
    model: nn.Module, x: Tensor, layers: str | Sequence[str] | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """One forward pass; returns ``(logits, {attention_name: (B, heads, T, T)})``."""
    recorder = AttentionRecorder(model, layers)
    with recorder:
        logits = model(x)
    return logits, recorder.weights


def _fuse_heads(weights: Tensor, head_fusion: str) -> Tensor:
    if head_fusion == "mean":
        return weights.mean(dim=1)
    if head_fusion == "max":
        return weights.amax(dim=1)
    if head_fusion == "min":
        return weights.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")


def rollout_matrix(attentions: Sequence[Tensor], head_fusion: str = "mean") -> Tensor:
    """Attention rollout ``(B, T, T)`` from per-block weights ``(B, heads, T, T)``, first block first.

    Each block's head-fused attention ``A`` becomes ``(A + I)`` with rows renormalised to
    sum to 1 (the residual connection, Abnar & Zuidema 2020); the rollout is the product
    ``Â_L ... Â_1``. Every row of the result sums to 1.

    Raises:
        ValueError: no blocks, or an unknown ``head_fusion``.
    """
    if not attentions:
        raise ValueError("attention rollout needs the weights of at least one block")
    rollout = None
    for weights in attentions:
        fused = _fuse_heads(weights.detach().float(), head_fusion)
        fused = fused + torch.eye(fused.shape[-1], device=fused.device, dtype=fused.dtype)
        fused = fused / fused.sum(dim=-1, keepdim=True)
        rollout = fused if rollout is None else fused @ rollout
    return rollout


def _cls_to_patches(
    row: Tensor, grid: tuple[int, int], output_size: tuple[int, int] | None, normalize: bool
) -> Tensor:
    maps = row[:, row.shape[1] - grid[0] * grid[1] :].unflatten(1, grid).float()
    if output_size is not None:
        maps = upsample(maps, output_size)
    return min_max_normalize(maps) if normalize else maps


def _size(x: Tensor, output_size: OutputSize) -> tuple[int, int] | None:
    return tuple(x.shape[-2:]) if output_size == "input" else output_size


def cls_attention_map(
    model: nn.Module,
    x: Tensor,
    *,
    layer: str | None = None,
    output_size: OutputSize = "input",
    normalize: bool = True,
) -> CAMOutput:
    """The CLS token's attention to each patch in one block (default the last), head-averaged.

    Returns:
        A :class:`~gradcam_kit.core.engine.CAMOutput` (``class_idx`` is ``None``: attention is not
        class-specific) with one map keyed by the attention module's name.
    """
    grid = patch_grid_size(model, x)
    name = layer if layer is not None else list(_attention_modules(model))[-1]
    logits, weights = capture_attention(model, x, [name])
    (name, attention), = weights.items()
    row = attention.mean(dim=1)[:, 0]
    heatmap = _cls_to_patches(row, grid, _size(x, output_size), normalize)
    return CAMOutput(logits=logits, heatmaps={name: heatmap}, class_idx=None)


def attention_rollout(
    model: nn.Module,
    x: Tensor,
    *,
    head_fusion: str = "mean",
    output_size: OutputSize = "input",
    normalize: bool = True,
) -> CAMOutput:
    """Attention rollout (Abnar & Zuidema, 2020): CLS row of :func:`rollout_matrix` over patches.

    Returns:
        A :class:`~gradcam_kit.core.engine.CAMOutput` with one map keyed ``"rollout"``.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    grid = patch_grid_size(model, x)
    logits, weights = capture_attention(model, x)
    rollout = rollout_matrix(list(weights.values()), head_fusion)
    heatmap = _cls_to_patches(rollout[:, 0], grid, _size(x, output_size), normalize)
    return CAMOutput(logits=logits, heatmaps={"rollout": heatmap}, class_idx=None)


def patch_grid_figure(
    image: object,
    patch_scores: Tensor,
    patch_size: int,
    *,
    alpha: float = 0.5,
    colormap: int | str = "jet",
    grid_color: tuple[int, int, int] = (255, 255, 255),
    path: str | os.PathLike | None = None,
) -> np.ndarray:
    """The image with its patch grid drawn and each patch coloured by its score (seed 001).

    Args:
        image: ``(H, W, 3)`` uint8 RGB (array, tensor or PIL image) with ``H`` and ``W``
            multiples of ``patch_size``.
        patch_scores: ``(rows, cols)`` scores, one per patch (e.g. a map computed with
            ``output_size=None``); min-max normalised here, hot = high.
        patch_size: patch side in pixels.
        alpha: weight of the colours in the blend.
        colormap: OpenCV colormap id or name.
        grid_color: RGB colour of the grid lines.
        path: also write the figure there as a PNG.

    Returns:
        uint8 RGB ``(H, W, 3)`` numpy array.

    Raises:
        ValueError: the image is not ``rows * patch_size`` by ``cols * patch_size``.
    """
    if patch_scores.ndim != 2:
        raise ValueError(f"expected (rows, cols) patch scores, got {tuple(patch_scores.shape)}")
    pixels = _as_pixels(image, patch_scores.device)
    rows, cols = patch_scores.shape
    if tuple(pixels.shape[:2]) != (rows * patch_size, cols * patch_size):
        raise ValueError(
            f"image is {tuple(pixels.shape[:2])} but {rows}x{cols} patches of {patch_size} px "
            f"need {(rows * patch_size, cols * patch_size)}; resize the image to the model input"
        )
    scores = min_max_normalize(patch_scores.detach().float()[None])[0]
    per_pixel = scores.repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)
    figure = blend(pixels, colorize(per_pixel, colormap), alpha)
    height, width = figure.shape[:2]
    on_row = torch.arange(height, device=figure.device) % patch_size == 0
    on_col = torch.arange(width, device=figure.device) % patch_size == 0
    on_row[-1] = on_col[-1] = True  # close the grid on the bottom and right edges
    lines = on_row[:, None] | on_col[None, :]
    color = torch.tensor(grid_color, dtype=torch.uint8, device=figure.device)
    figure = torch.where(lines[..., None], color, figure)
    array = to_numpy_images(figure)
    if path is not None:
        _write_png(path, array)
    return array


def _as_pixels(image: object, device: torch.device) -> Tensor:
    # A uint8 (H, W, 3) tensor stays on the device; anything else goes through render.
    if isinstance(image, Tensor) and image.dtype == torch.uint8 and image.ndim == 3:
        if image.shape[-1] == 3:
            return image.to(device)
    return images_to_tensor(image, device)


def _write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    import cv2

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise RuntimeError(f"could not write {path}; check the directory and the extension")


def write_vit_figures(
    model: nn.Module,
    x: Tensor,
    output_dir: str | os.PathLike,
    *,
    image: Tensor | None = None,
    class_idx: int | None = None,
    alpha: float = 0.5,
) -> dict[str, Path]:
    """Writes seed 001's three figures for the first image of ``x``.

    ``gradcam_overlay.png`` (Grad-CAM at :func:`default_vit_layer`),
    ``patch_attention_overlay.png`` (last block's CLS attention) and ``patch_grid.png``
    (:func:`patch_grid_figure` of the CLS attention).

    Args:
        model: a torchvision ``VisionTransformer``.
        x: ``(B, 3, H, W)`` model input; only the first image is drawn.
        output_dir: folder for the PNGs (created).
        image: uint8 ``(H, W, 3)`` RGB to draw on; default the de-normalised input
            (ImageNet mean/std).
        class_idx: class for Grad-CAM; default the prediction.
        alpha: weight of the heatmap colours.

    Returns:
        ``{figure_name: path}``.
    """
    from ..data.preprocess import denormalize

    first = x[:1]
    canvas = denormalize(first) if image is None else _as_pixels(image, x.device)[None]
    grid = patch_grid_size(model, first)
    gradcam = next(iter(vit_gradcam(model, first, class_idx).heatmaps.values()))
    attention = next(iter(cls_attention_map(model, first, output_size=None).heatmaps.values()))
    output_dir = Path(output_dir)
    paths = {
        "gradcam_overlay": output_dir / "gradcam_overlay.png",
        "patch_attention_overlay": output_dir / "patch_attention_overlay.png",
        "patch_grid": output_dir / "patch_grid.png",
    }
    _write_png(paths["gradcam_overlay"], to_numpy_images(overlay(canvas, gradcam, alpha)[1][0]))
    smooth = upsample(attention, tuple(canvas.shape[1:3]))
    _write_png(
        paths["patch_attention_overlay"], to_numpy_images(overlay(canvas, smooth, alpha)[1][0])
    )
    patch = canvas.shape[1] // grid[0]
    patch_grid_figure(canvas[0], attention[0], patch, alpha=alpha, path=paths["patch_grid"])
    return paths
