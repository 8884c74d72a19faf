"""TopKScoreCAM: Score-CAM's masked forwards for the top-k channels of each image only."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gradcam_kit.core.engine import CAMEngine
from gradcam_kit.methods.activation import ScoreCAM, TopKScoreCAM, score_cam

LAYER = "layer1"  # 64 channels at 8x8 for a 32x32 input
CLASSES = [3, 7]


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _activation(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    captured = {}
    handle = model.get_submodule(LAYER).register_forward_hook(lambda m, i, o: captured.setdefault("a", o))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return captured["a"]


@pytest.mark.parametrize("rank_by", ["gradcam", "activation"])
def test_all_channels_is_full_scorecam(model, x, rank_by):
    full = CAMEngine(model, LAYER, method=ScoreCAM(batch_size=64)).explain(x, CLASSES).heatmaps[LAYER]
    top = score_cam(model, x, LAYER, CLASSES, batch_size=50, top_k=64, rank_by=rank_by).heatmaps[LAYER]
    torch.testing.assert_close(top, full, atol=1e-5, rtol=0)


def test_scores_only_the_top_k_channels_and_renormalises_their_weights(model, x):
    activation = _activation(model, x)
    classes = torch.tensor(CLASSES)
    full_weights = ScoreCAM(batch_size=64).bind(model, x, model).channel_weights(activation, classes)
    calls: list[int] = []

    def counting_forward(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape[0])
        return model(batch)

    method = TopKScoreCAM(16, rank_by="activation", batch_size=64).bind(model, x, counting_forward)
    got = method(activation, None, classes)

    assert sum(calls) == 2 * 16  # B x k masked images, not B x 64
    chosen = activation.mean(dim=(2, 3)).topk(16, dim=1).indices
    kept = full_weights.gather(1, chosen)
    maps = activation.gather(1, chosen[:, :, None, None].expand(-1, -1, 8, 8))
    # Softmax over the scored channels = full Score-CAM's weights renormalised over them.
    expected = torch.einsum("bk,bkhw->bhw", kept / kept.sum(1, keepdim=True), maps)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_ranking_by_activation_builds_no_graph_and_by_gradcam_takes_one_gradient(model):
    assert TopKScoreCAM(8, rank_by="activation").needs_gradient is False
    assert TopKScoreCAM(8, rank_by="gradcam").needs_gradient is True
    assert ScoreCAM.needs_gradient is False  # the class attribute of full Score-CAM is untouched


def test_a_quarter_of_the_channels_keeps_most_of_the_map(model, x):
    full = score_cam(model, x, LAYER, CLASSES, batch_size=64).heatmaps[LAYER]
    top = score_cam(model, x, LAYER, CLASSES, batch_size=64, top_k=16).heatmaps[LAYER]
    for a, b in zip(full.flatten(1), top.flatten(1)):
        assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.9
    assert torch.isfinite(top).all() and float(top.amin()) >= 0 and float(top.amax()) <= 1


def test_restores_train_mode_after_the_masked_forwards(model, x):
    training = copy.deepcopy(model).train()
    score_cam(training, x, LAYER, 3, top_k=4)
    assert all(m.training for m in training.modules())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"top_k": 0}, "top_k must be a positive int"), ({"top_k": 2.5}, "top_k must be a positive int"),
     ({"top_k": 4, "rank_by": "gradient"}, "rank_by must be one of")],
)
def test_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TopKScoreCAM(**kwargs)
