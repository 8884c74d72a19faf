"""The model, device and input every contender shares."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TARGET_LAYER = "layer4.2.conv3"  # ResNet50's layer4[-1].conv3
LAYERWISE = ["layer1", "layer2", "layer3", "layer4"]
DEFAULT_OUT_DIR = ROOT / "outputs" / "benchmarks"


class Unavailable(Exception):
    """A contender that cannot run here (library not installed, needs CUDA, ...)."""


@dataclass
class Setup:
    """The model, device and options every contender builds from."""

    model: Any  # ResNet50FineTuned, eval mode, no hooks, all parameters trainable
    device: Any
    size: int
    compile_mode: str | None = None
    scorecam_chunk: int = 32
    compile_backend: str = "inductor"
    #: hand out the model itself instead of copies (a process that builds one contender)
    share_model: bool = False

    def copy(self, *, gradcam: bool = False, channels_last: bool = False) -> Any:
        """An independent copy of the model, so that no contender's hooks touch another's."""
        import torch

        model = self.model if self.share_model else copy.deepcopy(self.model)
        if gradcam:
            model.enable_gradcam_mode()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model


def _import_project() -> None:
    # The harness runs from a checkout without installing it (e.g. on a GPU box).
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def build_setup(
    device: str,
    size: int,
    seed: int,
    *,
    compile_mode: str | None = None,
    compile_backend: str = "inductor",
    scorecam_chunk: int = 32,
) -> Setup:
    """Builds the seeded model all contenders share (each takes its own copy)."""
    import torch

    _import_project()
    from resnet50 import ResNet50FineTuned

    torch.manual_seed(seed)
    model = ResNet50FineTuned(
        num_classes=2, weights=None, freeze_features=False, target_layer=TARGET_LAYER
    )
    model = model.eval().to(device)
    return Setup(
        model, torch.device(device), size, compile_mode, scorecam_chunk, compile_backend
    )


def make_input(batch_size: int, size: int, device: Any, seed: int) -> Any:
    """A seeded ``(B, 3, size, size)`` batch of normalised-looking images on ``device``."""
    import torch

    generator = torch.Generator().manual_seed(seed + batch_size)
    return torch.randn(batch_size, 3, size, size, generator=generator).to(device)

