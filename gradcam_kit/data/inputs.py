"""What to explain: image paths (with labels when known) and the Dataset that decodes them.

:func:`collect_inputs` accepts one image file, a CSV of ``path,label`` rows, an
ImageFolder split (``root/<class>/<image>``) or any folder, searched recursively.
Files that are not images are kept as *skipped* entries with the reason, so a run never
aborts on them and the report can list them. Files named ``*_mask.<ext>`` are ground-truth
masks that sit beside their images (:mod:`gradcam_kit.data.datasets`) and are not inputs.
DICOM files count as images: ``.dcm``/``.dicom``, and files without an extension that
hold ``DICM`` at byte 128 (:func:`gradcam_kit.data.datasets.is_image_file`).

:class:`ExplainDataset` decodes in DataLoader workers and returns the image resized to
the model's input size as **uint8** ``(3, H, W)``: normalisation happens once per batch on
the device (:func:`normalize_batch`), so a quarter of the bytes cross to the device and
the same tensor also serves as the picture the heatmap is drawn on.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .datasets import IMAGE_EXTENSIONS, is_image_file, scan_images
from .dicom import DICOM_EXTENSIONS, check_window, has_dicom_magic, require_pydicom
from .layouts import LAYOUTS
from .preprocess import open_image

__all__ = [
    "InputItem",
    "Inputs",
    "ExplainDataset",
    "collate_explain",
    "collect_inputs",
    "normalize_batch",
]


@dataclass(frozen=True)
class InputItem:
    """One file to explain.

    Attributes:
        index: position in the sorted input list (stable across runs and ranks).
        path: the file.
        label: the class index of the true label, or ``None`` when unknown.
        label_name: the true label as the data names it (folder name or CSV value).
    """

    index: int
    path: Path
    label: int | None = None
    label_name: str | None = None


@dataclass
class Inputs:
    """The result of :func:`collect_inputs`.

    Attributes:
        items: the files to decode, in a stable order.
        skipped: ``(path, reason)`` for files that are not images or do not exist.
        class_names: the classes the data's labels refer to (empty when unlabelled).
        layout: how the input was read: ``image``, ``folder``, ``imagefolder`` or ``csv``.
        root: the folder paths are shown relative to.
    """

    items: list[InputItem]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    layout: str = "folder"
    root: Path = Path(".")


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _is_dicom(path: Path) -> bool:
    """A DICOM input: a DICOM extension, or no image extension and ``DICM`` at byte 128."""
    suffix = path.suffix.lower()
    return suffix in DICOM_EXTENSIONS or (suffix not in IMAGE_EXTENSIONS and has_dicom_magic(path))


def _looks_like_imagefolder(folder: Path) -> bool:
    """torchvision's ImageFolder layout: class subfolders and no images directly in root."""
    entries = [p for p in folder.iterdir() if _visible(p)]
    has_dirs = any(p.is_dir() for p in entries)
    loose_images = any(p.is_file() and is_image_file(p) for p in entries)
    return has_dirs and not loose_images


