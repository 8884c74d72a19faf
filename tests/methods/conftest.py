"""Fixtures of the method tests: a small torchvision model with non-trivial eval statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A seeded 10-class ResNet18 in eval mode whose BatchNorm statistics are not 0 and 1."""
    torch.manual_seed(0)
    net = resnet18(weights=None, num_classes=10)
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():  # non-trivial eval statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    return net.eval()
