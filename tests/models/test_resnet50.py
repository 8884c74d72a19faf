"""The integrated model: ``ResNet50FineTuned`` and its ``forward(x, return_gradcam=...)`` contract."""

from __future__ import annotations

import copy
import inspect
import math
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradcam_kit.core.engine import min_max_normalize, upsample
from resnet50 import ResNet50FineTuned

SIZE = 64  # the side of conftest's images

# -- constructor ------------------------------------------------------------------------


def test_default_weights_are_imagenet_for_fine_tuning():
    parameters = inspect.signature(ResNet50FineTuned).parameters
    assert parameters["weights"].default == "DEFAULT"
    assert parameters["weights"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["num_classes"].default == 2
    assert parameters["freeze_features"].default is True
    assert parameters["enable_gradcam"].default is False


@pytest.mark.parametrize("num_classes", [1, 2, 5])
def test_head_is_a_fresh_linear_and_only_it_trains_when_frozen(num_classes, build_model):
    model = build_model(num_classes=num_classes)
    assert isinstance(model.fc, nn.Linear)
    assert (model.fc.in_features, model.fc.out_features) == (2048, num_classes)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    assert model.gradcam_enabled is False
    assert model.gradcam_target_layer == "layer4.2.conv3"


def test_unfrozen_model_trains_every_parameter(build_model):
    model = build_model(freeze_features=False)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "2"])
def test_bad_num_classes_is_rejected(bad):
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        ResNet50FineTuned(num_classes=bad, weights=None)


def test_target_layer_accepts_index_form_and_suggests_close_names(build_model):
    model = build_model(target_layer="layer4[-1].conv2")
    assert model.gradcam_target_layer == "layer4.2.conv2"
    with pytest.raises(ValueError, match="did you mean 'layer4.2.conv3'"):
        ResNet50FineTuned(weights=None, target_layer="layer4.2.conv33")


# -- the heatmap ------------------------------------------------------------------------


def test_heatmap_contract(shared_model, images):
    logits, heatmap = shared_model(images, return_gradcam=True)
    assert logits.shape == (2, 2)
    assert heatmap.shape == (2, SIZE, SIZE)
    assert heatmap.dtype == torch.float32
    assert heatmap.device == images.device
    assert not heatmap.requires_grad and heatmap.grad_fn is None
    assert torch.isfinite(heatmap).all()
    assert heatmap.min() >= 0 and heatmap.max() <= 1
    # Per-image min-max: every image reaches both ends of [0, 1].
    torch.testing.assert_close(heatmap.flatten(1).amin(1), torch.zeros(2))
    torch.testing.assert_close(heatmap.flatten(1).amax(1), torch.ones(2))


def test_plain_forward_returns_only_the_logits(shared_model, images):
    with torch.no_grad():
        out = shared_model(images)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2)


def test_all_zero_map_stays_zeros_not_nan(shared_model, images):
    # A score with zero gradient everywhere: every channel weight is 0, the map is 0.
    with torch.no_grad():
        _, heatmap = shared_model(
            images, return_gradcam=True, gradcam_score_fn=lambda z: 0.0 * z[:, 0]
        )
        _, raw = shared_model(
            images, return_gradcam=True, gradcam_raw=True, gradcam_score_fn=lambda z: 0.0 * z[:, 0]
        )
    assert not torch.isnan(heatmap).any()
    assert torch.equal(heatmap, torch.zeros_like(heatmap))
    assert torch.equal(raw, torch.zeros_like(raw))


def test_map_with_only_negative_evidence_is_zeros_not_nan(shared_model, images):
    # Negating the score negates every channel weight, so ReLU keeps exactly what the other
    # map clipped. For this seeded model class 0's map is positive everywhere, so the map
    # of its negation is clipped to zero everywhere: it must come out as zeros, not NaN.
    score = lambda z: z[:, 0]  # noqa: E731
    with torch.no_grad():
        _, raw = shared_model(images, return_gradcam=True, gradcam_raw=True, gradcam_score_fn=score)
        _, raw_neg = shared_model(
            images, return_gradcam=True, gradcam_raw=True, gradcam_score_fn=lambda z: -score(z)
        )
        _, heatmap_neg = shared_model(images, return_gradcam=True, gradcam_score_fn=lambda z: -score(z))
    assert not ((raw > 0) & (raw_neg > 0)).any()
    assert (raw > 0).all() and torch.equal(raw_neg, torch.zeros_like(raw_neg))
    assert not torch.isnan(heatmap_neg).any()
    assert torch.equal(heatmap_neg, torch.zeros_like(heatmap_neg))


