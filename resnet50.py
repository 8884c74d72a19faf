"""ResNet50 for fine-tuning (e.g. chest X-rays: NORMAL vs PNEUMONIA) with Grad-CAM built in.

This is the file to import::

    from resnet50 import ResNet50FineTuned, preprocess

    model = ResNet50FineTuned(num_classes=2, enable_gradcam=True).eval()  # ImageNet backbone
    logits, heatmap = model(preprocess("xray.png"), return_gradcam=True)   # heatmap: (1, 224, 224)

``ResNet50FineTuned`` *is* a torchvision ``ResNet`` (same modules, same ``state_dict``
keys) with a fresh ``Linear(2048, num_classes)`` head. ``forward(x, return_gradcam=True)``
returns the logits and a heatmap from one forward pass, in eval or train mode, under
``torch.no_grad()`` and with a frozen backbone; ``get_gradcam_overlay()`` colours it.

The class lives in the package, next to what it is built on:

- ``gradcam_kit/models/resnet50.py``: ``ResNet50FineTuned`` itself;
- ``gradcam_kit/core/engine.py``: the Grad-CAM engine behind ``return_gradcam=True``;
- ``gradcam_kit/data/preprocess.py``: ``preprocess`` and image reading;
- ``gradcam_kit/models/checkpoint.py``: what ``weights=`` and ``from_checkpoint`` read.

README_GRADCAM.md documents the API with examples that run.
"""

from gradcam_kit.models.resnet50 import DEFAULT_TARGET_LAYER, ResNet50FineTuned, preprocess

__all__ = ["DEFAULT_TARGET_LAYER", "ResNet50FineTuned", "preprocess"]
