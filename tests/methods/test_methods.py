"""Every CAM method against its reference implementation (pytorch-grad-cam, torchcam).

Same model, layer and classes; an unfrozen resnet18 in eval mode with random weights.
pytorch-grad-cam min-max normalises at the layer, resizes with OpenCV, then normalises
again at the input size, which is exactly the engine's ReLU -> upsample -> normalise.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gradcam_kit.core.engine import CAMEngine, min_max_normalize
from gradcam_kit.methods import (
    METHODS,
    ClassActivationMap,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
    get_method,
)
from gradcam_kit.methods.activation import ScoreCAM, score_cam

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

CLASSES = [3, 7]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def _reference(reference_cls, model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    module = dict(model.named_modules())[layer]
    with reference_cls(model, [module]) as cam:
        maps = cam(x, [ClassifierOutputTarget(c) for c in CLASSES])
    model.zero_grad(set_to_none=True)  # the reference writes parameter gradients
    return torch.from_numpy(maps)


GRADIENT_METHODS = [
    ("gradcam", "GradCAM"),
    ("gradcam++", "GradCAMPlusPlus"),
    ("xgradcam", "XGradCAM"),
    ("hirescam", "HiResCAM"),
    ("layercam", "LayerCAM"),
]


@pytest.mark.parametrize("layer", ["layer4", "layer3", "layer2.1.conv2"])
@pytest.mark.parametrize(("method", "reference_name"), GRADIENT_METHODS)
def test_gradient_methods_match_pytorch_grad_cam(model, inputs, method, reference_name, layer):
    expected = _reference(getattr(pytorch_grad_cam, reference_name), model, layer, inputs)
    heatmap = CAMEngine(model, layer, method=method).explain(inputs, CLASSES).heatmaps[layer]
    assert heatmap.shape == expected.shape == (2, 64, 64)
    assert float(expected.amax()) > 0.99  # a real map, not an all-zero one
    torch.testing.assert_close(heatmap, expected, atol=TOLERANCE, rtol=0)


def test_scorecam_matches_pytorch_grad_cam(model):
    layer = "layer1"  # 64 channels at 8x8: 2 x 64 masked forwards per implementation
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    expected = _reference(pytorch_grad_cam.ScoreCAM, model, layer, x)
    heatmap = CAMEngine(model, layer, method="scorecam").explain(x, CLASSES).heatmaps[layer]
    torch.testing.assert_close(heatmap, expected, atol=TOLERANCE, rtol=0)
    # The functional form and any chunk size give the same map.
    chunked = score_cam(model, x, layer, CLASSES, batch_size=37).heatmaps[layer]
    torch.testing.assert_close(chunked, heatmap, atol=1e-5, rtol=0)


def test_scorecam_masks_upsampling_choice_matters(model):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    aligned = score_cam(model, x, "layer1", 3, batch_size=64).heatmaps["layer1"]
    half_pixel = score_cam(model, x, "layer1", 3, batch_size=64, align_corners=False).heatmaps["layer1"]
    assert not torch.allclose(aligned, half_pixel, atol=1e-3)


def test_scorecam_masked_forwards_leave_train_mode_and_statistics(model):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    state = copy.deepcopy(model.state_dict())
    model.train()
    try:
        with torch.no_grad():
            model(x)  # what the one capture forward does to BatchNorm in train mode
        expected = copy.deepcopy(model.state_dict())
        model.load_state_dict(state)
        score_cam(model, x, "layer1", 1, batch_size=64)  # + 128 masked forwards
        flags = [m.training for m in model.modules()]
        after = copy.deepcopy(model.state_dict())
    finally:
        model.load_state_dict(state)
        model.eval()
    assert all(flags)
    for key, value in expected.items():
        torch.testing.assert_close(after[key], value, msg=key)
    assert all(p.grad is None for p in model.parameters())


def test_cam_matches_torchcam(model, inputs):
    torchcam_methods = pytest.importorskip("torchcam.methods")
    with torchcam_methods.CAM(model, "layer4", "fc", input_shape=(3, 64, 64)) as extractor:
        logits = model(inputs)
        (raw,) = extractor(CLASSES, logits, normalized=False)
    # torchcam's CAM applies no ReLU and normalises at the layer resolution; the engine
    # rectifies (as every CAM here) before normalising.
    method = ClassActivationMap(model.fc)
    ours_raw = CAMEngine(model, "layer4", method=method).explain(
        inputs, CLASSES, output_size=None, normalize=False
    )
    torch.testing.assert_close(ours_raw.heatmaps["layer4"], raw.clamp_min(0), atol=TOLERANCE, rtol=0)
    ours = CAMEngine(model, "layer4", method=method).explain(inputs, CLASSES, output_size=None)
    expected = torchcam_methods.CAM._normalize(raw.clamp_min(0))
    torch.testing.assert_close(ours.heatmaps["layer4"], expected, atol=TOLERANCE, rtol=0)
    # and the un-rectified method output itself is torchcam's map
    with torch.no_grad():
        activation = {}
        handle = model.layer4.register_forward_hook(lambda m, i, o: activation.setdefault("a", o))
        try:
            model(inputs)
        finally:
            handle.remove()
    pre_relu = method(activation["a"], None, torch.tensor(CLASSES))
    torch.testing.assert_close(pre_relu, raw, atol=TOLERANCE, rtol=0)


def test_cam_is_gradcam_for_a_gap_linear_head(model, inputs):
    # With global average pooling + linear, Grad-CAM's weights are fc weights / (h * w):
    # the normalised maps coincide (Selvaraju et al., Sec. 3.1).
    cam = CAMEngine(model, "layer4", method=ClassActivationMap(model.fc)).explain(inputs, CLASSES)
    grad = CAMEngine(model, "layer4", method="gradcam").explain(inputs, CLASSES)
    torch.testing.assert_close(cam.heatmaps["layer4"], grad.heatmaps["layer4"], atol=1e-5, rtol=0)


def test_cam_rejects_wrong_layer_and_head(model, inputs):
    with pytest.raises(ValueError, match="feeds the pooled linear head"):
        CAMEngine(model, "layer3", method=ClassActivationMap(model.fc)).explain(inputs)
    with pytest.raises(TypeError, match="final nn.Linear"):
        ClassActivationMap(model.layer4)


def test_registry_names_and_errors():
    assert set(METHODS) == {"gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam"}
    for spelling, cls in [
        ("GradCAM", GradCAM),
        ("grad-cam++", GradCAMPlusPlus),
        ("gradcam_plusplus", GradCAMPlusPlus),
        ("gradcampp", GradCAMPlusPlus),
        ("XGradCAM", XGradCAM),
        ("hires_cam", HiResCAM),
        ("layer-cam", LayerCAM),
        ("Score-CAM", ScoreCAM),
    ]:
        assert type(get_method(spelling)) is cls
    instance = LayerCAM()
    assert get_method(instance) is instance
    with pytest.raises(ValueError, match="unknown CAM method 'gradcma'"):
        get_method("gradcma")
    with pytest.raises(ValueError, match=r"ClassActivationMap\(model.fc\)"):
        get_method("cam")
    with pytest.raises(ValueError, match="positive int"):
        ScoreCAM(batch_size=0)


def test_unbound_scorecam_says_how_to_use_it():
    activation = torch.rand(1, 4, 2, 2)
    with pytest.raises(RuntimeError, match="through the engine"):
        ScoreCAM()(activation, None, torch.zeros(1, dtype=torch.long))


def test_scorecam_score_fn_and_no_grad(model):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    by_class = score_cam(model, x, "layer1", [2, 2], batch_size=64).heatmaps["layer1"]
    engine = CAMEngine(model, "layer1", method=ScoreCAM(batch_size=64))
    with torch.no_grad():
        by_score = engine.explain(x, score_fn=lambda z: z[:, 2]).heatmaps["layer1"]
    torch.testing.assert_close(by_score, by_class)
    with pytest.raises(ValueError, match="one score per image"):
        engine.explain(x, score_fn=lambda z: z)


def test_gradcam_plus_plus_closed_form_by_hand():
    # alpha = g^2 / (2 g^2 + sum(A) g^3), weights = sum(alpha * relu(g)) (paper Eq. 19)
    activation = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]]]])
    gradient = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]])
    total = 4.0
    alpha = [0.25 / (0.5 + total * 0.125), 1.0 / (2.0 - total), 4.0 / (8.0 + total * 8.0), 0.0]
    expected_weight = alpha[0] * 0.5 + alpha[2] * 2.0
    weights = GradCAMPlusPlus().channel_weights(activation, gradient)
    torch.testing.assert_close(weights, torch.tensor([[expected_weight]]), atol=1e-5, rtol=0)


def test_maps_are_normalised_and_finite(model, inputs):
    for name in ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"]:
        heatmap = CAMEngine(model, "layer3", method=name).explain(inputs, CLASSES).heatmaps["layer3"]
        assert torch.isfinite(heatmap).all()
        assert float(heatmap.amin()) == 0.0 and float(heatmap.amax()) == pytest.approx(1.0)
        torch.testing.assert_close(min_max_normalize(heatmap), heatmap)
