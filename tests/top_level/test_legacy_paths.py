"""The module paths of the flat 0.1 layout still import, as the same module objects."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from gradcam_kit._legacy import FORMER, MOVED


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_an_old_module_path_is_the_new_module(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_old_names_of_modules_that_became_packages():
    from gradcam_kit.explainers.cnn import GradCAMExplainer
    from gradcam_kit.metrics.classification import classification_metrics

    with pytest.warns(DeprecationWarning, match="gradcam_kit.explainers.cnn.GradCAMExplainer"):
        from gradcam_kit.models import GradCAMExplainer as old_explainer
    with pytest.warns(DeprecationWarning):
        from gradcam_kit.metrics import classification_metrics as old_metrics
    assert old_explainer is GradCAMExplainer and old_metrics is classification_metrics
    assert set(FORMER) == {"gradcam_kit.models", "gradcam_kit.data", "gradcam_kit.metrics"}
    with pytest.raises(AttributeError, match="no_such_name"):
        importlib.import_module("gradcam_kit.models").no_such_name  # noqa: B018


def test_names_that_left_the_explain_command_module():
    from gradcam_kit.viz.canvas import Geometry, write_contact_sheet

    sys.modules.pop("gradcam_kit.explain", None)
    with pytest.warns(DeprecationWarning, match=r"gradcam_kit\.explain moved"):
        old_module = importlib.import_module("gradcam_kit.explain")
    with pytest.warns(DeprecationWarning, match=r"gradcam_kit\.viz\.canvas\.Geometry"):
        old_geometry = old_module.Geometry
    with pytest.warns(DeprecationWarning, match="write_contact_sheet"):
        from gradcam_kit.cli.explain import write_contact_sheet as old_sheet
    assert old_geometry is Geometry and old_sheet is write_contact_sheet
    with pytest.raises(AttributeError, match="no_such_name"):
        importlib.import_module("gradcam_kit.cli.explain").no_such_name  # noqa: B018


def test_the_top_level_resnet50_module_is_the_package_class():
    import resnet50
    from gradcam_kit.models.resnet50 import ResNet50FineTuned, preprocess

    assert resnet50.ResNet50FineTuned is ResNet50FineTuned and resnet50.preprocess is preprocess


@pytest.mark.subprocess
def test_new_paths_import_without_deprecation_warnings():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "import gradcam_kit.core.engine, gradcam_kit.cli, gradcam_kit.models.resnet50, resnet50\n"
        "from gradcam_kit import CAMEngine, get_method, GradCAMExplainer\n"
        "from gradcam_kit.cli import main, entry\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
