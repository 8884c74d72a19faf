"""Output folders that never mix runs and never lose a file the user did not ask to replace.

Every command writes through one :class:`OutputFolder`:

1. **Checked before any work** (the constructor): the folder must be new or empty, or hold
   none of the command's output names when the command shares the folder (``evaluate``
   writes ``evaluation.json`` beside the checkpoint). Anything else is refused with one line
   that names ``--overwrite``.
2. **Cleared when the command starts writing** (:meth:`OutputFolder.clear`): with
   ``--overwrite``, the earlier outputs are deleted, but only files that a gradcam-kit
   command recorded in the folder's manifest (:data:`MANIFEST`). A file nobody recorded
   (the user's own notes, a checkpoint copied there) is never deleted: its presence is
   refused, ``--overwrite`` or not.
3. **Recorded when the command ends** (:meth:`OutputFolder.record`), also after a failure:
   every file that appeared since :meth:`OutputFolder.clear` goes into the manifest under
   the command's name, so a later ``--overwrite`` can replace exactly these.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["MANIFEST", "NothingDone", "OutputFolder", "record_pending"]

#: The record of what gradcam-kit commands wrote into a folder: ``{"files": {path: command}}``.
MANIFEST = ".gradcam-kit-outputs.json"
_FORMAT = "gradcam_kit/outputs/1"
_SHOWN = 4  # file names quoted in an error message
# Folders cleared but not yet recorded; the command line records them when a command ends,
# whichever way it ends (see record_pending).
_pending: list[OutputFolder] = []


class OutputFolder:
    """One command's output folder; see the module docstring.

    Args:
        path: the folder.
        command: the command writing it (``"train"``), recorded in the manifest.
        overwrite: replace the outputs an earlier run recorded (``--overwrite``).
        flag: the option that named the folder, for the messages (``"--out"``).
        names: the top-level names (glob patterns) the command writes when it shares the
            folder with other files, e.g. ``["evaluation.json", "overlays"]``; ``None``: the
            command owns the whole folder, which must then be new or empty.
        keep_own: files that ``command`` recorded earlier stay and do not block (``train
            --resume`` continuing in its own folder).

    Raises:
        ValueError: ``path`` is a file, or lies under a file.
        FileExistsError: the folder holds earlier outputs and ``overwrite`` is false, or
            holds files no gradcam-kit command recorded (never deleted).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        command: str,
        overwrite: bool = False,
        flag: str = "--output",
        names: Sequence[str] | None = None,
        keep_own: bool = False,
    ) -> None:
        self.path = Path(path)
        self.command = command
        self.flag = flag
        self._names = None if names is None else list(names)
        self._before: set[str] | None = None
        _check_is_folder(self.path, flag)
        recorded = self._manifest()
        existing = _files(self.path)
        blocking = sorted(
            f for f in existing
            if self._owns(f) and not (keep_own and recorded.get(f) == command)
        )
        self.replaced: list[str] = []
        if not blocking:
            return
        where = f"output folder {self.path}"
        foreign = [f for f in blocking if f not in recorded]
        if foreign:
            raise FileExistsError(
                f"{where} holds {len(foreign)} file(s) that gradcam-kit did not write "
                f"({_sample(foreign)}); they are never deleted, --overwrite or not: choose a "
                f"new or empty folder with {flag}, or move them away"
            )
        if not overwrite:
            writers = sorted({recorded[f] for f in blocking})
            raise FileExistsError(
                f"{where} already holds {len(blocking)} output file(s) of an earlier "
                f"{'/'.join(writers)} run ({_sample(blocking)}); pass --overwrite to replace "
                f"them, or choose another folder with {flag}"
            )
        self.replaced = blocking

    # -- the three steps --------------------------------------------------------------
    def clear(self) -> Path:
        """Deletes the outputs being replaced, creates the folder, and starts recording.

        Returns:
            The folder's path.
        """
        recorded = self._manifest()
        for name in self.replaced:
            target = self.path / name
            if target.is_file() or target.is_symlink():
                target.unlink()
            recorded.pop(name, None)
            _prune_empty(target.parent, self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        if self.replaced:
            self._write_manifest(recorded)
        self.replaced = []
        self._before = _files(self.path)
        if self not in _pending:
            _pending.append(self)
        return self.path

    def record(self) -> list[str]:
        """Adds every file written since :meth:`clear` to the manifest (no-op before it).

        Returns:
            The recorded paths, relative to the folder.
        """
        if self in _pending:
            _pending.remove(self)
        if self._before is None or not self.path.is_dir():
            return []
        recorded = {k: v for k, v in self._manifest().items() if (self.path / k).exists()}
        new = sorted(_files(self.path) - self._before)
        recorded.update(dict.fromkeys(new, self.command))
        if recorded or (self.path / MANIFEST).exists():
            self._write_manifest(recorded)
        self._before = _files(self.path)
        return new

    def __enter__(self) -> OutputFolder:
        self.clear()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.record()  # also after a failure: a rerun with --overwrite can replace them

    # -- helpers ----------------------------------------------------------------------
    def _owns(self, relative: str) -> bool:
        if self._names is None:
            return True
        top = relative.split("/", 1)[0]
        return any(fnmatch.fnmatchcase(top, pattern) for pattern in self._names)

    def _manifest(self) -> dict[str, str]:
        try:
            loaded = json.loads((self.path / MANIFEST).read_text())
            files = loaded.get("files", {}) if isinstance(loaded, dict) else {}
            return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
        except (OSError, ValueError):
            return {}  # no manifest (or an unreadable one): nothing is known to be ours

    def _write_manifest(self, files: dict[str, str]) -> None:
        target = self.path / MANIFEST
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps({"format": _FORMAT, "files": dict(sorted(files.items()))}, indent=1))
        os.replace(tmp, target)


def _check_is_folder(path: Path, flag: str) -> None:
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            where = "is" if candidate == path else f"lies under {candidate}, which is"
            raise ValueError(f"{flag} {path} {where} a file, not a folder; pass a folder path")


def _files(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    found = set()
    for root, _, names in os.walk(folder):
        for name in names:
            relative = (Path(root) / name).relative_to(folder).as_posix()
            if relative not in (MANIFEST, MANIFEST + ".tmp"):
                found.add(relative)
    return found


def _prune_empty(folder: Path, stop: Path) -> None:
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            return
        folder = folder.parent


def _sample(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


class NothingDone(Exception):  # noqa: N818 - a status, not a failure of the program
    """Raised by a command that ran to the end but produced no result (exit status 3)."""


def record_pending() -> None:
    """Records every folder cleared and not yet recorded (the command line's ``finally``)."""
    while _pending:
        _pending[-1].record()
