"""Full Score-CAM against its top-k variant (:class:`gradcam_kit.scorecam.TopKScoreCAM`).

For each synthetic X-ray (``gradcam_kit.synthetic``, seeded) and ``ResNet50FineTuned``
(seeded random weights, ``layer4.2.conv3``, 2048 channels), times full Score-CAM once and
every ``top_k`` x ranking once, and reports the agreement of each variant's map with the
full map of the same image: Pearson r, largest absolute difference, and whether the
maximum lies at the same place (within 15 px at 224, the pointing-game tolerance).

    python benchmarks/bench_scorecam.py --images 2 --top-k 32 64 128 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LAYER = "layer4.2.conv3"


def agreement(full: Any, variant: Any, tolerance_px: float) -> dict[str, float]:
    """Per-image Pearson r, max |difference| and peak distance of ``(B, H, W)`` maps."""
    import torch

    rows = []
    width = full.shape[-1]
    for a, b in zip(full.flatten(1).double(), variant.flatten(1).double()):
        r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
        pa, pb = int(a.argmax()), int(b.argmax())
        distance = ((pa // width - pb // width) ** 2 + (pa % width - pb % width) ** 2) ** 0.5
        rows.append({"pearson_r": r, "max_abs_diff": float((a - b).abs().max()),
                     "peak_distance_px": distance, "same_peak": float(distance <= tolerance_px)})
    return {key: statistics.fmean(row[key] for row in rows) for key in rows[0]} | {
        "min_pearson_r": min(row["pearson_r"] for row in rows)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from gradcam_kit.engine import CAMEngine
    from gradcam_kit.scorecam import ScoreCAM, TopKScoreCAM
    from gradcam_kit.synthetic import generate
    from resnet50 import ResNet50FineTuned

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = ResNet50FineTuned(2, weights=None).eval().to(device)
    images, _, _ = generate(args.images, seed=args.seed, size=args.size)
    x = (images.float() / 255.0 - 0.449) / 0.226  # grey X-rays, ImageNet's grey statistics
    x = x[:, None].expand(-1, 3, -1, -1).contiguous().to(device)
    tolerance = 15.0 * args.size / 224

    def timed(method: Any) -> tuple[Any, float]:
        engine = CAMEngine(model, LAYER, method=method)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        heatmaps = engine.explain(x, 1).heatmaps[LAYER]  # class 1 ("opacity") for every image
        if device.type == "cuda":
            torch.cuda.synchronize()
        return heatmaps, (time.perf_counter() - start) / args.images

    timed(TopKScoreCAM(8, batch_size=args.chunk))  # warm-up: allocator, kernels
    full, full_s = timed(ScoreCAM(args.chunk))
    rows = [{"variant": "full", "top_k": 2048, "rank_by": "-", "s_per_image": full_s,
             "speed_up": 1.0, "pearson_r": 1.0, "min_pearson_r": 1.0, "max_abs_diff": 0.0,
             "peak_distance_px": 0.0, "same_peak": 1.0}]
    for k in args.top_k:
        for rank_by in args.rank_by:
            heatmaps, seconds = timed(TopKScoreCAM(k, rank_by=rank_by, batch_size=args.chunk))
            rows.append({"variant": f"top-{k}", "top_k": k, "rank_by": rank_by, "s_per_image": seconds,
                         "speed_up": full_s / seconds, **agreement(full, heatmaps, tolerance)})
            print(f"  top-{k:<4d} {rank_by:10s} {seconds:8.2f} s/image  r={rows[-1]['pearson_r']:.3f}",
                  file=sys.stderr, flush=True)
    return {"rows": rows, "tolerance_px": tolerance}


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| variant | ranked by | s / image | speed-up | Pearson r (mean, min) | max abs diff | same peak | peak distance px |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['rank_by']} | {r['s_per_image']:.2f} | {r['speed_up']:.1f}x | "
            f"{r['pearson_r']:.3f}, {r['min_pearson_r']:.3f} | {r['max_abs_diff']:.3f} | "
            f"{r['same_peak']:.0%} | {r['peak_distance_px']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--top-k", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--rank-by", nargs="+", choices=["gradcam", "activation"], default=["gradcam", "activation"])
    parser.add_argument("--chunk", type=int, default=None, help="masked images per forward (default 64 CPU, 256 CUDA)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "outputs" / "benchmarks")
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.chunk is None:
        args.chunk = 256 if args.device.startswith("cuda") else 64
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = list(os.getloadavg())
    result = run(args)
    result["environment"] = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x {os.cpu_count()}",
        "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
        "loadavg_start": load_start, "loadavg_end": list(os.getloadavg()),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "settings": vars(args) | {"out_dir": str(args.out_dir)},
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"scorecam_{torch.device(args.device).type}" + (f"_{args.tag}" if args.tag else "")
    (args.out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2))
    table = format_table(result["rows"])
    (args.out_dir / f"{stem}.md").write_text(table + "\n")
    print(json.dumps(result["environment"]))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
