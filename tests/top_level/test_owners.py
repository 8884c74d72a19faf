"""One owner per concept: the rules that used to be written several times, pinned once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradcam_kit.core.engine import CAMEngine
from gradcam_kit.core.scores import (
    class_probabilities,
    class_probability,
    class_scores,
    predicted_class,
    resolve_class_idx,
)

# -- 1. the single-logit rule (gradcam_kit.core.scores) ---------------------------------


def tiny_net(outputs: int) -> nn.Module:
    """conv -> ReLU -> global average pool -> linear: CAM-compatible at layer "1"."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, outputs)
    ).eval()


def single_logit_setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A single-logit net and two images, one decided positive (z > 0) and one negative."""
    model = tiny_net(1)
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = model(images)[:, 0]
        model[-1].bias -= z.mean()  # one logit above zero, one below
        z = model(images)[:, 0]
    assert (z > 0).sum() == 1 and (z < 0).sum() == 1
    return model, images, z


def test_predicted_class_of_a_single_logit_is_z_at_least_zero():
    logits = torch.tensor([[0.0], [-1e-9], [3.0], [-2.0]])
    assert predicted_class(logits).tolist() == [1, 0, 1, 0]
    # sigmoid(-1e-9) rounds to 0.5 in float32: the rule is decided on z, not on the sigmoid.
    assert float(torch.sigmoid(logits[1, 0])) == 0.5
    assert predicted_class(torch.tensor([[0.1, 0.7, 0.2]])).tolist() == [1]
    with pytest.raises(ValueError, match=r"shape \(B, num_classes\)"):
        predicted_class(torch.zeros(3))


def test_single_logit_probabilities_are_negative_then_positive():
    logits = torch.tensor([[2.0], [-1.0]])
    p = torch.sigmoid(logits[:, 0])
    torch.testing.assert_close(class_probabilities(logits), torch.stack([1 - p, p], 1))
    torch.testing.assert_close(class_probability(logits, torch.tensor([1, 0])), torch.stack([p[0], 1 - p[1]]))
    multi = torch.tensor([[1.0, 2.0, 0.5]])
    torch.testing.assert_close(class_probability(multi, torch.tensor([1])), multi.softmax(1)[:, 1])


def test_single_logit_scores_are_plus_z_for_class_1_and_minus_z_for_class_0():
    logits = torch.tensor([[2.0], [-3.0]])
    assert class_scores(logits, torch.tensor([1, 1])).tolist() == [2.0, -3.0]
    assert class_scores(logits, torch.tensor([0, 0])).tolist() == [-2.0, 3.0]
    assert class_scores(logits, None).tolist() == [2.0, 3.0]  # the prediction: |z|
    assert resolve_class_idx(None, logits).tolist() == [1, 0]
    assert resolve_class_idx(1, logits).tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"out of range: expected an int in \[0, 1\]"):
        resolve_class_idx(2, logits)


def test_engine_explains_class_0_as_minus_z_and_class_1_as_plus_z():
    model, images, z = single_logit_setup()
    engine = CAMEngine(model, "1")
    try:
        maps = {k: engine.explain(images, k, normalize=False).heatmaps["1"] for k in (0, 1)}
        plus = engine.explain(images, score_fn=lambda out: out[:, 0], normalize=False).heatmaps["1"]
        minus = engine.explain(images, score_fn=lambda out: -out[:, 0], normalize=False).heatmaps["1"]
        predicted = engine.explain(images, normalize=False)
    finally:
        engine.remove()
    torch.testing.assert_close(maps[1], plus)
    torch.testing.assert_close(maps[0], minus)
    assert not torch.allclose(maps[0], maps[1])
    assert predicted.class_idx.tolist() == (z >= 0).long().tolist()
    for i, k in enumerate(predicted.class_idx.tolist()):
        torch.testing.assert_close(predicted.heatmaps["1"][i], maps[k][i])


@pytest.mark.parametrize("method", ["cam", "scorecam"])
def test_gradient_free_methods_follow_the_same_rule(method):
    from gradcam_kit.methods import ClassActivationMap, ScoreCAM

    model, images, z = single_logit_setup()
    cam_method = ClassActivationMap(model[-1]) if method == "cam" else ScoreCAM(batch_size=4)
    engine = CAMEngine(model, "1", method=cam_method)
    try:
        maps = {k: engine.explain(images, k, normalize=False).heatmaps["1"] for k in (0, 1)}
        predicted = engine.explain(images, normalize=False).heatmaps["1"]
    finally:
        engine.remove()
    if method == "cam":  # class 0 uses the head's weights negated: the two maps never overlap
        assert bool((maps[0] * maps[1] == 0).all()) and bool((maps[0] + maps[1] > 0).any())
    negative = int((z < 0).nonzero()[0, 0])
    torch.testing.assert_close(predicted[negative], maps[0][negative])


def test_faithfulness_tracks_the_probability_of_the_explained_class():
    from gradcam_kit.metrics.faithfulness import cam_explainer, confidence_scores

    model, images, z = single_logit_setup()
    saliency = torch.ones(2, 8, 8)
    p = torch.sigmoid(z)
    for k, expected in ((1, p), (0, 1 - p)):
        original, _ = confidence_scores(model, images, saliency, k)
        torch.testing.assert_close(original, expected)
    # The explainer it drives accepts class 1 of a single logit (it used to be out of range).
    maps = cam_explainer("1")(model, images, torch.tensor([1, 0]))
    assert maps.shape == (2, 8, 8)


def test_classification_and_explain_share_the_rule():
    from gradcam_kit.metrics.classification import predictions, scores
    from gradcam_kit.viz.overlays import OverlayOptions, _gradcam_kwargs, _predict

    logits = torch.tensor([[0.0], [-1e-9], [4.0]])
    probs, predicted, explained = _predict(logits, None)
    assert predicted.tolist() == predictions(logits).tolist() == predicted_class(logits).tolist() == [1, 0, 1]
    assert explained.tolist() == [1, 0, 1]
    torch.testing.assert_close(probs, scores(logits))
    assert predictions(logits[:, 0]).tolist() == [1, 0, 1]
    options = OverlayOptions(method="gradcam", layer="layer4", alignment="pixel", display=(64, 64), class_idx=0)
    assert _gradcam_kwargs(options)["gradcam_class_idx"] == 0
    assert "gradcam_score_fn" not in _gradcam_kwargs(options)


# -- 2. the default target layer (gradcam_kit.explainers.cnn) ---------------------------


def test_one_default_target_layer_for_explainers_and_the_arch_command():
    import torchvision

    from gradcam_kit.explainers import cnn
    from gradcam_kit.models import architecture

    assert architecture.default_target_layer is cnn.default_target_layer
    resnet = torchvision.models.resnet18(weights=None)
    assert cnn.default_target_layer(resnet) == "layer4"
    assert architecture.analyze(resnet, 64).target_layer == "layer4"

    class OwnLayer(nn.Sequential):
        gradcam_target_layer = "0"

    own = OwnLayer(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    assert cnn.default_target_layer(own) == "0"  # the model's own choice wins
    assert cnn.default_target_layer(nn.Sequential(*own)) == "1"  # else the last conv


# -- 3. eval mode and restore (gradcam_kit.core.modes) ----------------------------------


def mixed_modes() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Dropout(), nn.Linear(4, 2)))
    model.train()
    model[1].eval()  # a frozen BatchNorm in a training model
    model[2][1].eval()
    return model


def flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_eval_mode_restores_every_submodules_flag():
    from gradcam_kit.core.modes import eval_mode

    model = mixed_modes()
    before = flags(model)
    assert len(set(before)) == 2
    with eval_mode(model) as inside:
        assert inside is model and not any(flags(model))
    assert flags(model) == before
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert flags(model) == before


def test_eval_mode_restores_when_eval_itself_raises():
    from gradcam_kit.core.modes import eval_mode

    class Faulty(nn.Module):
        def train(self, mode: bool = True) -> nn.Module:
            self.training = mode
            if not mode:
                raise RuntimeError("eval refused")
            return self

    model = nn.Sequential(mixed_modes(), Faulty())
    before = flags(model)
    with pytest.raises(RuntimeError, match="eval refused"), eval_mode(model):
        pass
    assert flags(model) == before


def test_callers_restore_mixed_modes():
    from gradcam_kit.methods import ScoreCAM
    from gradcam_kit.training.train import predict

    model = tiny_net(2)
    model.train()
    model[0].eval()
    before = flags(model)
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    CAMEngine(model, "1", method=ScoreCAM(batch_size=4)).explain(images)
    assert flags(model) == before
    loader = [(images, torch.tensor([0, 1]), torch.tensor([0, 1]))]
    model.to(memory_format=torch.channels_last)
    predict(model, loader, torch.device("cpu"))
    assert flags(model) == before


# -- 5. checkpoint metadata (gradcam_kit.models.checkpoint.checkpoint_metadata) ---------


def test_checkpoint_metadata_rules():
    from gradcam_kit.models.checkpoint import CheckpointMetadata, checkpoint_metadata

    head = {"module.fc.weight": torch.zeros(1, 4), "module.fc.bias": torch.zeros(1)}
    meta = checkpoint_metadata({
        "state_dict": head, "class_names": ["normal", "opacity"], "input_size": [64, 96],
        "mean": [0.5], "std": [0.2, 0.3, 0.4], "target_layer": "layer3",
        "recommended": {"layer": "layer4", "method": "gradcam++"},
    })
    assert meta == CheckpointMetadata(
        num_classes=1, class_names=["normal", "opacity"], input_size=(64, 96),
        mean=(0.5, 0.5, 0.5), std=(0.2, 0.3, 0.4), target_layer="layer3",
        recommended={"layer": "layer4", "method": "gradcam++"},
    )
    assert checkpoint_metadata({"input_size": 80}).input_size == (80, 80)
    assert checkpoint_metadata({"input_size": "80"}).input_size is None
    # mean and std go together; names must fit the head; a recommendation names a layer.
    odd = checkpoint_metadata({"num_classes": 3, "class_names": ["a", "b"], "mean": [0.1, 0.2, 0.3], "recommended": {}})
    assert (odd.mean, odd.std, odd.class_names, odd.recommended) == (None, None, None, None)
    assert checkpoint_metadata({}) == CheckpointMetadata()


def test_model_and_commands_read_a_checkpoint_alike(tmp_path):
    import argparse

    from gradcam_kit.cli.explain import _read_model_info
    from gradcam_kit.data.inputs import Inputs
    from gradcam_kit.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
    from gradcam_kit.models.checkpoint import save_checkpoint
    from gradcam_kit.models.preprocessing import input_preprocessing
    from gradcam_kit.models.resnet50 import ResNet50FineTuned

    torch.manual_seed(0)
    path = save_checkpoint(
        tmp_path / "best.pt", ResNet50FineTuned(1, weights=None), class_names=["no", "yes"],
        input_size=[72, 72], mean=[0.4, 0.4, 0.4],  # a mean without a std: both ignored
    )
    model = ResNet50FineTuned.from_checkpoint(path)
    assert model.fc.out_features == 1 and model.class_names == ["no", "yes"]
    assert model.input_size == (72, 72) and (model.mean, model.std) == (IMAGENET_MEAN, IMAGENET_STD)
    args = argparse.Namespace(checkpoint=path, weights=None, size=None, num_classes=None)
    info = _read_model_info(args, Inputs(items=[]))
    assert (info.num_outputs, info.class_names, info.size) == (1, ["no", "yes"], (72, 72))
    assert (tuple(info.mean), tuple(info.std)) == (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))
    assert input_preprocessing(path) == (72, {})


# -- 6. the folder scanner (gradcam_kit.data.datasets.scan_images) ----------------------


def test_one_scanner_for_datasets_and_explain_inputs(tmp_path):
    from PIL import Image

    from gradcam_kit.data.datasets import image_folder_samples, scan_images
    from gradcam_kit.data.inputs import collect_inputs

    folder = tmp_path / "root" / "sick"
    for name in ("z.png", "B.JPG", "a.png", "a_mask.png", ".hidden.png", ".cache/x.png", "sub/c.png", "notes.txt"):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("txt"):
            path.write_text("not an image")
        else:
            Image.new("L", (8, 8)).save(path, format="PNG" if name.lower().endswith("png") else "JPEG")
    images, skipped = scan_images(folder)
    expected = [folder / n for n in ("B.JPG", "a.png", "sub/c.png", "z.png")]
    assert images == expected
    assert [(path, reason.split(" (")[0]) for path, reason in skipped] == [(str(folder / "notes.txt"), "not an image file")]
    samples, names = image_folder_samples(tmp_path / "root")
    assert names == ["sick"] and [s.path for s in samples] == expected
    assert samples[1].mask == folder / "a_mask.png"
    assert [i.path for i in collect_inputs(folder).items] == expected
    assert [i.path for i in collect_inputs(tmp_path / "root").items] == expected
    assert scan_images(tmp_path / "absent") == ([], [])


# -- 7. type aliases (gradcam_kit.core.types) ------------------------------------------


def test_signatures_use_the_named_aliases():
    import inspect
    import typing

    from gradcam_kit.core import types
    from gradcam_kit.explainers import cnn, vit
    from gradcam_kit.methods import activation
    from gradcam_kit.models.resnet50 import ResNet50FineTuned

    expected = {"class_idx": "ClassIdx", "gradcam_class_idx": "ClassIdx", "output_size": "OutputSize",
                "score_fn": "ScoreFn | None", "layers": "LayerSpec | None", "target_layers": "LayerSpec"}
    functions = [CAMEngine.__init__, CAMEngine.explain, CAMEngine.explain_methods, cnn.explain,
                 cnn.GradCAMExplainer.explain, vit.vit_gradcam, activation.score_cam,
                 ResNet50FineTuned.forward, ResNet50FineTuned.explain]
    checked = 0
    for function in functions:
        typing.get_type_hints(function)  # every alias resolves where it is used
        for name, parameter in inspect.signature(function).parameters.items():
            if name in expected and not (function is ResNet50FineTuned.explain and name == "layers"):
                assert parameter.annotation == expected[name], (function.__qualname__, name)
                checked += 1
    assert checked >= 15
    assert typing.get_type_hints(CAMEngine.explain)["class_idx"] == types.ClassIdx
