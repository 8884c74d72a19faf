"""``--config FILE`` on every command: YAML keys are flag names; flags on the command line win."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gradcam_kit.cli import COMMANDS, main
from gradcam_kit.cli.config import add_config_argument, apply_config, config_path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("--image-size", "--size", dest="size", type=int, default=224)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--method", choices=["gradcam", "layercam"], default="gradcam")
    parser.add_argument("--layers", nargs="+", default=["layer4"])
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    add_config_argument(parser)
    return parser


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_config_values_become_defaults_and_flags_win(tmp_path):
    path = _write(tmp_path, "image-size: 96\nlr: 2e-3\nout: results\nmethod: layercam\nlayers: [layer1, layer2]\nno-progress: true\n")
    parser = _parser()
    apply_config(parser, path)
    args = parser.parse_args(["x.png", "--config", str(path)])
    assert (args.size, args.lr, args.out, args.method, args.layers, args.progress) == (
        96, 0.002, Path("results"), "layercam", ["layer1", "layer2"], False
    )
    assert parser.parse_args(["x.png", "--size", "128", "--out", "elsewhere"]).size == 128
    assert parser.parse_args(["x.png", "--out", "elsewhere"]).out == Path("elsewhere")


@pytest.mark.parametrize(
    "text, message",
    [
        ("bogus: 1\n", "unknown key 'bogus'.*image-size"),
        ("input: a.png\n", "positional argument"),
        ("method: scorecam\n", "choose one of gradcam, layercam"),
        ("image-size: big\n", "image-size got 'big'"),
        ("no-progress: 1\n", "true or false"),
        ("image-size: [1, 2]\n", "one value"),
        ("- a\n- b\n", "mapping of flag names"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_config_files_say_what_is_wrong(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        apply_config(_parser(), _write(tmp_path, text))


def test_config_path_is_found_in_both_spellings():
    assert config_path(["x", "--config", "a.yaml"]) == "a.yaml"
    assert config_path(["x", "--config=b.yaml"]) == "b.yaml"
    assert config_path(["x"]) is None
    with pytest.raises(ValueError, match="needs a file name"):
        config_path(["x", "--config"])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_a_config(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_a_command_runs_from_its_config_file(tmp_path):
    out = tmp_path / "data"
    path = _write(tmp_path, f"out: {out}\nsize: 40\ntrain: 2\nval: 2\ntest: 2\nquiet: true\n")
    assert main(["synth", "--config", str(path), "--train", "4"]) == 0
    images = [p for p in (out / "train").rglob("*.png") if "masks" not in p.parts]
    assert len(images) == 4  # the flag won over the file's train: 2
    assert len([p for p in (out / "val").rglob("*.png") if "masks" not in p.parts]) == 2
