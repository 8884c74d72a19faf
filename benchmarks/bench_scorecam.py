"""Full Score-CAM against its top-k variant (:class:`gradcam_kit.methods.activation.TopKScoreCAM`).

For each synthetic X-ray (``gradcam_kit.data.synthetic``, seeded) and ``ResNet50FineTuned``
(seeded random weights, ``layer4.2.conv3``, 2048 channels), times full Score-CAM once and
the ``--time-top-k`` variants once, and reports the agreement of each ``top_k`` x ranking
with the full map of the same image: Pearson r, largest absolute difference, and whether
the maximum lies at the same place (within 15 px at 224, the pointing-game tolerance). The
agreement is computed from full Score-CAM's channel scores (a top-k map is the full map
with the other channels' weights at 0, as tested), and every timed variant's real map is
checked against that (``check_vs_run``, the largest difference).

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

    from gradcam_kit.core.engine import CAMEngine, min_max_normalize, upsample
    from gradcam_kit.data.synthetic import generate
    from gradcam_kit.methods import CAMMethod
    from gradcam_kit.methods.activation import ScoreCAM, TopKScoreCAM
    from resnet50 import ResNet50FineTuned

    class Capture(CAMMethod):
        """Keeps the activation and its gradient, for the analytic top-k maps."""

        def __call__(self, activation: Any, gradient: Any, class_idx: Any) -> Any:
            self.activation, self.gradient = activation.detach(), gradient.detach()
            return activation.mean(dim=1)

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = ResNet50FineTuned(2, weights=None).eval().to(device)
    images, _, _ = generate(args.images, seed=args.seed, size=args.size)
    x = (images.float() / 255.0 - 0.449) / 0.226  # grey X-rays, ImageNet's grey statistics
    x = x[:, None].expand(-1, 3, -1, -1).contiguous().to(device)
    size, tolerance = tuple(x.shape[-2:]), 15.0 * args.size / 224
    classes = torch.ones(args.images, dtype=torch.long, device=device)  # "opacity" for every image

    def finish(cam: Any) -> Any:  # the engine's post-processing: ReLU, upsample, min-max
        return min_max_normalize(upsample(cam.clamp_min(0), size))

    def timed(function: Any) -> tuple[Any, float]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result, (time.perf_counter() - start) / args.images

    def engine_map(method: Any) -> Any:
        return CAMEngine(model, args.layer, method=method).explain(x, 1).heatmaps[args.layer]

    capture = Capture()
    CAMEngine(model, args.layer, method=capture).explain(x, 1)
    activation = capture.activation.float()
    engine_map(TopKScoreCAM(8, batch_size=args.chunk))  # warm-up: allocator, kernels
    # Full Score-CAM: its masked forwards timed; the capture forward, which the timed top-k
    # runs do include, is left out, so the speed-ups are slight underestimates.
    weights, full_s = timed(lambda: ScoreCAM(args.chunk).bind(model, x, model).channel_weights(activation, classes))
    full = finish(torch.einsum("bc,bchw->bhw", weights, activation))
    channels = activation.shape[1]
    rows = [{"variant": "full", "top_k": channels, "rank_by": "-", "s_per_image": full_s, "speed_up": 1.0,
             **agreement(full, full, tolerance), "check_vs_run": None}]
    for k in args.top_k:
        for rank_by in args.rank_by:
            # TopKScoreCAM's map is full Score-CAM's with the other channels' weights set to 0
            # (tests/methods/test_scorecam_topk.py), so its agreement needs no second set of forwards.
            importance = activation.mean(dim=(2, 3))
            if rank_by == "gradcam":
                importance = importance * capture.gradient.float().mean(dim=(2, 3))
            chosen = importance.topk(min(k, channels), dim=1).indices
            maps = activation.gather(1, chosen[:, :, None, None].expand(-1, -1, *activation.shape[2:]))
            analytic = finish(torch.einsum("bk,bkhw->bhw", weights.gather(1, chosen), maps))
            row = {"variant": f"top-{k}", "top_k": k, "rank_by": rank_by, "s_per_image": None,
                   "speed_up": None, **agreement(full, analytic, tolerance), "check_vs_run": None}
            if k in args.time_top_k:
                real, seconds = timed(lambda k=k, r=rank_by: engine_map(TopKScoreCAM(k, rank_by=r, batch_size=args.chunk)))
                row.update(s_per_image=seconds, speed_up=full_s / seconds,
                           check_vs_run=float((real - analytic).abs().max()))
            rows.append(row)
            print(f"  top-{k:<4d} {rank_by:10s} r={row['pearson_r']:.3f}", file=sys.stderr, flush=True)
    return {"rows": rows, "tolerance_px": tolerance}


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| variant | ranked by | s / image | speed-up | Pearson r (mean, min) | max abs diff | same peak | peak distance px |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        timing = ("- | -" if r["s_per_image"] is None else f"{r['s_per_image']:.2f} | {r['speed_up']:.1f}x")
        lines.append(
            f"| {r['variant']} | {r['rank_by']} | {timing} | "
            f"{r['pearson_r']:.3f}, {r['min_pearson_r']:.3f} | {r['max_abs_diff']:.3f} | "
            f"{r['same_peak']:.0%} | {r['peak_distance_px']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--layer", default="layer4.2.conv3", help="a convolution (its channels are scored)")
    parser.add_argument("--top-k", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--time-top-k", type=int, nargs="*", default=None,
                        help="the top_k values also run for real and timed (default: all on CUDA, 64 on CPU)")
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
    if args.time_top_k is None:
        args.time_top_k = list(args.top_k) if args.device.startswith("cuda") else [64]
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
