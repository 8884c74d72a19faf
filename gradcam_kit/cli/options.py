"""Command-line options shared by every command that draws a map: one vocabulary.

``--layer``, ``--method`` and ``--alignment`` mean the same in ``explain``, ``figures`` and
``compare`` (``evaluate`` scores several layers and methods: ``--layers``, ``--methods``).
Their defaults come from the checkpoint through the model's :attr:`gradcam_choice`: the
layer and method ``evaluate`` recommended, else the layer ``train`` stored, else
``layer4.2.conv3`` with Grad-CAM.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch stays out of `--help`
    from torch import nn

#: The choices of ``--alignment``, default first (the same as :data:`gradcam_kit.core.engine.ALIGNMENTS`).
ALIGNMENT_CHOICES = ("receptive-field", "pixel")

__all__ = [
    "add_dicom_window_argument",
    "add_map_arguments",
    "resolve_map_options",
    "warn_if_size_differs",
    "weights_name",
]


def add_map_arguments(parser: argparse.ArgumentParser, *, several_methods: bool = False) -> None:
    """Adds ``--layer``, ``--method`` and ``--alignment`` to a command's parser."""
    parser.add_argument(
        "--layer", "--target-layer", dest="layer", default=None, metavar="NAME",
        help="layer to explain, e.g. layer2 or layer4.2.conv3 (default: the checkpoint's "
        "recommended layer, else the layer it stores, else layer4.2.conv3)",
    )
    method_help = (
        "CAM method: gradcam, gradcam++, xgradcam, hirescam, layercam, scorecam "
        "(default: the checkpoint's recommended method, else gradcam)"
    )
    if several_methods:
        parser.add_argument("--method", "--methods", dest="method", nargs="+", default=None, metavar="NAME", help=method_help)
    else:
        parser.add_argument("--method", default=None, metavar="NAME", help=method_help)
    parser.add_argument(
        "--alignment", choices=list(ALIGNMENT_CHOICES), default=ALIGNMENT_CHOICES[0],
        help="where each map unit is drawn: on its receptive field's centre (exact for "
        "ResNets), or where the usual bilinear resize puts it, (s - 1) / 2 px down and "
        "right (default: %(default)s)",
    )


def resolve_map_options(args: argparse.Namespace, model: nn.Module) -> dict[str, object]:
    """The layer and method to draw, validated: the flags, else the model's own choice.

    Returns:
        ``{"layer", "method", "source"}`` where ``source`` says where the choice came from.

    Raises:
        ValueError: an unknown layer (with suggestions) or method.
    """
    from ..core.layers import resolve_layer
    from ..methods import get_method

    choice = dict(getattr(model, "gradcam_choice", None) or {
        "layer": getattr(model, "gradcam_target_layer", "layer4.2.conv3"),
        "method": "gradcam",
        "source": "the default layer",
    })
    chosen = []
    if getattr(args, "layer", None):
        choice["layer"] = resolve_layer(model, args.layer)[0]
        chosen.append("layer")
    methods = getattr(args, "method", None)
    if methods:
        for method in [methods] if isinstance(methods, str) else methods:
            get_method(method)
        choice["method"] = methods if isinstance(methods, str) else methods[0]
        chosen.append("method")
    if chosen:
        choice["source"] = f"{' and '.join(chosen)} chosen on the command line" + (
            f"; the checkpoint's choice is {model.gradcam_choice['layer']}, {model.gradcam_choice['method']}"
            if getattr(model, "gradcam_choice", None) else ""
        )
    return choice


def warn_if_size_differs(requested: int | None, trained: object, *, flag: str = "--image-size") -> None:
    """Warns when an input size given on the command line is far from the trained one.

    A model sees objects at the scale it was trained at: a checkpoint trained at 96 px and
    run at 224 px predicts at chance, without any error.
    """
    import warnings

    if requested is None or trained is None:
        return
    side = int(trained[-1]) if isinstance(trained, (list, tuple)) else int(trained)
    if not 0.8 <= requested / side <= 1.25:
        warnings.warn(
            f"{flag} {requested} is far from the {side} px this checkpoint was trained at: "
            f"predictions and heatmaps may be wrong; leave {flag} out to use {side}",
            stacklevel=2,
        )


def weights_name(value: str) -> str:
    """``--weights``: ``imagenet``, also spelled ``DEFAULT`` as ``train`` spells it, or ``none``."""
    return "imagenet" if value.lower() in ("imagenet", "default") else value.lower()


class _DicomWindow(argparse.Action):
    """Stores ``--dicom-window CENTER WIDTH`` as a validated ``(center, width)`` tuple."""

    def __call__(self, parser, namespace, values, option_string=None):
        from ..data.dicom import check_window

        try:
            setattr(namespace, self.dest, check_window(values))
        except ValueError as err:
            parser.error(f"{option_string}: {err}")


def add_dicom_window_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Adds ``--dicom-window CENTER WIDTH`` (``args.dicom_window``: a tuple or ``None``)."""
    parser.add_argument(
        "--dicom-window", nargs=2, type=float, default=None, metavar=("CENTER", "WIDTH"),
        action=_DicomWindow,
        help="window for DICOM images, in the units after rescale slope/intercept; replaces "
        "each file's own VOI LUT or window (default: the file's; needs gradcam-kit[dicom])",
    )


def select_positions(
    count: int, *, index: Sequence[int] | None = None, random_count: int | None = None,
    seed: int = 0, spread: int | None = None,
) -> list[int]:
    """Which of ``count`` sorted inputs a command works on: the one rule of ``--index``,
    ``--random`` and ``--num-images`` (``explain`` and ``figures``).

    ``--index`` takes the positions given (sorted, each once); ``--random N`` draws N with
    ``random.Random(seed)`` (all of them, with a warning, when N is the count or more);
    ``--num-images N`` (``spread``) takes N spread evenly, so every class folder shows up;
    none of them: every input.

    Raises:
        ValueError: ``index`` and ``random_count`` together, an index out of range, or a
            count below 1.
    """
    import random
    import warnings

    if index is not None and random_count is not None:
        raise ValueError("pass either --random N or --index I, not both")
    if index is not None:
        bad = [i for i in index if not 0 <= i < count]
        if bad:
            raise ValueError(f"--index {bad} out of range: the input holds {count} images (0 to {count - 1})")
        return sorted(set(index))
    for flag, value in (("--num-images", spread), ("--random", random_count)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if random_count is not None:
        if random_count >= count:
            if random_count > count:
                warnings.warn(f"--random {random_count} but the input holds {count} images: taking all", stacklevel=2)
            return list(range(count))
        return sorted(random.Random(seed).sample(range(count), random_count))
    wanted = min(spread or count, count)
    if wanted == count:
        return list(range(count))
    return sorted({round(k * (count - 1) / max(wanted - 1, 1)) for k in range(wanted)})