@pytest.mark.parametrize(("height", "width"), [(SIZE, SIZE), (96, 128), (100, 160)])
def test_raw_map_has_the_layer_resolution(shared_model, make_images, height, width):
    images = make_images(2, height, width)
    with torch.no_grad():
        _, raw = shared_model(images, return_gradcam=True, gradcam_raw=True)
        _, heatmap = shared_model(images, return_gradcam=True)
    # Each stride-2 stage rounds up: h/32 for multiples of 32, ceil(h/32) otherwise.
    assert raw.shape == (2, math.ceil(height / 32), math.ceil(width / 32))
    assert raw.dtype == torch.float32 and raw.min() >= 0
    # Not normalised: the raw map keeps its own scale.
    assert not torch.allclose(raw.flatten(1).amax(1), torch.ones(2))
    # The heatmap is exactly the raw map, upsampled then min-max normalised.
    torch.testing.assert_close(
        heatmap, min_max_normalize(upsample(raw, (height, width), alignment="receptive-field"))
    )


def test_raw_map_is_7x7_at_224(shared_model):
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, raw = shared_model(images, return_gradcam=True, gradcam_raw=True)
    assert raw.shape == (1, 7, 7)


# -- which class is explained -----------------------------------------------------------


def test_class_idx_none_int_sequence_tensor(shared_model, images):
    with torch.no_grad():
        logits, predicted = shared_model(images, return_gradcam=True)
        _, explicit = shared_model(
            images, return_gradcam=True, gradcam_class_idx=logits.argmax(1).tolist()
        )
        _, class0 = shared_model(images, return_gradcam=True, gradcam_class_idx=0)
        _, class1 = shared_model(images, return_gradcam=True, gradcam_class_idx=1)
        _, mixed_list = shared_model(images, return_gradcam=True, gradcam_class_idx=[0, 1])
        _, mixed_tuple = shared_model(images, return_gradcam=True, gradcam_class_idx=(0, 1))
        _, mixed_tensor = shared_model(
            images, return_gradcam=True, gradcam_class_idx=torch.tensor([0, 1])
        )
        _, scalar_tensor = shared_model(images, return_gradcam=True, gradcam_class_idx=torch.tensor(1))
    torch.testing.assert_close(predicted, explicit)
    # The two classes of a 2-class head get different maps ...
    assert not torch.allclose(class0, class1, atol=1e-3)
    # ... and a per-sample index picks each sample's own.
    for mixed in (mixed_list, mixed_tuple, mixed_tensor):
        torch.testing.assert_close(mixed[0], class0[0])
        torch.testing.assert_close(mixed[1], class1[1])
    torch.testing.assert_close(scalar_tensor, class1)


@pytest.mark.parametrize(
    ("class_idx", "message"),
    [
        ([0], r"got \(1,\) class indices for a batch of 2"),
        ([0, 1, 0], r"got \(3,\) class indices for a batch of 2"),
        (torch.tensor([[0, 1]]), r"class indices for a batch of 2"),
        (2, r"class index 2 is out of range: expected an int in \[0, 1\]"),
        (-1, r"class index -1 is out of range"),
        ([0, 5], r"out of range: expected an int in \[0, 1\]"),
        (torch.tensor([0, -1]), r"out of range"),
        (True, r"class index must be an int in \[0, 1\]"),
        (1.0, r"class index must be an int in \[0, 1\]"),
        ([0.0, 1.0], r"class indices must be an int in \[0, 1\]"),
        ([True, False], r"class indices must be an int"),
        (torch.tensor([0.0, 1.0]), r"must be integers.*got dtype torch.float32"),
        (torch.tensor([True, False]), r"must be integers.*got dtype torch.bool"),
        ("1", r"class index must be an int"),
        ({0: 1}, r"class index must be an int"),
    ],
)
def test_bad_class_idx_raises_value_error(shared_model, make_images, class_idx, message):
    with pytest.raises(ValueError, match=message):
        shared_model(make_images(2, 32, 32), return_gradcam=True, gradcam_class_idx=class_idx)


