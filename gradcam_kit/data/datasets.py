"""Image datasets for training and evaluation: ImageFolder trees and CSV files, with masks.

Two sources, one dataset class (:class:`ImageDataset`):

* **ImageFolder**: ``<root>/<class>/*.png`` (any PIL-readable extension, or DICOM: see
  :func:`is_image_file`). A dataset root may hold split folders, ``<root>/train/<class>/...``,
  ``<root>/val/...``, ``<root>/test/...``; :func:`load_split` picks one.
* **CSV**: a header with ``path`` and ``label`` columns (and optionally ``mask``); paths are
  relative to the CSV's folder unless absolute; labels are class names or integer indices.

Masks (binary, white = region of interest) share their image's name plus ``_mask`` and lie
either beside it (``lesion/train_00001.png`` -> ``lesion/train_00001_mask.png``) or, as
``synth`` writes them so that standard loaders never see them, in a ``masks/`` tree beside
the split folders (``<root>/train/lesion/x.png`` -> ``<root>/masks/train/lesion/x_mask.png``).
Files whose stem ends in ``_mask`` are never read as images. A CSV names masks in its
``mask`` column instead.

Images are read as they are (grayscale X-rays stay grayscale) and the transform from
:func:`gradcam_kit.data.preprocess.build_transform` resizes, turns grayscale into three
channels and normalises. Every problem that would stop training (missing folder or CSV,
empty class, a single class, an unreadable image) raises ``ValueError`` or
``FileNotFoundError`` *before* any training starts.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .dicom import DICOM_EXTENSIONS, check_dicom, check_window, has_dicom_magic, is_dicom_path
from .preprocess import open_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "MASK_SUFFIX",
    "ImageDataset",
    "Sample",
    "csv_samples",
    "image_folder_samples",
    "is_image_file",
    "is_mask_file",
    "load_mask",
    "load_split",
    "mask_or_empty",
    "mask_path_for",
    "read_image",
    "scan_images",
    "split_samples",
    "verify_images",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", *DICOM_EXTENSIONS)
MASK_SUFFIX = "_mask"


@dataclass(frozen=True)
class Sample:
    """One image on disk: its path, class index and mask path (``None`` without a mask)."""

    path: Path
    label: int
    mask: Path | None = None


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether a file found in a folder is read as an image: an image extension
    (:data:`IMAGE_EXTENSIONS`), or a DICOM file without one (no extension, or a numeric one
    as in UID-named files such as ``1.2.840.113619.2.55.3.1``) that holds ``DICM`` at byte 128.
    A ``DICOMDIR`` index is not an image."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return True
    if path.name.upper() == "DICOMDIR" or not (suffix == "" or suffix[1:].isdigit()):
        return False
    return has_dicom_magic(path)


def is_mask_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a mask (its stem ends in ``_mask``), not an image."""
    return Path(path).stem.endswith(MASK_SUFFIX)


def scan_images(folder: str | os.PathLike) -> tuple[list[Path], list[tuple[str, str]]]:
    """The images under ``folder`` and the other files found there: the one folder scanner.

    The rule, for training datasets, ``explain``'s inputs and the demo alike:

    * recursive, following symlinked folders;
    * hidden files and folders (names starting with ``.``: ``.ipynb_checkpoints/``,
      macOS's ``._x.png``) are left out;
    * masks (:func:`is_mask_file`) are left out: they belong to an image;
    * an image is a file for which :func:`is_image_file` holds; any other file is
      returned among the skipped ones, with the reason;
    * both lists are sorted by path (component by component), whatever order the file
      system lists them in.

    Args:
        folder: the folder to search; a missing folder has no files.

    Returns:
        ``(images, skipped)``: image paths, and ``(path, reason)`` for the other files.
    """
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath) / name
            if name.startswith(".") or is_mask_file(path):
                continue
            if is_image_file(path):
                images.append(path)
            else:
                skipped.append((path, f"not an image file (extension {path.suffix or 'none'!r})"))
    return sorted(images), [(str(path), reason) for path, reason in sorted(skipped)]


def mask_path_for(image_path: str | os.PathLike) -> Path | None:
    """The mask of ``image_path``: stem + ``_mask``, any image extension, beside the image or
    in the ``<root>/masks/<split>/<class>/`` tree (see the module docstring)."""
    image_path = Path(image_path)
    folders = [image_path.parent]
    if len(image_path.parents) >= 3:  # <root>/<split>/<class>/<image>
        split_folder = image_path.parent.parent
        folders.append(split_folder.parent / "masks" / split_folder.name / image_path.parent.name)
    for folder in folders:
        for extension in (image_path.suffix, *IMAGE_EXTENSIONS):
            candidate = folder / f"{image_path.stem}{MASK_SUFFIX}{extension}"
            if candidate.is_file():
                return candidate
    return None


