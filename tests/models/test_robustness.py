"""Silent wrong results and misleading errors, turned into exact results or clear errors."""

from __future__ import annotations

import copy
import gc
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from gradcam_kit import CAMEngine
from gradcam_kit.explainers.cnn import GradCAMExplainer
from resnet50 import ResNet50FineTuned

SIZE = 64  # the side of conftest's images


@pytest.fixture(scope="module")
def model(build_model):
    return build_model(num_classes=2, enable_gradcam=True)


# -- inputs that used to give NaN maps or self-contradicting messages ------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_pixels_are_an_error_not_a_nan_map(model, images, bad):
    x = images.clone()
    x[1, 0, 3, 5] = bad
    with pytest.raises(ValueError, match=r"1 NaN or Inf value.*nan_to_num"):
        model(x, return_gradcam=True)
    with pytest.raises(ValueError, match="NaN or Inf"):  # was IndexError in the colour lookup
        model.get_gradcam_overlay(x)
    _, heatmap = model(torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), return_gradcam=True)
    assert bool(torch.isfinite(heatmap).all())


@pytest.mark.parametrize(
    "numpy_idx",
    [np.int64(1), np.int32(1), np.array(1), np.array([1, 1]), [np.int64(1), np.int64(1)]],
    ids=["int64", "int32", "0-d array", "array", "list of int64"],
)
def test_numpy_class_indices_are_accepted(model, images, numpy_idx):
    _, expected = model(images, return_gradcam=True, gradcam_class_idx=1)
    _, heatmap = model(images, return_gradcam=True, gradcam_class_idx=numpy_idx)
    torch.testing.assert_close(heatmap, expected)


def test_argmax_from_numpy_is_accepted(model, images):
    with torch.no_grad():
        predicted = np.argmax(model(images).numpy(), axis=1)
    result = model.explain(images, predicted[0])
    assert result.class_idx.tolist() == [int(predicted[0])] * 2


@pytest.mark.parametrize("bad", [np.float64(1.0), 1.5, np.array([0.5, 1.0]), True, np.bool_(True)])
def test_non_integer_class_indices_name_their_type(model, images, bad):
    with pytest.raises(ValueError, match="class ind") as info:
        model(images, return_gradcam=True, gradcam_class_idx=bad)
    message = str(info.value)
    assert "float" in message or "bool" in message  # says why, instead of "got 1"


# -- a layer that runs twice, layers replaced after construction -----------------------------
class Siamese(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = x.chunk(2, dim=1)
        return self.backbone(left) - self.backbone(right)


def test_a_backbone_called_twice_is_refused_not_half_explained(images, hook_counts):
    torch.manual_seed(0)
    net = Siamese(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)))
    x = torch.cat([images, images.flip(-1)], dim=1)
    with pytest.raises(RuntimeError, match="ran twice in one forward pass.*siamese"):
        CAMEngine(net, "backbone.0").explain(x)
    assert hook_counts(net)["forward"] == 0


def test_replaced_target_layer_is_followed_by_name(images, build_model):
    fresh = build_model(num_classes=2, enable_gradcam=True, target_layer="layer4")
    old_layer4 = fresh.layer4
    torch.manual_seed(3)
    fresh.layer4 = ResNet50FineTuned(2, weights=None).layer4.eval()  # a new last stage
    _, heatmap = fresh(images, return_gradcam=True)
    assert sum(len(m._forward_hooks) for m in old_layer4.modules()) == 0  # hooks moved
    assert len(fresh.layer4._forward_hooks) == 1
    reference = GradCAMExplainer(fresh, "layer4")(images).heatmaps["layer4"]
    torch.testing.assert_close(heatmap, reference)


def test_sync_batchnorm_conversion_and_fusion_keep_gradcam_working(images, build_model):
    from torch.ao.quantization import fuse_modules

    fresh = build_model(num_classes=2, enable_gradcam=True, target_layer="layer4.2.bn3")
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(fresh)
    assert isinstance(converted.layer4[2].bn3, nn.SyncBatchNorm)
    _, heatmap = converted(images, return_gradcam=True)  # used to say "did not run"
    assert heatmap.shape == (2, SIZE, SIZE) and float(heatmap.amax()) == pytest.approx(1.0)

    fused = build_model(num_classes=2, enable_gradcam=True, target_layer="layer4.2.conv3")
    fuse_modules(fused, [["layer4.2.conv3", "layer4.2.bn3"]], inplace=True)
    _, heatmap = fused(images, return_gradcam=True)
    reference = GradCAMExplainer(fused, "layer4.2.conv3")(images).heatmaps["layer4.2.conv3"]
    torch.testing.assert_close(heatmap, reference)


