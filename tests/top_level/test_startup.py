"""Start-up: the command line and the package import nothing heavy they do not need.

Checked by which modules a fresh interpreter has imported, never by how long it took.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (stdout silenced)."""
    probe = (
        "import contextlib, io, json, sys\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + "print(json.dumps(sorted(sys.modules)))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return set(json.loads(completed.stdout.strip().splitlines()[-1]))


@pytest.mark.subprocess
@pytest.mark.parametrize("argv", [["--help"], ["explain", "--help"]])
def test_help_imports_no_torch(argv):
    code = (
        "from gradcam_kit.cli.commands import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exit_:\n"
        "    assert exit_.code == 0, exit_.code\n"
    )
    modules = imported_after(code)
    assert "gradcam_kit.cli.explain" in modules or argv == ["--help"]
    assert not {"torch", "numpy", "torchvision", "cv2", "PIL"} & modules


@pytest.mark.subprocess
def test_package_import_is_lazy_and_names_resolve():
    assert "torch" not in imported_after("import gradcam_kit")
    modules = imported_after(
        "import gradcam_kit\n"
        "assert gradcam_kit.CAMEngine.__module__ == 'gradcam_kit.core.engine'\n"
        "assert gradcam_kit.get_method('gradcam').name == 'gradcam'\n"
        "assert set(gradcam_kit.__all__) <= set(dir(gradcam_kit))\n"
    )
    assert "gradcam_kit.core.engine" in modules


def test_unknown_package_attribute_raises_attribute_error():
    import gradcam_kit

    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        gradcam_kit.NotAThing  # noqa: B018


@pytest.mark.subprocess
def test_engine_import_does_not_import_dynamo():
    # torch.compiler.disable imports torch._dynamo (~1 s); the engine applies it at call time.
    modules = imported_after("import gradcam_kit.core.engine")
    assert "torch" in modules and "torch._dynamo" not in modules
