"""The command line: one module per command (arguments and ``run`` only), one entry point.

:mod:`.commands` lists the commands and holds :func:`main` (the Python API) and
:func:`entry` (what ``gradcam-kit`` and ``python -m gradcam_kit`` run).
"""

from .commands import COMMANDS, DEBUG_ENV, EXIT_STATUSES, NothingDone, entry, main

__all__ = ["COMMANDS", "DEBUG_ENV", "EXIT_STATUSES", "NothingDone", "entry", "main"]
