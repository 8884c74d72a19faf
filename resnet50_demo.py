"""Demo of ResNet50FineTuned's integrated Grad-CAM (see README_GRADCAM.md).

Shows the four scenarios of the original API on one image:

1. prediction without Grad-CAM;
2. predictions with heatmaps, for the predicted class and for a chosen class;
3. an overlay figure saved as PNG (original | heatmap | overlay);
4. enabling and disabling Grad-CAM at run time.

Runs offline. Without ``--checkpoint`` it explains the model that
``python -m gradcam_kit workflow`` trained (``runs/workflow/model/best.pt``) when that file
exists, on one of its held-out positive X-rays, and says so; otherwise (or with
``--random-weights``) a model with random weights (``weights=None``: the heatmaps then mean
nothing) on a synthetic chest-X-ray-like image.

    python resnet50_demo.py
    python resnet50_demo.py --image xray.png --checkpoint runs/xray/best.pt --class-idx 1
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from gradcam_kit.cli.options import warn_if_size_differs
from gradcam_kit.core.device import resolve_device
from gradcam_kit.core.scores import class_probabilities, predicted_class
from gradcam_kit.data.datasets import scan_images
from gradcam_kit.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, build_transform, load_image
from gradcam_kit.data.synthetic import generate_sample
from gradcam_kit.methods import method_title
from resnet50 import ResNet50FineTuned

__all__ = ["main", "synthetic_image"]

DEFAULT_CLASS_NAMES = ("NORMAL", "PNEUMONIA")
#: What ``python -m gradcam_kit workflow`` writes with its default ``--out``.
WORKFLOW_CHECKPOINT = Path("runs/workflow/model/best.pt")
WORKFLOW_TEST_IMAGES = Path("runs/workflow/data/test/opacity")
FIGURE_SIZE = (12.0, 8.0)  # inches; at FIGURE_DPI this is a 1200 x 800 pixel PNG
FIGURE_DPI = 100
#: The synthetic X-ray drawn without ``--image`` (a positive sample: one lesion in a lung).
SYNTHETIC_SAMPLE = 1
SYNTHETIC_SIZE = 256


def synthetic_image(size: int = SYNTHETIC_SIZE) -> Image.Image:
    """The demo's synthetic chest X-ray: sample :data:`SYNTHETIC_SAMPLE` of the package's
    generator (:func:`gradcam_kit.data.synthetic.generate_sample`), drawn with a lesion.

    Returns:
        a PIL image in mode ``"L"`` of ``size`` x ``size`` pixels.
    """
    sample = generate_sample(SYNTHETIC_SAMPLE, size=size, positive=True)
    return Image.fromarray(sample.image.numpy(), "L")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnet50_demo.py",
        description="The four Grad-CAM scenarios of README_GRADCAM.md on one image.",
    )
    parser.add_argument("--image", type=Path, help="an X-ray image (default: a synthetic one)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help=f"a checkpoint for ResNet50FineTuned.from_checkpoint (default: {WORKFLOW_CHECKPOINT} "
        "when it exists, else random weights)",
    )
    parser.add_argument(
        "--random-weights", action="store_true",
        help="use a model with random weights even when a workflow checkpoint exists",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("outputs/demo"), help="folder for the figures"
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--class-idx",
        type=int,
        help="a class to explain besides the predicted one (default: the next class); "
        "for a single-logit checkpoint 0 is the negative and 1 the positive decision",
    )
    parser.add_argument(
        "--image-size", "--size", dest="size", type=int,
        help="model input size (default: the checkpoint's, else 224)",
    )
    return parser


def _save_figure(
    path: Path,
    original: Image.Image,
    rows: Sequence[tuple[str, np.ndarray, np.ndarray, str]],
    title: str,
) -> None:
    """Original | heatmap | overlay, one row per explained class."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    axes = figure.subplots(len(rows), 3, squeeze=False)
    for row, (title, colored, overlaid, map_name) in zip(axes, rows):
        row[0].imshow(original, cmap="gray" if original.mode == "L" else None)
        row[0].set_title("Original")
        row[1].imshow(colored)
        row[1].set_title(f"{map_name}: {title}")
        row[2].imshow(overlaid)
        row[2].set_title("Overlay")
        for axis in row:
            axis.axis("off")
    figure.savefig(path, dpi=FIGURE_DPI)