# -- the modes it must work in ----------------------------------------------------------


def test_eval_mode_with_grad_enabled_logits_follow_grad_mode(shared_model, images):
    logits, heatmap = shared_model(images, return_gradcam=True)
    # The head is trainable, so under grad mode the logits carry a graph to it ...
    assert logits.requires_grad
    with torch.no_grad():
        logits_ng, heatmap_ng = shared_model(images, return_gradcam=True)
    # ... and under no_grad they do not, while the heatmap is the same.
    assert not logits_ng.requires_grad and logits_ng.grad_fn is None
    torch.testing.assert_close(heatmap, heatmap_ng)
    torch.testing.assert_close(logits.detach(), logits_ng)


def test_no_grad_mode_is_restored(shared_model, images):
    with torch.no_grad():
        shared_model(images, return_gradcam=True)
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()


def test_frozen_backbone_pytorch_grad_cam_fails_ours_works(shared_model, images, build_model):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    frozen = copy.deepcopy(shared_model)
    frozen.disable_gradcam_mode()
    targets = [ClassifierOutputTarget(0), ClassifierOutputTarget(1)]
    # No gradient reaches layer4 when the backbone is frozen: pytorch-grad-cam's backward
    # hook never fires and it crashes.
    with pytest.raises((AttributeError, RuntimeError, IndexError, TypeError)):
        with GradCAM(model=frozen, target_layers=[frozen.layer4[-1].conv3]) as cam:
            cam(input_tensor=images, targets=targets)

    with torch.no_grad():
        _, heatmap = shared_model(images, return_gradcam=True, gradcam_class_idx=[0, 1])
    # Same weights, unfrozen: the frozen model's map is the very same map.
    unfrozen = build_model(freeze_features=False, enable_gradcam=True)
    unfrozen.load_state_dict(shared_model.state_dict())
    _, reference = unfrozen(images, return_gradcam=True, gradcam_class_idx=[0, 1])
    torch.testing.assert_close(heatmap, reference, rtol=0, atol=1e-5)
    assert heatmap.flatten(1).amax(1).eq(1).all()


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: buffer.clone()
        for name, buffer in model.named_buffers()
        if name.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }


@pytest.mark.parametrize("unfrozen", ["head only", "layer4", "everything"])
def test_train_mode_one_forward_no_grad_written_loss_backpropagates(images, unfrozen, build_model):
    model = build_model(num_classes=2, enable_gradcam=True, freeze_features=unfrozen != "everything")
    if unfrozen == "layer4":
        model.layer4.requires_grad_(True)
    model.train()
    model.layer1.eval()  # a mixed state that must survive
    flags = [m.training for m in model.modules()]
    requires = [p.requires_grad for p in model.parameters()]
    plain = copy.deepcopy(model)
    before = _bn_state(model)

    logits, heatmap = model(images, return_gradcam=True)
    plain_logits = plain(images)  # ONE plain forward in the same mode

    assert all(p.grad is None for p in model.parameters()), "the heatmap wrote a .grad"
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == requires
    after, expected = _bn_state(model), _bn_state(plain)
    for name in after:
        if name.endswith("num_batches_tracked"):
            increment = 0 if name.startswith("layer1.") else 1  # layer1 is in eval mode
            assert int(after[name] - before[name]) == increment, name
        torch.testing.assert_close(after[name], expected[name], msg=name)
    torch.testing.assert_close(logits, plain_logits)
    assert heatmap.shape == (2, SIZE, SIZE) and torch.isfinite(heatmap).all()

    # The logits still train the model.
    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0
    if unfrozen != "head only":
        grad = model.layer4[0].conv1.weight.grad
        assert grad is not None and grad.abs().sum() > 0
    if unfrozen == "everything":
        assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    else:
        assert model.conv1.weight.grad is None


