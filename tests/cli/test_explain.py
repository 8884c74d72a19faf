"""The ``explain`` command: inputs, outputs, parity with the single-image path, bad inputs."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradcam_kit.cli.commands import main
from gradcam_kit.data.inputs import collect_inputs
from gradcam_kit.viz.canvas import Geometry, compose_canvases
from gradcam_kit.viz.render import colorize, overlay

SIZE = 64
CLASSES = ["normal", "lesion"]


def make_images(folder: Path, count: int, *, size: int = 48, seed: int = 0, prefix: str = "img") -> list[Path]:
    """Small grayscale images with a bright blob somewhere, PNG."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        cy, cx = rng.integers(8, size - 8, 2)
        blob = 120 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0)
        image = np.clip(60 + blob + rng.normal(0, 12, (size, size)), 0, 255).astype(np.uint8)
        path = folder / f"{prefix}_{i:03d}.png"
        Image.fromarray(image, mode="L").save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from gradcam_kit.models.checkpoint import save_checkpoint
    from resnet50 import ResNet50FineTuned

    torch.manual_seed(0)
    model = ResNet50FineTuned(2, weights=None)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model, num_classes=2, class_names=CLASSES, input_size=SIZE)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    from resnet50 import ResNet50FineTuned

    return ResNet50FineTuned.from_checkpoint(checkpoint, enable_gradcam=True).eval()


@pytest.fixture
def split(tmp_path) -> Path:
    """An ImageFolder split whose folder order (lesion, normal) differs from the model's."""
    root = tmp_path / "val"
    make_images(root / "normal", 3, seed=1)
    make_images(root / "lesion", 2, seed=2)
    return root


def explain(source: object, *args: object) -> int:
    # Later options win in argparse: the test's own options come last.
    return main(["explain", str(source), "--num-workers", "0", "--batch-size", "2", *map(str, args)])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors run faster on one thread, and the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def reuse_model(monkeypatch, model):
    """Skips rebuilding the model from the checkpoint in every run (tested once, below)."""
    import gradcam_kit.cli.explain as command

    built = command._build_model

    def cached(args, info, device):
        if args.checkpoint is None:
            return built(args, info, device)
        return model.to(device)

    monkeypatch.setattr(command, "_build_model", cached)


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_imagefolder_run_writes_everything(split, checkpoint, tmp_path):
    out = tmp_path / "out"
    assert explain(split, "--checkpoint", checkpoint, "--output", out) == 0
    rows = read_rows(out / "predictions.csv")
    assert [int(r["index"]) for r in rows] == list(range(5))
    # Labels are mapped by name onto the checkpoint's class order, not the folder order.
    assert [r["label"] for r in rows] == ["lesion"] * 2 + ["normal"] * 3
    assert [int(r["label_idx"]) for r in rows] == [1, 1, 0, 0, 0]
    geometry = Geometry.for_size((192, 192))  # small inputs are shown at 192 px
    for row in rows:
        probs = [float(row[f"prob_{n}"]) for n in CLASSES]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert float(row["probability"]) == pytest.approx(max(probs), abs=1e-6)
        assert row["pred"] == CLASSES[int(row["pred_idx"])]
        assert row["correct"] == str(int(row["label"] == row["pred"]))
        with Image.open(out / row["overlay"]) as png:
            assert png.mode == "RGB"
            assert png.size == geometry.canvas_size[::-1]
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size == (3 * 168, 2 * 186)  # 5 tiles of 160 px (+ frame, caption): 3 x 2
        sheet_pixels = np.array(sheet.convert("RGB"))
    # Tile 0 is a lesion image: its frame is green when predicted right, red when wrong.
    frame = tuple(sheet_pixels[3, 80])
    assert frame == ((120, 220, 120) if rows[0]["correct"] == "1" else (255, 110, 110))
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "confusion matrix" in page and rows[0]["overlay"] in page
    assert read_rows(out / "skipped.csv") == []


