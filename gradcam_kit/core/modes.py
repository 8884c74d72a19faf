"""Train/eval flags: switch a model to eval mode for a while, then put every flag back.

:func:`eval_mode` is the one place the package does this (Score-CAM's masked forwards, the
validation pass of ``train``, ``evaluate``, the ``arch`` analysis).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Puts ``model`` in eval mode inside the ``with`` block and restores every flag after it.

    The rule: the ``training`` flag of *each* submodule is recorded before and written back
    afterwards, in a ``finally`` (so also after an exception, and also when ``model.eval()``
    itself raises). A model whose submodules were in mixed modes (a frozen backbone in eval
    with a training head) gets exactly those modes back; ``model.train(was_training)`` would
    set every submodule to the top-level flag instead.

    Args:
        model: any module; it is changed in place.

    Yields:
        ``model``, in eval mode.
    """
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()  # inside the try: a train()/eval() override that raises restores too
        yield model
    finally:
        for module, training in flags:
            module.training = training