def collect_inputs(source: str | os.PathLike, *, layout: str = "auto") -> Inputs:
    """Lists what to explain.

    Args:
        source: an image file, a ``.csv`` file with a ``path`` column (and optionally a
            ``label`` column; relative paths are relative to the CSV's folder), or a folder.
        layout: ``"auto"`` guesses: a ``.csv`` file is a CSV, another file a single image,
            a folder whose only entries are subfolders an ImageFolder split (labels from
            the subfolder names), any other folder a plain folder searched recursively
            (no labels). ``"image"``, ``"csv"``, ``"imagefolder"`` or ``"folder"`` force it.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: an unknown layout, a CSV without a ``path`` column, or no input at all.
        RuntimeError: DICOM inputs but pydicom is not installed.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no file or folder at {source}")
    if layout == "auto":
        if source.is_file():
            layout = "csv" if source.suffix.lower() == ".csv" else "image"
        else:
            layout = "imagefolder" if _looks_like_imagefolder(source) else "folder"
    if layout in ("image", "csv") and not source.is_file():
        raise ValueError(f"layout {layout!r} needs a file, but {source} is a folder")
    if layout in ("folder", "imagefolder") and not source.is_dir():
        raise ValueError(f"layout {layout!r} needs a folder, but {source} is a file")

    if layout == "image":
        inputs = Inputs([InputItem(0, source)], layout="image", root=source.parent)
    elif layout == "csv":
        inputs = _read_csv(source)
    elif layout == "imagefolder":
        inputs = _read_imagefolder(source)
    else:
        images, skipped = scan_images(source)
        inputs = Inputs(
            [InputItem(i, p) for i, p in enumerate(images)], skipped, layout="folder", root=source
        )
    if not inputs.items:
        found = f"; skipped {len(inputs.skipped)} non-image file(s)" if inputs.skipped else ""
        raise ValueError(
            f"no images found in {source} (layout {inputs.layout!r}){found}; expected "
            f"files ending in {', '.join(sorted(IMAGE_EXTENSIONS))} (or DICOM files without an extension)"
        )
    if any(_is_dicom(item.path) for item in inputs.items):
        require_pydicom()  # one message before any work, not one failure per file
    return inputs


def _read_imagefolder(root: Path) -> Inputs:
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p))
    items: list[InputItem] = []
    skipped: list[tuple[str, str]] = []
    for label, name in enumerate(class_names):
        images, rest = scan_images(root / name)
        skipped.extend(rest)
        start = len(items)
        items.extend(InputItem(start + i, p, label, name) for i, p in enumerate(images))
    for path in sorted(p for p in root.iterdir() if p.is_file() and _visible(p)):
        skipped.append((str(path), "outside the class folders of an ImageFolder split"))
    return Inputs(items, skipped, class_names, layout="imagefolder", root=root)


def _read_csv(path: Path) -> Inputs:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "path" not in columns:
            raise ValueError(
                f"CSV {path} needs a header with a 'path' column (and optionally 'label'), "
                f"found columns {reader.fieldnames}"
            )
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    names = [row.get("label", "") for row in rows]
    labelled = [n for n in names if n]
    # Integer labels are class indices; anything else names a class.
    numeric = bool(labelled) and all(n.lstrip("-").isdigit() for n in labelled)
    class_names = [] if numeric else sorted(set(labelled))
    items: list[InputItem] = []
    skipped: list[tuple[str, str]] = []
    for line, row in enumerate(rows, start=2):
        if not row["path"]:
            skipped.append((f"{path}:{line}", "empty path"))
            continue
        file = Path(row["path"])
        file = file if file.is_absolute() else path.parent / file
        if not file.is_file():
            skipped.append((str(file), f"listed in {path.name} line {line} but no such file"))
            continue
        name = row.get("label") or None
        if name is None:
            label = None
        elif numeric:
            label = int(name)
            if label < 0:
                raise ValueError(f"{path} line {line}: a label index must be >= 0, got {name}")
        else:
            label = class_names.index(name)
        items.append(InputItem(len(items), file, label, name))
    return Inputs(items, skipped, class_names, layout="csv", root=path.parent)


class ExplainDataset(Dataset):
    """Decodes images in DataLoader workers for :mod:`gradcam_kit.cli.explain`.

    Each sample is a dict with ``image``: uint8 ``(3, size, size)`` RGB (the model input
    before normalisation, resized without cropping, exactly as
    :func:`gradcam_kit.data.preprocess.build_transform` resizes), ``display``: uint8
    ``(3, display_size, display_size)`` when ``display_size`` differs (else absent),
    ``label`` (``-1`` when unknown), ``index``, ``decode_s`` and ``error`` (``None``, or why
    the file could not be decoded; the image tensors are then absent).

    Args:
        items: the files.
        size: the model's input size ``(H, W)``.
        display_size: the size of the pictures in the overlays; ``None`` = ``size``.
        dicom_window: ``(center, width)`` replacing the window of DICOM files (see
            :func:`gradcam_kit.data.dicom.read_dicom`); ``None``: each file's own.

    Raises:
        ValueError: a ``dicom_window`` that is not two finite numbers with width >= 1.
    """

    def __init__(
        self,
        items: Sequence[InputItem],
        size: tuple[int, int],
        display_size: tuple[int, int] | None = None,
        *,
        dicom_window: tuple[float, float] | None = None,
    ) -> None:
        self.items = list(items)
        self.size = tuple(size)
        self.display_size = None if display_size in (None, self.size) else tuple(display_size)
        self.dicom_window = check_window(dicom_window)  # a bad window fails here, not per file

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> dict:
        from torchvision.transforms.v2 import functional as TF

        item = self.items[position]
        sample: dict = {
            "index": item.index,
            "label": -1 if item.label is None else item.label,
            "error": None,
        }
        start = time.perf_counter()
        try:
            # 8-bit L or RGB (16-bit X-rays rescaled, DICOM windowed); a grayscale image is
            # resized once, not three times.
            image = open_image(item.path, dicom_window=self.dicom_window)
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBomb...
            sample["error"] = f"cannot decode: {type(err).__name__}: {err}"
            sample["decode_s"] = time.perf_counter() - start
            return sample
        # The same ops as build_transform (ToImage, RGB, Resize with antialiasing) on uint8.
        decoded = TF.pil_to_tensor(image)
        sample["image"] = TF.resize(decoded, list(self.size), antialias=True).expand(3, -1, -1)
        if self.display_size is not None:
            sample["display"] = TF.resize(decoded, list(self.display_size), antialias=True).expand(3, -1, -1)
        sample["decode_s"] = time.perf_counter() - start
        return sample


def collate_explain(samples: list[dict]) -> dict:
    """Stacks the decoded samples of a batch; undecodable ones go to ``failed``."""
    good = [s for s in samples if s["error"] is None]
    batch: dict = {
        "failed": [(s["index"], s["error"]) for s in samples if s["error"] is not None],
        "index": torch.tensor([s["index"] for s in good], dtype=torch.long),
        "label": torch.tensor([s["label"] for s in good], dtype=torch.long),
        "decode_s": sum(s["decode_s"] for s in samples),
    }
    if good:
        batch["image"] = torch.stack([s["image"] for s in good])
        if "display" in good[0]:
            batch["display"] = torch.stack([s["display"] for s in good])
    return batch


def normalize_batch(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``(B, 3, H, W)`` -> the float model input, on the images' device.

    The same maths as :func:`gradcam_kit.data.preprocess.build_transform` (``ToDtype(scale=True)``
    then ``Normalize``), done once per batch instead of once per image in the workers.
    """
    from torchvision.transforms import v2

    scaled = v2.functional.to_dtype(images, torch.float32, scale=True)
    return v2.functional.normalize(scaled, list(mean), list(std))
