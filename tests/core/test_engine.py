"""The engine behind the model: the paper's formula, the graph cut, hook lifecycle, helpers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from gradcam_kit.core.engine import (
    CAMEngine,
    class_scores,
    min_max_normalize,
    resolve_class_idx,
    upsample,
)
from gradcam_kit.methods import ClassActivationMap

SIZE = 64  # the side of conftest's images


def paper_gradcam(model: torch.nn.Module, layer: torch.nn.Module, images, classes) -> torch.Tensor:
    """Grad-CAM from the paper (Selvaraju et al. 2017), with plain autograd and nothing shared.

    ``alpha_k = mean_ij dy_c/dA_k[i, j]``, ``L = ReLU(sum_k alpha_k A_k)``, then bilinear
    upsampling to the input and per-image min-max normalisation.
    """
    captured = []
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        logits = model(images)
    finally:
        handle.remove()
    activation = captured[0]
    score = logits[torch.arange(len(classes)), torch.as_tensor(classes)].sum()
    (gradient,) = torch.autograd.grad(score, activation)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam.detach()
    flat = cam.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    return (cam - low[:, None, None]) / (high - low)[:, None, None]


@pytest.mark.parametrize("classes", [[0, 1], [1, 0]])
def test_heatmap_equals_the_papers_formula(shared_model, images, classes):
    # The reference runs on a plain torchvision resnet50 holding the same weights.
    reference_model = torchvision.models.resnet50(weights=None, num_classes=2).eval()
    reference_model.load_state_dict(shared_model.state_dict(), strict=True)
    reference = paper_gradcam(reference_model, reference_model.layer4[2].conv3, images, classes)
    with torch.no_grad():
        _, heatmap = shared_model(
            images, return_gradcam=True, gradcam_class_idx=classes, gradcam_alignment="pixel"
        )
    torch.testing.assert_close(heatmap, reference, rtol=0, atol=1e-5)


def test_engine_on_a_plain_torchvision_model_matches_the_paper(images, hook_counts):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    reference = paper_gradcam(model, model.layer4[1].conv2, images, [2, 0])
    with CAMEngine(model, "layer4[-1].conv2") as engine, torch.no_grad():
        out = engine.explain(images, [2, 0])
    torch.testing.assert_close(out.heatmaps["layer4.1.conv2"], reference, rtol=0, atol=1e-5)
    assert out.class_idx.tolist() == [2, 0]
    assert hook_counts(model)["forward"] == 0


def test_no_graph_is_built_before_the_target_layer(images, build_model):
    model = build_model(freeze_features=False, enable_gradcam=True)  # every parameter trainable
    seen: dict[str, torch.Tensor] = {}

    def spy(name):
        def hook(module, inputs, output):
            seen[name] = output

        return hook

    spies = [
        model.conv1.register_forward_hook(spy("conv1")),
        model.layer3.register_forward_hook(spy("layer3")),
        model.layer4[2].bn3.register_forward_hook(spy("after_target")),
    ]
    try:
        with torch.no_grad():
            logits, heatmap = model(images, return_gradcam=True)
    finally:
        for handle in spies:
            handle.remove()
    # Before the target: no graph, although every parameter requires grad.
    assert not seen["conv1"].requires_grad and seen["conv1"].grad_fn is None
    assert not seen["layer3"].requires_grad and seen["layer3"].grad_fn is None
    # After the target: the few layers to the logits were recorded, from a leaf at the cut.
    after = seen["after_target"]
    assert after.requires_grad
    nodes, stack, leaves = set(), [after.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in nodes:
            continue
        nodes.add(node)
        if type(node).__name__ == "AccumulateGrad":
            leaves.append(node.variable)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    # bn3 after conv3: a clone of the cut activation and the batch norm, nothing upstream.
    assert len(nodes) < 10, sorted(type(n).__name__ for n in nodes)
    leaf_shapes = {tuple(leaf.shape) for leaf in leaves}
    assert (2, 2048, 2, 2) in leaf_shapes  # the activation leaf
    assert tuple(model.layer4[2].conv3.weight.shape) not in leaf_shapes  # conv3 not recorded
    assert heatmap.max() == 1 and not logits.requires_grad


def test_engine_context_manager_removes_hooks_after_an_exception(images, hook_counts):
    model = torchvision.models.resnet18(weights=None).eval()
    with pytest.raises(RuntimeError, match="boom"):
        with CAMEngine(model, ["layer3", "layer4"]) as engine:
            assert engine.attached and hook_counts(model)["forward"] == 2
            raise RuntimeError("boom")
    assert not engine.attached
    assert hook_counts(model) == {"forward": 0, "forward_pre": 0, "backward": 0}
    engine.remove()  # idempotent
    # A call-only engine (never attached) leaves no hook behind either, even on failure.
    with pytest.raises(RuntimeError):
        engine.explain(torch.randn(1, 1, SIZE, SIZE))
    assert hook_counts(model)["forward"] == 0


def test_layer_that_does_not_run_is_reported(images):
    model = torchvision.models.resnet18(weights=None).eval()
    model.unused = torch.nn.Conv2d(3, 3, 1)
    with pytest.raises(RuntimeError, match=r"target layer\(s\) \['unused'\] did not run"):
        CAMEngine(model, "unused").explain(images)


def test_unknown_layer_suggests_names():
    model = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match=r"unknown layer 'layer5'.*did you mean"):
        CAMEngine(model, "layer5")


def test_min_max_normalize_constant_and_zero_maps():
    maps = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 3.0), torch.arange(16.0).view(4, 4)])
    normalised = min_max_normalize(maps)
    assert not torch.isnan(normalised).any()
    assert torch.equal(normalised[0], torch.zeros(4, 4))
    assert torch.equal(normalised[1], torch.zeros(4, 4))
    torch.testing.assert_close(normalised[2], torch.arange(16.0).view(4, 4) / 15)


def test_upsample_matches_opencv_half_pixel_bilinear():
    cv2 = pytest.importorskip("cv2")
    maps = torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(0))
    resized = upsample(maps, (12, 20))
    assert resized.shape == (2, 12, 20)
    expected = cv2.resize(maps[0].numpy(), (20, 12), interpolation=cv2.INTER_LINEAR)
    torch.testing.assert_close(resized[0], torch.from_numpy(expected), rtol=0, atol=1e-5)
    assert upsample(maps, (3, 5)) is maps


def test_resolve_class_idx_and_class_scores():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    assert resolve_class_idx(None, logits).tolist() == [1, 0]
    assert resolve_class_idx(2, logits).tolist() == [2, 2]
    assert resolve_class_idx([0, 2], logits).tolist() == [0, 2]
    assert class_scores(logits, torch.tensor([2, 1])).tolist() == [2.0, 0.0]
    single = torch.tensor([[2.0], [-3.0]])
    assert resolve_class_idx(None, single).tolist() == [1, 0]  # the predicted classes
    # The decision of a single-logit head: z where positive, -z where negative.
    assert class_scores(single, None).tolist() == [2.0, 3.0]
    assert class_scores(single, resolve_class_idx(None, single)).tolist() == [2.0, 3.0]
    with pytest.raises(ValueError, match=r"logits of shape \(B, num_classes\)"):
        resolve_class_idx(None, torch.zeros(2))


def test_score_fn_must_return_one_score_per_image(shared_model, images):
    with pytest.raises(ValueError, match=r"one score per image, shape \(2,\)"):
        shared_model(images, return_gradcam=True, gradcam_score_fn=lambda z: z)


def test_inference_mode_on_the_engine(images):
    model = torchvision.models.resnet18(weights=None).eval()
    engine = CAMEngine(model, "layer4")
    with torch.no_grad():
        expected = engine.explain(images, 3).heatmaps["layer4"]
    with torch.inference_mode():
        out = engine.explain(images, 3)
    torch.testing.assert_close(out.heatmaps["layer4"], expected)
    assert not out.logits.requires_grad


@pytest.mark.slow
def test_explain_methods_equals_one_call_per_method(images):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    engine = CAMEngine(model, "layer4")  # CAM needs the layer feeding the head
    methods = ["gradcam", "gradcam++", "layercam", ClassActivationMap(model.fc), "scorecam"]
    names = ["gradcam", "gradcam++", "layercam", "cam", "scorecam"]
    with torch.no_grad():
        together = engine.explain_methods(images, [2, 0], methods=methods, output_size=None)
    assert list(together) == names
    for name, method in zip(names, methods):
        alone = engine.explain(images, [2, 0], method=method, output_size=None)
        torch.testing.assert_close(together[name].logits, alone.logits)
        assert together[name].class_idx.tolist() == [2, 0]
        torch.testing.assert_close(together[name].heatmaps["layer4"], alone.heatmaps["layer4"], rtol=0, atol=1e-6)
    # The one-pass methods really differ from each other (the test compares something).
    assert not torch.allclose(together["gradcam"].heatmaps["layer4"], together["layercam"].heatmaps["layer4"])


def test_explain_methods_runs_one_forward_for_gradient_methods(images):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.inference_mode():
            out = CAMEngine(model, ["layer3", "layer4"]).explain_methods(
                images, methods=["gradcam", "gradcam++", "layercam"]
            )
    finally:
        handle.remove()
    assert len(calls) == 1
    assert set(out["layercam"].heatmaps) == {"layer3", "layer4"}
    assert not out["gradcam"].heatmaps["layer4"].is_inference()


@pytest.mark.parametrize("methods, message", [([], "empty"), (["gradcam", "GradCAM"], "twice")])
def test_explain_methods_rejects_bad_method_lists(images, methods, message):
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    with pytest.raises(ValueError, match=message):
        CAMEngine(model, "layer4").explain_methods(images, methods=methods)
