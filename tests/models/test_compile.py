"""torch.compile and the integrated model: the same logits and heatmaps as in eager mode.

``CAMEngine.explain`` always runs eagerly (``torch.compiler.disable``): the graph cut needs
the gradient at an activation, which a compiled graph does not expose, and TorchDynamo
drops a graph-breaking forward hook deep inside ResNet50. So ``torch.compile(model)``
compiles the plain path into one graph, and Grad-CAM through the compiled wrapper gives
exactly the eager maps; blocks compiled on their own
(``gradcam_kit.models.compile.compile_stages``) run compiled inside the recorded forward.

The default tests use the ``aot_eager`` backend (Dynamo tracing and AOTAutograd, no code
generation): seconds on two CPU cores. Inductor, which generates and builds C++ (about two
minutes for ResNet50 on two cores), runs with ``GRADCAM_KIT_TEST_INDUCTOR=1``.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch.testing import assert_close

from gradcam_kit.models.compile import compile_stages

SIZE = 64  # the side of conftest's images
pytestmark = pytest.mark.slow  # torch.compile: every test compiles

BACKEND = "aot_eager"
LAYERS = ["layer1", "layer2", "layer3", "layer4"]


@pytest.fixture(scope="module")
def eager(build_model):
    """A model with Grad-CAM enabled, its input and its eager outputs."""
    model = build_model(num_classes=2, enable_gradcam=True)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(x)
        logits, heatmap = model(x, return_gradcam=True)
        _, per_layer = model(x, return_gradcam=True, gradcam_layers=LAYERS)
        _, class_one = model(x, return_gradcam=True, gradcam_class_idx=1)
    return model, x, {
        "plain": plain, "logits": logits, "heatmap": heatmap, "layers": per_layer,
        "class_one": class_one,
    }


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_wrapper_gives_the_eager_heatmaps(eager):
    model, x, expected = eager
    model = copy.deepcopy(model)
    compiled = torch.compile(model, backend=BACKEND)
    with torch.no_grad():
        plain = compiled(x)
        first = compiled(x, return_gradcam=True)
        plain_again = compiled(x)
        logits, heatmap = compiled(x, return_gradcam=True)
        _, per_layer = compiled(x, return_gradcam=True, gradcam_layers=LAYERS)
        _, class_one = compiled(x, return_gradcam=True, gradcam_class_idx=1)
    assert_close(plain, expected["plain"], atol=1e-4, rtol=1e-4)
    assert_close(plain_again, expected["plain"], atol=1e-4, rtol=1e-4)
    assert_close(first[1], expected["heatmap"], atol=1e-4, rtol=0)
    assert_close(logits, expected["logits"], atol=1e-4, rtol=1e-4)
    assert_close(heatmap, expected["heatmap"], atol=1e-4, rtol=0)
    assert_close(class_one, expected["class_one"], atol=1e-4, rtol=0)
    assert per_layer.keys() == expected["layers"].keys()
    for name in LAYERS:
        assert_close(per_layer[name], expected["layers"][name], atol=1e-4, rtol=0)
    assert heatmap.shape == (2, SIZE, SIZE) and not heatmap.requires_grad
    # Still the same wrapper: one hook, nothing written into .grad.
    assert len(model.get_submodule("layer4.2.conv3")._forward_hooks) == 1
    assert all(p.grad is None for p in model.parameters())


def test_plain_path_compiles_into_one_graph(eager):
    # The dormant Grad-CAM hook must not break the graph of ordinary inference.
    model, x, expected = eager
    compiled = torch.compile(copy.deepcopy(model), backend=BACKEND, fullgraph=True)
    with torch.no_grad():
        assert_close(compiled(x), expected["plain"], atol=1e-4, rtol=1e-4)


def test_compiled_stages_run_inside_the_eager_grad_cam_forward(eager):
    model, x, expected = eager
    model = copy.deepcopy(model)
    target = model.get_submodule("layer4.2.conv3")
    compiled = compile_stages(model, [target], backend=BACKEND)
    # Everything but the target's own block, which keeps the hook in eager code.
    assert compiled == ["layer1", "layer2", "layer3", "layer4.0", "layer4.1"]
    frames_before = torch._dynamo.utils.counters["frames"]["ok"]
    with torch.no_grad():
        logits, heatmap = model(x, return_gradcam=True)
    assert torch._dynamo.utils.counters["frames"]["ok"] > frames_before  # really compiled
    assert_close(logits, expected["logits"], atol=1e-4, rtol=1e-4)
    assert_close(heatmap, expected["heatmap"], atol=1e-4, rtol=0)


def test_compile_stages_takes_layer_names(eager):
    model = copy.deepcopy(eager[0])
    compiled = compile_stages(model, "layer4[-1].conv3", backend=BACKEND)
    assert compiled == ["layer1", "layer2", "layer3", "layer4.0", "layer4.1"]
    assert model.get_submodule("layer2")._compiled_call_impl is not None
    assert model.get_submodule("layer4.2")._compiled_call_impl is None


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ([torch.nn.Conv2d(3, 3, 1)], "not a submodule"),  # another model's layer
        (["layer4.2.conv9"], "did you mean 'layer4.2.conv3'"),
        ([], "non-empty list"),
    ],
)
def test_compile_stages_rejects_targets_outside_the_model(eager, targets, message):
    # Compiling everything around a target that is not there would drop the hook silently.
    model = copy.deepcopy(eager[0])
    with pytest.raises(ValueError, match=message):
        compile_stages(model, targets, backend=BACKEND)
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in model.modules())


@pytest.mark.skipif(
    os.environ.get("GRADCAM_KIT_TEST_INDUCTOR") != "1",
    reason="inductor builds C++ for ResNet50 (minutes on 2 cores): set GRADCAM_KIT_TEST_INDUCTOR=1",
)
def test_inductor_compiled_wrapper_gives_the_eager_heatmap(eager):
    model, x, expected = eager
    compiled = torch.compile(copy.deepcopy(model))
    with torch.no_grad():
        plain = compiled(x)
        logits, heatmap = compiled(x, return_gradcam=True)
    assert_close(plain, expected["plain"], atol=1e-4, rtol=1e-4)
    assert_close(logits, expected["logits"], atol=1e-4, rtol=1e-4)
    assert_close(heatmap, expected["heatmap"], atol=1e-4, rtol=0)
