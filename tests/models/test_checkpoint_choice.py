"""One way to load a checkpoint: the constructor and from_checkpoint explain the same layer
and method, the one evaluate recommended, else the one train stored; the model knows the
input size and normalisation it was trained with."""

from __future__ import annotations

import warnings

import pytest
import torch

from gradcam_kit.models.checkpoint import (
    explanation_choice,
    load_checkpoint,
    save_checkpoint,
    update_checkpoint,
)
from resnet50 import ResNet50FineTuned


@pytest.fixture
def stored(tmp_path, build_model):
    model = build_model(num_classes=2)
    return save_checkpoint(
        tmp_path / "best.pt", model, num_classes=2, class_names=["normal", "opacity"],
        input_size=[96, 96], mean=[0.5] * 3, std=[0.25] * 3, target_layer="layer1",
    )


def test_both_loaders_use_the_stored_layer(stored):
    by_constructor = ResNet50FineTuned(2, weights=stored)
    by_classmethod = ResNet50FineTuned.from_checkpoint(stored)
    for model in (by_constructor, by_classmethod):
        assert model.gradcam_target_layer == "layer1"
        assert model.gradcam_choice == {"layer": "layer1", "method": "gradcam", "source": "stored in the checkpoint by train"}


def test_the_recommendation_wins_over_the_stored_layer(stored):
    update_checkpoint(stored, recommended={"layer": "layer2", "method": "gradcam++", "pointing": 0.94, "split": "val"})
    assert load_checkpoint(stored)["target_layer"] == "layer1"  # the rest of the file is kept
    for model in (ResNet50FineTuned(2, weights=stored), ResNet50FineTuned.from_checkpoint(stored)):
        assert model.gradcam_target_layer == "layer2"
        assert model.gradcam_choice["method"] == "gradcam++"
        assert model.gradcam_choice["source"] == "recommended by evaluate: pointing 0.94 on val"
    explicit = ResNet50FineTuned.from_checkpoint(stored, target_layer="layer4.2.conv3")
    assert explicit.gradcam_target_layer == "layer4.2.conv3"
    assert explicit.gradcam_choice["method"] == "gradcam++"  # only the layer was chosen
    assert explicit.gradcam_choice["source"] == "chosen by the caller"


def test_without_a_checkpoint_the_default_is_the_users_layer():
    model = ResNet50FineTuned(2, weights=None)
    assert model.gradcam_target_layer == "layer4.2.conv3"
    assert explanation_choice({})["layer"] == "layer4.2.conv3"


def test_model_preprocess_uses_the_trained_size_and_normalisation(stored, tmp_path):
    from PIL import Image

    model = ResNet50FineTuned.from_checkpoint(stored)
    assert model.input_size == (96, 96) and model.mean == (0.5, 0.5, 0.5)
    image = Image.new("L", (200, 180), 128)
    x = model.preprocess(image)
    assert x.shape == (1, 3, 96, 96)
    torch.testing.assert_close(x, torch.full_like(x, (128 / 255 - 0.5) / 0.25))
    assert ResNet50FineTuned(2, weights=None).preprocess(image).shape == (1, 3, 224, 224)


def test_overlay_in_train_mode_warns(stored):
    model = ResNet50FineTuned.from_checkpoint(stored, enable_gradcam=True)  # never .eval()
    x = torch.randn(1, 3, 64, 64)
    with pytest.warns(UserWarning, match=r"train mode.*model\.eval\(\)"):
        model.get_gradcam_overlay(x)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.get_gradcam_overlay(x)
