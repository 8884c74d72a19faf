"""The capture hook behind every explain call, and the hook lifecycle.

A forward hook on each target layer (:func:`_capture_hook`) stays dormant unless the calling
thread is inside a recording (:class:`_Recording`, on a thread-local stack): a plain
``model(x)`` pays one dictionary lookup per hooked layer. During a recording it keeps the
layer's output and, where that output carries no graph, cuts the graph there (see
:mod:`gradcam_kit.core.engine`). Handles are kept in lists and removed with
:func:`_remove_handles`, which empties the list, so removing twice is harmless.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["_Recording", "_capture_hook", "_eager_under_compile", "_recordings", "_register", "_remove_handles"]

_recordings = threading.local()


def _eager_under_compile(function: Callable) -> Callable:
    """``torch.compiler.disable(function)``, without importing TorchDynamo until it runs.

    ``torch.compiler.disable`` imports ``torch._dynamo`` (about 1 s on two cores) when it
    is applied; applied at class definition, every ``import gradcam_kit.core.engine`` paid it.
    Nothing can be compiling before TorchDynamo is imported, so until then the function is
    called directly; once it is imported, through the disabled wrapper (made once). The
    ``_torchdynamo_disable`` mark makes Dynamo skip this wrapper instead of inlining it.
    """
    disabled: list[Callable] = []

    @functools.wraps(function)
    def wrapper(*args: object, **kwargs: object) -> object:
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is None:
            return function(*args, **kwargs)
        if not disabled:
            disabled.append(dynamo.disable(function))
        return disabled[0](*args, **kwargs)

    wrapper._torchdynamo_disable = True  # type: ignore[attr-defined]
    return wrapper


@dataclass
class _Recording:
    """What one explain call captures; lives only for that call, on its own thread."""

    targets: dict[nn.Module, str]
    activations: dict[str, Tensor] = field(default_factory=dict)
    returned: dict[str, Tensor] = field(default_factory=dict)
    cut_graph: bool = True


def _active_recording() -> _Recording | None:
    stack = getattr(_recordings, "stack", None)
    return stack[-1] if stack else None


def _capture_hook(module: nn.Module, inputs: tuple, output: object) -> Tensor | None:
    # A module-level function (not a closure or a bound method) so that copy.deepcopy,
    # pickling and torch.save of a model with hooks attached keep working.
    recording = _active_recording()
    if recording is None:
        return None
    name = recording.targets.get(module)
    if name is None or recording.returned.get(name) is output:
        return None  # not ours, or a second engine's hook on the same module: already taken
    if name in recording.activations:
        raise RuntimeError(
            f"layer {name!r} ran twice in one forward pass (a backbone shared by two inputs, "
            "as in a siamese model, or a block reused in a loop): a CAM explains one call of "
            "a layer. Explain each branch on its own input, or target a layer that runs once"
        )
    if not isinstance(output, Tensor):
        raise TypeError(
            f"layer {name!r} returns {type(output).__name__}, not a tensor; "
            "target a layer whose output is a tensor (e.g. a conv, a block or a norm layer)"
        )
    if output.requires_grad:
        activation = output
    elif recording.cut_graph:
        # Cut the graph here: nothing before this layer is recorded.
        activation = output.detach().requires_grad_(True)
        torch.set_grad_enabled(True)
    else:
        activation = output.detach()
    recording.activations[name] = activation
    # Hand the rest of the network a copy: later in-place ops (ReLU(inplace=True),
    # `out += identity`) must not rewrite the tensor we differentiate against.
    returned = activation.clone()
    recording.returned[name] = returned
    return returned



def _register(modules: Iterator[nn.Module] | Sequence[nn.Module]) -> list[RemovableHandle]:
    return [module.register_forward_hook(_capture_hook) for module in modules]


def _remove_handles(handles: list[RemovableHandle]) -> None:
    while handles:
        handles.pop().remove()
