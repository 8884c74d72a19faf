"""Compiled speed for Grad-CAM: ``torch.compile`` every block that holds no target layer.

``CAMEngine.explain`` runs eagerly by design (the graph cut needs the gradient at an
activation inside the network, which a compiled graph does not expose), so compiling the
whole model speeds up only plain inference. :func:`compile_stages` compiles the blocks
around the target instead; the engine's recorded forward then runs them compiled, with
the hook and the graph cut in eager code. See docs/PERFORMANCE.md (torch.compile).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..core.layers import resolve_layers

__all__ = ["compile_stages"]


def compile_stages(
    model: nn.Module,
    targets: str | nn.Module | Sequence[str | nn.Module],
    *,
    mode: str | None = None,
    backend: str = "inductor",
) -> list[str]:
    """Compiles, in place, every child block of ``model`` that holds no target layer.

    Descends into the blocks that do hold one, so only the target's own block (for
    ResNet50's ``layer4.2.conv3``: ``layer4.2``) and single layers around it stay eager.
    The engine's recorded forward then runs these compiled blocks, with the hook and the
    graph cut in eager code.

    Args:
        model: the model whose blocks are compiled (``nn.Module.compile``, in place).
        targets: the Grad-CAM target layers: submodules of ``model`` or their names
            (``"layer4.2.conv3"`` or ``"layer4[-1].conv3"``), one or a sequence.
        mode: the ``torch.compile`` mode, e.g. ``"max-autotune-no-cudagraphs"``.
        backend: the ``torch.compile`` backend (``"aot_eager"`` traces without generating
            code).

    Returns:
        The dotted names of the compiled blocks.

    Raises:
        ValueError: a target is not a layer of ``model`` (the message suggests close
            names), or ``targets`` is empty; nothing is compiled then.
        TypeError: a target is neither a name nor a module.
    """
    if not isinstance(targets, (str, nn.Module)):
        targets = list(targets)
    target_set = set(resolve_layers(model, targets).values())
    compiled: list[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
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
