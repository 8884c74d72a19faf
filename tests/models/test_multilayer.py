"""The integrated model: method chosen at construction or per call; several layers at once.

``forward(x, return_gradcam=True, gradcam_layers=[...])`` must cost one forward pass and one
gradient call for all layers together, and give each layer the map a single-layer call
gives.
"""

from __future__ import annotations

import pytest
import torch

from gradcam_kit.methods import GradCAMPlusPlus

LAYERS = ["layer1", "layer2", "layer3", "layer4"]


class _Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: object) -> None:
        self.calls += 1


@pytest.fixture
def count_autograd_grad(monkeypatch: pytest.MonkeyPatch) -> _Counter:
    counter = _Counter()
    original = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        counter()
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    return counter


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_all_layers_in_one_forward_and_one_gradient_call(
    shared_model, images, count_autograd_grad, method
):
    forwards = _Counter()
    handle = shared_model.conv1.register_forward_pre_hook(lambda module, args: forwards())
    try:
        logits, heatmaps = shared_model(
            images, return_gradcam=True, gradcam_layers=LAYERS, gradcam_method=method
        )
    finally:
        handle.remove()
    assert forwards.calls == 1
    assert count_autograd_grad.calls == 1
    assert list(heatmaps) == LAYERS
    for heatmap in heatmaps.values():
        assert heatmap.shape == (2, 64, 64)
        assert float(heatmap.amax()) == pytest.approx(1.0)
    torch.testing.assert_close(logits, shared_model(images))


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_each_layer_equals_its_single_layer_call(shared_model, images, method):
    _, together = shared_model(
        images, return_gradcam=True, gradcam_layers=LAYERS, gradcam_method=method
    )
    for layer in LAYERS:
        _, alone = shared_model(
            images, return_gradcam=True, gradcam_layers=layer, gradcam_method=method
        )
        assert isinstance(alone, torch.Tensor)  # one layer by string: a plain tensor
        torch.testing.assert_close(together[layer], alone, atol=1e-5, rtol=0)


def test_raw_maps_keep_each_layers_resolution(shared_model, images):
    _, raw = shared_model(images, return_gradcam=True, gradcam_layers=LAYERS, gradcam_raw=True)
    assert {name: tuple(m.shape[-2:]) for name, m in raw.items()} == {
        "layer1": (16, 16),
        "layer2": (8, 8),
        "layer3": (4, 4),
        "layer4": (2, 2),
    }
    assert all(float(m.amin()) >= 0 for m in raw.values())


def test_a_single_layer_list_gives_a_mapping(shared_model, images):
    _, heatmaps = shared_model(images, return_gradcam=True, gradcam_layers=["layer3"])
    assert list(heatmaps) == ["layer3"]
    _, alone = shared_model(images, return_gradcam=True, gradcam_layers="layer3")
    torch.testing.assert_close(heatmaps["layer3"], alone)


def test_nested_layers_together(shared_model, images):
    # layer4 returns exactly what its last block returns: both maps are the same.
    _, heatmaps = shared_model(images, return_gradcam=True, gradcam_layers=["layer4", "layer4.2"])
    torch.testing.assert_close(heatmaps["layer4"], heatmaps["layer4.2"])


def test_method_at_construction_and_per_call(shared_model, images, build_model):
    by_construction = build_model(num_classes=2, enable_gradcam=True, gradcam_method="gradcam++")
    _, constructed = by_construction(images, return_gradcam=True)
    _, per_call = shared_model(images, return_gradcam=True, gradcam_method="gradcam++")
    _, as_instance = shared_model(images, return_gradcam=True, gradcam_method=GradCAMPlusPlus())
    _, default = shared_model(images, return_gradcam=True)
    torch.testing.assert_close(constructed, per_call)
    torch.testing.assert_close(as_instance, per_call)
    assert not torch.allclose(default, per_call, atol=1e-3)
    # the per-call choice does not stick
    _, again = shared_model(images, return_gradcam=True)
    torch.testing.assert_close(again, default)
    # nor does the constructed one get lost after an override
    _, override = by_construction(images, return_gradcam=True, gradcam_method="gradcam")
    torch.testing.assert_close(override, default)
    _, back = by_construction(images, return_gradcam=True)
    torch.testing.assert_close(back, constructed)


def test_multilayer_under_no_grad_and_train_mode_touches_nothing(fresh_model, images, count_autograd_grad):
    fresh_model.train()
    flags = {name: m.training for name, m in fresh_model.named_modules()}
    with torch.no_grad():
        logits, heatmaps = fresh_model(images, return_gradcam=True, gradcam_layers=LAYERS)
    assert count_autograd_grad.calls == 1
    assert not logits.requires_grad
    assert {name: m.training for name, m in fresh_model.named_modules()} == flags
    assert all(p.grad is None for p in fresh_model.parameters())
    assert all(torch.isfinite(m).all() for m in heatmaps.values())


def test_bad_layer_and_method_are_rejected(shared_model, images):
    with pytest.raises(ValueError, match="did you mean 'layer3'"):
        shared_model(images, return_gradcam=True, gradcam_layers=["layer1", "layr3"])
    with pytest.raises(ValueError, match="unknown CAM method"):
        shared_model(images, return_gradcam=True, gradcam_method="gradcam+++")


def test_scorecam_through_the_integrated_model(shared_model, make_images):
    from gradcam_kit.methods.activation import score_cam

    x = make_images(1, 32, 32)
    layer = "layer1.0.conv1"  # 64 channels: 64 masked forwards
    with torch.no_grad():
        logits, heatmaps = shared_model(
            x, return_gradcam=True, gradcam_method="scorecam", gradcam_layers=[layer],
            gradcam_alignment="pixel",
        )
    expected = score_cam(shared_model, x, layer)
    torch.testing.assert_close(heatmaps[layer], expected.heatmaps[layer])
    torch.testing.assert_close(logits, expected.logits)
    assert heatmaps[layer].shape == (1, 32, 32)
