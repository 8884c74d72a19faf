"""Output folders: fresh or refused, --overwrite replaces only what a command recorded."""

from __future__ import annotations

import json

import pytest
import torch

from gradcam_kit import cli
from gradcam_kit.cli.outputs import MANIFEST, OutputFolder
from gradcam_kit.models.checkpoint import save_checkpoint
from resnet50 import ResNet50FineTuned

TINY_TRAIN = ["--weights", "none", "--image-size", "32", "--batch-size", "4", "--no-progress",
              "--epochs", "1", "--seed", "0"]


def _write(folder, *names):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)


# -- the helper ---------------------------------------------------------------------------
def test_new_folder_is_recorded_and_a_second_run_is_refused(tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out, command="demo", flag="--out"):
        _write(out, "a.txt", "sub/b.png")
    recorded = json.loads((out / MANIFEST).read_text())["files"]
    assert recorded == {"a.txt": "demo", "sub/b.png": "demo"}
    with pytest.raises(FileExistsError, match=r"earlier demo run \(a.txt, sub/b.png\).*--overwrite"):
        OutputFolder(out, command="demo", flag="--out")


def test_overwrite_deletes_only_recorded_files(tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out, command="demo"):
        _write(out, "old_1.png", "deep/old_2.png")
    with OutputFolder(out, command="demo", overwrite=True):
        assert not (out / "old_1.png").exists() and not (out / "deep").exists()
        _write(out, "new.png")
    assert json.loads((out / MANIFEST).read_text())["files"] == {"new.png": "demo"}
    # a file nobody recorded is never deleted: it is refused, --overwrite or not
    _write(out, "notes.txt")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=r"did not write \(notes.txt\).*never deleted"):
            OutputFolder(out, command="demo", overwrite=overwrite)
    assert (out / "notes.txt").read_text() == "notes.txt" and (out / "new.png").exists()


def test_a_file_or_a_path_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        OutputFolder(tmp_path / "file", command="demo")
    with pytest.raises(ValueError, match="lies under .*file"):
        OutputFolder(tmp_path / "file" / "sub", command="demo")


def test_shared_folder_checks_only_the_commands_names(tmp_path):
    _write(tmp_path, "best.pt", "user_notes.txt")
    with OutputFolder(tmp_path, command="evaluate", names=["evaluation.json", "overlays"]):
        _write(tmp_path, "evaluation.json")
    with pytest.raises(FileExistsError, match="evaluation.json"):
        OutputFolder(tmp_path, command="evaluate", names=["evaluation.json", "overlays"])
    OutputFolder(tmp_path, command="evaluate", names=["evaluation.json"], overwrite=True).clear()
    assert not (tmp_path / "evaluation.json").exists()
    assert (tmp_path / "best.pt").exists() and (tmp_path / "user_notes.txt").exists()


def test_files_of_a_failed_run_are_recorded_by_the_command_line(tmp_path):
    from gradcam_kit.cli.outputs import record_pending

    out = tmp_path / "out"
    folder = OutputFolder(out, command="demo")
    folder.clear()
    _write(out, "partial.png")
    record_pending()  # what cli.main does in its finally
    assert json.loads((out / MANIFEST).read_text())["files"] == {"partial.png": "demo"}
    OutputFolder(out, command="demo", overwrite=True).clear()
    assert not (out / "partial.png").exists()


# -- the commands ---------------------------------------------------------------------------
def _synth(out, *extra):
    return cli.main(["synth", "--out", str(out), "--size", "32", "--val", "0", "--test", "0",
                     "--quiet", *extra])


def test_synth_twice_is_refused_and_overwrite_leaves_no_old_images(tmp_path):
    out = tmp_path / "synth"
    assert _synth(out, "--train", "6") == 0
    with pytest.raises(FileExistsError, match="--overwrite"):
        _synth(out, "--train", "4", "--size", "48")
    assert _synth(out, "--train", "4", "--size", "48", "--overwrite") == 0
    pngs = [p for p in (out / "train").rglob("*.png")]
    assert len(pngs) == 4  # not 6 old + 4 new
    assert len((out / "train.csv").read_text().splitlines()) == 5


def test_synth_never_touches_the_users_csv(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "train.csv").write_text("my,own\n")
    for extra in ([], ["--overwrite"]):
        with pytest.raises(FileExistsError, match="did not write"):
            _synth(out, "--train", "4", *extra)
    assert (out / "train.csv").read_text() == "my,own\n"


