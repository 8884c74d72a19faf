"""Every Python example in README_GRADCAM.md runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README_GRADCAM.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_has_examples_for_the_whole_api():
    code = "\n".join(python_blocks())
    assert len(python_blocks()) >= 8
    for name in (
        "return_gradcam=True",
        "gradcam_class_idx",
        "gradcam_raw=True",
        "gradcam_layers",
        "gradcam_method",
        "gradcam_score_fn",
        "enable_gradcam_mode()",
        "disable_gradcam_mode()",
        "gradcam_enabled",
        "get_gradcam_overlay(",
        "preprocess(",
        "from_checkpoint(",
        "num_classes=1",
    ):
        assert name in code, f"README_GRADCAM.md has no runnable example of {name}"
    text = README.read_text(encoding="utf-8")
    assert 'weights="DEFAULT"' in text and "weights=None" in text


def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write their files to the working directory
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict[str, object] = {"__name__": "readme_gradcam"}
    for index, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"{README.name}[block {index}]", "exec"), namespace)
        except Exception as err:  # name the failing block
            pytest.fail(f"README_GRADCAM.md python block {index} failed: {err!r}\n{block}")
    assert (tmp_path / "gradcam_overlay.png").is_file()
    assert (tmp_path / "checkpoint.pt").is_file()