def _checked_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The options, checked; with no --checkpoint, the workflow's checkpoint if it exists."""
    args = parser.parse_args(argv)
    if args.image is not None and not args.image.is_file():
        parser.error(f"--image: no image file at {args.image}")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"--checkpoint: no checkpoint file at {args.checkpoint}")
    if args.checkpoint is not None and args.random_weights:
        parser.error("pass either --checkpoint or --random-weights, not both")
    if args.checkpoint is None and not args.random_weights and WORKFLOW_CHECKPOINT.is_file():
        args.checkpoint = WORKFLOW_CHECKPOINT
        print(f"No --checkpoint: using {WORKFLOW_CHECKPOINT}, the model `python -m gradcam_kit workflow` trained")
        if args.image is None:
            positives, _ = scan_images(WORKFLOW_TEST_IMAGES)
            args.image = positives[0] if positives else None
    if args.size is not None and args.size < 32:
        parser.error(f"--size must be at least 32 (ResNet50 downsamples by 32), got {args.size}")
    return args


def _image(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Image.Image:
    """The image to explain: --image, else a synthetic chest X-ray (written beside the figures)."""
    if args.image is None:
        original = synthetic_image()
        image_path = args.output / "synthetic_xray.png"
        original.save(image_path)
        print(f"No --image: generated a synthetic chest X-ray, wrote {image_path}")
        return original
    try:
        original = load_image(args.image)
    except ValueError as err:
        parser.error(f"--image: {err}")
    print(f"Image: {args.image} ({original.width}x{original.height})")
    return original


def _model(args: argparse.Namespace) -> tuple[ResNet50FineTuned, int, Sequence[float], Sequence[float]]:
    """The model (random weights, or the checkpoint's), its input size, mean and std.

    Raises:
        ValueError: the checkpoint does not fit ``ResNet50FineTuned``.
    """
    size, mean, std = args.size, IMAGENET_MEAN, IMAGENET_STD
    if args.checkpoint is None:
        torch.manual_seed(0)  # the same random model, hence the same figures, every run
        model = ResNet50FineTuned(num_classes=2, weights=None, enable_gradcam=False)
        print(
            "No --checkpoint: the model has RANDOM weights (weights=None), so its predictions "
            "and heatmaps are not meaningful. Pass --checkpoint <file> to explain a trained model."
        )
    else:
        model = ResNet50FineTuned.from_checkpoint(args.checkpoint, enable_gradcam=False)
        warn_if_size_differs(args.size, model.input_size, flag="--image-size")
        size = size or model.input_size  # the checkpoint's (checkpoint_metadata), else 224
        mean, std = model.mean, model.std
        print(f"Loaded checkpoint {args.checkpoint}")
        choice = model.gradcam_choice
        print(f"Grad-CAM: {choice['layer']} with {method_title(choice['method'])} ({choice['source']})")
    size = size[0] if isinstance(size, (list, tuple)) else size  # checkpoints store [H, W]
    return model, int(size or 224), mean, std


def _class_names(model: ResNet50FineTuned) -> list[str]:
    num_classes = model.fc.out_features
    return model.class_names or (
        list(DEFAULT_CLASS_NAMES) if num_classes <= 2 else [f"class {k}" for k in range(num_classes)]
    )


def _predict(model: ResNet50FineTuned, x: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Step 1: a plain prediction; returns the logits, the probabilities and the predicted class."""
    print("\n[1] Prediction without Grad-CAM")
    with torch.no_grad():
        logits = model(x)
    probabilities = class_probabilities(logits)[0]  # a single logit: [P(class 0), P(class 1)]
    predicted = int(predicted_class(logits)[0])
    print(f"    gradcam_enabled={model.gradcam_enabled}, logits={logits[0].tolist()}")
    print(f"    predicted: {names[predicted]} (p={float(probabilities[predicted]):.3f})")
    return logits, probabilities, predicted


def _heatmaps(model, x, logits, predicted: int, chosen: int, names: list[str]) -> torch.Tensor:
    """Step 2: the heatmap of the prediction and of another class, from the same forward pass.

    Raises:
        ValueError: ``chosen`` is not a class of the model.
    """
    print("\n[2] Predictions with Grad-CAM heatmaps")
    model.enable_gradcam_mode()
    with torch.no_grad():
        logits_cam, heatmap = model(x, return_gradcam=True)
        # A single logit: class 0 explains -logit, class 1 +logit (gradcam_kit.core.scores).
        _, chosen_heatmap = model(x, return_gradcam=True, gradcam_class_idx=chosen)
    peak = divmod(int(heatmap[0].argmax()), heatmap.shape[-1])
    print(f"    logits identical to [1]: {torch.equal(logits_cam, logits)}")
    print(
        f"    heatmap {tuple(heatmap.shape)} {heatmap.dtype}, range "
        f"[{float(heatmap.min()):.2f}, {float(heatmap.max()):.2f}], peak at (row, col)={peak}"
    )
    print(f"    chosen class {chosen} ({names[chosen]}): heatmap {tuple(chosen_heatmap.shape)}")
    if not bool(chosen_heatmap.any()):
        print("    (all zeros: nothing at the target layer raises this class's score)")
    return heatmap


def _overlays(model, x, original, args, names, probabilities, predicted: int, chosen: int) -> None:
    """Step 3: the coloured heatmap, the overlay and the figure, as PNG files."""
    print("\n[3] Grad-CAM overlays")
    map_name = f"{method_title(model.gradcam_choice['method'])} {model.gradcam_target_layer}"
    colored, overlaid = model.get_gradcam_overlay(x, original, alpha=0.5, colormap=cv2.COLORMAP_JET)
    chosen_colored, chosen_overlaid = model.get_gradcam_overlay(x, original, class_idx=chosen)
    written = {
        "heatmap": args.output / "gradcam_heatmap.png",
        "overlay": args.output / "gradcam_overlay.png",
        "figure": args.output / "gradcam_figure.png",
    }
    Image.fromarray(colored).save(written["heatmap"])
    Image.fromarray(overlaid).save(written["overlay"])
    _save_figure(
        written["figure"],
        original,
        [
            (f"predicted {names[predicted]} (p={float(probabilities[predicted]):.2f})", colored, overlaid, map_name),
            (f"class {names[chosen]} (p={float(probabilities[chosen]):.2f})", chosen_colored, chosen_overlaid, map_name),
        ],
        title=(
            f"checkpoint {args.checkpoint.name}" if args.checkpoint is not None
            else "random weights (no --checkpoint): these heatmaps are not meaningful"
        ),
    )
    for kind, path in written.items():
        print(f"    wrote {kind}: {path}")


def _switch_off_and_on(model, x, original, logits, heatmap) -> None:
    """Step 4: disabling removes the hooks and keeps predictions; enabling brings the same maps."""
    print("\n[4] Switching Grad-CAM off and on")
    model.disable_gradcam_mode()
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    print(f"    disabled: gradcam_enabled={model.gradcam_enabled}, forward hooks left={hooks}")
    with torch.no_grad():
        print(f"    plain prediction unchanged: {torch.equal(model(x), logits)}")
        try:
            model(x, return_gradcam=True)
        except RuntimeError as err:
            print(f"    return_gradcam=True now raises: {err}")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        print(f"    get_gradcam_overlay returns {model.get_gradcam_overlay(x, original)}")
    model.enable_gradcam_mode()
    with torch.no_grad():
        _, again = model(x, return_gradcam=True)
    print(f"    re-enabled: gradcam_enabled={model.gradcam_enabled}, same heatmap: {torch.equal(again, heatmap)}")
    model.disable_gradcam_mode()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo; returns 0 on success, 2 on a usage error."""
    parser = _parser()
    args = _checked_args(parser, argv)
    device = resolve_device(args.device or "auto")
    args.output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    original = _image(parser, args)
    try:
        model, size, mean, std = _model(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model = model.to(device).eval()
    names = _class_names(model)
    x = build_transform(size, mean=mean, std=std)(original).unsqueeze(0).to(device)
    print(f"Model input: {tuple(x.shape)} on {device}")
    logits, probabilities, predicted = _predict(model, x, names)
    num_classes = model.fc.out_features
    chosen = args.class_idx if args.class_idx is not None else (predicted + 1) % max(num_classes, 2)
    try:
        heatmap = _heatmaps(model, x, logits, predicted, chosen, names)
    except ValueError as err:
        print(f"error: --class-idx: {err}", file=sys.stderr)
        return 2
    _overlays(model, x, original, args, names, probabilities, predicted, chosen)
    _switch_off_and_on(model, x, original, logits, heatmap)
    print(f"\nDone in {time.perf_counter() - start:.1f} s; figures in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