def image_folder_samples(
    root: str | os.PathLike, class_names: Sequence[str] | None = None
) -> tuple[list[Sample], list[str]]:
    """Lists ``<root>/<class>/<image>`` files (sorted; masks beside them are attached).

    Args:
        root: the folder whose sub-folders are the classes.
        class_names: expected classes in index order (e.g. from a checkpoint or the
            training split); default: the sub-folders, sorted.

    Returns:
        ``(samples, class_names)``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: no class folders, a class folder without images, or a class in
            ``class_names`` missing from ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset folder at {root}; expected <root>/<class>/*.png")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise ValueError(
            f"{root} holds no class folders; expected the ImageFolder layout <root>/<class>/*.png"
        )
    names = list(class_names) if class_names is not None else found
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"{root} has no folder for class(es) {missing}; found {found}")
    samples: list[Sample] = []
    for label, name in enumerate(names):
        files, _ = scan_images(root / name)
        if not files:
            raise ValueError(
                f"class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder"
            )
        samples.extend(Sample(path, label, mask_path_for(path)) for path in files)
    return samples, names


def csv_samples(
    csv_path: str | os.PathLike, class_names: Sequence[str] | None = None
) -> tuple[list[Sample], list[str]]:
    """Reads a ``path,label[,mask]`` CSV file.

    Labels may be class names or integer indices. Relative paths are relative to the CSV
    file's folder.

    Returns:
        ``(samples, class_names)``; class names default to the sorted distinct labels (or
        ``"0" .. "K-1"`` for integer labels).

    Raises:
        FileNotFoundError: the CSV file does not exist.
        ValueError: no ``path``/``label`` header, no rows, an image path that does not
            exist, or a label outside ``class_names``.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"no CSV file at {csv_path}; expected a file with a path,label header")
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "path" not in header or "label" not in header:
            raise ValueError(f"{csv_path} must have a header with 'path' and 'label' columns, got {header}")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    rows = [row for row in rows if row.get("path")]
    if not rows:
        raise ValueError(f"{csv_path} lists no images")
    labels = [row["label"] for row in rows]
    numeric = all(label.lstrip("-").isdigit() for label in labels)
    if class_names is None:
        if numeric:
            class_names = [str(i) for i in range(max(int(label) for label in labels) + 1)]
        else:
            class_names = sorted(set(labels))
    names = list(class_names)
    base = csv_path.parent
    samples = []
    for line, row in enumerate(rows, start=2):
        label = row["label"]
        if label in names:
            index = names.index(label)
        elif numeric and 0 <= int(label) < len(names):
            index = int(label)
        else:
            raise ValueError(f"{csv_path}:{line}: label {label!r} is not one of the classes {names}")
        path = Path(row["path"])
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ValueError(f"{csv_path}:{line}: image {path} does not exist")
        mask = Path(row["mask"]) if row.get("mask") else None
        if mask is not None and not mask.is_absolute():
            mask = base / mask
        samples.append(Sample(path, index, mask))
    return samples, names


