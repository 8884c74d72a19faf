"""Grad-CAM side by side: this project against plain inference, pytorch-grad-cam, Captum, torchcam.

Every contender does the same work on the same model and input: ResNet50 with a 2-class
head (``ResNet50FineTuned(weights=None, num_classes=2)``, all parameters trainable, eval
mode), target layer ``layer4[-1].conv3``, class = each image's argmax, heatmap upsampled
bilinearly to the input size and min-max normalised per image, result left on the device.
``plain`` is the same model's forward under ``torch.no_grad()``; every ratio is taken
against it, measured in the same run.

Run from the repository root::

    python benchmarks/bench_gradcam.py                         # CPU: B=1,8; GPU: B=1,8,64,256
    python benchmarks/bench_gradcam.py --batch-sizes 8 --repeats 7
    python benchmarks/bench_gradcam.py --compile --scorecam    # more contenders

Timing: contenders are timed *interleaved* (one call of each per round, the order rotated
every round) after a warm-up, with ``torch.cuda.synchronize()`` around every call on CUDA,
so that a load change on a shared machine hits every contender alike. Memory: on CUDA the
peak of ``torch.cuda.max_memory_allocated()`` above what was allocated before the call
(reset per contender); on the CPU the peak RSS of a fresh process that runs only that
contender, above its resident set before the first call (see :func:`memory_worker`).

Optional libraries are imported lazily; a missing one is reported as ``not installed``.
Writes ``bench_<device>.json`` and ``bench_<device>.png`` into ``--out-dir`` and prints a
table. See docs/PERFORMANCE.md for the method and the figures.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_LAYER = "layer4.2.conv3"  # ResNet50's layer4[-1].conv3
LAYERWISE = ["layer1", "layer2", "layer3", "layer4"]
DEFAULT_OUT_DIR = ROOT / "outputs" / "benchmarks"

__all__ = ["CONTENDERS", "Contender", "main", "run_benchmark"]


class Unavailable(Exception):
    """A contender that cannot run here (library not installed, needs CUDA, ...)."""


# ---------------------------------------------------------------------------------------
# Setup shared by all contenders
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# Contenders: each builder returns ``run(x) -> (logits | None, heatmap | dict | None)``
# ---------------------------------------------------------------------------------------
Run = Callable[[Any], tuple[Any, Any]]


def _plain(setup: Setup, *, channels_last: bool = False, bf16: bool = False) -> Run:
    import torch

    model = setup.copy(channels_last=channels_last)
    autocast = _autocast(setup.device, bf16)

    def run(x):
        with torch.no_grad(), autocast():
            return model(_memory_format(x, channels_last)), None

    return run


def _ours(
    setup: Setup,
    *,
    channels_last: bool = False,
    bf16: bool = False,
    layers: Sequence[str] | None = None,
    method: Any = None,
) -> Run:
    import torch

    model = setup.copy(gradcam=True, channels_last=channels_last)
    autocast = _autocast(setup.device, bf16)
    # The references draw with the usual bilinear resize: compare like with like.
    options = {
        "gradcam_layers": list(layers) if layers else None, "gradcam_method": method,
        "gradcam_alignment": "pixel",
    }

    def run(x):
        with torch.no_grad(), autocast():
            return model(_memory_format(x, channels_last), return_gradcam=True, **options)

    return run


def _ours_hooks_dormant(setup: Setup) -> Run:
    import torch

    model = setup.copy(gradcam=True)

    def run(x):
        with torch.no_grad():
            return model(x), None

    return run


def _ours_scorecam(setup: Setup) -> Run:
    try:
        from gradcam_kit.methods.activation import ScoreCAM
    except ImportError as error:
        raise Unavailable("gradcam_kit.methods.activation is not in this checkout") from error
    return _ours(setup, method=ScoreCAM(batch_size=setup.scorecam_chunk))


def _compiled_plain(setup: Setup) -> Run:
    import torch

    model = torch.compile(setup.copy(), mode=setup.compile_mode, backend=setup.compile_backend)

    def run(x):
        with torch.no_grad():
            return model(x), None

    return run


def _compiled_ours(setup: Setup) -> Run:
    import torch

    # The wrapper itself compiled: its plain path compiles; explain() runs eagerly by design.
    model = torch.compile(
        setup.copy(gradcam=True), mode=setup.compile_mode, backend=setup.compile_backend
    )

    def run(x):
        with torch.no_grad():
            return model(x, return_gradcam=True)

    return run


def _compiled_stages_ours(setup: Setup) -> Run:
    import torch

    model = setup.copy(gradcam=True)
    compile_stages(
        model, [model.get_submodule(TARGET_LAYER)],
        mode=setup.compile_mode, backend=setup.compile_backend,
    )

    def run(x):
        with torch.no_grad():
            return model(x, return_gradcam=True)

    return run


def compile_stages(
    model: Any, targets: Sequence[Any], *, mode: str | None = None, backend: str = "inductor"
) -> list[str]:
    """Compiles, in place, every child block of ``model`` that holds no target layer.

    Descends into the blocks that do hold one, so only the target's own block (for
    ResNet50's ``layer4.2.conv3``: ``layer4.2``) and single layers around it stay eager.
    The engine's recorded forward then runs these compiled blocks, with the hook and the
    graph cut in eager code.

    Returns:
        The dotted names of the compiled blocks.
    """
    target_set = set(targets)
    compiled: list[str] = []

    def visit(module: Any, prefix: str) -> None:
        for name, child in module.named_children():
            dotted = f"{prefix}{name}"
            holds_target = any(m in target_set for m in child.modules())
            if not holds_target:
                if any(True for _ in child.children()):  # blocks only, not single layers
                    child.compile(mode=mode, backend=backend)
                    compiled.append(dotted)
            elif child not in target_set and any(
                any(m in target_set for m in grandchild.modules()) and any(grandchild.children())
                for grandchild in child.children()
            ):
                visit(child, dotted + ".")

    visit(model, "")
    return compiled


def _pytorch_grad_cam(setup: Setup) -> Run:
    import torch

    try:
        from pytorch_grad_cam import GradCAM
    except ImportError as error:
        raise Unavailable("not installed: pip install grad-cam") from error
    model = setup.copy()
    # pytorch-grad-cam needs the autograd graph from the input on (grad enabled, a
    # trainable target layer) and runs a full backward; it returns a numpy array, which
    # goes back to the device so that every contender ends with a device tensor.
    cam = GradCAM(model=model, target_layers=[model.get_submodule(TARGET_LAYER)])

    def run(x):
        heatmap = cam(input_tensor=x, targets=None)
        return None, torch.from_numpy(heatmap).to(x.device)

    return run


def _captum(setup: Setup) -> Run:
    import torch

    try:
        from captum.attr import LayerGradCam
    except ImportError as error:
        raise Unavailable("not installed: pip install captum") from error
    from gradcam_kit.core.engine import min_max_normalize, upsample

    model = setup.copy()
    explainer = LayerGradCam(model, model.get_submodule(TARGET_LAYER))

    def run(x):
        # Captum needs the target class up front: argmax costs one extra forward.
        with torch.no_grad():
            class_idx = model(x).argmax(dim=1)
        attribution = explainer.attribute(x, target=class_idx, relu_attributions=True)
        return None, min_max_normalize(upsample(attribution[:, 0].detach(), x.shape[-2:]))

    return run


def _torchcam(setup: Setup) -> Run:
    try:
        from torchcam.methods import GradCAM
    except ImportError as error:
        raise Unavailable("not installed: pip install torchcam") from error
    from gradcam_kit.core.engine import min_max_normalize, upsample

    model = setup.copy()
    extractor = GradCAM(model, target_layer=TARGET_LAYER)

    def run(x):
        scores = model(x)
        # torchcam takes the classes as Python ints (a host sync) and keeps the full graph.
        maps = extractor(scores.argmax(dim=1).tolist(), scores, normalized=False)[0]
        return scores.detach(), min_max_normalize(upsample(maps, x.shape[-2:]))

    return run


def _autocast(device: Any, bf16: bool) -> Callable[[], Any]:
    import contextlib

    import torch

    if not bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def _memory_format(x: Any, channels_last: bool) -> Any:
    import torch

    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@dataclass(frozen=True)
class Contender:
    """One way of producing the heatmap (or, for ``plain``, only the logits).

    Attributes:
        name: short name used in tables, JSON and ``--contenders``.
        description: what exactly is timed.
        build: ``Setup -> run(x)``.
        baseline: the plain-inference contender with the same precision/layout, for the
            ``matched`` ratio.
        compare: the heatmap should agree with ``ours`` (fp32) and is checked against it.
        cuda_only: skipped on the CPU.
        option: only run when this flag is given (``compile`` or ``scorecam``).
        min_warmup: at least this many untimed calls (compiled code recompiles once when
            the call switches between the plain and the Grad-CAM path).
    """

    name: str
    description: str
    build: Callable[[Setup], Run]
    baseline: str = "plain"
    compare: bool = False
    cuda_only: bool = False
    option: str | None = None
    min_warmup: int = 0


CONTENDERS: list[Contender] = [
    Contender("plain", "model(x) under torch.no_grad(), fp32", _plain),
    Contender(
        "plain-cl", "plain, channels_last", lambda s: _plain(s, channels_last=True), "plain-cl"
    ),
    Contender(
        "plain-bf16",
        "plain, bf16 autocast, channels_last",
        lambda s: _plain(s, channels_last=True, bf16=True),
        "plain-bf16",
        cuda_only=True,
    ),
    Contender(
        "ours-dormant",
        "model(x) with the Grad-CAM hook attached but not recording",
        _ours_hooks_dormant,
    ),
    Contender(
        "ours",
        "model(x, return_gradcam=True) under no_grad, fp32",
        _ours,
        compare=True,
    ),
    Contender(
        "ours-cl",
        "ours, channels_last",
        lambda s: _ours(s, channels_last=True),
        "plain-cl",
        compare=True,
    ),
    Contender(
        "ours-bf16",
        "ours, bf16 autocast, channels_last (maps in fp32)",
        lambda s: _ours(s, channels_last=True, bf16=True),
        "plain-bf16",
        cuda_only=True,
    ),
    Contender(
        "ours-layers",
        "ours, layer1..layer4 in one pass (gradcam_layers)",
        lambda s: _ours(s, layers=LAYERWISE),
    ),
    Contender("ours-gradcam++", "ours, Grad-CAM++", lambda s: _ours(s, method="gradcam++")),
    Contender(
        "ours-scorecam",
        "ours, Score-CAM (B*2048 masked forwards in chunks)",
        _ours_scorecam,
        option="scorecam",
    ),
    Contender(
        "plain-compiled",
        "torch.compile(model)(x) under no_grad",
        _compiled_plain,
        "plain-compiled",
        option="compile",
        min_warmup=3,
    ),
    Contender(
        "ours-compiled",
        "torch.compile(model)(x, return_gradcam=True): explain() stays eager",
        _compiled_ours,
        "plain-compiled",
        compare=True,
        option="compile",
        min_warmup=3,
    ),
    Contender(
        "ours-compiled-stages",
        "ours with every block but the target's compiled (compile_stages)",
        _compiled_stages_ours,
        "plain-compiled",
        compare=True,
        option="compile",
        min_warmup=3,
    ),
    Contender(
        "pytorch-grad-cam",
        "pytorch_grad_cam.GradCAM (full backward, numpy, cv2 resize) -> device",
        _pytorch_grad_cam,
        compare=True,
    ),
    Contender(
        "captum",
        "argmax forward + captum LayerGradCam(relu) + upsample + normalise",
        _captum,
        compare=True,
    ),
    Contender(
        "torchcam",
        "torchcam GradCAM (normalized=False) + upsample + normalise",
        _torchcam,
        compare=True,
    ),
]
BY_NAME = {c.name: c for c in CONTENDERS}


# ---------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------
@dataclass
class Result:
    """What the harness reports for one contender at one batch size."""

    contender: str
    batch_size: int
    status: str = "ok"  # "ok", "not installed: ...", "skipped: ...", "error: ..."
    description: str = ""
    baseline: str = "plain"
    times_ms: list[float] = field(default_factory=list)
    median_ms: float | None = None
    q1_ms: float | None = None
    q3_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    images_per_s: float | None = None
    ms_per_image: float | None = None
    ratio: float | None = None  # median / plain's median
    ratio_matched: float | None = None  # median / its baseline's median
    memory_mb: float | None = None  # peak above the resident set before the call
    memory_ratio: float | None = None  # memory_mb / plain's memory_mb
    memory_note: str | None = None
    max_abs_diff: float | None = None  # heatmap vs ours (fp32), where it should agree
    heatmap_min: float | None = None
    heatmap_max: float | None = None
    heatmap_mean: float | None = None


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def _select(names: Sequence[str] | None, device: Any, options: set[str]) -> list[Contender]:
    chosen = [BY_NAME[n] for n in names] if names else CONTENDERS
    selected = []
    for contender in chosen:
        if names is None and contender.option is not None and contender.option not in options:
            continue
        selected.append(contender)
    if "plain" not in {c.name for c in selected}:
        selected.insert(0, BY_NAME["plain"])  # every ratio needs it
    return selected


def time_contenders(
    runs: dict[str, Run],
    x: Any,
    device: Any,
    *,
    warmup: int,
    repeats: int,
    slow: Sequence[str] = (),
) -> dict[str, list[float]]:
    """Times ``runs`` interleaved: one call of each per round, the order rotated per round.

    Contenders in ``slow`` get at most one warm-up call and three timed calls; a
    contender's ``min_warmup`` raises its warm-up.
    """
    from tqdm.auto import tqdm

    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in tqdm(names, desc=f"warm-up B={x.shape[0]}", leave=False):
        calls = min(warmup, 1) if name in slow else max(warmup, BY_NAME[name].min_warmup)
        for _ in range(calls):
            runs[name](x)
        _sync(device)
    for round_index in tqdm(range(repeats), desc=f"timing B={x.shape[0]}", leave=False):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if name in slow and len(times[name]) >= 3:
                continue
            _sync(device)
            start = time.perf_counter()
            output = runs[name](x)
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
            del output
    return times


def cuda_peak_memory_mb(run: Run, x: Any, device: Any) -> float:
    """Peak CUDA memory allocated by one call above what was allocated before it."""
    import torch

    gc.collect()
    _sync(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    output = run(x)
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del output
    return peak / 2**20


def _proc_status_bytes(field_name: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux) in bytes, else None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (``VmHWM``) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def memory_worker(args: argparse.Namespace) -> int:
    """Runs one contender in this (fresh) process and prints its peak RSS as JSON.

    The peak is the kernel's ``VmHWM`` reset just before the first call; ``ru_maxrss`` is
    the fallback where ``/proc`` is missing. (On Linux ``ru_maxrss`` of a child started by
    fork+exec starts at the *parent's* RSS, so it cannot measure a small contender.)
    """
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    setup = build_setup(
        "cpu", args.size, args.seed, compile_mode=args.compile_mode,
        compile_backend=args.compile_backend, scorecam_chunk=args.scorecam_chunk,
    )
    setup.share_model = True  # one model in this process, as in the caller's own code
    x = make_input(args.batch_size, args.size, setup.device, args.seed)
    contender = BY_NAME[args.memory_worker]
    try:
        run = contender.build(setup)
    except Unavailable as error:
        print(json.dumps({"error": str(error)}))
        return 0
    gc.collect()
    reset = _reset_peak_rss()
    before = _proc_status_bytes("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(args.memory_calls):
        output = run(x)
        del output
    peak = _proc_status_bytes("VmHWM") if reset else None
    if peak is None or before is None:
        # ru_maxrss is in KiB on Linux, bytes on macOS; a peak only if it grew.
        scale = 1 if sys.platform == "darwin" else 1024
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        record = {"method": "ru_maxrss", "memory_mb": (maxrss - maxrss_before) * scale / 2**20}
    else:
        record = {
            "method": "VmHWM",
            "rss_before_mb": before / 2**20,
            "peak_mb": peak / 2**20,
            "memory_mb": (peak - before) / 2**20,
        }
    print(json.dumps(record))
    return 0


def cpu_peak_memory_mb(name: str, batch_size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of one contender, measured in its own fresh process."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--memory-worker", name,
        "--batch-size", str(batch_size), "--size", str(args.size), "--seed", str(args.seed),
        "--memory-calls", str(args.memory_calls), "--scorecam-chunk", str(args.scorecam_chunk),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.compile_mode:
        command += ["--compile-mode", args.compile_mode]
    command += ["--compile-backend", args.compile_backend]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:]
        return {"error": f"memory process failed ({completed.returncode}): {' '.join(tail)}"}
    return json.loads(lines[-1])


def _heatmap_of(output: tuple[Any, Any]) -> Any:
    heatmap = output[1]
    return heatmap if heatmap is not None and not isinstance(heatmap, dict) else None


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every selected contender at every batch size and returns the JSON report."""
    import torch

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {name for name in ("compile", "scorecam") if getattr(args, name)}
    contenders = _select(args.contenders, device, options)
    report: dict[str, Any] = {"meta": environment(args, device), "results": []}
    load_start = _loadavg()

    for batch_size in args.batch_sizes:
        setup = build_setup(
            args.device, args.size, args.seed, compile_mode=args.compile_mode,
            compile_backend=args.compile_backend, scorecam_chunk=args.scorecam_chunk,
        )
        x = make_input(batch_size, args.size, device, args.seed)
        results = {c.name: Result(c.name, batch_size, description=c.description,
                                  baseline=c.baseline) for c in contenders}
        runs: dict[str, Run] = {}
        for contender in contenders:
            result = results[contender.name]
            if contender.cuda_only and device.type != "cuda":
                result.status = "skipped: CUDA only"
                continue
            if contender.option == "scorecam" and batch_size > args.scorecam_max_batch:
                result.status = f"skipped: B > --scorecam-max-batch {args.scorecam_max_batch}"
                continue
            try:
                runs[contender.name] = contender.build(setup)
            except Unavailable as error:
                result.status = str(error)
            except Exception as error:  # a broken contender must not stop the others
                result.status = f"error: {type(error).__name__}: {error}"

        # Heatmaps first (this is also the first warm-up call).
        outputs = {}
        for name, run in list(runs.items()):
            try:
                outputs[name] = _heatmap_of(run(x))
            except Exception as error:
                results[name].status = f"error: {type(error).__name__}: {error}"
                del runs[name]
        reference = outputs.get("ours")
        for name, heatmap in outputs.items():
            result = results[name]
            if heatmap is None:
                continue
            heatmap = heatmap.float()
            result.heatmap_min = float(heatmap.min())
            result.heatmap_max = float(heatmap.max())
            result.heatmap_mean = float(heatmap.mean())
            if BY_NAME[name].compare and reference is not None and name != "ours":
                result.max_abs_diff = float((heatmap - reference).abs().max())
        del outputs, reference

        slow = [name for name in runs if name == "ours-scorecam"]
        times = time_contenders(
            runs, x, device, warmup=max(args.warmup - 1, 0), repeats=args.repeats, slow=slow
        )
        for name, values in times.items():
            result = results[name]
            result.times_ms = [round(v, 4) for v in values]
            result.median_ms = statistics.median(values)
            result.q1_ms, result.q3_ms = _quartiles(values)
            result.min_ms, result.max_ms = min(values), max(values)
            result.images_per_s = batch_size / (result.median_ms / 1e3)
            result.ms_per_image = result.median_ms / batch_size

        if args.memory:
            for name, run in runs.items():
                if device.type == "cuda":
                    results[name].memory_mb = cuda_peak_memory_mb(run, x, device)
                else:
                    record = cpu_peak_memory_mb(name, batch_size, args)
                    if "error" in record:
                        results[name].memory_note = record["error"]
                    else:
                        results[name].memory_mb = record["memory_mb"]
        del runs, setup, x
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

        plain = results["plain"]
        for result in results.values():
            if result.median_ms is None:
                continue
            result.ratio = result.median_ms / plain.median_ms
            matched = results.get(result.baseline)
            if matched is not None and matched.median_ms is not None:
                result.ratio_matched = result.median_ms / matched.median_ms
            if result.memory_mb is not None and plain.memory_mb:
                result.memory_ratio = result.memory_mb / plain.memory_mb
        report["results"].extend(vars(r) for r in results.values())

    report["meta"]["loadavg_start"] = load_start
    report["meta"]["loadavg_end"] = _loadavg()
    report["targets"] = evaluate_targets(report["results"], device.type)
    return report


# ---------------------------------------------------------------------------------------
# Targets (issue 6), reporting
# ---------------------------------------------------------------------------------------
def evaluate_targets(results: list[dict[str, Any]], device_type: str) -> list[dict[str, Any]]:
    """Checks the performance targets on this run's figures (``met`` is None if not run)."""
    table = {(r["contender"], r["batch_size"]): r for r in results}

    def value(name: str, batch: int, key: str) -> float | None:
        record = table.get((name, batch))
        return None if record is None else record.get(key)

    def speedup(slow: str, fast: str, batch: int) -> float | None:
        a, b = value(slow, batch, "median_ms"), value(fast, batch, "median_ms")
        return None if a is None or b is None else a / b

    def memory_gain(big: str, small: str, batch: int) -> float | None:
        a, b = value(big, batch, "memory_mb"), value(small, batch, "memory_mb")
        return None if a is None or not b else a / b

    if device_type == "cuda":
        batch = 64
        checks = [
            ("ours time / plain time", value("ours", batch, "ratio"), "<=", 1.05),
            ("ours memory / plain memory", value("ours", batch, "memory_ratio"), "<=", 1.10),
            ("ours-bf16 time / plain (fp32) time", value("ours-bf16", batch, "ratio"), "<=", 1.0),
            ("pytorch-grad-cam time / ours time", speedup("pytorch-grad-cam", "ours", batch), ">=", 8.0),
            ("torchcam time / ours time", speedup("torchcam", "ours", batch), ">", 1.0),
            ("torchcam memory / ours memory", memory_gain("torchcam", "ours", batch), ">=", 5.0),
            ("ours-layers time / plain time", value("ours-layers", batch, "ratio"), "<=", 1.15),
            ("ours-gradcam++ time / plain time", value("ours-gradcam++", batch, "ratio"), "<=", 1.15),
        ]
    else:
        batch = 8
        checks = [
            ("ours time / plain time", value("ours", batch, "ratio"), "<=", 1.15),
            ("pytorch-grad-cam time / ours time", speedup("pytorch-grad-cam", "ours", batch), ">=", 2.5),
        ]
    compare = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, ">": lambda a, b: a > b}
    return [
        {
            "target": name, "batch_size": batch, "value": measured, "op": op, "limit": limit,
            "met": None if measured is None else bool(compare[op](measured, limit)),
        }
        for name, measured, op, limit in checks
    ]