def test_autocast_bf16_gives_a_float32_heatmap(shared_model, images):
    with torch.no_grad():
        _, reference = shared_model(images, return_gradcam=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, heatmap = shared_model(images, return_gradcam=True)
    assert logits.dtype == torch.bfloat16
    assert heatmap.dtype == torch.float32
    assert torch.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() <= 1
    torch.testing.assert_close(heatmap, reference, rtol=0, atol=0.15)


def test_channels_last_input(shared_model, images):
    with torch.no_grad():
        _, reference = shared_model(images, return_gradcam=True)
        logits, heatmap = shared_model(
            images.contiguous(memory_format=torch.channels_last), return_gradcam=True
        )
    assert heatmap.shape == (2, SIZE, SIZE)
    torch.testing.assert_close(heatmap, reference, rtol=0, atol=1e-4)


def test_non_square_input_and_batch_of_one(shared_model, make_images):
    images = make_images(2, 64, 96)
    with torch.no_grad():
        logits, heatmap = shared_model(images, return_gradcam=True, gradcam_class_idx=[1, 0])
        logits1, heatmap1 = shared_model(images[1:], return_gradcam=True, gradcam_class_idx=0)
    assert heatmap.shape == (2, 64, 96) and heatmap1.shape == (1, 64, 96)
    assert logits1.shape == (1, 2)
    # Eval mode: one image's map does not depend on the rest of the batch.
    torch.testing.assert_close(heatmap1[0], heatmap[1], rtol=0, atol=1e-5)


def test_two_threads_on_one_model_each_get_their_own_map(shared_model, make_images):
    inputs = [make_images(1, seed=10), make_images(1, seed=11)]
    with torch.no_grad():
        expected = [shared_model(x, return_gradcam=True)[1] for x in inputs]
    assert not torch.allclose(expected[0], expected[1], atol=1e-3)

    rounds = 3
    barrier = threading.Barrier(2)
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for _ in range(rounds):
                barrier.wait(timeout=60)  # both threads enter forward together
                with torch.no_grad():
                    results[index].append(shared_model(inputs[index], return_gradcam=True)[1])
        except BaseException as err:  # surfaced in the main thread below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for index in range(2):
        assert len(results[index]) == rounds
        for heatmap in results[index]:
            torch.testing.assert_close(heatmap, expected[index], rtol=0, atol=1e-5)


def test_inference_mode_equals_no_grad(shared_model, images):
    with torch.no_grad():
        logits_ng, heatmap_ng = shared_model(images, return_gradcam=True)
    with torch.inference_mode():
        logits, heatmap = shared_model(images.clone(), return_gradcam=True)
        assert torch.is_inference_mode_enabled()
    assert torch.equal(logits, logits_ng)
    assert torch.equal(heatmap, heatmap_ng)
    assert not logits.requires_grad


def test_logits_identical_with_gradcam_on_off_and_returned(fresh_model, images):
    with torch.no_grad():
        fresh_model.disable_gradcam_mode()
        off = fresh_model(images)
        fresh_model.enable_gradcam_mode()
        on = fresh_model(images)
        with_map, _ = fresh_model(images, return_gradcam=True)
    assert torch.equal(off, on)
    assert torch.equal(off, with_map)
    grad_on = fresh_model(images)
    grad_map, _ = fresh_model(images, return_gradcam=True)
    assert torch.equal(grad_on.detach(), off) and torch.equal(grad_map.detach(), off)


# -- switching Grad-CAM on and off ------------------------------------------------------


def test_enable_disable_idempotent_and_hooks_removed(fresh_model, images, hook_counts):
    model = fresh_model
    model.disable_gradcam_mode()
    assert model.gradcam_enabled is False
    assert hook_counts(model) == {"forward": 0, "forward_pre": 0, "backward": 0}
    model.disable_gradcam_mode()
    assert hook_counts(model) == {"forward": 0, "forward_pre": 0, "backward": 0}

    model.enable_gradcam_mode()
    model.enable_gradcam_mode()
    assert model.gradcam_enabled is True
    assert hook_counts(model) == {"forward": 1, "forward_pre": 0, "backward": 0}
    assert len(model.layer4[2].conv3._forward_hooks) == 1
    model(images, return_gradcam=True)
    # A multi-layer call adds its hooks for that call only.
    model(images, return_gradcam=True, gradcam_layers=["layer3", "layer4"])
    assert hook_counts(model) == {"forward": 1, "forward_pre": 0, "backward": 0}

    model.disable_gradcam_mode()
    model.disable_gradcam_mode()
    assert model.gradcam_enabled is False
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._backward_hooks


def test_hooks_and_grad_mode_restored_after_exception_in_forward(
    fresh_model, images, monkeypatch, hook_counts
):
    model = fresh_model

    def broken_head(features: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("head exploded")

    # Fails after the target layer, i.e. after the graph cut switched grad mode on.
    monkeypatch.setattr(model.fc, "forward", broken_head)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="head exploded"):
            model(images, return_gradcam=True, gradcam_layers=["layer3", "layer4.2.conv3"])
        assert not torch.is_grad_enabled()
    # Fails before any target layer ran.
    monkeypatch.undo()
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 1, SIZE, SIZE), return_gradcam=True, gradcam_layers="layer2")
    assert hook_counts(model) == {"forward": 1, "forward_pre": 0, "backward": 0}
    # The model is still usable after both failures.
    with torch.no_grad():
        _, heatmap = model(images, return_gradcam=True)
    assert heatmap.max() == 1
    model.disable_gradcam_mode()
    assert hook_counts(model) == {"forward": 0, "forward_pre": 0, "backward": 0}