def test_batched_path_matches_the_single_image_path(split, checkpoint, tmp_path, model, reuse_model):
    """Worker decode + device normalisation + batched colouring == preprocess() + overlay()."""
    from gradcam_kit.data.preprocess import preprocess

    out = tmp_path / "out"
    explain(split, "--checkpoint", checkpoint, "--output", out, "--alpha", "0.4", "--display-size", str(SIZE))
    geometry = Geometry.for_size((SIZE, SIZE))
    for row in read_rows(out / "predictions.csv"):
        x = preprocess(row["path"], SIZE)
        with torch.no_grad():
            logits, heatmap = model(x, return_gradcam=True)
        probs = torch.softmax(logits, 1)[0]
        assert int(row["pred_idx"]) == int(probs.argmax())
        torch.testing.assert_close(
            torch.tensor([float(row[f"prob_{n}"]) for n in CLASSES]), probs, atol=2e-6, rtol=0
        )
        with Image.open(out / row["overlay"]) as png:
            canvas = torch.from_numpy(np.array(png))
        picture = canvas[geometry.strip :, : geometry.width]
        colored, overlaid = overlay(picture[None], heatmap, 0.4, "jet")
        left1, left2 = geometry.panel_left(1), geometry.panel_left(2)
        panel = canvas[geometry.strip :, left1 : left1 + geometry.width]
        # The batch of two and the single image run different oneDNN kernels (1e-6 apart):
        # a value on a colour-table boundary may move by one jet step (at most 4 levels).
        for drawn, expected in ((panel, colored[0]), (canvas[geometry.strip :, left2 : left2 + geometry.width], overlaid[0])):
            difference = (drawn.int() - expected.int()).abs()
            assert difference.max() <= 4 and (difference > 1).float().mean() < 0.01
        # The picture is the input image itself, resized as the model saw it.
        with Image.open(row["path"]) as source:
            grey = np.asarray(source.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
        assert np.abs(picture.numpy().astype(int) - grey.astype(int)).mean() < 3


def test_compose_canvases_layout_and_hot_is_red():
    geometry = Geometry(height=8, width=10, strip=4, gap=2)
    images = torch.zeros(2, 8, 10, 3, dtype=torch.uint8)
    heatmaps = torch.ones(2, 4, 5)  # maps at another size are resized
    canvases = compose_canvases(images, heatmaps, geometry, alpha=1.0)
    assert canvases.shape == (2, 12, 34, 3) and canvases.dtype == torch.uint8
    hot = canvases[:, 4:, geometry.panel_left(1) : geometry.panel_left(1) + 10]
    assert (hot == colorize(torch.ones(1, 1))[0, 0]).all()
    assert hot[0, 0, 0, 0] > 100 and hot[0, 0, 0, 2] == 0  # red
    assert (canvases[:, 4:, :10] == 0).all()  # the original picture


def test_single_image_has_no_label(checkpoint, tmp_path, reuse_model):
    (image,) = make_images(tmp_path / "in", 1)
    out = tmp_path / "out"
    explain(image, "--checkpoint", checkpoint, "--output", out, "--display-size", "96")
    (row,) = read_rows(out / "predictions.csv")
    assert row["label"] == "" and row["correct"] == "" and row["path"] == str(image)
    with Image.open(out / row["overlay"]) as png:
        assert png.size == Geometry.for_size((96, 96)).canvas_size[::-1]
    assert "accuracy" not in (out / "report.html").read_text(encoding="utf-8")


def test_csv_input_and_missing_rows_are_skipped(checkpoint, tmp_path, reuse_model):
    images = make_images(tmp_path / "in", 3)
    listing = tmp_path / "list.csv"
    listing.write_text(
        "path,label\n"
        f"in/{images[0].name},lesion\n{images[1]},normal\nin/gone.png,normal\nin/{images[2].name},\n"
    )
    out = tmp_path / "out"
    explain(listing, "--checkpoint", checkpoint, "--output", out)
    rows = read_rows(out / "predictions.csv")
    assert [(r["label"], r["label_idx"]) for r in rows] == [("lesion", "1"), ("normal", "0"), ("", "")]
    (skipped,) = read_rows(out / "skipped.csv")
    assert skipped["path"].endswith("gone.png") and "no such file" in skipped["reason"]


def test_unreadable_and_non_image_files_are_skipped_and_reported(checkpoint, tmp_path, reuse_model):
    folder = tmp_path / "in"
    make_images(folder / "deep" / "er", 2)
    (folder / "broken.png").write_bytes(b"not a png at all")
    (folder / "notes.txt").write_text("hello")
    (folder / "deep" / "cut.png").write_bytes(
        (folder / "deep" / "er" / "img_000.png").read_bytes()[:60]
    )
    (folder / "deep" / "er" / "img_000_mask.png").write_bytes(b"masks are not inputs")
    out = tmp_path / "out"
    # Two decode workers: the failures happen in worker processes and must come back.
    assert explain(folder, "--checkpoint", checkpoint, "--output", out, "--num-workers", "2") == 0
    rows = read_rows(out / "predictions.csv")
    assert sorted(Path(r["path"]).name for r in rows) == ["img_000.png", "img_001.png"]
    reasons = {Path(r["path"]).name: r["reason"] for r in read_rows(out / "skipped.csv")}
    assert set(reasons) == {"broken.png", "notes.txt", "cut.png"}
    assert reasons["notes.txt"].startswith("not an image file")
    assert reasons["broken.png"].startswith("cannot decode")
    page = (out / "report.html").read_text(encoding="utf-8")
    for name in reasons:
        assert name in page


def test_existing_results_need_overwrite(split, checkpoint, tmp_path, reuse_model):
    out = tmp_path / "out"
    explain(split, "--checkpoint", checkpoint, "--output", out, "--index", "0", "1")
    stale = out / "overlays" / "999999_stale.png"
    stale.write_bytes(b"")
    with pytest.raises(FileExistsError, match="--overwrite"):
        explain(split, "--checkpoint", checkpoint, "--output", out, "--index", "2")
    assert len(read_rows(out / "predictions.csv")) == 2  # untouched
    # --overwrite replaces only what explain wrote: a PNG it never wrote is refused, kept
    with pytest.raises(FileExistsError, match="999999_stale.png"):
        explain(split, "--checkpoint", checkpoint, "--output", out, "--index", "2", "--overwrite")
    assert stale.exists() and len(read_rows(out / "predictions.csv")) == 2
    stale.unlink()
    explain(split, "--checkpoint", checkpoint, "--output", out, "--index", "2", "--overwrite")
    assert [r["index"] for r in read_rows(out / "predictions.csv")] == ["2"]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["000002_img_000.png"]


def test_class_count_mismatch_fails_before_any_work(checkpoint, tmp_path, reuse_model):
    root = tmp_path / "three"
    for name in ("a", "b", "c"):
        make_images(root / name, 1)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"2 classes \['normal', 'lesion'\].*3 classes \['a', 'b', 'c'\]"):
        explain(root, "--checkpoint", checkpoint, "--output", out)
    assert not out.exists()
    listing = tmp_path / "ids.csv"
    listing.write_text(f"path,label\n{root / 'a' / 'img_000.png'},5\n")
    with pytest.raises(ValueError, match="label index 5"):
        explain(listing, "--checkpoint", checkpoint, "--output", out)


