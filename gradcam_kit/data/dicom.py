"""Reading DICOM images (chest X-rays: MONOCHROME1/2, 12-16 bit) with pydicom, an optional extra.

:func:`read_dicom` turns a file into the grey values a viewer shows, at full bit depth:

1. the stored values, decoded by pydicom (compressed transfer syntaxes need a decoder
   plugin: pylibjpeg or python-gdcm);
2. the modality transform: *Rescale Slope/Intercept* or a *Modality LUT*
   (``pydicom.pixels.apply_modality_lut``);
3. the VOI transform: a user window ``(center, width)``, else the file's *VOI LUT
   Sequence*, else its *Window Center/Width* (``pydicom.pixels.apply_voi_lut``); the
   result is scaled to ``[0, 1]`` (0 = the bottom of the window, 1 = its top);
4. MONOCHROME1 (stored with bone dark) is inverted, so that bone is bright in every result.

The 8-bit conversion happens once, afterwards, in
:func:`gradcam_kit.data.preprocess.to_8bit`. Identifiers (PatientID, StudyInstanceUID...)
are never read by :func:`read_dicom`; :func:`dicom_identifiers` reads them on request and
nothing in the package calls it.

pydicom is imported only when a DICOM file is read (``pip install gradcam-kit[dicom]``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "DICOM_EXTENSIONS",
    "check_dicom",
    "check_window",
    "dicom_identifiers",
    "has_dicom_magic",
    "is_dicom_path",
    "read_dicom",
    "require_pydicom",
]

#: File name endings read as DICOM whatever their content.
DICOM_EXTENSIONS = (".dcm", ".dicom")
_MISSING = "reading DICOM needs pydicom: pip install gradcam-kit[dicom]"
_IDENTIFIERS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
# What to install for each family of compressed transfer syntaxes (pydicom's decoder plugins).
_JPEG = "pip install pylibjpeg pylibjpeg-libjpeg (or python-gdcm)"
_JPEG_LS = "pip install python-gdcm (or pyjpegls)"
_JPEG_2000 = "pip install pylibjpeg pylibjpeg-openjpeg (or python-gdcm)"
_DECODERS = {
    "1.2.840.10008.1.2.4.50": _JPEG,
    "1.2.840.10008.1.2.4.51": _JPEG,
    "1.2.840.10008.1.2.4.57": _JPEG,
    "1.2.840.10008.1.2.4.70": _JPEG,
    "1.2.840.10008.1.2.4.80": _JPEG_LS,
    "1.2.840.10008.1.2.4.81": _JPEG_LS,
    "1.2.840.10008.1.2.4.90": _JPEG_2000,
    "1.2.840.10008.1.2.4.91": _JPEG_2000,
    "1.2.840.10008.1.2.4.201": _JPEG_2000,
    "1.2.840.10008.1.2.4.202": _JPEG_2000,
    "1.2.840.10008.1.2.4.203": _JPEG_2000,
}


def require_pydicom():
    """The ``pydicom`` module.

    Raises:
        RuntimeError: pydicom is not installed (the message says how to install it).
    """
    try:
        import pydicom
    except ImportError:
        raise RuntimeError(_MISSING) from None
    return pydicom


def _processing():
    """``(apply_modality_lut, apply_voi_lut)`` from pydicom 3, or from pydicom 2.4."""
    require_pydicom()
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return apply_modality_lut, apply_voi_lut


def has_dicom_magic(path: str | os.PathLike) -> bool:
    """Whether the file holds ``DICM`` at byte 128 (the DICOM file preamble); no pydicom needed."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read as DICOM: a ``.dcm``/``.dicom`` name, or ``DICM`` at byte 128."""
    path = Path(path)
    return path.suffix.lower() in DICOM_EXTENSIONS or (path.is_file() and has_dicom_magic(path))


