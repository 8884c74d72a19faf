"""Every command, called wrongly, answers with one clear line and exit status 2: no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from gradcam_kit.cli.commands import entry
from gradcam_kit.data.synthetic import write_image_folder
from gradcam_kit.models.checkpoint import save_checkpoint
from resnet50 import ResNet50FineTuned

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A dataset, a checkpoint, a one-class and an empty dataset, a file, a bad CSV."""
    root = tmp_path_factory.mktemp("cli")
    write_image_folder(root / "data", {"train": 4, "val": 2, "test": 2}, size=32, progress=False)
    torch.manual_seed(0)
    model = ResNet50FineTuned(3, weights=None)
    save_checkpoint(root / "three.pt", model, num_classes=3, class_names=["a", "b", "c"], input_size=[32, 32])
    two = ResNet50FineTuned(2, weights=None)
    save_checkpoint(root / "two.pt", two, num_classes=2, class_names=["normal", "opacity"], input_size=[32, 32])
    (root / "empty").mkdir()
    (root / "one" / "only").mkdir(parents=True)
    Image.new("L", (32, 32)).save(root / "one" / "only" / "x.png")
    (root / "empty_class" / "a").mkdir(parents=True)
    (root / "empty_class" / "b").mkdir(parents=True)
    Image.new("L", (32, 32)).save(root / "empty_class" / "a" / "x.png")
    (root / "missing.csv").write_text("path,label\nnot_there.png,a\nalso_missing.png,b\n")
    (root / "a_file").write_text("not a folder")
    Image.new("L", (40, 40)).save(root / "image.png")
    (root / "broken.pt").write_bytes(b"not a checkpoint")
    return root


def _cases(r: Path) -> dict[str, list[str]]:
    data, ckpt = str(r / "data"), str(r / "three.pt")
    train = ["train", "--weights", "none", "--image-size", "32", "--epochs", "1", "--no-progress"]
    explain = ["explain", str(r / "image.png"), "--num-workers", "0"]
    return {
        "train empty folder": [*train, "--data", str(r / "empty"), "--out", str(r / "o1")],
        "train missing folder": [*train, "--data", str(r / "nope"), "--out", str(r / "o2")],
        "train one class": [*train, "--data", str(r / "one"), "--out", str(r / "o3")],
        "train empty class": [*train, "--data", str(r / "empty_class"), "--out", str(r / "o4")],
        "train csv names missing files": [*train, "--data", str(r / "missing.csv"), "--out", str(r / "o5")],
        "train class count mismatch": [*train, "--data", data, "--num-classes", "3", "--out", str(r / "o6")],
        "train size 8": [*train, "--data", data, "--image-size", "0", "--out", str(r / "o7")],
        "train out is a file": [*train, "--data", data, "--out", str(r / "a_file")],
        "train missing checkpoint": [*train, "--data", data, "--weights", str(r / "none.pt"), "--out", str(r / "o8")],
        "evaluate missing checkpoint": ["evaluate", "--checkpoint", str(r / "none.pt"), "--data", data],
        "evaluate broken checkpoint": ["evaluate", "--checkpoint", str(r / "broken.pt"), "--data", data],
        "evaluate class mismatch": ["evaluate", "--checkpoint", ckpt, "--data", data, "--json", str(r / "e" / "x.json")],
        "evaluate classes missing from data": ["evaluate", "--checkpoint", ckpt, "--data", str(r / "empty_class"),
                                               "--json", str(r / "e2" / "x.json")],
        "evaluate unknown layer": ["evaluate", "--checkpoint", str(r / "two.pt"), "--data", data,
                                   "--layers", "layer9", "--json", str(r / "e3" / "x.json")],
        "train unknown target layer": [*train, "--data", data, "--target-layer", "layer9", "--out", str(r / "o9")],
        "explain missing checkpoint": [*explain, "--checkpoint", str(r / "none.pt"), "--output", str(r / "x1")],
        "explain colormap 99": [*explain, "--weights", "none", "--colormap", "99", "--output", str(r / "x2")],
        "explain size 8": [*explain, "--weights", "none", "--size", "8", "--output", str(r / "x3")],
        "explain output is a file": [*explain, "--weights", "none", "--output", str(r / "a_file")],
        "explain empty folder": ["explain", str(r / "empty"), "--weights", "none", "--output", str(r / "x4")],
        "synth size 8": ["synth", "--size", "8", "--out", str(r / "s1")],
        "synth out is a file": ["synth", "--out", str(r / "a_file"), "--train", "2"],
        "synth negative count": ["synth", "--train", "-1", "--out", str(r / "s2")],
        "figures missing image": ["figures", "--image", str(r / "none.png"), "--weights", "none", "--output", str(r / "f1")],
        "figures colormap": ["figures", "--image", str(r / "image.png"), "--weights", "none", "--colormap", "nope", "--output", str(r / "f2")],
        "figures size 8": ["figures", "--image", str(r / "image.png"), "--weights", "none", "--size", "8", "--output", str(r / "f3")],
        "figures output is a file": ["figures", "--image", str(r / "image.png"), "--weights", "none", "--output", str(r / "a_file")],
        "arch missing checkpoint": ["arch", "--checkpoint", str(r / "none.pt")],
        "arch unknown layer": ["arch", "--target-layer", "layer9"],
        "compare missing data": ["compare", "--data", str(r / "nope"), "--weights", "none", "--output", str(r / "c1")],
        "compare unknown method": ["compare", "--data", data, "--weights", "none", "--methods", "nope", "--output", str(r / "c2")],
    }


CASES = list(_cases(Path("/")).keys())


@pytest.mark.parametrize("case", CASES)
def test_user_mistakes_give_one_line_and_status_2(case, files, capsys):
    argv = _cases(files)[case]
    before = sorted(p for p in files.rglob("*"))
    status = entry(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert status == 2, captured.err[-2000:]
    assert "Traceback" not in captured.err and len(lines) == 1, captured.err[-2000:]
    assert lines[0].startswith(f"gradcam-kit {argv[0]}: error: ")
    assert len(lines[0]) > len(f"gradcam-kit {argv[0]}: error: ") + 15  # says what is wrong
    # a refused command wrote nothing: no output folder, no partial files
    assert sorted(p for p in files.rglob("*")) == before


def test_debug_flag_and_environment_show_the_traceback(files, capsys):
    argv = ["train", "--data", str(files / "empty"), "--weights", "none", "--out", str(files / "d")]
    assert entry([*argv, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    os.environ["GRADCAM_KIT_DEBUG"] = "1"
    try:
        assert entry(argv) == 2
    finally:
        del os.environ["GRADCAM_KIT_DEBUG"]
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.subprocess
def test_python_dash_m_uses_the_boundary(files):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-m", "gradcam_kit", "evaluate", "--checkpoint", str(files / "none.pt"),
         "--data", str(files / "data")],
        capture_output=True, text=True, timeout=120, env=env, cwd=files,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"gradcam-kit evaluate: error: no checkpoint file at {files / 'none.pt'} (--debug: traceback)"
    ]


def test_explain_that_explains_nothing_exits_3(files, capsys):
    folder = files / "undecodable"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")
    (folder / "b.png").write_bytes(b"nor this")
    status = entry(["explain", str(folder), "--weights", "none", "--size", "32", "--num-workers", "0",
                    "--output", str(files / "nothing")])
    assert status == 3
    assert "explained no image" in capsys.readouterr().err
    assert (files / "nothing" / "skipped.csv").read_text().count("cannot decode") == 2
