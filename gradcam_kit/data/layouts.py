"""How an input to explain is read: the names :func:`gradcam_kit.data.inputs.collect_inputs` accepts.

Kept apart from :mod:`gradcam_kit.data.inputs` (which imports torch) so that building the
command line, e.g. ``gradcam-kit explain --help``, imports no torch.
"""

from __future__ import annotations

__all__ = ["LAYOUTS"]

#: ``auto`` guesses; the others force one image, a folder, an ImageFolder split or a CSV.
LAYOUTS = ("auto", "image", "folder", "imagefolder", "csv")
