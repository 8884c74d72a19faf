"""Faithfulness metrics on models whose right answer is known by construction."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import resnet18

from gradcam_kit.metrics.faithfulness import (
    auc,
    average_drop,
    cam_explainer,
    class_probability,
    confidence_scores,
    deletion_curve,
    increase_in_confidence,
    insertion_curve,
    model_randomization,
    pixel_ranks,
    randomization_cascade,
    spearman_correlation,
)

SIDE = 8


class InformativeRegion(nn.Module):
    """Two logits: class 0 is always 0, class 1 is ``4 * mean of channel 0 over the left half``.

    Only the left half of the image matters, so on an all-ones image a map pointing at the
    left half is the perfect explanation and its complement the worst one.
    """

    def __init__(self) -> None:
        super().__init__()
        region = torch.zeros(SIDE, SIDE)
        region[:, : SIDE // 2] = 1
        self.register_buffer("region", region)

    def forward(self, x: Tensor) -> Tensor:
        score = 4 * (x[:, 0] * self.region).sum(dim=(1, 2)) / self.region.sum()
        return torch.stack([torch.zeros_like(score), score], dim=1)


@pytest.fixture
def setup() -> tuple[nn.Module, Tensor, Tensor]:
    model = InformativeRegion()
    images = torch.ones(2, 3, SIDE, SIDE)
    perfect = model.region.expand(2, SIDE, SIDE).clone()
    return model, images, perfect


def test_deletion_curve_matches_hand_computed_values(setup):
    model, images, perfect = setup
    # 8 steps of 8 pixels: the perfect map removes the 32 informative pixels in 4 steps,
    # the score falls by 1 per step; the inverted map removes them in the last 4 steps.
    k = torch.arange(9.0)
    expected_perfect = torch.sigmoid((4 - k).clamp_min(0))
    expected_inverted = torch.sigmoid((8 - k).clamp_max(4))
    good = deletion_curve(model, images, perfect, 1, steps=8)
    bad = deletion_curve(model, images, 1 - perfect, 1, steps=8)
    torch.testing.assert_close(good, expected_perfect.expand(2, 9))
    torch.testing.assert_close(bad, expected_inverted.expand(2, 9))
    assert bool((auc(good) < auc(bad) - 0.2).all())


def test_insertion_is_the_reverse_of_deletion(setup):
    model, images, perfect = setup
    k = torch.arange(9.0)
    good = insertion_curve(model, images, perfect, 1, steps=8, substrate="zero")
    bad = insertion_curve(model, images, 1 - perfect, 1, steps=8, substrate="zero")
    torch.testing.assert_close(good, torch.sigmoid(k.clamp_max(4)).expand(2, 9))
    torch.testing.assert_close(bad, torch.sigmoid((k - 4).clamp_min(0)).expand(2, 9))
    assert bool((auc(good) > auc(bad) + 0.2).all())
    # The default substrate is a blurred copy: column 0 is the model on that copy.
    from torchvision.transforms.v2.functional import gaussian_blur

    textured = torch.rand(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    blurred_start = insertion_curve(model, textured, perfect, 1, steps=4)[:, 0]
    with torch.no_grad():
        expected = model(gaussian_blur(textured, [3, 3], [3 / 2.2] * 2)).softmax(1)[:, 1]
    torch.testing.assert_close(blurred_start, expected)


def test_curves_do_not_depend_on_chunking_or_batching():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3)).eval()
    images = torch.randn(3, 3, SIDE, SIDE)
    saliency = torch.rand(3, 4, 4)  # a layer-resolution map is resized to the input
    whole = deletion_curve(model, images, saliency, steps=5, chunk_size=64)
    chunked = deletion_curve(model, images, saliency, steps=5, chunk_size=2)
    alone = torch.cat([deletion_curve(model, images[i : i + 1], saliency[i : i + 1], steps=5)
                       for i in range(3)])
    torch.testing.assert_close(whole, chunked)
    torch.testing.assert_close(whole, alone)
    # Column 0 of a deletion curve is the intact image's probability of the predicted class.
    with torch.no_grad():
        probs = model(images).softmax(1).amax(1)
    torch.testing.assert_close(whole[:, 0], probs)


def test_auc_is_the_trapezoid_rule():
    torch.testing.assert_close(auc(torch.tensor([1.0, 0.5, 0.0])), torch.tensor(0.5))
    torch.testing.assert_close(auc(torch.tensor([[0.0, 1.0, 1.0]])), torch.tensor([0.75]))
    with pytest.raises(ValueError, match="at least 2 points"):
        auc(torch.tensor([1.0]))


def test_pixel_ranks_put_the_most_salient_pixel_first():
    ranks = pixel_ranks(torch.tensor([[[0.1, 0.9], [0.5, 0.9]]]))
    assert ranks.tolist() == [[3, 0, 2, 1]]  # ties keep raster order


def test_average_drop_and_increase_on_hand_computed_numbers():
    original = torch.tensor([0.8, 0.5, 0.2, 0.4])
    explained = torch.tensor([0.4, 0.6, 0.2, 0.1])
    # drops: 0.4/0.8 = 0.5, 0 (increase), 0, 0.3/0.4 = 0.75 -> mean 1.25 / 4 = 0.3125
    torch.testing.assert_close(average_drop(original, explained), torch.tensor(31.25))
    torch.testing.assert_close(increase_in_confidence(original, explained), torch.tensor(25.0))
    with pytest.raises(ValueError, match="same shape"):
        average_drop(original, explained[:2])


def test_confidence_scores_of_perfect_and_inverted_maps(setup):
    model, images, perfect = setup
    full = torch.sigmoid(torch.tensor(4.0))
    y, o = confidence_scores(model, images, perfect, 1)
    torch.testing.assert_close(o, y)  # the map keeps every informative pixel
    assert float(average_drop(y, o)) == 0.0
    y, o = confidence_scores(model, images, 1 - perfect, 1)
    torch.testing.assert_close(o, torch.full((2,), 0.5))  # the informative pixels are gone
    torch.testing.assert_close(average_drop(y, o), 100 * (full - 0.5) / full)
    assert float(increase_in_confidence(y, o)) == 0.0


def test_class_probability_handles_single_logit_heads():
    logits = torch.tensor([[2.0], [-1.0]])
    probs = class_probability(logits, torch.tensor([1, 0]))
    torch.testing.assert_close(probs, torch.sigmoid(torch.tensor([2.0, 1.0])))


def test_bad_inputs_are_rejected(setup):
    model, images, perfect = setup
    with pytest.raises(ValueError, match="one \\(H, W\\) saliency map per image"):
        deletion_curve(model, images, perfect[:1])
    with pytest.raises(ValueError, match="steps must be a positive int"):
        deletion_curve(model, images, perfect, steps=0)
    with pytest.raises(ValueError, match="chunk_size"):
        insertion_curve(model, images, perfect, chunk_size=0)
    with pytest.raises(ValueError, match="substrate must be"):
        insertion_curve(model, images, perfect, substrate="noise")


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(0)
    a = torch.randint(0, 4, (3, 20)).float()  # many ties, like ReLU'd maps
    b = torch.randint(0, 5, (3, 20)).float()
    expected = torch.tensor([stats.spearmanr(x, y).statistic for x, y in zip(a, b, strict=True)]).float()
    torch.testing.assert_close(spearman_correlation(a, b), expected)
    torch.testing.assert_close(spearman_correlation(a, a), torch.ones(3))
    # A constant map has no ranking: defined as 0, never NaN.
    assert spearman_correlation(torch.zeros(1, 5), torch.rand(1, 5)).tolist() == [0.0]


def test_randomization_makes_gradcam_change_but_not_an_edge_detector():
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=3).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(2, 3, 64, 64)
    assert randomization_cascade(model) == ["fc", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]

    result = model_randomization(model, images, cam_explainer("layer3"), cascade=["fc", "layer4", "layer3"])
    assert result.stages == ["fc", "layer4", "layer3"]
    assert result.correlations.shape == (2, 3)
    # Grad-CAM depends on the weights: once fc..layer3 are random, its maps no longer
    # rank pixels like the original ones.
    assert bool((result.correlations[:, -1] < 0.5).all()), result.correlations

    # A "saliency map" that ignores the model (image intensity) does not change at all.
    def edge_detector(_model: nn.Module, x: Tensor, _classes: Tensor) -> Tensor:
        return x.abs().sum(1)

    control = model_randomization(model, images, edge_detector, cascade=["fc", "layer4"])
    torch.testing.assert_close(control.correlations, torch.ones(2, 2))
    # The model itself is untouched (the cascade runs on a deep copy).
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_randomization_rejects_unknown_stages():
    model = resnet18(weights=None, num_classes=2).eval()
    with pytest.raises(ValueError, match="unknown stage"):
        model_randomization(model, torch.randn(1, 3, 32, 32), cam_explainer("layer4"), cascade=["head"])
    with pytest.raises(ValueError, match="empty"):
        model_randomization(model, torch.randn(1, 3, 32, 32), cam_explainer("layer4"), cascade=[])