def load_split(
    source: str | os.PathLike,
    split: str | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[list[Sample], list[str]]:
    """Samples of a CSV file, an ImageFolder, or one split folder of a dataset root.

    Args:
        source: a ``.csv`` file, a ``<root>/<class>/`` folder, or a root holding split
            folders (``train``, ``val``, ``test``).
        split: the split folder (or ``<root>/<split>.csv``) to read from ``source``;
            ``None`` reads ``source`` itself.
        class_names: expected classes in index order.

    Raises:
        FileNotFoundError: ``source`` (or the split) does not exist.
        ValueError: see :func:`image_folder_samples` and :func:`csv_samples`.
    """
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return csv_samples(source, class_names)
    if split is not None:
        if (source / split).is_dir():
            source = source / split
        elif (source / f"{split}.csv").is_file():
            return csv_samples(source / f"{split}.csv", class_names)
        else:
            raise FileNotFoundError(f"no split {split!r} in {source}: expected {source / split}/<class>/")
    return image_folder_samples(source, class_names)


def verify_images(samples: Sequence[Sample]) -> None:
    """Opens every image header (and mask) so a broken file fails now, not mid-training.

    DICOM images are checked by :func:`gradcam_kit.data.dicom.check_dicom` (header and
    decoder, not the pixels).

    Raises:
        ValueError: names the first file PIL (or pydicom) cannot read.
        RuntimeError: a DICOM image without pydicom or without its decoder.
    """
    for sample in samples:
        for path in (sample.path, sample.mask):
            if path is None:
                continue
            if path == sample.path and is_dicom_path(path):
                check_dicom(path)  # its errors name the file and what to install
                continue
            try:
                with Image.open(path) as image:
                    image.verify()
            except Exception as err:  # PIL raises many types for broken files
                raise ValueError(
                    f"cannot read image {path}: {type(err).__name__}: {err}; "
                    "remove or replace the file"
                ) from None


def split_samples(
    samples: Sequence[Sample], val_fraction: float, *, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Stratified, seeded train/val split (at least one val image per class when possible).

    Raises:
        ValueError: ``val_fraction`` outside ``(0, 1)``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    generator = torch.Generator().manual_seed(seed)
    train: list[Sample] = []
    val: list[Sample] = []
    for label in sorted({s.label for s in samples}):
        members = [s for s in samples if s.label == label]
        order = torch.randperm(len(members), generator=generator).tolist()
        n_val = min(max(1, round(val_fraction * len(members))), len(members) - 1)
        val.extend(members[i] for i in sorted(order[:n_val]))
        train.extend(members[i] for i in sorted(order[n_val:]))
    return train, val


def load_mask(path: str | os.PathLike, size: tuple[int, int] | None = None) -> Tensor:
    """Reads a binary mask (any pixel > 127 is inside) as a bool ``(H, W)`` tensor.

    ``size`` resizes it (nearest neighbour) to the model input's ``(H, W)``; images are
    resized without cropping, so the mask stays aligned.
    """
    with Image.open(path) as image:
        mask = image.convert("L")
        if size is not None and mask.size != (size[1], size[0]):
            mask = mask.resize((size[1], size[0]), Image.NEAREST)
        data = torch.frombuffer(bytearray(mask.tobytes()), dtype=torch.uint8)
        return data.view(mask.size[1], mask.size[0]) > 127


def mask_or_empty(path: str | os.PathLike | None, size: tuple[int, int]) -> Tensor:
    """:func:`load_mask` at ``size``; an all-``False`` mask when ``path`` is ``None``."""
    return load_mask(path, size) if path is not None else torch.zeros(size, dtype=torch.bool)


def read_image(path: str | os.PathLike, dicom_window: Sequence[float] | None = None) -> Image.Image:
    """:func:`~.preprocess.open_image` for a dataset item: a ``ValueError`` naming the file.

    8-bit L or RGB as stored; 16-bit X-rays rescaled, DICOM windowed.
    """
    try:
        return open_image(path, dicom_window=dicom_window)
    except Exception as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


@dataclass
class ImageDataset(Dataset):
    """Images on disk with labels and optional masks.

    Items: ``(image, label)``; with ``mask_size`` set, ``(image, label, mask)`` where
    ``mask`` is bool ``(H, W)`` (all ``False`` when the image has no mask); with
    ``return_index``, the sample's index is appended.

    Attributes:
        samples: the :class:`Sample` list.
        classes: class names in index order.
        transform: e.g. :func:`gradcam_kit.data.preprocess.build_transform`; gets the PIL image.
        mask_size: ``(H, W)`` to return masks at (the model input size); ``None``: no masks.
        return_index: append the sample index (used to check distributed sharding).
        dicom_window: ``(center, width)`` replacing the window of DICOM images (see
            :func:`gradcam_kit.data.dicom.read_dicom`); ``None``: each file's own.
    """

    samples: list[Sample]
    classes: list[str]
    transform: Callable[[Image.Image], Tensor] | None = None
    mask_size: tuple[int, int] | None = None
    return_index: bool = False
    dicom_window: tuple[float, float] | None = None
    _labels: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.dicom_window = check_window(self.dicom_window)  # a bad window fails here, not per file
        self._labels = torch.tensor([s.label for s in self.samples], dtype=torch.long)

    @classmethod
    def from_source(
        cls,
        source: str | os.PathLike,
        split: str | None = None,
        *,
        class_names: Sequence[str] | None = None,
        verify: bool = True,
        **kwargs: object,
    ) -> ImageDataset:
        """Builds the dataset from a CSV, an ImageFolder or a split of one (see :func:`load_split`)."""
        samples, names = load_split(source, split, class_names)
        if verify:
            verify_images(samples)
        return cls(samples, names, **kwargs)

    @property
    def labels(self) -> Tensor:
        """``(N,)`` int64 class indices."""
        return self._labels

    def class_counts(self) -> Tensor:
        """``(num_classes,)`` images per class."""
        return torch.bincount(self._labels, minlength=len(self.classes))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple:
        sample = self.samples[index]
        image = read_image(sample.path, self.dicom_window)
        item: list[object] = [self.transform(image) if self.transform is not None else image, sample.label]
        if self.mask_size is not None:
            item.append(mask_or_empty(sample.mask, self.mask_size))
        if self.return_index:
            item.append(index)
        return tuple(item)