def test_class_idx_by_name_or_index(split, checkpoint, tmp_path, reuse_model):
    explain(split, "--checkpoint", checkpoint, "--output", tmp_path / "a", "--class-idx", "lesion")
    explain(split, "--checkpoint", checkpoint, "--output", tmp_path / "b", "--class-idx", "0")
    assert {r["explained"] for r in read_rows(tmp_path / "a" / "predictions.csv")} == {"lesion"}
    assert {r["explained_idx"] for r in read_rows(tmp_path / "b" / "predictions.csv")} == {"0"}
    with pytest.raises(ValueError, match="neither a class name nor an index"):
        explain(split, "--checkpoint", checkpoint, "--output", tmp_path / "c", "--class-idx", "2")


def test_random_and_index_selection(split, checkpoint, tmp_path, reuse_model):
    explain(split, "--checkpoint", checkpoint, "--output", tmp_path / "r1", "--random", "3", "--seed", "4")
    explain(split, "--checkpoint", checkpoint, "--output", tmp_path / "r2", "--random", "3", "--seed", "4")
    first = [r["index"] for r in read_rows(tmp_path / "r1" / "predictions.csv")]
    assert first == [r["index"] for r in read_rows(tmp_path / "r2" / "predictions.csv")]
    assert len(set(first)) == 3 and first == sorted(first, key=int)
    explain(split, "--checkpoint", checkpoint, "--output", tmp_path / "i", "--index", "4", "1")
    assert [r["index"] for r in read_rows(tmp_path / "i" / "predictions.csv")] == ["1", "4"]
    with pytest.raises(ValueError, match=r"--index \[5\] out of range"):
        explain(split, "--checkpoint", checkpoint, "--output", tmp_path / "x", "--index", "5")
    with pytest.raises(ValueError, match="not both"):
        explain(split, "--checkpoint", checkpoint, "--output", tmp_path / "x", "--index", "1", "--random", "1")


def test_model_source_is_required_and_random_weights_warn(split, tmp_path):
    with pytest.raises(ValueError, match="--checkpoint PATH"):
        explain(split, "--output", tmp_path / "x")
    with pytest.warns(UserWarning, match="random weights"):
        explain(split, "--weights", "none", "--size", SIZE, "--output", tmp_path / "y", "--index", "0")
    (row,) = read_rows(tmp_path / "y" / "predictions.csv")
    assert row["pred"] in ("lesion", "normal")  # class names from the folders


