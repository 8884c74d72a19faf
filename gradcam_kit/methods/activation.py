"""Score-CAM (Wang et al., CVPR Workshops 2020, arXiv:1910.01279): weights from masked forwards.

Score-CAM needs no gradient. Each channel ``k`` of the target activation is upsampled to the
input size, min-max normalised to ``[0, 1]`` and used as a mask on the input; the class
score of the masked input, softmaxed over the channels, is the channel's weight:

``w_k = softmax_k( y_c(x * norm(up(A_k))) )``,  ``map = sum_k w_k A_k``.

This follows pytorch-grad-cam's ``ScoreCAM`` (masks upsampled with ``align_corners=True``
as ``torch.nn.UpsamplingBilinear2d`` does, raw logits softmaxed over channels), so maps
agree with it to 1e-4. All ``B * C`` masked inputs are scored in chunks of ``batch_size``
images on the input's device: memory is bounded by one chunk, whatever ``B`` and ``C``.

The method is an ordinary :class:`~gradcam_kit.methods.CAMMethod`
(``get_method("scorecam")``): the engine captures the activation with one forward pass and
then hands the method the model and the input through :meth:`ScoreCAM.bind`. ReLU,
upsampling and normalisation of the final map are the engine's, as for every method.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..core.modes import eval_mode
from ..core.scores import select_class
from ..core.types import ClassIdx, LayerSpec, OutputSize, ScoreFn
from .base import CAMMethod

__all__ = ["ClassActivationMap", "ScoreCAM", "TopKScoreCAM", "score_cam"]



class ClassActivationMap(CAMMethod):
    """CAM (Zhou et al., CVPR 2016, arXiv:1512.04150): the classifier's weights, no gradient.

    Valid for a global-average-pool + linear head, explained at the layer that feeds the
    pool (``layer4`` for a ResNet). ``head`` is that linear layer. For a single-logit head
    class ``1`` uses the weights as they are and class ``0`` negated, as the scores do
    (:func:`gradcam_kit.core.scores.select_class`).
    """

    name = "cam"
    needs_gradient = False

    def __init__(self, head: nn.Linear) -> None:
        if not isinstance(head, nn.Linear):
            raise TypeError(
                f"CAM needs the model's final nn.Linear (e.g. model.fc), got {type(head).__name__}"
            )
        self.head = head

    def __call__(self, activation: Tensor, gradient: Tensor | None, class_idx: Tensor) -> Tensor:
        if activation.shape[1] != self.head.in_features:
            raise ValueError(
                f"CAM needs the layer that feeds the pooled linear head: it has "
                f"{activation.shape[1]} channels, the head expects {self.head.in_features} "
                "(for a ResNet use target layer 'layer4')"
            )
        weight = self.head.weight.detach().to(activation.dtype)
        weights = select_class(weight.expand(activation.shape[0], -1, -1), class_idx)
        return torch.einsum("bc,bchw->bhw", weights, activation)

    def __repr__(self) -> str:
        return f"ClassActivationMap(head={self.head})"


class ScoreCAM(CAMMethod):
    """Score-CAM: softmaxed class scores of channel-masked inputs weight the channels.

    Args:
        batch_size: masked images per forward pass (pytorch-grad-cam uses 16). Larger is
            faster and takes more memory; the maps do not depend on it.
        align_corners: how the masks are upsampled; ``True`` (pytorch-grad-cam's choice) or
            ``False`` (half-pixel centres, as the engine upsamples the final maps).
        progress: show a progress bar over the chunks.

    Raises:
        ValueError: ``batch_size`` is not a positive int.
    """

    name = "scorecam"
    needs_gradient = False

    def __init__(
        self, batch_size: int = 16, *, align_corners: bool = True, progress: bool = False
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive int (masked images per forward), got {batch_size!r}"
            )
        self.batch_size = batch_size
        self.align_corners = align_corners
        self.progress = progress
        self._model: nn.Module | None = None
        self._input: Tensor | None = None
        self._forward: Callable[[Tensor], Tensor] | None = None
        self._score_fn: ScoreFn | None = None

    def bind(
        self,
        model: nn.Module,
        x: Tensor,
        forward: Callable[[Tensor], Tensor],
        score_fn: ScoreFn | None = None,
    ) -> ScoreCAM:
        """A copy of this method that scores masked versions of ``x`` with ``forward``.

        The engine calls this once per explain call, so the shared instance keeps no state.
        """
        bound = copy.copy(self)
        bound._model, bound._input, bound._forward, bound._score_fn = model, x, forward, score_fn
        return bound

    def __call__(self, activation: Tensor, gradient: Tensor | None, class_idx: Tensor) -> Tensor:
        weights = self.channel_weights(activation, class_idx)
        return torch.einsum("bc,bchw->bhw", weights, activation)

    def channel_weights(self, activation: Tensor, class_idx: Tensor) -> Tensor:
        """``(B, C)`` softmaxed scores of the ``B * C`` channel-masked inputs.

        Raises:
            RuntimeError: the method was not bound to a model and input (see :meth:`bind`).
        """
        if self._input is None or self._forward is None or self._model is None:
            raise RuntimeError(
                "Score-CAM re-runs the model on masked inputs: use it through the engine, "
                "e.g. CAMEngine(model, layer, method='scorecam').explain(x) or "
                "gradcam_kit.explainers.cnn.explain(model, x, method='scorecam')"
            )
        # Imported here: the engine imports the methods, which import this module.
        from tqdm.auto import tqdm

        from ..core.ops import min_max_normalize, upsample

        x = self._input.detach()
        batch, channels = activation.shape[:2]
        if x.shape[0] != batch:
            raise ValueError(
                f"the activation has batch {batch} but the input has {x.shape[0]}; "
                "bind Score-CAM to the input that produced the activation"
            )
        size = tuple(x.shape[-2:])
        channel_maps = activation.detach().flatten(0, 1)  # (B*C, h, w), image-major
        image_of = torch.arange(batch, device=x.device).repeat_interleave(channels)
        class_of = class_idx.to(x.device)[image_of]
        total = batch * channels
        scores = torch.empty(total, device=x.device, dtype=torch.float32)
        starts = range(0, total, self.batch_size)
        with torch.no_grad(), eval_mode(self._model):
            for start in tqdm(starts, desc="Score-CAM", disable=not self.progress, leave=False):
                stop = min(start + self.batch_size, total)
                masks = upsample(channel_maps[start:stop], size, align_corners=self.align_corners)
                masks = min_max_normalize(masks).to(x.dtype)
                masked = x[image_of[start:stop]] * masks[:, None]
                scores[start:stop] = self._scores(self._forward(masked), class_of[start:stop])
        return torch.softmax(scores.view(batch, channels), dim=1)

    def _scores(self, logits: Tensor, class_idx: Tensor) -> Tensor:
        from ..core.scores import explained_scores

        # The model's output may be a dict or a tuple when a score_fn picks the score.
        return explained_scores(logits, class_idx, self._score_fn, batch=class_idx.shape[0]).float()

    def __repr__(self) -> str:
        return (
            f"ScoreCAM(batch_size={self.batch_size}, align_corners={self.align_corners}, "
            f"progress={self.progress})"
        )


def score_cam(
    model: nn.Module,
    x: Tensor,
    target_layers: LayerSpec,
    class_idx: ClassIdx = None,
    *,
    batch_size: int = 16,
    align_corners: bool = True,
    output_size: OutputSize = "input",
    normalize: bool = True,
    progress: bool = False,
    top_k: int | None = None,
    rank_by: str = "gradcam",
):
    """Score-CAM maps of ``x`` at ``target_layers`` (one capture forward + masked forwards).

    Args:
        model: the network; its train/eval flags are restored after the masked forwards.
        x: ``(B, C, H, W)`` input batch.
        target_layers: a layer name or module, or a sequence of them.
        class_idx: as for :meth:`gradcam_kit.core.engine.CAMEngine.explain`.
        batch_size: masked images per forward pass.
        align_corners: mask upsampling (see :class:`ScoreCAM`).
        output_size: ``"input"``, ``(h, w)`` or ``None`` for the layer's resolution.
        normalize: per-image min-max normalisation of the final maps.
        progress: show a progress bar over the chunks.
        top_k: score only the ``top_k`` channels of each image ranked by ``rank_by`` (see
            :class:`TopKScoreCAM`); ``None`` scores every channel.
        rank_by: ``"gradcam"`` or ``"activation"``, with ``top_k``.

    Returns:
        A :class:`~gradcam_kit.core.engine.CAMOutput`.
    """
    from ..core.engine import CAMEngine

    if top_k is None:
        method = ScoreCAM(batch_size, align_corners=align_corners, progress=progress)
    else:
        method = TopKScoreCAM(
            top_k, rank_by=rank_by, batch_size=batch_size, align_corners=align_corners,
            progress=progress,
        )
    return CAMEngine(model, target_layers, method=method).explain(
        x, class_idx, output_size=output_size, normalize=normalize
    )


class TopKScoreCAM(ScoreCAM):
    """Score-CAM on the ``top_k`` channels that matter most: ``C / top_k`` times cheaper.

    Full Score-CAM scores every channel with a masked forward (2048 at ResNet50's
    ``layer4``: about 100 s per image on two CPU cores). Most of its softmax weight lands on
    few channels, and the channels that weigh most in the final map are those that are
    both active and relevant to the class. This variant ranks the channels of each image,
    scores only the ``top_k`` best with masked forwards, and gives the others weight 0:

    - ``rank_by="gradcam"`` (default): by the channel's share of the Grad-CAM map,
      ``mean_ij(dY_c/dA_k) * mean_ij(A_k)``; needs one gradient at the target layer, which
      the engine takes from the same forward pass (no extra forward);
    - ``rank_by="activation"``: by ``mean_ij(A_k)``, no gradient at all.

    The softmax runs over the scored channels only, which scales the scored channels'
    weights by one factor per image; the normalised map does not change for that. The map
    equals full Score-CAM's when the skipped channels carry no softmax weight; the
    measured agreement is in docs/PERFORMANCE.md.

    Args:
        top_k: channels scored per image (all of them when the layer has fewer).
        rank_by: ``"gradcam"`` or ``"activation"``.
        batch_size: masked images per forward pass, as for :class:`ScoreCAM`.
        align_corners: mask upsampling, as for :class:`ScoreCAM`.
        progress: show a progress bar over the chunks.

    Raises:
        ValueError: ``top_k`` is not a positive int, or an unknown ``rank_by``.
    """

    name = "scorecam-topk"
    RANKINGS = ("gradcam", "activation")

    def __init__(
        self,
        top_k: int = 64,
        *,
        rank_by: str = "gradcam",
        batch_size: int = 64,
        align_corners: bool = True,
        progress: bool = False,
    ) -> None:
        super().__init__(batch_size, align_corners=align_corners, progress=progress)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int (channels to score), got {top_k!r}")
        if rank_by not in self.RANKINGS:
            raise ValueError(f"rank_by must be one of {self.RANKINGS}, got {rank_by!r}")
        self.top_k = top_k
        self.rank_by = rank_by
        # Read by the engine: a gradient at the target layer only when ranking by Grad-CAM.
        self.needs_gradient = rank_by == "gradcam"

    def __call__(self, activation: Tensor, gradient: Tensor | None, class_idx: Tensor) -> Tensor:
        activation = activation.detach()
        importance = activation.mean(dim=(2, 3))
        if self.rank_by == "gradcam":
            importance = importance * gradient.detach().mean(dim=(2, 3))
        k = min(self.top_k, activation.shape[1])
        channels = importance.topk(k, dim=1).indices  # (B, k)
        chosen = activation.gather(1, channels[:, :, None, None].expand(-1, -1, *activation.shape[2:]))
        weights = self.channel_weights(chosen, class_idx)  # (B, k), masked forwards of x
        return torch.einsum("bk,bkhw->bhw", weights, chosen)

    def __repr__(self) -> str:
        return (
            f"TopKScoreCAM(top_k={self.top_k}, rank_by={self.rank_by!r}, "
            f"batch_size={self.batch_size}, align_corners={self.align_corners}, "
            f"progress={self.progress})"
        )
