"""The plain model goes wherever torchvision's resnet50 goes, Grad-CAM hooks attached or not.

TorchScript (script and trace), both ONNX exporters (outputs compared with onnxruntime),
``torch.export``, FX tracing and FX quantization; the eager model keeps its Grad-CAM.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch

SIZE = 64  # the side of conftest's images


@pytest.fixture(scope="module", params=[False, True], ids=["gradcam-off", "gradcam-on"])
def model(request, build_model):
    return build_model(num_classes=2, enable_gradcam=request.param)


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporters' deprecation and tracer warnings
        yield


def _still_explains(model, x, hook_counts):
    """Exporting did not disturb the eager model: hooks as before, Grad-CAM still works."""
    if model.gradcam_enabled:
        assert hook_counts(model)["forward"] == 1
        _, heatmap = model(x, return_gradcam=True)
        assert heatmap.shape == (2, SIZE, SIZE) and bool(torch.isfinite(heatmap).all())
    else:
        assert hook_counts(model)["forward"] == 0


@pytest.mark.slow
def test_torch_jit_script_and_save(model, x, hook_counts):
    expected = model(x)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), expected)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.jit.load(buffer)(x), expected)
    # the scripted module shares the parameters, as torchvision's scripted models do
    assert scripted.fc.weight.data_ptr() == model.fc.weight.data_ptr()
    _still_explains(model, x, hook_counts)


@pytest.mark.slow
def test_torch_jit_trace(model, x, hook_counts):
    traced = torch.jit.trace(model, (x,))
    torch.testing.assert_close(traced(x), model(x))
    _still_explains(model, x, hook_counts)


@pytest.mark.slow
def test_fx_symbolic_trace(model, x, hook_counts):
    graph_module = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(graph_module(x), model(x))
    assert not any(n.op == "call_function" and "explain" in str(n.target) for n in graph_module.graph.nodes)
    _still_explains(model, x, hook_counts)


@pytest.mark.slow
def test_fx_quantization_prepare_and_convert(model, x):
    import copy

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    float_model = copy.deepcopy(model).eval()
    prepared = prepare_fx(float_model, get_default_qconfig_mapping("x86"), (x,))
    # observers do not change values; prepare_fx folds BatchNorm into the convolutions
    torch.testing.assert_close(prepared(x), model(x), rtol=1e-4, atol=1e-4)
    quantized = convert_fx(prepared)
    logits = quantized(x)
    assert logits.shape == (2, 2) and bool(torch.isfinite(logits).all())


@pytest.mark.slow
def test_torch_export(model, x, hook_counts):
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))
    _still_explains(model, x, hook_counts)


def _onnxruntime_logits(data: bytes | str, x: torch.Tensor):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: x.numpy()})[0])


@pytest.mark.slow
def test_onnx_torchscript_exporter(model, x, hook_counts):
    pytest.importorskip("onnx")
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False, input_names=["x"], output_names=["logits"])
    logits = _onnxruntime_logits(buffer.getvalue(), x)
    torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-4)
    _still_explains(model, x, hook_counts)


@pytest.mark.slow
def test_onnx_dynamo_exporter(model, x, tmp_path, hook_counts):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False)
    logits = _onnxruntime_logits(str(path), x)
    torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-4)
    _still_explains(model, x, hook_counts)


def test_forward_keeps_its_signature_and_options(x, build_model):
    model = build_model(num_classes=2, enable_gradcam=True)
    logits, heatmap = model(x, True, 1)  # positionally, as the user's API promises
    assert logits.shape == (2, 2) and heatmap.shape == (2, SIZE, SIZE)
    _, raw = model(x, return_gradcam=True, gradcam_class_idx=1, gradcam_raw=True)
    full = model.explain(x, 1, raw=True)
    torch.testing.assert_close(raw, full.heatmaps["layer4.2.conv3"])
    assert full.class_idx.tolist() == [1, 1]
    maps = model(x, return_gradcam=True, gradcam_layers=["layer3", "layer4"])[1]
    assert list(maps) == ["layer3", "layer4"]
    with pytest.raises(TypeError, match="gradcam_methd.*gradcam_method"):
        model(x, return_gradcam=True, gradcam_methd="gradcam++")
