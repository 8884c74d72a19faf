"""``python -m gradcam_kit figures``: Grad-CAM / Grad-CAM++ / layer-wise figure grids.

``--image x.png`` or ``--folder DIR`` with ``--num-images N``, ``--random N`` or ``--index I
...``; the figures come from :func:`gradcam_kit.viz.figures.save_figures`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m gradcam_kit figures``."""
    from .options import add_dicom_window_argument, add_map_arguments, weights_name

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="one image file")
    source.add_argument("--folder", type=Path,
                        help="a folder of images (ImageFolder class folders give true labels) or a CSV")
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument("--num-images", type=int, help="with --folder: N images spread evenly over the sorted input")
    pick.add_argument("--random", type=int, metavar="N", help="with --folder: N images at random (see --seed)")
    pick.add_argument("--index", type=int, nargs="+", metavar="I", help="with --folder: these positions in the sorted input (0-based), as in explain")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint of ResNet50FineTuned")
    parser.add_argument("--weights", default="imagenet", type=weights_name, choices=["imagenet", "none"],
                        help="without --checkpoint: ImageNet weights (from the local torch cache) "
                             "or random ones")
    parser.add_argument("--num-classes", type=int,
                        help="without --checkpoint: classes of the head (default 1000 with "
                             "ImageNet weights, keeping ImageNet's own head; 2 with --weights none)")
    parser.add_argument("--class-idx", type=int, help="class to explain (default: the predicted one)")
    add_map_arguments(parser, several_methods=True)
    parser.add_argument("--image-size", "--size", dest="size", type=int, help="model input size (default: the checkpoint's, else 224)")
    parser.add_argument("--output", "--out", dest="output", type=Path, default=Path("outputs/figures"), help="output folder (must be new or empty)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the figures an earlier run wrote in --output (never other files)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--alpha", type=float, default=0.5, help="heatmap weight in the overlays")
    parser.add_argument("--colormap", default="jet", help="OpenCV colormap name")
    add_dicom_window_argument(parser)


def _select(count: int, args: argparse.Namespace) -> list[int]:
    """Positions in the sorted input (see :func:`gradcam_kit.cli.options.select_positions`)."""
    from .options import select_positions

    return select_positions(count, index=args.index, random_count=args.random, seed=args.seed, spread=args.num_images)


def _default_methods(method: str) -> list[str]:
    """The checkpoint's method, then Grad-CAM++ (or Grad-CAM) beside it."""
    return [method, "gradcam++" if method != "gradcam++" else "gradcam"]


def run(args: argparse.Namespace) -> int:
    """Runs ``figures``; returns the exit status."""
    import torch
    from tqdm import tqdm

    from ..core.device import resolve_device
    from ..data.inputs import collect_inputs
    from ..data.preprocess import build_transform, load_image
    from ..methods import method_title
    from ..models.builder import load_model
    from ..models.preprocessing import input_preprocessing
    from ..viz.figures import save_figures
    from .options import resolve_map_options

    if args.image is not None and any(v is not None for v in (args.num_images, args.random, args.index)):
        raise SystemExit("figures: --num-images, --random and --index select from --folder, not --image")
    if args.batch_size < 1:
        raise SystemExit(f"figures: --batch-size must be at least 1, got {args.batch_size}")
    device = resolve_device(args.device or "auto")
    try:
        from ..viz.render import parse_colormap
        from .outputs import OutputFolder

        parse_colormap(args.colormap)
        if not 0.0 <= args.alpha <= 1.0:
            raise ValueError(f"--alpha must lie in [0, 1] (the heatmap's weight), got {args.alpha}")
        # A second run must not mix its figures with an earlier run's.
        outputs = OutputFolder(args.output, command="figures", overwrite=args.overwrite)
        inputs = collect_inputs(args.image if args.image is not None else args.folder)
        chosen = [inputs.items[i] for i in _select(len(inputs.items), args)]
        size, normalization = input_preprocessing(args.checkpoint, args.size)
        num_classes = args.num_classes or (1000 if args.weights == "imagenet" else 2)
        model, description = load_model(
            checkpoint=args.checkpoint, model="finetuned", weights=args.weights,
            num_classes=num_classes,
        )
        choice = resolve_map_options(args, model)
        methods = list(args.method) if args.method else _default_methods(choice["method"])
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise SystemExit(f"figures: {err}") from None
    model = model.to(device).eval()
    class_names = getattr(model, "class_names", None) or (
        inputs.class_names if len(inputs.class_names) == model.fc.out_features else None
    )
    transform = build_transform(size, **normalization)
    print(f"model: {description}; {len(chosen)} image(s) at {size}x{size} on {device}")
    print(f"maps: {choice['layer']}, {', '.join(method_title(m) for m in methods)} ({choice['source']}); {args.alignment} alignment")
    outputs.clear()  # recorded by the command line's finally, also after a failure
    written = []
    for start in tqdm(range(0, len(chosen), args.batch_size), desc="figures", unit="batch"):
        items = chosen[start : start + args.batch_size]
        originals = [load_image(item.path, dicom_window=args.dicom_window) for item in items]
        batch = torch.stack([transform(image) for image in originals]).to(device)
        try:
            written += save_figures(
                model, batch, originals,
                [args.output / f"{item.index:04d}_{item.path.stem}" for item in items],
                [item.path.stem for item in items],
                class_idx=args.class_idx, class_names=class_names,
                true_labels=[item.label_name for item in items],
                alpha=args.alpha, colormap=args.colormap, methods=methods,
                target_layer=choice["layer"], alignment=args.alignment,
            )
        except ValueError as err:
            raise SystemExit(f"figures: {err}") from None
    outputs.record()
    for grid_path, overlay_path in written:
        print(f"{grid_path}\n{overlay_path}")
    return 0
