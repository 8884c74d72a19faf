"""The contenders: each builder returns ``run(x) -> (logits | None, heatmap | dict | None)``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .models import LAYERWISE, TARGET_LAYER, Setup, Unavailable

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

    from gradcam_kit.models.compile import compile_stages

    model = setup.copy(gradcam=True)
    compile_stages(
        model, [model.get_submodule(TARGET_LAYER)],
        mode=setup.compile_mode, backend=setup.compile_backend,
    )

    def run(x):
        with torch.no_grad():
            return model(x, return_gradcam=True)

    return run


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


