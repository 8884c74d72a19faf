"""One builder, one weights resolver, one unwrap, one freeze, one device choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from gradcam_kit.core.device import resolve_device
from gradcam_kit.models.builder import build_model, is_checkpoint_path, load_model, resolve_weights
from gradcam_kit.models.checkpoint import load_checkpoint, save_checkpoint
from gradcam_kit.models.modules import freeze_backbone, unwrap_model


def test_resolve_weights_has_one_rule_for_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for nothing in (None, "none", "None", "null", "scratch", ""):
        assert resolve_weights(nothing) is None
    assert resolve_weights("imagenet") == resolve_weights("DEFAULT") == "DEFAULT"
    assert resolve_weights("IMAGENET1K_V2") == "IMAGENET1K_V2"
    Path("DEFAULT").write_text("a file named like the weights")
    assert resolve_weights("DEFAULT") == "DEFAULT" and not is_checkpoint_path("ResNet50_Weights.DEFAULT")
    Path("model").write_bytes(b"")  # an existing file is a path, suffix or not
    assert resolve_weights("model") == Path("model") and resolve_weights(tmp_path / "model") == tmp_path / "model"
    for path in ("runs/x/best.pt", "weights.PTH", "m.ckpt", "m.bin"):
        assert is_checkpoint_path(path), path
        with pytest.raises(FileNotFoundError, match="no checkpoint file at .*pass DEFAULT"):
            resolve_weights(path)
    assert not is_checkpoint_path("IMAGENET1K_V1") and not is_checkpoint_path("resnet")


def test_build_model_torchvision_style(tmp_path):
    model = build_model("resnet18", num_classes=3, freeze_features=True)
    assert model.fc.out_features == 3
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    torch.manual_seed(0)
    source = resnet18(weights=None, num_classes=2)
    path = save_checkpoint(tmp_path / "r18.pt", source)
    same = build_model("resnet18", weights=path)  # the checkpoint's own head
    for key, value in source.state_dict().items():
        torch.testing.assert_close(same.state_dict()[key], value)
    other = build_model("resnet18", weights=str(path), num_classes=5)  # its backbone, a new head
    assert other.fc.out_features == 5
    torch.testing.assert_close(other.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    with pytest.raises(ValueError, match="unknown model 'vgg16'"):
        build_model("vgg16")
    with pytest.raises(ValueError, match="unknown weights 'IMAGENET9K'"):
        build_model("resnet18", weights="IMAGENET9K")


def test_finetuned_from_a_checkpoint_keeps_or_replaces_the_head(tmp_path):
    torch.manual_seed(0)
    saved = build_model("finetuned", num_classes=3, freeze_features=False)
    path = save_checkpoint(tmp_path / "m.pt", saved, num_classes=3, class_names=["a", "b", "c"])
    model, description = load_model(checkpoint=path)
    assert model.class_names == ["a", "b", "c"] and description == f"ResNet50FineTuned from {path} (3 classes)"
    assert not model.layer1[0].conv1.weight.requires_grad  # ResNet50FineTuned's default: frozen
    start = build_model("finetuned", weights=path, num_classes=2, freeze_features=False, target_layer="layer3")
    assert start.fc.out_features == 2 and start.gradcam_target_layer == "layer3"
    torch.testing.assert_close(start.conv1.weight, saved.conv1.weight)


class _Wrapper(nn.Module):  # what DataParallel and DistributedDataParallel look like
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


class _Compiled(nn.Module):  # what torch.compile's OptimizedModule looks like
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._orig_mod = module


def test_unwrap_model_looks_through_ddp_and_compile_repeatedly(tmp_path):
    net = resnet18(weights=None, num_classes=2)
    assert unwrap_model(net) is net
    assert unwrap_model(nn.DataParallel(net)) is net
    compiled = torch.compile(net)  # an OptimizedModule: the network is ._orig_mod
    assert unwrap_model(compiled) is net
    assert unwrap_model(_Wrapper(torch.compile(_Wrapper(net)))) is net
    assert unwrap_model(torch.compile(_Wrapper(compiled))) is net
    assert unwrap_model(_Compiled(_Wrapper(_Compiled(net)))) is net
    saved = load_checkpoint(save_checkpoint(tmp_path / "c.pt", _Wrapper(compiled)))["state_dict"]
    assert set(saved) == set(net.state_dict())  # no module. or _orig_mod. prefixes


def test_freeze_backbone_keeps_only_the_head_trainable():
    net = freeze_backbone(nn.DataParallel(resnet18(weights=None)))
    trainable = {n for n, p in unwrap_model(net).named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    with pytest.raises(ValueError, match="no parameters under 'classifier'"):
        freeze_backbone(resnet18(weights=None), head="classifier")


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'; pass auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    with pytest.raises(RuntimeError, match="CUDA is not available; pass --device cpu"):
        resolve_device("cuda:0")
