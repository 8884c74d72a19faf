"""Multi-label chest X-ray CSVs (CheXpert / NIH ChestX-ray14 style): one row per image, one column per finding.

A row names its image in a path column (the first of :data:`PATH_COLUMNS` the header holds:
``Path``, ``path``, ``Image Index``, ...) and gives each finding ``1`` (positive), ``0``
(negative), ``-1`` (uncertain) or nothing (blank); ``1.0``, ``0.0`` and ``-1.0`` count as
well, as CheXpert writes them. Relative image paths are resolved against ``images`` (the
``--images`` option) when given, else against the CSV's folder.

The finding columns are the ones the user names, or every column whose values are all
``1``/``0``/``-1``/blank (at least one of them not blank), except the path column and
mask columns. A mask column ``<finding>_mask`` names that finding's ground-truth mask
(binary image, white = the finding), used by the pointing game of ``evaluate``.

**Uncertain and blank labels.** Each finding follows a policy for its uncertain (``-1``)
labels and one for its blank labels (:class:`LabelPolicy`), one of :data:`POLICIES`:

* ``ignore``: the label is masked out of the loss and the metrics (CheXpert's U-Ignore);
* ``negative``: counted as ``0`` (U-Zeros);
* ``positive``: counted as ``1`` (U-Ones).

The defaults are ``ignore`` for uncertain labels and ``negative`` for blank ones (a
finding the report does not mention is taken as absent). A policy text is one default
and per-finding exceptions: ``"ignore"``, ``"ignore,Atelectasis=positive,Edema=positive"``.

:class:`MultiLabelDataset` returns ``(image, target, mask)``: ``target`` the float vector
of 0/1 labels after the policy, ``mask`` the float vector that is 1 where the label
counts and 0 where it is ignored.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .dicom import check_window

if TYPE_CHECKING:
    from .inputs import Inputs

__all__ = [
    "MASK_COLUMN_SUFFIX",
    "PATH_COLUMNS",
    "POLICIES",
    "LabelPolicy",
    "MultiLabelDataset",
    "MultiLabelSample",
    "MultiLabelTable",
    "encode_labels",
    "finding_columns",
    "fold_labels",
    "is_multilabel_csv",
    "multilabel_inputs",
    "parse_policy",
    "read_multilabel_csv",
]

#: Header names read as the image path, in order of preference.
PATH_COLUMNS = ("Path", "path", "Image Index", "image", "Image", "filename", "file")
#: ``<finding>_mask`` names the mask of ``<finding>``.
MASK_COLUMN_SUFFIX = "_mask"
#: What an uncertain or blank label becomes.
POLICIES = ("ignore", "negative", "positive")
_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1, "": None}
_NOT_FINDINGS = {"label", "mask", "split"}


@dataclass(frozen=True)
class MultiLabelSample:
    """One image: its path, raw labels (``1``, ``0``, ``-1`` or ``None`` for blank) and mask paths."""

    path: Path
    values: tuple[int | None, ...]
    masks: tuple[Path | None, ...]


@dataclass(frozen=True)
class MultiLabelTable:
    """What :func:`read_multilabel_csv` read: the samples and the finding names, in column order."""

    samples: list[MultiLabelSample]
    findings: list[str]


@dataclass(frozen=True)
class LabelPolicy:
    """What uncertain and blank labels become, per finding (values from :data:`POLICIES`)."""

    uncertain: tuple[str, ...]
    blank: tuple[str, ...]

    def describe(self, findings: Sequence[str]) -> dict[str, dict[str, str]]:
        """``{finding: {"uncertain": policy, "blank": policy}}``, for checkpoints and logs."""
        return {f: {"uncertain": u, "blank": b} for f, u, b in zip(findings, self.uncertain, self.blank)}

    @classmethod
    def from_description(cls, description: Mapping | None, findings: Sequence[str]) -> LabelPolicy:
        """The policy :meth:`describe` wrote (a checkpoint's ``label_policy``); the defaults
        (uncertain ``ignore``, blank ``negative``) for findings it does not name."""
        description = description or {}
        return cls(
            tuple(str((description.get(f) or {}).get("uncertain", "ignore")) for f in findings),
            tuple(str((description.get(f) or {}).get("blank", "negative")) for f in findings),
        )


def parse_policy(text: str | Mapping[str, str] | None, findings: Sequence[str], *, default: str, what: str) -> tuple[str, ...]:
    """One policy per finding from ``"ignore"`` or ``"ignore,Edema=positive"`` (or a mapping).

    Args:
        text: the option's value; ``None`` gives ``default`` for every finding.
        findings: the finding names, in order.
        default: the policy of findings the text does not name.
        what: the option, for messages (``"--uncertain"``).

    Raises:
        ValueError: an unknown policy, or a finding that is not among ``findings``.
    """
    per_finding: dict[str, str] = {}
    if isinstance(text, Mapping):
        per_finding = {str(k): str(v).strip().lower() for k, v in text.items()}
    elif text is not None:
        for part in (p.strip() for p in str(text).split(",") if p.strip()):
            if "=" in part:
                name, value = (s.strip() for s in part.rsplit("=", 1))
                per_finding[name] = value.lower()
            else:
                default = part.lower()
    for value in [default, *per_finding.values()]:
        if value not in POLICIES:
            raise ValueError(f"{what}: unknown policy {value!r}; choose one of {list(POLICIES)}")
    unknown = sorted(set(per_finding) - set(findings))
    if unknown:
        raise ValueError(f"{what} names {unknown}, which are not findings; the findings are {list(findings)}")
    return tuple(per_finding.get(f, default) for f in findings)


def _read_rows(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not csv_path.is_file():
        raise FileNotFoundError(f"no CSV file at {csv_path}; expected one row per image, one column per finding")
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or []) if h]
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    return header, rows


def _path_column(header: Sequence[str]) -> str | None:
    return next((name for name in PATH_COLUMNS if name in header), None)


def finding_columns(header: Sequence[str], rows: Sequence[Mapping[str, str]]) -> list[str]:
    """The columns read as findings when the user names none (see the module docstring)."""
    path = _path_column(header)
    found = []
    for name in header:
        if name == path or name.lower() in _NOT_FINDINGS or name.endswith(MASK_COLUMN_SUFFIX):
            continue
        values = [row.get(name, "") for row in rows]
        if all(v in _VALUES for v in values) and any(v != "" for v in values):
            found.append(name)
    return found


def is_multilabel_csv(csv_path: str | os.PathLike) -> bool:
    """Whether a CSV is multi-label: a path column, no ``label`` column, and finding columns."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        return False
    header, rows = _read_rows(csv_path)
    if _path_column(header) is None or "label" in (h.lower() for h in header):
        return False
    return bool(finding_columns(header, rows))


def _parse_value(text: str, csv_path: Path, line: int, finding: str) -> int | None:
    if text not in _VALUES:
        raise ValueError(
            f"{csv_path}:{line}: {finding} is {text!r}; a finding holds 1 (positive), 0 "
            "(negative), -1 (uncertain) or nothing (blank)"
        )
    return _VALUES[text]


def _resolve(text: str, base: Path) -> Path:
    path = Path(text)
    return path if path.is_absolute() else base / path


def read_multilabel_csv(
    csv_path: str | os.PathLike,
    *,
    findings: Sequence[str] | None = None,
    images: str | os.PathLike | None = None,
    check_files: bool = True,
) -> MultiLabelTable:
    """Reads a multi-label CSV (see the module docstring).

    Args:
        csv_path: the CSV file.
        findings: the finding columns to read, in this order; ``None``: every column that
            holds only 1/0/-1/blank.
        images: the folder relative image paths start from; ``None``: the CSV's folder.
        check_files: fail on an image that does not exist.

    Returns:
        the samples and the findings.

    Raises:
        FileNotFoundError: no CSV file.
        ValueError: no path column, no finding column, a named finding missing from the
            header, a value other than 1/0/-1/blank, no rows, or a missing image.
    """
    csv_path = Path(csv_path)
    header, rows = _read_rows(csv_path)
    path_column = _path_column(header)
    if path_column is None:
        raise ValueError(f"{csv_path} has no image path column; name it one of {list(PATH_COLUMNS)} (found {header})")
    names = list(findings) if findings is not None else finding_columns(header, rows)
    missing = [name for name in names if name not in header]
    if missing or not names:
        raise ValueError(
            f"{csv_path}: finding column(s) {missing or '(none found)'} not in the header {header}; "
            "name the findings with --findings A,B or add columns holding 1/0/-1/blank"
        )
    base = Path(images) if images is not None else csv_path.parent
    samples = []
    for line, row in enumerate(rows, start=2):
        if not row.get(path_column):
            continue
        path = _resolve(row[path_column], base)
        if check_files and not path.is_file():
            raise ValueError(f"{csv_path}:{line}: image {path} does not exist (paths start from {base}; see --images)")
        values = tuple(_parse_value(row.get(name, ""), csv_path, line, name) for name in names)
        masks = tuple(
            _resolve(row[f"{name}{MASK_COLUMN_SUFFIX}"], csv_path.parent) if row.get(f"{name}{MASK_COLUMN_SUFFIX}") else None
            for name in names
        )
        samples.append(MultiLabelSample(path, values, masks))
    if not samples:
        raise ValueError(f"{csv_path} lists no images")
    return MultiLabelTable(samples, names)


def multilabel_inputs(
    csv_path: str | os.PathLike, *, images: str | os.PathLike | None = None
) -> tuple[Inputs, dict[int, dict[str, int | None]]]:
    """What ``explain`` reads from a multi-label CSV: the images, and each one's labels.

    Args:
        csv_path: the CSV (see :func:`read_multilabel_csv`).
        images: the folder relative image paths start from; ``None``: the CSV's folder.

    Returns:
        ``(inputs, truth)``: the :class:`~gradcam_kit.data.inputs.Inputs` (files that do
        not exist are skipped, with the reason) and ``{item index: {finding: 1, 0, -1 or None}}``.

    Raises:
        ValueError: see :func:`read_multilabel_csv`, or no listed image exists.
    """
    from .inputs import InputItem, Inputs

    csv_path = Path(csv_path)
    table = read_multilabel_csv(csv_path, images=images, check_files=False)
    items: list[InputItem] = []
    skipped: list[tuple[str, str]] = []
    truth: dict[int, dict[str, int | None]] = {}
    for sample in table.samples:
        if not sample.path.is_file():
            skipped.append((str(sample.path), f"listed in {csv_path.name} but no such file"))
            continue
        truth[len(items)] = dict(zip(table.findings, sample.values))
        items.append(InputItem(len(items), sample.path))
    if not items:
        raise ValueError(f"none of the {len(skipped)} images {csv_path} lists exists; check the paths (and --images)")
    root = Path(images) if images is not None else csv_path.parent
    return Inputs(items, skipped, [], layout="csv", root=root), truth


def encode_labels(values: Sequence[int | None], policy: LabelPolicy) -> tuple[Tensor, Tensor]:
    """``(target, mask)`` float vectors of one image's raw labels under ``policy``."""
    target, mask = [], []
    for value, uncertain, blank in zip(values, policy.uncertain, policy.blank):
        rule = uncertain if value == -1 else blank if value is None else None
        if rule is None:
            target.append(float(value))
            mask.append(1.0)
        else:
            target.append(1.0 if rule == "positive" else 0.0)
            mask.append(0.0 if rule == "ignore" else 1.0)
    return torch.tensor(target), torch.tensor(mask)


def fold_labels(target: Tensor, mask: Tensor) -> Tensor:
    """``(N, F)`` int64 labels from a batch's ``target`` and ``mask``: 1, 0, and -1 where the
    label does not count (the form the loss and the metrics take)."""
    return torch.where(mask > 0, target, torch.full_like(target, -1)).long()


class MultiLabelDataset(Dataset):
    """Images with multi-label targets: items ``(image, target, mask)``.

    ``target`` and ``mask`` are float ``(F,)`` vectors (see :func:`encode_labels`). With
    ``mask_size``, the findings' ground-truth masks follow as a bool ``(F, H, W)`` tensor
    (all ``False`` for a finding without a mask file); with ``return_index``, the index.

    Args:
        samples: from :func:`read_multilabel_csv`.
        findings: the finding names, in output order.
        policy: what uncertain and blank labels become.
        transform: gets the PIL image (e.g. :func:`gradcam_kit.data.preprocess.build_transform`).
        mask_size: ``(H, W)`` to return the findings' masks at; ``None``: none.
        return_index: append the sample's index.
        dicom_window: ``(center, width)`` for DICOM images; ``None``: each file's own.
    """

    def __init__(
        self,
        samples: Sequence[MultiLabelSample],
        findings: Sequence[str],
        policy: LabelPolicy,
        transform: Callable[[Image.Image], Tensor] | None = None,
        *,
        mask_size: tuple[int, int] | None = None,
        return_index: bool = False,
        dicom_window: tuple[float, float] | None = None,
    ) -> None:
        self.samples, self.findings, self.classes = list(samples), list(findings), list(findings)
        self.policy, self.transform = policy, transform
        self.mask_size, self.return_index = mask_size, return_index
        self.dicom_window = check_window(dicom_window)
        encoded = [encode_labels(s.values, policy) for s in self.samples]
        self.targets = torch.stack([t for t, _ in encoded]) if encoded else torch.zeros(0, len(findings))
        self.label_mask = torch.stack([m for _, m in encoded]) if encoded else torch.zeros(0, len(findings))

    def class_counts(self) -> Tensor:
        """``(2, F)``: the negatives (row 0) and positives (row 1) of each finding that count."""
        positives = (self.targets * self.label_mask).sum(0)
        negatives = ((1 - self.targets) * self.label_mask).sum(0)
        return torch.stack([negatives, positives]).long()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple:
        from .datasets import mask_or_empty, read_image

        sample = self.samples[index]
        image = read_image(sample.path, self.dicom_window)
        item: list[object] = [self.transform(image) if self.transform is not None else image]
        item += [self.targets[index], self.label_mask[index]]
        if self.mask_size is not None:
            item.append(torch.stack([mask_or_empty(path, self.mask_size) for path in sample.masks]))
        if self.return_index:
            item.append(index)
        return tuple(item)