def check_window(window: Sequence[float] | None) -> tuple[float, float] | None:
    """A window override as ``(center, width)`` floats, or ``None``.

    Raises:
        ValueError: not two finite numbers, or a width below 1 (DICOM's linear window).
    """
    if window is None:
        return None
    values = tuple(window)
    if len(values) != 2:
        raise ValueError(f"a DICOM window is (center, width), got {window!r}")
    center, width = (float(v) for v in values)
    if not (np.isfinite(center) and np.isfinite(width)):
        raise ValueError(f"a DICOM window needs finite numbers, got center {center}, width {width}")
    if width < 1:
        raise ValueError(f"a DICOM window width must be at least 1, got {width:g}")
    return center, width


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def _read(path: Path, **kwargs: object):
    pydicom = require_pydicom()
    if not path.is_file():
        raise FileNotFoundError(f"no DICOM file at {path}")
    try:
        return pydicom.dcmread(path, **kwargs)
    except pydicom.errors.InvalidDicomError:
        raise ValueError(
            f"cannot read {path} as DICOM: no DICOM file meta header ('DICM' at byte 128)"
        ) from None
    except Exception as err:  # pydicom raises EOFError, struct.error, ValueError...
        raise ValueError(f"cannot read {path} as DICOM: {_one_line(err)}") from None


def _transfer_syntax(ds: object) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(getattr(meta, "TransferSyntaxUID", "") or "")


def _decoder_available(uid: str) -> bool:
    """Whether an installed pydicom plugin decodes transfer syntax ``uid``."""
    try:
        from pydicom.pixels import get_decoder  # pydicom >= 3
    except ImportError:  # pydicom 2.x: the pixel data handlers
        from pydicom import config

        return any(h.supports_transfer_syntax(uid) and h.is_available() for h in config.pixel_data_handlers)
    try:
        return bool(get_decoder(uid).is_available)
    except NotImplementedError:
        return False


def _missing_decoder(path: Path, uid: str) -> RuntimeError:
    from pydicom.uid import UID

    name = UID(uid).name
    return RuntimeError(
        f"cannot decode {path}: its transfer syntax {name} ({uid}) needs a decoder that is "
        f"not installed: {_DECODERS[uid]}"
    )


def check_dicom(path: str | os.PathLike) -> None:
    """Reads a DICOM header (not the pixels) so a broken file fails before a long run.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a DICOM file pydicom can parse, or one without an image (names the file).
        RuntimeError: pydicom is missing, or the file is compressed in a transfer syntax no
            installed plugin decodes (names the syntax and what to install).
    """
    path = Path(path)
    ds = _read(path, stop_before_pixels=True)
    if "Rows" not in ds or "Columns" not in ds:
        raise ValueError(f"cannot read {path} as an image: the DICOM file holds no image (no Rows/Columns)")
    uid = _transfer_syntax(ds)
    if uid in _DECODERS and not _decoder_available(uid):
        raise _missing_decoder(path, uid)


def _pixels(ds: object, path: Path) -> np.ndarray:
    if "PixelData" not in ds:
        raise ValueError(f"cannot read {path} as an image: the DICOM file holds no pixel data")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise ValueError(
            f"cannot read {path}: it holds {ds.NumberOfFrames} frames; only single-frame images "
            "(radiographs) are read"
        )
    uid = _transfer_syntax(ds)
    if uid in _DECODERS and not _decoder_available(uid):
        raise _missing_decoder(path, uid)
    try:
        return ds.pixel_array
    except Exception as err:  # a corrupt or truncated file: pydicom raises many types
        raise ValueError(f"cannot read {path} as DICOM: {_one_line(err)}") from None


def _stored_range(ds: object) -> np.ndarray:
    """Every value (or the two extremes) that *Bits Stored* and *Pixel Representation* allow."""
    bits = int(ds.BitsStored)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if int(ds.PixelRepresentation) else (0, (1 << bits) - 1)
    if "ModalityLUTSequence" in ds and bits <= 16:  # a LUT need not be monotonic
        return np.arange(low, high + 1, dtype=np.int64)
    return np.array([low, high], dtype=np.int64)


def _window_view(ds: object, window: tuple[float, float]) -> object:
    """A dataset holding what ``apply_voi_lut`` reads, with the user's linear window."""
    from pydicom.dataset import Dataset

    view = Dataset()
    for keyword in (
        "PhotometricInterpretation", "BitsStored", "PixelRepresentation",
        "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence",
    ):
        if keyword in ds:
            setattr(view, keyword, ds[keyword].value)
    view.WindowCenter, view.WindowWidth = window
    return view


