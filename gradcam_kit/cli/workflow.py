"""``python -m gradcam_kit workflow``: the whole chest X-ray job in one command, offline.

1. ``synth``: synthetic chest X-rays with lesion masks (train / val / test);
2. ``train``: fine-tune ``ResNet50FineTuned`` from scratch with shift-and-scale
   augmentation (the recipe under which its heatmaps point at the lesions, see
   docs/WORKFLOW.md);
3. ``evaluate``: accuracy, AUROC and the pointing game of every layer and method on the
   test split, each beside its ceiling and the center baseline; the layer and method that
   localise best on the validation split are written into the checkpoint;
4. ``explain``: overlays of the test split at that layer, with an HTML report.

Everything lands in one folder (``--out``, default ``runs/workflow``)::

    runs/workflow/data/       the synthetic dataset
    runs/workflow/model/      best.pt, last.pt, history.csv, evaluation.json, overlays/
    runs/workflow/explain/    report.html, predictions.csv, contact_sheet.png, overlays/

``--out`` must be new or empty; ``--overwrite`` replaces an earlier run of this command
there (the folders it lists in ``workflow.json``), and nothing else.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

__all__ = ["RECIPE", "add_arguments", "run"]

MANIFEST = "workflow.json"
PARTS = ("data", "model", "explain")
#: The shipped recipe (docs/WORKFLOW.md has the measured alternatives).
RECIPE = {
    "image_size": 112, "epochs": 10, "batch_size": 16, "lr": 2e-3, "warmup_epochs": 0.3,
    "augment_translate": 0.15, "augment_scale": 0.15, "train": 600, "val": 100, "test": 200,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m gradcam_kit workflow``."""
    parser.add_argument("--out", "--output", dest="out", type=Path, default=Path("runs/workflow"),
                        help="folder for the data, the model and the report (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier workflow run in --out")
    parser.add_argument("--image-size", type=int, default=RECIPE["image_size"], help="input size (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"], help="training epochs (default: %(default)s)")
    parser.add_argument("--augment-translate", type=float, default=RECIPE["augment_translate"],
                        help="largest random shift while training, a fraction of the side (default: %(default)s)")
    parser.add_argument("--augment-scale", type=float, default=RECIPE["augment_scale"],
                        help="largest random zoom while training, a fraction (default: %(default)s)")
    parser.add_argument("--train", type=int, default=RECIPE["train"], help="training images (default: %(default)s)")
    parser.add_argument("--val", type=int, default=RECIPE["val"], help="validation images (default: %(default)s)")
    parser.add_argument("--test", type=int, default=RECIPE["test"], help="test images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default: %(default)s)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder")
    if not out.exists() or not any(out.iterdir()):
        return
    manifest = out / MANIFEST
    if not overwrite:
        raise FileExistsError(
            f"--out {out} is not empty; pass --overwrite to replace an earlier workflow run "
            "there, or choose another --out folder"
        )
    if not manifest.is_file():
        raise FileExistsError(
            f"--out {out} holds files that no workflow run wrote (no {MANIFEST}); "
            "choose another --out folder"
        )
    for part in json.loads(manifest.read_text()).get("parts", []):
        if part in PARTS and (out / part).is_dir():
            shutil.rmtree(out / part)
    manifest.unlink()


def _step(title: str, argv: list[str]) -> None:
    from .commands import main

    print(f"\n== {title}: gradcam-kit {' '.join(argv)}", flush=True)
    code = main(argv)
    if code:
        raise RuntimeError(f"the {argv[0]} step ended with status {code}; see its message above")


def run(args: argparse.Namespace) -> int:
    """Runs the four steps; prints where the report is and the figures that matter."""
    started = time.perf_counter()
    out: Path = args.out
    if args.image_size < 32 or args.epochs < 1:
        raise ValueError("--image-size must be at least 32 and --epochs at least 1")
    _prepare(out, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps({"parts": list(PARTS)}, indent=2))
    data, model, report = out / "data", out / "model", out / "explain"
    quiet = [] if args.progress else ["--no-progress"]
    _step("1/4 synthetic chest X-rays", [
        "synth", "--out", str(data), "--size", str(args.image_size), "--train", str(args.train),
        "--val", str(args.val), "--test", str(args.test), "--seed", str(args.seed), *quiet,
    ])
    _step("2/4 fine-tune", [
        "train", "--data", str(data), "--out", str(model), "--weights", "none",
        "--image-size", str(args.image_size), "--epochs", str(args.epochs),
        "--batch-size", str(RECIPE["batch_size"]), "--lr", str(RECIPE["lr"]),
        "--warmup-epochs", str(RECIPE["warmup_epochs"]), "--augment",
        "--augment-translate", str(args.augment_translate), "--augment-scale", str(args.augment_scale),
        "--patience", "0", "--seed", str(args.seed), "--device", args.device,
        *([] if args.progress else ["--no-progress"]),
    ])
    checkpoint = model / "best.pt"
    _step("3/4 evaluate: where do the heatmaps point?", [
        "evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "test",
        "--select-on", "val", "--overlays", "8", "--device", args.device,
        *([] if args.progress else ["--no-progress"]),
    ])
    _step("4/4 explain the test split", [
        "explain", str(data / "test"), "--checkpoint", str(checkpoint), "--output", str(report),
        *(["--device", args.device] if args.device != "auto" else []),
    ])
    _summary(out, checkpoint, report, time.perf_counter() - started)
    return 0


def _summary(out: Path, checkpoint: Path, report: Path, seconds: float) -> None:
    from ..models.checkpoint import checkpoint_metadata, load_checkpoint

    evaluation = json.loads((checkpoint.parent / "evaluation.json").read_text())
    recommended = checkpoint_metadata(load_checkpoint(checkpoint)).recommended or {}
    metrics = evaluation["classification"]
    print(f"\n== done in {seconds / 60:.1f} min: {out}")
    print(
        f"test split ({evaluation['images']} images): accuracy {metrics['accuracy']:.3f}, "
        f"AUROC {metrics['auroc']:.3f}"
    )
    if recommended:
        layer, method = recommended["layer"], recommended["method"]
        test = evaluation["pointing_game"][method][layer]["accuracy"]
        print(
            f"heatmaps: {layer} with {method}, chosen on the validation split (pointing "
            f"{recommended['pointing']:.2f}); on the {evaluation['positives_with_masks']} test "
            f"positives the map's peak lies on the lesion for {test:.2f} of them "
            f"(ceiling {evaluation['ceiling'][layer]['accuracy']:.2f}, center baseline "
            f"{evaluation['center_baseline']['accuracy']:.2f})"
        )
    print(f"report:   {report / 'report.html'}")
    print(f"overlays: {report / 'overlays'} (all test images), {checkpoint.parent / 'overlays'} (every layer, with the lesion outlined)")
    print(f"next:     python resnet50_demo.py   (uses {checkpoint})")
