"""The Grad-CAM engine: one forward pass, a gradient only where it is needed.

How a call works (:meth:`CAMEngine.explain`):

1. Forward hooks on the target layers are registered once (:meth:`CAMEngine.attach`)
   and stay dormant unless the *calling thread* is inside a recording. A plain
   ``model(x)`` therefore pays one dictionary lookup per target layer and nothing else.
2. During a recording, the hook keeps the layer's output. When that output carries no
   autograd graph (``torch.no_grad()``, a frozen backbone) the hook *cuts* the graph
   there: it keeps a detached leaf that requires grad and switches grad mode on for the
   rest of the forward, so autograd records only the few layers between the target and
   the logits. Nothing before the target layer is ever recorded. When the output already
   carries a graph (training an unfrozen model) that graph is left intact, so the
   returned logits back-propagate a training loss as usual.
3. ``torch.autograd.grad(class_scores, activations)`` computes the gradient at the target
   layers only: no parameter's ``.grad`` is written, BatchNorm statistics are updated by
   the single forward only, and train/eval flags are never touched.
4. The method (:mod:`gradcam_kit.methods`) weights the activation; ReLU, bilinear
   upsampling to the input size and per-image min-max normalisation follow, batched, on
   the input's device, in float32.

Per-call state lives in a thread-local stack, never on the engine or the model, so two
threads can explain with the same model at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..methods import CAMMethod, get_method
from .hooks import (
    _capture_hook,  # noqa: F401 - ResNet50FineTuned strips it before scripting
    _eager_under_compile,
    _Recording,
    _recordings,
    _register,
    _remove_handles,
)
from .layers import resolve_layers
from .ops import ALIGNMENTS, min_max_normalize, upsample
from .scores import (  # noqa: F401 - class_scores and explained_scores are used from here too
    _detach,
    _requires_grad,
    class_scores,
    explained_scores,
    resolve_class_idx,
)
from .types import ClassIdx, LayerSpec, OutputSize, ScoreFn

__all__ = [
    "CAMEngine",
    "CAMOutput",
    "min_max_normalize",
    "resolve_class_idx",
    "upsample",
]

Reshape = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class CAMOutput:
    """Result of :meth:`CAMEngine.explain`.

    Attributes:
        logits: the model's output, following the caller's grad mode.
        heatmaps: ``{layer_name: (B, H, W) float32}`` maps on the input's device.
        class_idx: ``(B,)`` the explained class per image (for a single-logit head ``1``
            explains ``+z`` and ``0`` explains ``-z``, see :mod:`gradcam_kit.core.scores`);
            ``None`` when a ``score_fn`` was explained.
    """

    logits: Tensor
    heatmaps: dict[str, Tensor]
    class_idx: Tensor | None



_NO_GRADIENT = (
    "no gradient reaches target layer(s) {layers} from the explained scores. Either the "
    "output is not computed from the layer, or something between them is not "
    "differentiable: torch.utils.checkpoint(..., use_reentrant=True) around the layer (pass "
    "use_reentrant=False), a quantized module after it (e.g. quantize_dynamic's Linear), or a "
    ".detach() / torch.no_grad() inside forward. Gradient-free methods (method='scorecam', "
    "or 'cam' for a pooled linear head) work in these cases"
)


def _check_finite(x: Tensor, heatmaps: dict[str, Tensor]) -> None:
    # One reduction and one host sync per call, on the maps the caller reads anyway.
    finite = torch.stack([torch.isfinite(h).all() for h in heatmaps.values()]).all()
    if bool(finite):
        return
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"the input holds {bad} NaN or Inf value(s), so the map would be NaN; replace them "
            "first, e.g. x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)"
        )
    raise ValueError(
        "the map holds NaN or Inf although the input is finite: the model's output or its "
        "gradient overflowed (e.g. float16 without autocast); explain in float32"
    )


class CAMEngine:
    """Explains any ``nn.Module`` at one or more layers, at the cost of one forward pass.

    Args:
        model: the network to explain. It is never modified: no train/eval switch, no
            ``requires_grad`` change, no ``.grad`` written.
        target_layers: a layer name (``"layer4.2.conv3"`` or ``"layer4[-1].conv3"``), a
            submodule of ``model``, or a sequence of them.
        method: a method name from :data:`gradcam_kit.methods.base.METHODS` or a
            :class:`~gradcam_kit.methods.CAMMethod`.
        reshape: optional function turning an activation into ``(B, C, h, w)``, e.g. for
            Vision Transformer tokens.
        hold_model: keep a strong reference to ``model``. ``False`` keeps a weak one, for a
            model that owns its engine (``ResNet50FineTuned``): no reference cycle, so
            ``del model`` frees the model (and its GPU memory) at once.

    Hooks are registered by :meth:`attach` (or by entering the engine as a context
    manager) and removed by :meth:`remove`; both are idempotent. An engine dropped while
    attached removes its hooks when it is freed, so hooks never pile up on a model.

    Target layers are looked up by name again when each call starts: after a layer is
    replaced (``fuse_modules``, a new ``model.layer4``, ``convert_sync_batchnorm``) the
    engine explains the module now at that name and moves its hooks there.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: LayerSpec,
        *,
        method: str | CAMMethod = "gradcam",
        reshape: Reshape | None = None,
        hold_model: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self._model: nn.Module | None = model if hold_model else None
        self._model_ref: weakref.ref | None = None if hold_model else weakref.ref(model)
        self.layers = resolve_layers(model, target_layers)
        self.method = get_method(method)
        self.reshape = reshape
        # Mutated in place only: the finalizer below holds this very list.
        self._handles: list[RemovableHandle] = []
        weakref.finalize(self, _remove_handles, self._handles)

    def __getstate__(self) -> dict:
        # copy.deepcopy and pickle (torch.save of a whole model) copy the weakly held model
        # through their memo, so a copy's engine points at the copied model.
        state = self.__dict__.copy()
        state["_model_ref"] = None
        state["_weak_model"] = self._model_ref() if self._model_ref is not None else None
        return state

    def __setstate__(self, state: dict) -> None:
        weak_model = state.pop("_weak_model", None)
        self.__dict__.update(state)
        self._model_ref = weakref.ref(weak_model) if weak_model is not None else None
        weakref.finalize(self, _remove_handles, self._handles)

    @property
    def model(self) -> nn.Module:
        """The explained model.

        Raises:
            RuntimeError: the engine holds the model weakly and the model was freed.
        """
        model = self._model
        if model is None and self._model_ref is not None:
            model = self._model_ref()
        if model is None:
            raise RuntimeError("the model of this CAMEngine was deleted; build a new engine")
        return model

    # -- hook lifecycle -------------------------------------------------------------
    @property
    def attached(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def attach(self) -> CAMEngine:
        """Registers one forward hook per target layer (no-op if already registered)."""
        if not self._handles:
            self._handles.extend(_register(self.layers.values()))
        return self

    def remove(self) -> None:
        """Removes every hook this engine registered (safe to call any number of times)."""
        _remove_handles(self._handles)

    def _refresh_layers(self) -> None:
        """Follows target layers that were replaced in the model since the last call."""
        model = self.model
        replaced = False
        for name, module in list(self.layers.items()):
            try:
                current = model.get_submodule(name)
            except AttributeError:
                raise RuntimeError(
                    f"target layer {name!r} no longer exists in {type(model).__name__} (was "
                    "the model changed after the engine was built?); pick a layer from "
                    "model.named_modules() and build the engine (or model) again"
                ) from None
            if current is not module:
                self.layers[name] = current
                replaced = True
        if replaced and self.attached:
            self.remove()
            self.attach()

    def __enter__(self) -> CAMEngine:
        return self.attach()

    def __exit__(self, *exc_info: object) -> None:
        self.remove()  # never swallows the exception

    # -- explaining -----------------------------------------------------------------
    # Always eager, also inside torch.compile(model): the graph cut needs the gradient at an
    # activation, which a compiled graph does not expose, and TorchDynamo silently drops a
    # forward hook that breaks its graph deep inside a model (torch 2.14: the hook on
    # ResNet50's layer4[2].conv3 never ran). Stages the model compiled itself (e.g.
    # model.layer3.compile()) still run compiled here; see docs/PERFORMANCE.md.
    @_eager_under_compile
    def explain(
        self,
        x: Tensor,
        class_idx: ClassIdx = None,
        *,
        layers: LayerSpec | None = None,
        method: str | CAMMethod | None = None,
        output_size: OutputSize = "input",
        normalize: bool = True,
        score_fn: ScoreFn | None = None,
        forward: Callable[[Tensor], Tensor] | None = None,
        alignment: str = "pixel",
    ) -> CAMOutput:
        """Runs one forward pass and returns the logits with a map per layer.

        Args:
            x: the input batch ``(B, C, H, W)``.
            class_idx: ``None`` for each image's predicted class, an ``int`` for all images,
                or a sequence/tensor with one class per image. A single-logit head has the
                classes ``0`` (explains ``-z``) and ``1`` (explains ``+z``); see
                :mod:`gradcam_kit.core.scores`.
            layers: layers to explain in this call instead of the engine's own; hooks on
                them live for this call only.
            method: a method for this call instead of the engine's.
            output_size: ``"input"`` for ``x``'s ``(H, W)``, a ``(h, w)`` tuple, or ``None`` for
                the layer's own resolution (e.g. 7x7 for ResNet50's ``layer4``).
            normalize: per-image min-max normalisation to ``[0, 1]`` (after ReLU).
            score_fn: maps the logits to ``(B,)`` scores to explain; overrides ``class_idx``.
            forward: what to call instead of ``self.model(x)``.
            alignment: ``"pixel"`` (default, the usual bilinear resize) or
                ``"receptive-field"`` (each unit on its receptive field's centre, see
                :func:`upsample`).

        Under ``torch.inference_mode()`` the call runs as under ``torch.no_grad()`` (autograd
        is briefly re-enabled after the target layer) and returns ordinary tensors.

        Raises:
            RuntimeError: a target layer did not run in the forward pass, or the scores do
                not depend on it.
            ValueError: a bad ``class_idx`` (see :func:`resolve_class_idx`).
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"expected an input tensor, got {type(x).__name__}")
        if torch.is_inference_mode_enabled():
            # Autograd is off in inference mode; leave it for this call only. The input is
            # only read, and the caller gets ordinary (non-inference) tensors back.
            with torch.inference_mode(False), torch.no_grad():
                return self.explain(
                    x, class_idx, layers=layers, method=method, output_size=output_size,
                    normalize=normalize, score_fn=score_fn, forward=forward,
                    alignment=alignment,
                )
        cam_method = self.method if method is None else get_method(method)
        outputs = self._explain(
            x, class_idx, layers, [cam_method], output_size, normalize, score_fn, forward, alignment
        )
        return outputs[0]

    @_eager_under_compile
    def explain_methods(
        self,
        x: Tensor,
        class_idx: ClassIdx = None,
        *,
        methods: Sequence[str | CAMMethod],
        layers: LayerSpec | None = None,
        output_size: OutputSize = "input",
        normalize: bool = True,
        score_fn: ScoreFn | None = None,
        forward: Callable[[Tensor], Tensor] | None = None,
        alignment: str = "pixel",
    ) -> dict[str, CAMOutput]:
        """Several methods from one forward pass: ``{method: CAMOutput}``, keyed as given.

        Grad-CAM, Grad-CAM++, LayerCAM, XGrad-CAM, HiResCAM and CAM all weight the same
        activations with the same gradients, so one forward (and one backward from the
        target layers) serves them all; comparing three methods costs about what one does.
        Methods that re-run the model (Score-CAM) still do so, once each. The options are
        those of :meth:`explain`; every output shares the same ``logits``.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"expected an input tensor, got {type(x).__name__}")
        cam_methods = [get_method(m) for m in methods]
        if not cam_methods:
            raise ValueError("methods is empty; name at least one method (e.g. ['gradcam'])")
        names = [given if isinstance(given, str) else m.name for given, m in zip(methods, cam_methods)]
        if len({m.name for m in cam_methods}) != len(cam_methods):
            raise ValueError(f"methods {list(names)} name a method twice; name each once")
        if torch.is_inference_mode_enabled():
            with torch.inference_mode(False), torch.no_grad():
                return self.explain_methods(
                    x, class_idx, methods=cam_methods, layers=layers, output_size=output_size,
                    normalize=normalize, score_fn=score_fn, forward=forward, alignment=alignment,
                )
        outputs = self._explain(
            x, class_idx, layers, cam_methods, output_size, normalize, score_fn, forward, alignment
        )
        return dict(zip(names, outputs))

    def _explain(
        self,
        x: Tensor,
        class_idx: object,
        layers: object,
        cam_methods: Sequence[CAMMethod],
        output_size: OutputSize,
        normalize: bool,
        score_fn: ScoreFn | None,
        forward: Callable[[Tensor], Tensor] | None,
        alignment: str,
    ) -> list[CAMOutput]:
        """One recorded forward (and backward, if any method needs it); a result per method."""
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        if layers is None:
            self._refresh_layers()
        targets = self.layers if layers is None else resolve_layers(self.model, layers)
        temporary = [] if self.attached and layers is None else _register(targets.values())
        caller_grad = torch.is_grad_enabled()
        needs_gradient = any(m.needs_gradient for m in cam_methods)
        recording = _Recording(
            targets={module: name for name, module in targets.items()},
            cut_graph=needs_gradient,
        )
        if not hasattr(_recordings, "stack"):
            _recordings.stack = []
        stack = _recordings.stack
        stack.append(recording)
        try:
            logits = (forward or self.model)(x)
        finally:
            stack.pop()
            torch.set_grad_enabled(caller_grad)
            for handle in temporary:
                handle.remove()

        missing = [name for name in targets if name not in recording.activations]
        if missing:
            raise RuntimeError(
                f"target layer(s) {missing} did not run in the forward pass; "
                "pick layers that the model's forward actually calls"
            )
        batch = x.shape[0]
        activations = [recording.activations[name] for name in targets]
        recording.activations.clear()
        recording.returned.clear()

        indices = None if score_fn is not None else resolve_class_idx(class_idx, logits)
        gradients: Sequence[Tensor | None] = [None] * len(activations)
        if needs_gradient:
            gradients = self._gradients(
                logits, indices, dict(zip(targets, activations)), score_fn, caller_grad
            )
        method_idx = indices
        if method_idx is None:  # a score_fn
            method_idx = torch.zeros(batch, dtype=torch.long, device=x.device)
        size = tuple(x.shape[-2:]) if output_size == "input" else output_size
        if not caller_grad:
            logits = _detach(logits)
        outputs = []
        for cam_method in cam_methods:
            bind = getattr(cam_method, "bind", None)
            if bind is not None:  # methods that re-run the model (Score-CAM) need input and forward
                cam_method = bind(self.model, x, forward or self.model, score_fn)
            # Maps are computed in float32 whatever autocast the caller runs under.
            with torch.autocast(x.device.type, enabled=False):
                heatmaps = {
                    name: self._map(
                        activation,
                        gradient if cam_method.needs_gradient else None,
                        method_idx, cam_method, size, normalize, alignment,
                    )
                    for name, activation, gradient in zip(targets, activations, gradients)
                }
            _check_finite(x, heatmaps)
            outputs.append(CAMOutput(logits=logits, heatmaps=heatmaps, class_idx=indices))
        return outputs

    def __call__(self, x: Tensor, class_idx: object = None, **kwargs: object) -> CAMOutput:
        """Same as :meth:`explain`."""
        return self.explain(x, class_idx, **kwargs)

    def _gradients(
        self,
        logits: Tensor,
        indices: Tensor | None,
        activations: dict[str, Tensor],
        score_fn: ScoreFn | None,
        caller_grad: bool,
    ) -> tuple[Tensor, ...]:
        batch = next(iter(activations.values())).shape[0]
        with torch.enable_grad():
            scores = explained_scores(logits, indices, score_fn, batch=batch)
            if not scores.requires_grad:
                raise RuntimeError(_NO_GRADIENT.format(layers=list(activations)))
            gradients = torch.autograd.grad(
                scores.sum(),
                list(activations.values()),
                retain_graph=caller_grad and _requires_grad(logits),
                allow_unused=True,
            )
        if any(g is None for g in gradients):
            unused = [name for name, g in zip(activations, gradients) if g is None]
            raise RuntimeError(_NO_GRADIENT.format(layers=unused))
        return gradients

    def _map(
        self,
        activation: Tensor,
        gradient: Tensor | None,
        class_idx: Tensor,
        method: CAMMethod,
        size: tuple[int, int] | None,
        normalize: bool,
        alignment: str = "pixel",
    ) -> Tensor:
        activation = activation.detach()
        if self.reshape is not None:
            activation = self.reshape(activation)
            gradient = self.reshape(gradient) if gradient is not None else None
        if activation.ndim != 4:
            raise ValueError(
                f"a CAM needs a (B, C, h, w) activation, got shape {tuple(activation.shape)}; "
                "pass reshape= to turn it into one (e.g. for transformer tokens)"
            )
        activation = activation.float()
        gradient = gradient.float() if gradient is not None else None
        cam = method(activation, gradient, class_idx).clamp_min(0)
        if size is not None:
            cam = upsample(cam, size, alignment=alignment)
        return min_max_normalize(cam) if normalize else cam
