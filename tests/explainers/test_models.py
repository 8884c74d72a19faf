"""Explaining any torchvision classification CNN: default layers, errors, the core guarantees.

Every family is built with ``weights=None`` at 64x64, so nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models as tv

from gradcam_kit.explainers.cnn import (
    GradCAMExplainer,
    classifier_head,
    default_target_layer,
    explain,
)
from gradcam_kit.methods.activation import score_cam

FAMILIES = {
    "resnet18": "layer4",
    "densenet121": "features",
    "efficientnet_b0": "features",
    "convnext_tiny": "features",
    "mobilenet_v3_small": "features",
    "vgg11": "features.19",
}
CLASSES = [1, 2]


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = getattr(tv, name)(weights=None, num_classes=5)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():  # non-trivial eval statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


@pytest.fixture
def inputs(make_images) -> torch.Tensor:
    return make_images(2, 64, 64)


@pytest.mark.parametrize(("name", "default_layer"), list(FAMILIES.items()))
def test_family(name, default_layer, inputs, hook_counts):
    model = _build(name)
    assert default_target_layer(model) == default_layer

    # default layer, one forward pass, a real normalised map per image
    forwards = []
    handle = model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    try:
        out = explain(model, inputs, class_idx=CLASSES)
    finally:
        handle.remove()
    assert len(forwards) == 1
    assert list(out.heatmaps) == [default_layer]
    heatmap = out.heatmaps[default_layer]
    assert heatmap.shape == (2, 64, 64) and heatmap.dtype == torch.float32
    assert torch.isfinite(heatmap).all()
    assert float(heatmap.amin()) >= 0.0
    # each map is normalised to [0, 1]; a random net may give an all-negative (zero) map
    peaks = heatmap.flatten(1).amax(1)
    assert all(float(p) in (0.0, pytest.approx(1.0)) for p in peaks) and float(peaks.max()) > 0.99
    assert float(heatmap.std()) > 0.05
    torch.testing.assert_close(out.logits, model(inputs))
    assert out.class_idx.tolist() == CLASSES
    assert hook_counts(model) == {"forward": 0, "forward_pre": 0, "backward": 0}

    # a misspelt layer names the right one
    with pytest.raises(ValueError, match=f"did you mean '{default_layer}'"):
        explain(model, inputs, layers=default_layer + "x")

    # frozen and under no_grad: the same map, nothing written
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    with torch.no_grad():
        frozen = explain(model, inputs, class_idx=CLASSES)
    torch.testing.assert_close(frozen.heatmaps[default_layer], heatmap, atol=1e-5, rtol=0)
    assert not frozen.logits.requires_grad

    # train mode: flags untouched, no .grad on any parameter
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    model.train()
    flags = {module_name: m.training for module_name, m in model.named_modules()}
    trained = explain(model, inputs, method="gradcam++")
    assert {module_name: m.training for module_name, m in model.named_modules()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert torch.isfinite(trained.heatmaps[default_layer]).all()
    assert trained.logits.requires_grad  # a training loss can still back-propagate


def test_named_layers_in_both_spellings_and_several_at_once(inputs):
    model = _build("resnet18")
    out = explain(model, inputs, layers=["layer3", "layer4[-1].conv2"], method="layercam")
    assert list(out.heatmaps) == ["layer3", "layer4.1.conv2"]
    alone = explain(model, inputs, layers="layer4.1.conv2", method="layercam")
    torch.testing.assert_close(out.heatmaps["layer4.1.conv2"], alone.heatmaps["layer4.1.conv2"])


def test_explainer_keeps_hooks_while_attached_and_removes_them(inputs, hook_counts):
    model = _build("mobilenet_v3_small")
    explainer = GradCAMExplainer(model, method="xgradcam")
    one_shot = explain(model, inputs, method="xgradcam").heatmaps["features"]
    with explainer:
        assert hook_counts(model)["forward"] == 1
        first = explainer(inputs).heatmaps["features"]
        second = explainer.explain(inputs).heatmaps["features"]
        plain = model(inputs)  # dormant hooks: the plain forward is unchanged
    assert hook_counts(model) == {"forward": 0, "forward_pre": 0, "backward": 0}
    torch.testing.assert_close(first, one_shot)
    torch.testing.assert_close(second, one_shot)
    torch.testing.assert_close(plain, explainer.explain(inputs).logits)
    with pytest.raises(RuntimeError, match="boom"):
        with explainer:
            raise RuntimeError("boom")
    assert hook_counts(model)["forward"] == 0


def test_per_call_layer_and_method_override(inputs):
    model = _build("resnet18")
    explainer = GradCAMExplainer(model, "layer4", method="gradcam")
    override = explainer.explain(inputs, layers="layer3", method="hirescam").heatmaps
    assert list(override) == ["layer3"]
    direct = explain(model, inputs, "layer3", "hirescam").heatmaps["layer3"]
    torch.testing.assert_close(override["layer3"], direct)
    assert list(explainer(inputs).heatmaps) == ["layer4"]


def test_cam_method_uses_the_classifier_head(inputs):
    model = _build("resnet18")
    assert classifier_head(model) is model.fc
    cam = explain(model, inputs, method="cam", class_idx=CLASSES).heatmaps["layer4"]
    grad = explain(model, inputs, method="gradcam", class_idx=CLASSES).heatmaps["layer4"]
    torch.testing.assert_close(cam, grad, atol=1e-5, rtol=0)  # GAP + linear: CAM == Grad-CAM
    with pytest.raises(ValueError, match="has none"):
        classifier_head(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_alignment_default_follows_the_family(inputs):
    from gradcam_kit.explainers.cnn import default_alignment

    assert default_alignment(_build("resnet18")) == "receptive-field"
    assert default_alignment(_build("alexnet")) == "pixel"
    model = _build("resnet18")
    aligned = explain(model, inputs, class_idx=CLASSES).heatmaps["layer4"]
    torch.testing.assert_close(aligned, explain(model, inputs, class_idx=CLASSES, alignment="receptive-field").heatmaps["layer4"])
    assert not torch.allclose(aligned, explain(model, inputs, class_idx=CLASSES, alignment="pixel").heatmaps["layer4"])


def test_scorecam_by_name(inputs):
    model = _build("mobilenet_v3_small")
    small = inputs[:, :, :32, :32]
    out = explain(model, small, layers="features.1", method="scorecam", class_idx=CLASSES, alignment="pixel")
    expected = score_cam(model, small, "features.1", CLASSES)
    torch.testing.assert_close(out.heatmaps["features.1"], expected.heatmaps["features.1"])
    assert out.heatmaps["features.1"].shape == (2, 32, 32)


def test_resnet50_finetuned_is_explained_like_its_own_gradcam(shared_model, images):
    # A model that names its own Grad-CAM layer is explained there by default.
    assert default_target_layer(shared_model) == shared_model.gradcam_target_layer == "layer4.2.conv3"
    out = explain(shared_model, images, layers=shared_model.gradcam_target_layer)
    _, integrated = shared_model(images, return_gradcam=True)
    torch.testing.assert_close(out.heatmaps["layer4.2.conv3"], integrated)


def test_default_layer_fallback_and_errors(inputs):
    custom = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )
    assert default_target_layer(custom) == "2"
    assert explain(custom, inputs).heatmaps["2"].shape == (2, 64, 64)
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        default_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        GradCAMExplainer("resnet18")
    with pytest.raises(ValueError, match="unknown CAM method"):
        explain(custom, inputs, method="gradcam+++")
    with pytest.raises(ValueError, match="out of range"):
        explain(custom, inputs, class_idx=7)