def test_synth_layout_is_read_correctly_by_torchvision_image_folder(tmp_path):
    from torchvision.datasets import ImageFolder

    from gradcam_kit.data.datasets import image_folder_samples

    out = tmp_path / "synth"
    assert _synth(out, "--train", "6") == 0
    dataset = ImageFolder(str(out / "train"))
    assert len(dataset) == 6 and dataset.classes == ["normal", "opacity"]
    assert sorted(dataset.targets) == [0, 0, 0, 1, 1, 1]
    assert not any("mask" in path for path, _ in dataset.samples)
    samples, _ = image_folder_samples(out / "train")
    assert all((s.mask is not None) == (s.label == 1) for s in samples)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from gradcam_kit.data.synthetic import write_image_folder

    root = tmp_path_factory.mktemp("data")
    write_image_folder(root, {"train": 8, "val": 4, "test": 4}, size=32, seed=0, progress=False)
    return root


@pytest.mark.slow
def test_train_into_a_trained_folder_is_refused_and_overwrite_removes_stale_evaluation(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(tiny_data), "--out", str(out), *TINY_TRAIN]) == 0
    assert cli.main(["evaluate", "--checkpoint", str(out / "best.pt"), "--data", str(tiny_data),
                     "--layers", "layer4", "--no-progress", "--overlays", "1"]) == 0
    first = (out / "best.pt").read_bytes()  # with the recommendation evaluate added
    assert (out / "evaluation.json").exists() and any((out / "overlays").iterdir())
    with pytest.raises(FileExistsError, match="--overwrite"):
        cli.main(["train", "--data", str(tiny_data), "--out", str(out), *TINY_TRAIN])
    assert (out / "best.pt").read_bytes() == first
    (out / "my_notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="did not write"):
        cli.main(["train", "--data", str(tiny_data), "--out", str(out), "--overwrite", *TINY_TRAIN])
    (out / "my_notes.txt").unlink()
    assert cli.main(["train", "--data", str(tiny_data), "--out", str(out), "--overwrite", *TINY_TRAIN]) == 0
    # the old model's evaluation no longer sits beside the new model
    assert not (out / "evaluation.json").exists() and not (out / "overlays").exists()


def test_evaluate_replaces_its_own_results_only_with_overwrite(tiny_data, tmp_path):
    torch.manual_seed(0)
    checkpoint = save_checkpoint(
        tmp_path / "ckpt" / "model.pt", ResNet50FineTuned(2, weights=None),
        num_classes=2, class_names=["normal", "opacity"], input_size=[32, 32],
    )
    (tmp_path / "ckpt" / "readme.txt").write_text("the user's file, beside the checkpoint")
    command = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(tiny_data),
               "--layers", "layer4", "--no-progress"]
    assert cli.main(command) == 0
    written = (tmp_path / "ckpt" / "evaluation.json").read_text()
    with pytest.raises(FileExistsError, match=r"evaluation.json.*--overwrite"):
        cli.main(command)
    assert (tmp_path / "ckpt" / "evaluation.json").read_text() == written
    assert cli.main([*command, "--overwrite"]) == 0
    assert (tmp_path / "ckpt" / "readme.txt").exists() and checkpoint.exists()


def test_explain_overwrite_keeps_pngs_it_never_wrote(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("L", (40, 40), color=40 * i).save(images / f"x{i}.png")
    out = tmp_path / "explained"
    command = ["explain", str(images), "--weights", "none", "--size", "32", "--output", str(out),
               "--num-workers", "0", "--grid", "0"]
    assert cli.main(command) == 0
    Image.new("RGB", (8, 8)).save(out / "overlays" / "my_annotation.png")
    with pytest.raises(FileExistsError, match="my_annotation.png"):
        cli.main([*command, "--overwrite"])
    assert (out / "overlays" / "my_annotation.png").exists()
    assert len(list((out / "overlays").glob("*.png"))) == 3  # nothing deleted


def test_figures_second_run_does_not_mix_images(tmp_path):
    from PIL import Image

    for name in ("a", "b"):
        Image.new("L", (40, 40), color=90).save(tmp_path / f"{name}.png")
    out = tmp_path / "figures"
    base = ["figures", "--weights", "none", "--size", "32", "--output", str(out), "--device", "cpu"]
    assert cli.main([*base, "--image", str(tmp_path / "a.png")]) == 0
    with pytest.raises(FileExistsError, match="--overwrite"):
        cli.main([*base, "--image", str(tmp_path / "b.png")])
    assert cli.main([*base, "--image", str(tmp_path / "b.png"), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["0000_b"]
    names = sorted(p.name for p in (out / "0000_b").iterdir())
    assert names == ["attention_maps_b.png", "overlays_b.png"]