# -- errors that blamed the wrong thing ------------------------------------------------------
class Checkpointed(nn.Module):
    def __init__(self, use_reentrant: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)
        self.use_reentrant = use_reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        features = checkpoint(self.conv, x, use_reentrant=self.use_reentrant)
        return self.head(features.mean(dim=(2, 3)))


def test_reentrant_checkpoint_is_named_in_the_error(images):
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="use_reentrant=False"):
        CAMEngine(Checkpointed(use_reentrant=True), "conv").explain(images)
    heatmap = CAMEngine(Checkpointed(use_reentrant=False), "conv").explain(images).heatmaps["conv"]
    assert bool(torch.isfinite(heatmap).all())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_quantized_head_is_named_in_the_error_and_scorecam_works(images, build_model):
    quantized = torch.ao.quantization.quantize_dynamic(
        build_model(num_classes=2), {nn.Linear}, dtype=torch.qint8
    )
    with pytest.raises(RuntimeError, match="quantize"):
        CAMEngine(quantized, "layer4").explain(images)
    heatmap = CAMEngine(quantized, "layer4", method="scorecam").explain(images).heatmaps["layer4"]
    assert bool(torch.isfinite(heatmap).all())


# -- Score-CAM: state restored when eval() fails, non-tensor outputs with score_fn ------------
class FailsToSwitch(nn.Module):
    def train(self, mode: bool = True) -> FailsToSwitch:
        super().train(mode)
        if not mode:
            raise RuntimeError("this module cannot leave training mode")
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_scorecam_restores_train_flags_when_eval_raises(images):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 2), FailsToSwitch()).train()
    with pytest.raises(RuntimeError, match="cannot leave training mode"):
        CAMEngine(net, "0", method="scorecam").explain(images)
    assert all(m.training for m in net.modules())


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.head(self.features(x).mean(dim=(2, 3)))}


@pytest.mark.parametrize("method", ["scorecam", "gradcam"])
def test_non_tensor_outputs_work_with_score_fn(images, method):
    net = DictOutput().eval()
    with torch.no_grad():
        result = CAMEngine(net, "features", method=method).explain(
            images, score_fn=lambda out: out["logits"][:, 1]
        )
    assert isinstance(result.logits, dict) and not result.logits["logits"].requires_grad
    assert result.heatmaps["features"].shape == (2, SIZE, SIZE)
    with pytest.raises(TypeError, match="returns a dict.*score_fn"):
        CAMEngine(net, "features", method=method).explain(images)


# -- memory and hooks --------------------------------------------------------------------------
def test_del_model_frees_it_without_the_garbage_collector():
    gc.disable()
    try:
        fresh = ResNet50FineTuned(2, weights=None, enable_gradcam=True)
        ref = weakref.ref(fresh)
        del fresh
        assert ref() is None
    finally:
        gc.enable()


def test_dropped_engines_and_explainers_do_not_leave_hooks(images, build_model, hook_counts):
    net = build_model(num_classes=2)
    for _ in range(50):
        CAMEngine(net, "layer4").attach()
        GradCAMExplainer(net, "layer3").attach()
    assert hook_counts(net)["forward"] == 0
    kept = CAMEngine(net, "layer4").attach()  # one still referenced keeps its hook
    assert hook_counts(net)["forward"] == 1
    kept.remove()


def test_deepcopy_gets_its_own_engine(model, images, hook_counts):
    copied = copy.deepcopy(model)
    assert copied._gradcam.model is copied
    copied.disable_gradcam_mode()
    assert model.gradcam_enabled and hook_counts(model)["forward"] == 1


# -- constructor -----------------------------------------------------------------------------
def test_torchvision_constructor_options_pass_through(images):
    from torchvision.ops import FrozenBatchNorm2d

    zero = ResNet50FineTuned(2, weights=None, zero_init_residual=True, progress=False)
    assert all(float(b.bn3.weight.abs().sum()) == 0 for b in zero.modules() if hasattr(b, "bn3"))
    frozen = ResNet50FineTuned(2, weights=None, norm_layer=FrozenBatchNorm2d, enable_gradcam=True)
    assert isinstance(frozen.bn1, FrozenBatchNorm2d)
    assert frozen(images, return_gradcam=True)[1].shape == (2, SIZE, SIZE)
    dilated = ResNet50FineTuned(2, weights=None, replace_stride_with_dilation=[False, False, True]).eval()
    with torch.no_grad():
        assert dilated.forward_features(images).shape[-2:] == (SIZE // 16, SIZE // 16)


def test_from_checkpoint_does_not_ignore_num_classes_zero(tmp_path):
    from gradcam_kit.models.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "m.pt", ResNet50FineTuned(2, weights=None), num_classes=2)
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        ResNet50FineTuned.from_checkpoint(path, num_classes=0)


