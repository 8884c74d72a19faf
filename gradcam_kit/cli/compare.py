"""``python -m gradcam_kit compare``: CAM methods x faithfulness metrics on a dataset.

``python -m gradcam_kit compare --checkpoint model.pt --data data/synthetic --split test``
prints the table of :func:`gradcam_kit.metrics.comparison.compare_methods` (its columns are
described there) as markdown and saves ``compare.json``, ``compare.csv`` and ``compare.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m gradcam_kit compare``.

    ``--method`` names the methods to compare (default: the one-pass methods
    :data:`gradcam_kit.metrics.comparison.DEFAULT_METHODS`; add ``scorecam`` to include
    Score-CAM, whose cost is estimated before it starts); ``--layer`` the layer (default: the
    checkpoint's recommended one).
    """
    from .options import add_dicom_window_argument, add_map_arguments, weights_name

    parser.add_argument("--data", type=Path, required=True,
                        help="ImageFolder (<root>/<class>/*.png, masks beside as *_mask.png), "
                             "a dataset root with split folders, or a CSV")
    parser.add_argument("--split", help="split folder of --data (e.g. test); default: --data itself, "
                                        "or 'test' when --data holds one")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint of ResNet50FineTuned")
    parser.add_argument("--weights", default="imagenet", type=weights_name, choices=["imagenet", "none"],
                        help="without --checkpoint: ImageNet backbone (local cache) or random weights")
    parser.add_argument("--num-classes", type=int, default=2, help="without --checkpoint: head size")
    add_map_arguments(parser, several_methods=True)
    parser.add_argument("--image-size", "--size", dest="size", type=int, help="input size (default: the checkpoint's, else 224)")
    parser.add_argument("--max-images", type=int, help="compare on at most N images (seeded pick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --max-images")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch")
    parser.add_argument("--steps", type=int, default=50, help="deletion/insertion steps")
    parser.add_argument("--chunk-size", type=int, default=64, help="perturbed images per forward")
    parser.add_argument("--cascade", default="auto",
                        help="stages re-initialised for the randomisation check, in order, e.g. "
                             "fc,layer4; auto: from fc down to the target layer's stage")
    parser.add_argument("--output", "--out", dest="output", type=Path, default=Path("outputs/compare"), help="output folder (must be new or empty)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results an earlier run wrote in --output (never other files)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    add_dicom_window_argument(parser)
    parser.add_argument("--no-progress", "--quiet", dest="quiet", action="store_true", help="no progress bar")


def _checked_methods(args: argparse.Namespace) -> list[str]:
    """The methods to compare, once the counts and the method names are checked."""
    from ..methods import METHODS
    from ..metrics.comparison import DEFAULT_METHODS, available_methods

    for flag, value in (("--batch-size", args.batch_size), ("--steps", args.steps),
                        ("--chunk-size", args.chunk_size), ("--max-images", args.max_images)):
        if value is not None and value < 1:
            raise SystemExit(f"compare: {flag} must be at least 1, got {value}")
    requested = args.method or list(DEFAULT_METHODS)
    methods = available_methods(requested)
    if args.method and len(methods) != len(requested):
        missing = sorted(set(requested) - set(methods))
        raise SystemExit(f"compare: unknown method(s) {missing}; available: {sorted(METHODS)}")
    return methods


def run(args: argparse.Namespace) -> int:
    """Runs ``compare``; returns the exit status."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from ..core.device import resolve_device
    from ..data.datasets import ImageDataset
    from ..data.preprocess import build_transform
    from ..metrics.comparison import (
        compare_methods,
        default_cascade,
        format_markdown,
        scorecam_estimate,
        write_results,
    )
    from ..models.architecture import default_target_layer
    from ..models.builder import load_model
    from ..models.preprocessing import input_preprocessing
    from .options import resolve_map_options

    methods = _checked_methods(args)
    cascade = None if args.cascade == "auto" else [s.strip() for s in args.cascade.split(",") if s.strip()]
    device = resolve_device(args.device or "auto")
    split = args.split
    if split is None and (args.data / "test").is_dir():
        split = "test"
    try:
        from .outputs import OutputFolder

        outputs = OutputFolder(args.output, command="compare", overwrite=args.overwrite)
        size, normalization = input_preprocessing(args.checkpoint, args.size)
        model, description = load_model(
            checkpoint=args.checkpoint, model="finetuned", weights=args.weights,
            num_classes=args.num_classes,
        )
        class_names = getattr(model, "class_names", None)
        dataset = ImageDataset.from_source(
            args.data, split, class_names=class_names, transform=build_transform(size, **normalization),
            mask_size=(size, size), dicom_window=args.dicom_window,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise SystemExit(f"compare: {err}") from None
    if args.max_images is not None and args.max_images < len(dataset):
        pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))
        dataset = Subset(dataset, sorted(pick[: args.max_images].tolist()))
    model = model.to(device).eval()
    try:
        target_layer = str(resolve_map_options(args, model)["layer"]) if args.layer or args.checkpoint else default_target_layer(model)
    except ValueError as err:
        raise SystemExit(f"compare: {err}") from None
    if cascade is None:
        cascade = default_cascade(model, target_layer)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    batches = ([t.to(device) for t in batch] for batch in loader)
    print(f"model: {description}; {len(dataset)} images at {size}x{size} on {device}; "
          f"target layer {target_layer}; methods: {' '.join(methods)}; {args.alignment} alignment")
    if "scorecam" in methods:
        print(scorecam_estimate(model, target_layer, size, len(dataset), args.chunk_size))
    try:
        rows = compare_methods(
            model, batches, methods, target_layer=target_layer, steps=args.steps,
            chunk_size=args.chunk_size, cascade=cascade, progress=not args.quiet,
            alignment=args.alignment, total=len(loader),
        )
    except ValueError as err:
        raise SystemExit(f"compare: {err}") from None
    settings = {
        "model": description, "data": str(args.data), "split": split, "images": len(dataset),
        "input_size": size, "target_layer": target_layer, "alignment": args.alignment, "steps": args.steps,
        "cascade": cascade, "device": str(device), "torch": str(torch.__version__),
        "deletion_substrate": "zero", "insertion_substrate": "blur",
    }
    print(format_markdown(rows))
    with outputs:
        paths = write_results(rows, args.output, settings)
    print(f"saved: {paths['json']}, {paths['csv']}, {paths['md']}")
    return 0
