"""DICOM input: rescale, VOI LUT and window, MONOCHROME1, full bit depth, errors, the CLI.

Every file is written here with pydicom (nothing downloaded); expected values are computed
by hand from the DICOM formulas, not by pydicom.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradcam_kit.data import dicom
from gradcam_kit.data.preprocess import open_image, preprocess

MISSING = "reading DICOM needs pydicom: pip install gradcam-kit[dicom]"
PATIENT = "PATIENT-7f3a"  # must never reach a report


@pytest.fixture
def pydicom():
    return pytest.importorskip("pydicom")


def write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits: int = 12,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    **tags: object,
) -> Path:
    """A single-frame unsigned grayscale DICOM file holding ``stored`` (uint16)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.StudyInstanceUID = PATIENT, generate_uid()
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if pydicom.uid.UID(transfer_syntax).is_compressed:
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8 not really a JPEG \xff\xd9"])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = stored.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ds.save_as(path, enforce_file_format=True)
    except TypeError:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


def voi_lut_item(lut: np.ndarray, first: int = 0, bits: int = 16):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.add_new(0x00283002, "US", [len(lut), first, bits])  # LUT Descriptor
    item.add_new(0x00283006, "US", [int(v) for v in lut])  # LUT Data
    return item


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 with the output range [0, 1], by hand."""
    x = np.asarray(x, np.float64)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    inside = ((x - (center - 0.5)) / (width - 1) + 0.5)
    return np.where(x <= low, 0.0, np.where(x > high, 1.0, inside))


# Stored values: 0..4095 and a few anatomy-like patches (12 bits).
GRADIENT = np.arange(4096, dtype=np.uint16).reshape(64, 64)


# -- pixel values ----------------------------------------------------------------------
def test_12_bit_monochrome2_keeps_every_stored_value(pydicom, tmp_path):
    path = write_dicom(tmp_path / "a.dcm", GRADIENT)
    values = dicom.read_dicom(path)
    assert values.dtype == np.uint16
    np.testing.assert_array_equal(values, GRADIENT)
    assert len(np.unique(values)) == 4096  # full bit depth, not 256 levels


def test_12_bit_monochrome1_is_inverted_so_bone_is_bright(pydicom, tmp_path):
    # MONOCHROME1 stores bone low (shown white) and lungs high (shown black).
    stored = np.full((8, 8), 3900, np.uint16)
    stored[:, :2] = 150  # bone
    stored[0, 7] = 4095
    path = write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1")
    values = dicom.read_dicom(path)
    np.testing.assert_array_equal(values, 4095 - stored.astype(np.int64))
    assert values[0, 0] == 3945 and values[0, 4] == 195 and values[0, 7] == 0
    assert values[:, :2].min() > values[:, 2:].max()  # bone bright


def test_16_bit_both_photometric_interpretations(pydicom, tmp_path):
    stored = np.array([[0, 1, 255, 256], [4096, 30000, 65534, 65535]], np.uint16)
    plain = dicom.read_dicom(write_dicom(tmp_path / "m2.dcm", stored, bits=16))
    inverted = dicom.read_dicom(write_dicom(tmp_path / "m1.dcm", stored, bits=16, photometric="MONOCHROME1"))
    assert plain.dtype == inverted.dtype == np.uint16
    np.testing.assert_array_equal(plain, stored)
    np.testing.assert_array_equal(inverted, 65535 - stored.astype(np.int64))


def test_rescale_slope_and_intercept(pydicom, tmp_path):
    stored = np.array([[0, 1, 100], [1000, 2048, 4095]], np.uint16)
    path = write_dicom(tmp_path / "r.dcm", stored, RescaleSlope=2.5, RescaleIntercept=-1024)
    values = dicom.read_dicom(path)
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, stored * 2.5 - 1024)
    # MONOCHROME1: reflected over the rescaled range [-1024, 4095 * 2.5 - 1024].
    path = write_dicom(tmp_path / "r1.dcm", stored, photometric="MONOCHROME1", RescaleSlope=2.5, RescaleIntercept=-1024)
    np.testing.assert_array_equal(dicom.read_dicom(path), (-1024 + 4095 * 2.5 - 1024) - (stored * 2.5 - 1024))


def test_window_center_width_from_the_file(pydicom, tmp_path):
    stored = np.array([[0, 1536, 1537, 2000], [2048, 2558, 2559, 4095]], np.uint16)
    path = write_dicom(tmp_path / "w.dcm", stored, WindowCenter=2048, WindowWidth=1024)
    values = dicom.read_dicom(path)
    expected = linear_window(stored, 2048, 1024)
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-12)
    assert values[0, 1] == 0.0 and values[1, 3] == 1.0 and values[1, 2] == 1.0
    assert values[0, 2] == pytest.approx(1 / 1023, abs=1e-12)  # (1537 - 2047.5) / 1023 + 0.5
    inverted = dicom.read_dicom(write_dicom(tmp_path / "w1.dcm", stored, photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=1024))
    np.testing.assert_allclose(inverted, 1.0 - expected, rtol=0, atol=1e-12)


def test_window_applies_after_rescale(pydicom, tmp_path):
    stored = np.array([[0, 900, 1000, 1100, 1200, 4095]], np.uint16)
    path = write_dicom(tmp_path / "rw.dcm", stored, RescaleSlope=1, RescaleIntercept=-1000, WindowCenter=40, WindowWidth=400)
    np.testing.assert_allclose(dicom.read_dicom(path), linear_window(stored - 1000.0, 40, 400), rtol=0, atol=1e-12)


def test_voi_lut_sequence_wins_over_the_window_and_a_user_window_wins_over_both(pydicom, tmp_path):
    from pydicom.sequence import Sequence

    lut = np.round(np.sqrt(np.arange(4096) / 4095) * 60000).astype(np.uint16) + 1000  # range 1000..61000
    stored = np.array([[0, 1, 100, 1000], [2047, 3000, 4094, 4095]], np.uint16)
    tags = {"VOILUTSequence": Sequence([voi_lut_item(lut)]), "WindowCenter": 100, "WindowWidth": 10}
    with_lut = write_dicom(tmp_path / "lut.dcm", stored, **tags)
    np.testing.assert_allclose(dicom.read_dicom(with_lut), (lut[stored] - 1000.0) / 60000.0, rtol=0, atol=1e-12)
    inverted = write_dicom(tmp_path / "lut1.dcm", stored, photometric="MONOCHROME1", **tags)
    np.testing.assert_allclose(dicom.read_dicom(inverted), 1 - (lut[stored] - 1000.0) / 60000.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dicom.read_dicom(with_lut, window=(2048, 4096)), linear_window(stored, 2048, 4096), rtol=0, atol=1e-12)
    without = write_dicom(tmp_path / "plain.dcm", stored)
    np.testing.assert_allclose(dicom.read_dicom(without, window=(1000, 2001)), linear_window(stored, 1000, 2001), rtol=0, atol=1e-12)


def test_bad_windows_are_refused(pydicom, tmp_path):
    path = write_dicom(tmp_path / "a.dcm", GRADIENT)
    for window in [(100, 0.5), (100,), (float("nan"), 10)]:
        with pytest.raises(ValueError, match="window"):
            dicom.read_dicom(path, window=window)


# -- the 8-bit conversion happens once, at the end ---------------------------------------
def test_preprocess_of_a_dicom_equals_preprocess_of_its_8_bit_picture(pydicom, tmp_path):
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4096, (40, 56)).astype(np.uint16)
    windowed = write_dicom(tmp_path / "w.dcm", stored, photometric="MONOCHROME1", WindowCenter=1800, WindowWidth=2500)
    picture = np.round((1 - linear_window(stored, 1800, 2500)) * 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "w.png")
    assert np.array_equal(np.asarray(open_image(windowed)), picture)
    assert torch.equal(preprocess(windowed, 32), preprocess(tmp_path / "w.png", 32))

    plain = write_dicom(tmp_path / "p.dcm", stored, photometric="MONOCHROME1")
    shown = 4095.0 - stored
    picture = np.round((shown - shown.min()) * (255.0 / (shown.max() - shown.min()))).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "p.png")
    assert torch.equal(preprocess(plain, 32), preprocess(tmp_path / "p.png", 32))
    # The user's window reaches preprocess too.
    picture = np.round((1 - linear_window(stored, 1000, 500)) * 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "u.png")
    assert torch.equal(preprocess(plain, 32, dicom_window=(1000, 500)), preprocess(tmp_path / "u.png", 32))


def test_extensionless_files_are_found_by_their_dicm_marker(pydicom, tmp_path):
    from gradcam_kit.data.datasets import image_folder_samples, is_image_file
    from gradcam_kit.data.inputs import collect_inputs

    write_dicom(tmp_path / "scans" / "IM0001", GRADIENT)
    write_dicom(tmp_path / "scans" / "1.2.840.113619.2.55", GRADIENT, photometric="MONOCHROME1")
    write_dicom(tmp_path / "scans" / "DICOMDIR", GRADIENT)  # an index, never an image
    (tmp_path / "scans" / "notes").write_text("not an image")
    found = [item.path.name for item in collect_inputs(tmp_path / "scans").items]
    assert found == ["1.2.840.113619.2.55", "IM0001"]
    assert not is_image_file(tmp_path / "scans" / "notes")
    assert np.asarray(open_image(tmp_path / "scans" / "IM0001")).max() == 255
    write_dicom(tmp_path / "split" / "normal" / "IM0001", GRADIENT)
    write_dicom(tmp_path / "split" / "opacity" / "x.DCM", GRADIENT)
    samples, names = image_folder_samples(tmp_path / "split")
    assert names == ["normal", "opacity"] and [s.path.name for s in samples] == ["IM0001", "x.DCM"]


def test_image_dataset_passes_the_window_to_the_reader(pydicom, tmp_path):
    from gradcam_kit.data.datasets import ImageDataset

    write_dicom(tmp_path / "normal" / "a.dcm", GRADIENT[:16, :16], WindowCenter=100, WindowWidth=50)
    write_dicom(tmp_path / "opacity" / "b.dcm", GRADIENT[:16, :16])
    own = ImageDataset.from_source(tmp_path)
    user = ImageDataset.from_source(tmp_path, dicom_window=(128, 129))
    expected = np.round(linear_window(GRADIENT[:16, :16], 100, 50) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(own[0][0]), expected)
    expected = np.round(linear_window(GRADIENT[:16, :16], 128, 129) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(user[0][0]), expected)
    np.testing.assert_array_equal(np.asarray(user[1][0]), expected)
    with pytest.raises(ValueError, match="width must be at least 1"):  # before any image is decoded
        ImageDataset.from_source(tmp_path, dicom_window=[40, 0])


# -- errors -------------------------------------------------------------------------------
def test_corrupt_files_name_the_file_in_one_line(pydicom, tmp_path):
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"this is not a DICOM file" * 20)
    good = write_dicom(tmp_path / "good.dcm", GRADIENT)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:-1000])
    for path in (garbage, truncated):
        with pytest.raises(ValueError) as caught:
            open_image(path)
        message = str(caught.value)
        assert str(path) in message and "\n" not in message
    with pytest.raises(FileNotFoundError):
        dicom.read_dicom(tmp_path / "missing.dcm")


def test_compressed_transfer_syntax_without_a_decoder(pydicom, tmp_path):
    from gradcam_kit.data.datasets import ImageDataset

    uid = "1.2.840.10008.1.2.4.70"  # JPEG Lossless SV1: pylibjpeg-libjpeg or gdcm, not Pillow
    if dicom._decoder_available(uid):
        pytest.skip("a JPEG Lossless decoder is installed here")
    path = write_dicom(tmp_path / "normal" / "jpeg.dcm", GRADIENT, transfer_syntax=uid)
    write_dicom(tmp_path / "opacity" / "plain.dcm", GRADIENT)
    with pytest.raises(RuntimeError) as caught:
        dicom.read_dicom(path)
    message = str(caught.value)
    assert uid in message and "JPEG Lossless" in message and str(path) in message
    assert "pylibjpeg" in message and "python-gdcm" in message and "\n" not in message
    with pytest.raises(RuntimeError, match="pylibjpeg"):  # before any training or evaluation starts
        ImageDataset.from_source(tmp_path)


def test_missing_pydicom_gives_one_line(monkeypatch, tmp_path):
    path = tmp_path / "scan.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # `import pydicom` raises ImportError
    for call in (lambda: dicom.read_dicom(path), lambda: open_image(path), lambda: dicom.dicom_identifiers(path)):
        with pytest.raises(RuntimeError) as caught:
            call()
        assert str(caught.value) == MISSING
    from gradcam_kit.data.inputs import collect_inputs

    with pytest.raises(RuntimeError, match=r"pip install gradcam-kit\[dicom\]"):
        collect_inputs(tmp_path)
    # PNG folders do not need pydicom.
    png = tmp_path / "png"
    png.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png / "a.png")
    assert len(collect_inputs(png).items) == 1


def test_identifiers_only_on_request(pydicom, tmp_path):
    path = write_dicom(tmp_path / "a.dcm", GRADIENT)
    ids = dicom.dicom_identifiers(path)
    assert ids["PatientID"] == PATIENT and ids["StudyInstanceUID"].startswith("1.")
    assert ids["SeriesInstanceUID"] is None


# -- the command line -----------------------------------------------------------------------
def test_explain_on_a_dicom_folder_writes_overlays_and_a_report(pydicom, tmp_path, capsys):
    from gradcam_kit.cli.commands import entry, main
    from gradcam_kit.data.synthetic import generate
    from gradcam_kit.viz.canvas import Geometry

    images, _, _ = generate(2, seed=3, size=64)
    folder = tmp_path / "dicoms"
    for i in range(4):
        # Pairs of the same X-ray: MONOCHROME2 (bone stored bright), MONOCHROME1 (stored dark).
        stored = images[i // 2].numpy().astype(np.uint16) * 16  # 12 bits
        if i % 2:
            stored = 4095 - stored
        tags = {"WindowCenter": 2000, "WindowWidth": 3000} if i >= 2 else {}
        name = f"scan{i}.dcm" if i != 3 else "IM0003"
        write_dicom(folder / name, stored, photometric="MONOCHROME1" if i % 2 else "MONOCHROME2", **tags)
    out = tmp_path / "out"
    torch.manual_seed(0)
    status = main([
        "explain", str(folder), "--weights", "none", "--image-size", "64", "--output", str(out),
        "--num-workers", "0", "--batch-size", "4", "--dicom-window", "2048", "4096",
    ])
    assert status == 0
    with (out / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(Path(row["path"]).name for row in rows) == ["IM0003", "scan0.dcm", "scan1.dcm", "scan2.dcm"]
    geometry = Geometry.for_size((192, 192))
    originals = {}
    for row in rows:
        with Image.open(out / row["overlay"]) as png:
            assert png.mode == "RGB"
            originals[Path(row["path"]).name] = np.asarray(png)[geometry.strip :, : geometry.width]
    # Both photometric interpretations show the same picture (bone bright), at full contrast.
    assert len(np.unique(originals["scan0.dcm"])) > 100
    np.testing.assert_array_equal(originals["scan0.dcm"], originals["scan1.dcm"])
    np.testing.assert_array_equal(originals["scan2.dcm"], originals["IM0003"])
    page = (out / "report.html").read_text(encoding="utf-8")
    assert rows[0]["overlay"] in page and "IM0003" in page
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert PATIENT.encode() not in written  # identifiers never reach the outputs
    assert entry(["explain", str(folder), "--weights", "none", "--dicom-window", "40", "0"]) == 2
    assert "width must be at least 1" in capsys.readouterr().err
