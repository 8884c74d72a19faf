"""Shared fixtures: tiny seeded inputs and randomly initialised models (never the network)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

from resnet50 import ResNet50FineTuned

SIZE = 64  # ResNet50 at 64x64: layer4 is 2x2, small enough for two CPU cores


def _build_model(**kwargs: object) -> ResNet50FineTuned:
    """A seeded ``ResNet50FineTuned`` with random weights (``weights=None``), in eval mode."""
    torch.manual_seed(0)
    kwargs.setdefault("weights", None)
    model = ResNet50FineTuned(**kwargs)
    # Random init leaves BatchNorm at identity statistics; give it some so eval-mode maps
    # are not degenerate.
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


def _hook_counts(model: nn.Module) -> dict[str, int]:
    """How many forward, forward-pre and backward hooks are registered on any submodule."""
    return {
        "forward": sum(len(m._forward_hooks) for m in model.modules()),
        "forward_pre": sum(len(m._forward_pre_hooks) for m in model.modules()),
        "backward": sum(len(m._backward_hooks) for m in model.modules()),
    }


@pytest.fixture(scope="session")
def build_model() -> Callable[..., ResNet50FineTuned]:
    """``build_model(**kwargs)`` -> a new seeded ``ResNet50FineTuned`` (random weights, eval mode)."""
    return _build_model


@pytest.fixture(scope="session")
def hook_counts() -> Callable[[nn.Module], dict[str, int]]:
    """``hook_counts(model)`` -> the forward, forward-pre and backward hooks on its submodules."""
    return _hook_counts


@pytest.fixture(scope="session")
def shared_model() -> ResNet50FineTuned:
    """Frozen backbone, Grad-CAM enabled, eval mode; one for the whole run.

    Tests must not mutate it: a test that changes the model asks for ``fresh_model``.
    """
    return _build_model(num_classes=2, enable_gradcam=True)


@pytest.fixture
def fresh_model(shared_model: ResNet50FineTuned) -> ResNet50FineTuned:
    """A private copy of ``shared_model`` that a test may change."""
    return copy.deepcopy(shared_model)


@pytest.fixture
def images() -> torch.Tensor:
    """Two seeded normalised-looking images, ``(2, 3, 64, 64)``."""
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def make_images() -> Callable[..., torch.Tensor]:
    """``make_images(batch, height, width, seed)`` -> a seeded random batch."""

    def make(batch: int = 2, height: int = SIZE, width: int = SIZE, seed: int = 2) -> torch.Tensor:
        return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))

    return make