def environment(args: argparse.Namespace, device: Any) -> dict[str, Any]:
    """Device, versions, date and the exact command of this run."""
    from importlib import metadata

    import torch

    versions = {}
    for dist in ("torch", "torchvision", "gradcam-kit", "grad-cam", "captum", "torchcam", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    _import_project()
    import gradcam_kit

    versions["gradcam_kit (checkout)"] = gradcam_kit.__version__
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", *sys.argv]),
        "device": device.type,
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "size": args.size,
        "batch_sizes": args.batch_sizes,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": args.seed,
        "compile": {"backend": args.compile_backend, "mode": args.compile_mode}
        if args.compile else None,
        "memory": (
            "CUDA max_memory_allocated above the allocation before the call"
            if device.type == "cuda"
            else "peak RSS (VmHWM, reset before the first call) of a fresh process per "
            f"contender above its RSS before the first call, over {args.memory_calls} calls"
        ),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def format_table(report: dict[str, Any]) -> str:
    """The results as a Markdown table (also printed)."""
    header = (
        "| B | contender | median ms | IQR ms | img/s | x plain | x matched | "
        "peak extra MB | mem x plain | max abs diff vs ours | status |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in report["results"]:
        iqr = None if r["q1_ms"] is None else f"{r['q1_ms']:.1f}-{r['q3_ms']:.1f}"
        lines.append(
            f"| {r['batch_size']} | {r['contender']} | {_fmt(r['median_ms'], '.1f')} | "
            f"{iqr or '-'} | {_fmt(r['images_per_s'], '.1f')} | {_fmt(r['ratio'], '.2f', 'x')} | "
            f"{_fmt(r['ratio_matched'], '.2f', 'x')} | {_fmt(r['memory_mb'], '.0f')} | "
            f"{_fmt(r['memory_ratio'], '.2f', 'x')} | {_fmt(r['max_abs_diff'], '.1e')} | "
            f"{r['status']} |"
        )
    return "\n".join(lines)


def format_targets(report: dict[str, Any]) -> str:
    """The targets as a Markdown table."""
    lines = ["| target (B) | measured | limit | met |", "|---|---|---|---|"]
    for t in report["targets"]:
        met = {None: "not run", True: "yes", False: "NO"}[t["met"]]
        lines.append(
            f"| {t['target']} (B={t['batch_size']}) | {_fmt(t['value'], '.2f')} | "
            f"{t['op']} {t['limit']} | {met} |"
        )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Time per batch and peak extra memory per contender, one column per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = report["meta"]["batch_sizes"]
    rows = [r for r in report["results"] if r["median_ms"] is not None]
    names = list(dict.fromkeys(r["contender"] for r in rows))
    fig, axes = plt.subplots(
        2, len(batches), figsize=(4.6 * len(batches) + 1.5, 0.42 * len(names) * 2 + 2.2),
        squeeze=False,
    )
    colors = {
        name: ("#7f7f7f" if name.startswith("plain") else
               "#d62728" if name.startswith("ours") else "#1f77b4")
        for name in names
    }
    for col, batch in enumerate(batches):
        by_name = {r["contender"]: r for r in rows if r["batch_size"] == batch}
        for row, (key, ratio_key, label) in enumerate(
            [("median_ms", "ratio", "ms per batch"), ("memory_mb", "memory_ratio", "peak extra MB")]
        ):
            ax = axes[row][col]
            records = [by_name.get(n) for n in names]
            values = [r.get(key) if r else None for r in records]
            ax.barh(range(len(names)), [v or 0 for v in values],
                    color=[colors[n] for n in names])
            ends = list(values)
            if row == 0:
                errors = [
                    (r["median_ms"] - r["q1_ms"], r["q3_ms"] - r["median_ms"]) if r else (0, 0)
                    for r in records
                ]
                ax.errorbar([v or 0 for v in values], range(len(names)),
                            xerr=list(zip(*errors)), fmt="none", ecolor="black", capsize=2)
                ends = [r["q3_ms"] if r else None for r in records]
            top = max([v for v in ends if v] or [1])
            if not any(values):
                ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center",
                        color="#7f7f7f")
            for i, record in enumerate(records):
                ratio = record.get(ratio_key) if record else None
                if values[i] is not None and ratio is not None:
                    ax.text(ends[i] + top * 0.02, i, f"{ratio:.2f}x", va="center", fontsize=8)
            ax.set_xlim(0, top * 1.25)
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names if col == 0 else [], fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel(label)
            ax.set_title(f"B={batch}: {'time' if row == 0 else 'memory'} (ratio to plain)",
                         fontsize=9)
            ax.grid(axis="x", alpha=0.3)
    meta = report["meta"]
    fig.suptitle(
        f"Grad-CAM on ResNet50, {meta['size']}x{meta['size']}, {meta['device_name']} "
        f"({meta['torch_threads']} threads), torch {meta['versions']['torch']}, {meta['date_utc']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time Grad-CAM against plain inference, pytorch-grad-cam, Captum, torchcam.",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="default: 1 8 on the CPU, 1 8 64 256 on CUDA")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per contender (default 5 on the CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed calls first (default 2 on the CPU, 5 on CUDA)")
    parser.add_argument("--contenders", nargs="+", choices=sorted(BY_NAME), default=None,
                        help="default: all (optional ones with --compile / --scorecam)")
    parser.add_argument("--compile", action="store_true",
                        help="add torch.compile contenders (compile time is in the warm-up)")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (aot_eager: trace only, for checks)")
    parser.add_argument("--scorecam", action="store_true",
                        help="add Score-CAM (expensive: B*2048 masked forwards)")
    parser.add_argument("--scorecam-max-batch", type=int, default=8,
                        help="run Score-CAM only up to this batch size (default 8)")
    parser.add_argument("--scorecam-chunk", type=int, default=None,
                        help="masked images per Score-CAM forward (default 16 CPU, 128 CUDA)")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the memory measurement")
    parser.add_argument("--memory-calls", type=int, default=2,
                        help="calls per CPU memory process (peak over all of them)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--tag", default="",
                        help="suffix for the output files: bench_<device>_<tag>.json/.png")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parses flags, runs, prints the tables, writes JSON and PNG."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, value in (("--repeats", args.repeats), ("--warmup", args.warmup)):
        if value is not None and value < (1 if name == "--repeats" else 0):
            parser.error(f"{name} must be at least {1 if name == '--repeats' else 0}, got {value}")
    if args.size < 32:
        parser.error(f"--size must be at least 32 (ResNet50 downsamples by 32), got {args.size}")
    if not all(c.isalnum() or c in "-_" for c in args.tag):
        parser.error(f"--tag may hold letters, digits, '-' and '_' only, got {args.tag!r}")
    if args.batch_sizes is not None and any(b < 1 for b in args.batch_sizes):
        parser.error(f"--batch-sizes must be positive, got {args.batch_sizes}")
    _import_project()
    import torch

    cuda = torch.cuda.is_available()
    if args.device == "auto":
        args.device = "cuda" if cuda else "cpu"
    if args.device.startswith("cuda") and not cuda:
        parser.error("--device cuda was asked for but torch.cuda.is_available() is False")
    on_cuda = args.device.startswith("cuda")
    if args.scorecam_chunk is None:
        args.scorecam_chunk = 128 if on_cuda else 16
    if args.memory_worker:
        return memory_worker(args)
    if args.batch_sizes is None:
        args.batch_sizes = [1, 8, 64, 256] if on_cuda else [1, 8]
    if args.repeats is None:
        args.repeats = 20 if on_cuda else 5
    if args.warmup is None:
        args.warmup = 5 if on_cuda else 2

    report = run_benchmark(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"bench_{report['meta']['device']}" + (f"_{args.tag}" if args.tag else "")
    json_path = args.out_dir / f"{stem}.json"
    png_path = args.out_dir / f"{stem}.png"
    json_path.write_text(json.dumps(report, indent=2))
    try:
        plot(report, png_path)
    except (ImportError, RuntimeError) as err:  # no (or a stand-in) matplotlib: the JSON is the result
        print(f"no plot ({type(err).__name__}: {err})", file=sys.stderr)
        png_path = json_path
    meta = report["meta"]
    print(f"\n{meta['device_name']} ({meta['torch_threads']} threads), torch "
          f"{meta['versions']['torch']}, {meta['size']}x{meta['size']}, {meta['date_utc']}, "
          f"load {meta['loadavg_start']} -> {meta['loadavg_end']}")
    print(format_table(report))
    print("\nTargets:")
    print(format_targets(report))
    print(f"\nwrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