def test_disabled_raises_runtime_error_naming_both_ways(fresh_model, images):
    fresh_model.disable_gradcam_mode()
    with pytest.raises(RuntimeError, match=r"enable_gradcam=True.*enable_gradcam_mode\(\)"):
        fresh_model(images, return_gradcam=True)
    # The plain forward still works while disabled.
    assert fresh_model(images).shape == (2, 2)


def test_enable_gradcam_constructor_flag(build_model, hook_counts):
    assert build_model(enable_gradcam=True).gradcam_enabled is True
    model = build_model(enable_gradcam=False)
    assert model.gradcam_enabled is False
    assert hook_counts(model)["forward"] == 0
    model.enable_gradcam_mode()
    assert model.gradcam_enabled is True


def test_deepcopy_of_an_enabled_model_still_explains(shared_model, images, hook_counts):
    clone = copy.deepcopy(shared_model)
    assert clone.gradcam_enabled
    with torch.no_grad():
        _, original = shared_model(images, return_gradcam=True)
        _, copied = clone(images, return_gradcam=True)
    torch.testing.assert_close(copied, original)
    # The copy owns its hooks: disabling it leaves the original untouched.
    clone.disable_gradcam_mode()
    assert hook_counts(clone)["forward"] == 0
    assert hook_counts(shared_model)["forward"] == 1
    with torch.no_grad():
        _, again = shared_model(images, return_gradcam=True)
    torch.testing.assert_close(again, original)


# -- single-logit and multi-label heads -------------------------------------------------


def test_single_logit_head_explains_the_decision_and_its_negation(make_images, build_model):
    model = build_model(num_classes=1, enable_gradcam=True)
    images = make_images(2, seed=5)
    with torch.no_grad():
        logits = model(images)[:, 0]
        model.fc.bias -= logits.mean()  # one positive and one negative decision
        logits = model(images)[:, 0]
        positive, negative = int(logits.argmax()), int(logits.argmin())
        assert logits[positive] > 0 > logits[negative]

        _, decision = model(images, return_gradcam=True)  # None: the predicted class
        _, class1 = model(images, return_gradcam=True, gradcam_class_idx=1)
        _, class0 = model(images, return_gradcam=True, gradcam_class_idx=0)
        _, logit_map = model(images, return_gradcam=True, gradcam_score_fn=lambda z: z[:, 0])
        _, negated = model(images, return_gradcam=True, gradcam_score_fn=lambda z: -z[:, 0])
    assert decision.shape == (2, SIZE, SIZE)
    # Class 1 (positive) explains the logit, class 0 (negative) explains -logit.
    torch.testing.assert_close(class1, logit_map)
    torch.testing.assert_close(class0, negated)
    # The prediction: class 1 for the positive sample, class 0 for the negative one.
    torch.testing.assert_close(decision[positive], class1[positive])
    torch.testing.assert_close(decision[negative], class0[negative])
    assert not torch.allclose(negated[negative], logit_map[negative], atol=1e-3)
    with pytest.raises(ValueError, match=r"out of range: expected an int in \[0, 1\]"):
        model(images, return_gradcam=True, gradcam_class_idx=2)