# -- checkpoints of wrapped models, in every command that reads them --------------------------
@pytest.mark.parametrize("prefix", ["module.", "model.", "_orig_mod.", "module.model."])
def test_explain_reads_checkpoints_of_wrapped_models(prefix, tmp_path):
    from PIL import Image

    from gradcam_kit.cli.commands import main

    torch.manual_seed(0)
    plain = ResNet50FineTuned(3, weights=None)
    # DataParallel/DDP, Lightning, torch.compile: no num_classes entry, only prefixed keys
    wrapped = {prefix + k: v for k, v in plain.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 3}, tmp_path / "wrapped.ckpt")
    Image.new("L", (40, 40), color=70).save(tmp_path / "x.png")
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "wrapped.ckpt"),
                 "--size", "32", "--num-workers", "0", "--grid", "0", "--output", str(out)]) == 0
    header = (out / "predictions.csv").read_text().splitlines()[0]
    assert header.endswith("prob_0,prob_1,prob_2")  # the head's 3 classes, read through the prefix
    loaded = ResNet50FineTuned.from_checkpoint(tmp_path / "wrapped.ckpt")
    torch.testing.assert_close(loaded.fc.weight, plain.fc.weight)


def test_frozen_batchnorm_model_loads_a_plain_checkpoint(tmp_path):
    from torchvision.ops import FrozenBatchNorm2d

    from gradcam_kit.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    plain = ResNet50FineTuned(2, weights=None)
    path = save_checkpoint(tmp_path / "plain.pt", plain, num_classes=2)
    frozen = ResNet50FineTuned(2, weights=path, norm_layer=FrozenBatchNorm2d)
    torch.testing.assert_close(frozen.bn1.running_var, plain.bn1.running_var)


# -- DenseNet (CheXNet's backbone): the default layer is the tensor the head reads -------------
def _densenet():
    from torchvision.models import densenet121

    torch.manual_seed(0)
    net = densenet121(weights=None, num_classes=3)
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():  # non-trivial eval statistics: some features go negative
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.3, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    return net.eval()


def test_densenet_cam_is_the_cam_of_the_head(images, hook_counts):
    from gradcam_kit.explainers.cnn import explain

    net = _densenet()
    with torch.no_grad():
        pooled_input = torch.relu(net.features(images))  # what torchvision's head pools
        logits = net(images)
    assert bool((net.features(images) < 0).any())  # so pre- and post-ReLU differ
    out = explain(net, images, method="cam", class_idx=[0, 2], output_size=None, normalize=False)
    weights = net.classifier.weight[[0, 2]]
    expected = torch.einsum("bc,bchw->bhw", weights, pooled_input).clamp_min(0)
    torch.testing.assert_close(out.heatmaps["features"], expected)
    torch.testing.assert_close(out.logits, logits)  # the model's output is unchanged
    # exactness: the class score is the spatial mean of the un-rectified CAM plus the bias
    scores = torch.einsum("bc,bchw->bhw", weights, pooled_input).mean(dim=(1, 2))
    torch.testing.assert_close(scores + net.classifier.bias[[0, 2]], logits[[0, 1], [0, 2]])
    assert hook_counts(net)["forward"] == 0


def test_densenet_gradcam_uses_the_rectified_features(images, hook_counts):
    from gradcam_kit.explainers.cnn import GradCAMExplainer

    net = _densenet()
    features = torch.relu(net.features(images)).detach().requires_grad_(True)
    score = net.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(features), 1), 1))
    (gradient,) = torch.autograd.grad(score[:, 1].sum(), features)
    manual = torch.einsum("bc,bchw->bhw", gradient.mean(dim=(2, 3)), features.detach()).clamp_min(0)
    with GradCAMExplainer(net) as explainer:  # attached: the rectifying hook stays too
        attached = explainer(images, 1, output_size=None, normalize=False).heatmaps["features"]
        assert hook_counts(net)["forward"] == 2
    one_shot = GradCAMExplainer(net)(images, 1, output_size=None, normalize=False).heatmaps["features"]
    torch.testing.assert_close(attached, manual)
    torch.testing.assert_close(one_shot, manual)
    assert hook_counts(net)["forward"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_del_model_returns_gpu_memory_without_the_garbage_collector():
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    gc.disable()
    try:
        on_gpu = ResNet50FineTuned(2, weights=None, enable_gradcam=True).cuda()
        x = torch.randn(2, 3, SIZE, SIZE, device="cuda")
        with torch.no_grad():
            on_gpu(x, return_gradcam=True)
        del on_gpu, x
        torch.cuda.empty_cache()
        assert torch.cuda.memory_allocated() == baseline
    finally:
        gc.enable()
