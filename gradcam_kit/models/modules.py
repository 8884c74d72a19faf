"""Small operations on any ``nn.Module``: unwrapping training wrappers, freezing the backbone."""

from __future__ import annotations

from torch import nn

__all__ = ["freeze_backbone", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside DataParallel/DistributedDataParallel (``.module``) and
    ``torch.compile`` (``._orig_mod``) wrappers, however they are nested.

    Args:
        model: a network, wrapped or not.

    Returns:
        The innermost module; ``model`` itself when it is not wrapped.
    """
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)  # DataParallel / DistributedDataParallel
        if not isinstance(inner, nn.Module) or inner is model:
            return model
        model = inner


def freeze_backbone(model: nn.Module, head: str = "fc") -> nn.Module:
    """Freezes every parameter except the head's (``requires_grad`` stays on for ``head.*``).

    Args:
        model: the network (wrappers are looked through, see :func:`unwrap_model`).
        head: the name of the head module, e.g. ``"fc"`` for a ResNet.

    Returns:
        ``model``.

    Raises:
        ValueError: the model has no parameters under ``head``.
    """
    parameters = list(unwrap_model(model).named_parameters())
    prefix = head + "."
    if not any(name.startswith(prefix) for name, _ in parameters):
        raise ValueError(f"{type(unwrap_model(model)).__name__} has no parameters under {head!r}; pass head=<the head's name>")
    for name, parameter in parameters:
        parameter.requires_grad_(name.startswith(prefix))
    return model