def test_multi_label_head_explains_each_label(images, build_model):
    model = build_model(num_classes=3, enable_gradcam=True)
    with torch.no_grad():
        logits, predicted = model(images, return_gradcam=True)
        per_label = [model(images, return_gradcam=True, gradcam_class_idx=k)[1] for k in range(3)]
        _, label2 = model(images, return_gradcam=True, gradcam_score_fn=lambda z: z[:, 2])
        _, chosen = model(images, return_gradcam=True, gradcam_class_idx=[2, 0])
    torch.testing.assert_close(label2, per_label[2])
    torch.testing.assert_close(chosen[0], per_label[2][0])
    torch.testing.assert_close(chosen[1], per_label[0][1])
    # None explains each image's highest logit.
    top = logits.argmax(1)
    for i in range(2):
        torch.testing.assert_close(predicted[i], per_label[int(top[i])][i])


# -- several layers, other methods ------------------------------------------------------


def test_multi_layer_call_returns_one_map_per_layer(shared_model, images):
    layers = ["layer1", "layer2", "layer3", "layer4"]
    with torch.no_grad():
        logits, maps = shared_model(images, return_gradcam=True, gradcam_layers=layers)
        _, raw = shared_model(images, return_gradcam=True, gradcam_layers=layers, gradcam_raw=True)
        _, single = shared_model(images, return_gradcam=True, gradcam_layers="layer3")
        plain = shared_model(images)
    assert list(maps) == layers
    for name in layers:
        assert maps[name].shape == (2, SIZE, SIZE)
    assert [tuple(raw[name].shape[1:]) for name in layers] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    torch.testing.assert_close(single, maps["layer3"])
    assert torch.equal(logits, plain)


@pytest.mark.parametrize("method", ["gradcam++", "xgradcam", "hirescam", "layercam"])
def test_other_methods_per_call(shared_model, images, method):
    with torch.no_grad():
        _, heatmap = shared_model(images, return_gradcam=True, gradcam_method=method)
    assert heatmap.shape == (2, SIZE, SIZE) and heatmap.dtype == torch.float32
    assert torch.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() <= 1


def test_unknown_method_is_rejected(shared_model, images):
    with pytest.raises(ValueError, match="unknown CAM method 'gradkam'"):
        shared_model(images, return_gradcam=True, gradcam_method="gradkam")


# -- parity with pytorch-grad-cam -------------------------------------------------------


@pytest.mark.parametrize("class_idx", [None, [0, 1], [1, 1]])
def test_parity_with_pytorch_grad_cam(shared_model, images, class_idx, build_model):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = build_model(freeze_features=False, enable_gradcam=True)
    model.load_state_dict(shared_model.state_dict())
    # pytorch-grad-cam draws with the usual bilinear resize: the "pixel" alignment.
    logits, heatmap = model(images, return_gradcam=True, gradcam_class_idx=class_idx, gradcam_alignment="pixel")

    reference_model = copy.deepcopy(model)
    reference_model.disable_gradcam_mode()
    classes = logits.argmax(1).tolist() if class_idx is None else class_idx
    with GradCAM(model=reference_model, target_layers=[reference_model.layer4[-1].conv3]) as cam:
        reference = cam(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in classes])
    torch.testing.assert_close(heatmap, torch.from_numpy(reference), rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_heatmap_stays_on_the_device_and_fp16_autocast(shared_model, images):
    model = copy.deepcopy(shared_model).cuda()
    x = images.cuda()
    with torch.no_grad():
        _, reference = shared_model(images, return_gradcam=True)
        logits, heatmap = model(x, return_gradcam=True)
        with torch.autocast("cuda", dtype=torch.float16):
            _, half = model(x.contiguous(memory_format=torch.channels_last), return_gradcam=True)
    assert logits.device == heatmap.device == x.device
    assert heatmap.dtype == half.dtype == torch.float32
    torch.testing.assert_close(heatmap.cpu(), reference, rtol=0, atol=1e-3)
    torch.testing.assert_close(half.cpu(), reference, rtol=0, atol=0.1)
    colored, overlaid = model.get_gradcam_overlay(x[:1], np.zeros((40, 50), np.uint8))
    assert colored.shape == overlaid.shape == (40, 50, 3)