def test_bad_options_are_rejected(split, checkpoint, tmp_path, reuse_model):
    for option, value, message in [
        ("--alpha", "1.5", "alpha"),
        ("--batch-size", "0", "batch-size"),
        ("--colormap", "nope", "unknown colormap"),
        ("--method", "nope", "nope"),
    ]:
        with pytest.raises(ValueError, match=message):
            explain(split, "--checkpoint", checkpoint, "--output", tmp_path / "x", option, value)
    assert not (tmp_path / "x").exists()


def test_one_host_copy_per_batch(split, checkpoint, tmp_path, monkeypatch, reuse_model):
    """Only the canvases and the numbers cross back to the host: two copies per batch."""
    calls = []
    original = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        calls.append(tuple(self.shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    explain(split, "--checkpoint", checkpoint, "--output", tmp_path / "o")  # 5 images, batches of 2
    geometry = Geometry.for_size((192, 192))  # small inputs are shown at 192 px
    canvas = (*geometry.canvas_size, 3)
    assert calls == [(2, *canvas), (2, 4), (2, *canvas), (2, 4), (1, *canvas), (1, 4)]


def test_profile_reports_every_stage(split, checkpoint, tmp_path, capsys, reuse_model):
    explain(split, "--checkpoint", checkpoint, "--output", tmp_path / "o", "--profile")
    err = capsys.readouterr().err
    for stage in ("wait for data", "model", "colouring", "to host", "decode", "title+PNG", "images/s"):
        assert stage in err


def test_collect_inputs_layouts(tmp_path):
    make_images(tmp_path / "flat" / "a" / "b", 2)
    make_images(tmp_path / "flat", 1, prefix="top")
    flat = collect_inputs(tmp_path / "flat")
    assert flat.layout == "folder" and flat.class_names == [] and len(flat.items) == 3
    forced = collect_inputs(tmp_path / "flat", layout="imagefolder")
    assert forced.class_names == ["a"] and len(forced.items) == 2
    assert [Path(p).name for p, _ in forced.skipped] == ["top_000.png"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images here")
    with pytest.raises(ValueError, match=r"no images found .* skipped 1 non-image"):
        collect_inputs(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown layout"):
        collect_inputs(tmp_path / "flat", layout="zip")
    with pytest.raises(FileNotFoundError):
        collect_inputs(tmp_path / "nowhere")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,label\nx.png,1\n")
    with pytest.raises(ValueError, match="'path' column"):
        collect_inputs(bad_csv)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(), reason="torchrun not installed")
def test_torchrun_shards_and_merges(split, tmp_path):
    # Seeded random weights: the same model on every rank without loading a checkpoint.
    options = ["--weights", "none", "--size", str(SIZE), "--num-workers", "0", "--batch-size", "2"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    with pytest.warns(UserWarning, match="random weights"):
        main(["explain", str(split), "--output", str(single), *options])
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [
        str(torchrun if torchrun.exists() else "torchrun"), "--standalone", "--nproc_per_node", "2",
        "-m", "gradcam_kit", "explain", str(split), "--output", str(multi), "--device", "cpu", *options,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = read_rows(single / "predictions.csv")
    merged = read_rows(multi / "predictions.csv")
    assert [r["index"] for r in merged] == [r["index"] for r in expected] == [str(i) for i in range(5)]
    for a, b in zip(merged, expected):
        assert a["pred"] == b["pred"] and a["overlay"] == b["overlay"]
        assert float(a["probability"]) == pytest.approx(float(b["probability"]), abs=1e-4)
    assert len(list((multi / "overlays").glob("*.png"))) == 5
    assert (multi / "report.html").exists() and (multi / "contact_sheet.png").exists()
    assert done.stdout.count("explained 5 image(s)") == 1  # rank 0 alone reports


def test_contact_sheet_shows_mistakes_first_then_a_spread():
    from gradcam_kit.viz.canvas import _contact_sheet_rows

    rows = [{"index": i, "correct": "0" if i in (40, 90) else "1"} for i in range(100)][::-1]
    chosen = [r["index"] for r in _contact_sheet_rows(rows, 6)]
    assert chosen == [40, 90, 0, 32, 66, 99]  # both mistakes, then both ends of the rest
    assert [r["index"] for r in _contact_sheet_rows(rows[:3], 6)] == [97, 98, 99]