def _voi_to_unit(values: np.ndarray, ds: object, apply_voi_lut) -> np.ndarray | None:
    """The VOI LUT or window of ``ds`` applied to modality values, scaled to ``[0, 1]``;
    ``None`` when ``ds`` has neither."""
    lut = ds.get("VOILUTSequence")
    if lut and lut[0].get("LUTDescriptor") is not None and lut[0].get("LUTData") is not None:
        # A LUT maps integers: round (rescaled values are floats), then scale by the LUT's
        # own output range.
        count, first = int(lut[0].LUTDescriptor[0]) or 1 << 16, int(lut[0].LUTDescriptor[1])
        table = apply_voi_lut(np.arange(first, first + count, dtype=np.int64), ds).astype(np.float64)
        values = apply_voi_lut(np.rint(values).astype(np.int64), ds).astype(np.float64)
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        # The window's output range, as pydicom sets it: values far below and far above it.
        with np.errstate(over="ignore"):
            table = apply_voi_lut(np.array([-1e300, 1e300]), ds)
        values = apply_voi_lut(values, ds)
    else:
        return None
    low, high = float(table.min()), float(table.max())
    if high <= low:
        return np.zeros(values.shape, np.float64)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def read_dicom(path: str | os.PathLike, *, window: Sequence[float] | None = None) -> np.ndarray:
    """A DICOM image as the grey values to show, bone bright, at full bit depth.

    Args:
        path: the file.
        window: ``(center, width)``, a linear window in the units after rescale slope and
            intercept (the units of the file's own *Window Center*); it replaces the file's
            VOI LUT and window. ``None``: the file's VOI LUT, else its window, else none.

    Returns:
        ``(H, W)`` grayscale: with a window or VOI LUT, float64 in ``[0, 1]`` (0 = the
        window's bottom); without, the values after rescale: the stored integers (e.g.
        ``uint16`` holding 12 bits) or float64 when the file has a rescale slope/intercept.
        MONOCHROME1 is inverted (``1 - v``, or ``low + high - v`` over the values the
        bit depth and rescale allow). Colour files (RGB, YBR): ``(H, W, 3)`` as pydicom
        decodes them, without windowing.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a corrupt file, a multi-frame file, an unsupported photometric
            interpretation, or a bad ``window`` (each names the file or the value).
        RuntimeError: pydicom is missing, or the transfer syntax needs a decoder that is
            not installed (names the syntax and the package).
    """
    path = Path(path)
    window = check_window(window)
    apply_modality_lut, apply_voi_lut = _processing()
    ds = _read(path)
    pixels = _pixels(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT") and pixels.ndim == 3:
        return pixels
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(
            f"cannot read {path}: photometric interpretation {photometric or 'missing'!r} is not "
            "supported (MONOCHROME1, MONOCHROME2 or RGB)"
        )
    try:
        values = apply_modality_lut(pixels, ds)
        voi = _window_view(ds, window) if window is not None else ds
        shown = _voi_to_unit(values, voi, apply_voi_lut)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, NotImplementedError) as err:
        raise ValueError(f"cannot apply the rescale or window of {path}: {_one_line(err)}") from None
    if photometric == "MONOCHROME2":
        return values if shown is None else shown
    if shown is not None:
        return 1.0 - shown
    limits = apply_modality_lut(_stored_range(ds), ds)
    total = limits.min() + limits.max()
    if np.issubdtype(values.dtype, np.integer):
        return (total - values.astype(np.int64)).astype(values.dtype)
    return total - values


def dicom_identifiers(path: str | os.PathLike) -> dict[str, str | None]:
    """The identifiers of a DICOM file, read only when asked: nothing in the package calls this.

    Returns:
        ``{"PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"}`` as
        strings, ``None`` where the file has none.

    Raises:
        FileNotFoundError, ValueError, RuntimeError: as :func:`read_dicom`.
    """
    path = Path(path)
    ds = _read(path, stop_before_pixels=True, specific_tags=list(_IDENTIFIERS))
    values = {keyword: ds.get(keyword) for keyword in _IDENTIFIERS}
    return {keyword: None if value in (None, "") else str(value) for keyword, value in values.items()}
