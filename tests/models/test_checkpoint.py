"""Checkpoints and weights: formats, safety, clear errors, offline behaviour."""

from __future__ import annotations

import pytest
import torch
import torchvision

import gradcam_kit.models.checkpoint as checkpoint
from gradcam_kit.models.checkpoint import load_checkpoint, save_checkpoint
from resnet50 import ResNet50FineTuned


@pytest.fixture(scope="module")
def trained_state(shared_model) -> dict[str, torch.Tensor]:
    """A state_dict whose head differs from a fresh model's (so loading is observable)."""
    state = {k: v.clone() for k, v in shared_model.state_dict().items()}
    state["fc.weight"] = torch.linspace(-1, 1, state["fc.weight"].numel()).view_as(state["fc.weight"])
    state["fc.bias"] = torch.tensor([0.25, -0.5])
    return state


def assert_loaded(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert set(own) == set(state)
    for key, value in state.items():
        assert torch.equal(own[key], value), key


def test_state_dict_keys_do_not_depend_on_hooks(fresh_model):
    fresh_model.enable_gradcam_mode()
    with_hooks = list(fresh_model.state_dict())
    fresh_model.disable_gradcam_mode()
    without = list(fresh_model.state_dict())
    plain = list(torchvision.models.resnet50(weights=None, num_classes=2).state_dict())
    assert with_hooks == without == plain


@pytest.mark.parametrize(("saved_on", "loaded_on"), [(True, False), (False, True)])
def test_checkpoint_round_trip_across_gradcam_modes(
    tmp_path, trained_state, saved_on, loaded_on, build_model
):
    source = build_model(enable_gradcam=saved_on)
    source.load_state_dict(trained_state)
    path = save_checkpoint(tmp_path / "best.pt", source, num_classes=2, class_names=["NORMAL", "PNEUMONIA"])
    loaded = ResNet50FineTuned.from_checkpoint(path, enable_gradcam=loaded_on)
    assert loaded.gradcam_enabled is loaded_on
    assert loaded.class_names == ["NORMAL", "PNEUMONIA"]
    assert_loaded(loaded, trained_state)
    # The same file also loads strictly into a plain torchvision resnet50 with that head.
    plain = torchvision.models.resnet50(weights=None, num_classes=2)
    plain.load_state_dict(load_checkpoint(path)["state_dict"], strict=True)
    assert_loaded(plain, trained_state)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_from_checkpoint_reads_the_head_size_from_the_weights(tmp_path, trained_state, prefix):
    three = {**trained_state, "fc.weight": torch.zeros(3, 2048), "fc.bias": torch.zeros(3)}
    torch.save({"model": {prefix + k: v for k, v in three.items()}}, tmp_path / "three.pth")
    model = ResNet50FineTuned.from_checkpoint(tmp_path / "three.pth")
    assert model.fc.out_features == 3
    assert_loaded(model, three)
    assert not model.layer1[0].conv1.weight.requires_grad  # freeze_features default holds
    same = ResNet50FineTuned.from_checkpoint(tmp_path / "three.pth", num_classes=3)
    assert same.fc.out_features == 3
    with pytest.raises(ValueError, match=r"three\.pth.*pass num_classes=3"):
        ResNet50FineTuned.from_checkpoint(tmp_path / "three.pth", num_classes=2)


@pytest.mark.parametrize(
    "layout",
    ["plain", "state_dict", "model_state_dict", "model", "params", "module.", "nested module."],
)
def test_checkpoint_layouts(tmp_path, trained_state, layout):
    state = trained_state
    if layout.endswith("module."):
        state = {f"module.{k}": v for k, v in state.items()}
    if layout == "plain" or layout == "module.":
        payload = state
    elif layout == "nested module.":
        payload = {"epoch": 3, "model_state_dict": state, "optimizer": {"lr": 0.1}}
    else:
        payload = {layout: state, "epoch": 7}
    path = tmp_path / f"{layout.replace('.', '_').replace(' ', '_')}.pt"
    torch.save(payload, path)
    model = ResNet50FineTuned(num_classes=2, weights=path)
    assert_loaded(model, trained_state)


def test_mismatched_head_names_the_file_and_the_class_counts(tmp_path, trained_state):
    path = tmp_path / "two_classes.pt"
    torch.save({"state_dict": trained_state}, path)
    with pytest.raises(ValueError, match=r"two_classes\.pt") as info:
        ResNet50FineTuned(num_classes=3, weights=path)
    message = str(info.value)
    assert "fc.weight: checkpoint (2, 2048) vs model (3, 2048)" in message
    assert "pass num_classes=2" in message


def test_missing_keys_are_named(tmp_path, trained_state):
    partial = {k: v for k, v in trained_state.items() if not k.startswith("layer4.")}
    path = tmp_path / "partial.pt"
    torch.save(partial, path)
    with pytest.raises(ValueError, match=r"partial\.pt.*missing keys, e\.g\. \['layer4\."):
        ResNet50FineTuned(num_classes=2, weights=path)


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*corrupt\.pt"):
        ResNet50FineTuned(num_classes=2, weights=path)
    truncated = tmp_path / "truncated.pt"
    torch.save({"fc.bias": torch.zeros(2)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"truncated\.pt"):
        load_checkpoint(truncated)


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint file at .*absent\.pt"):
        ResNet50FineTuned.from_checkpoint(tmp_path / "absent.pt")


class _Payload:
    """Pickles into a call of ``exec``: what a malicious checkpoint would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_loading_never_executes_pickled_code(tmp_path, trained_state):
    marker = tmp_path / "executed"
    path = tmp_path / "malicious.pt"
    torch.save({"state_dict": trained_state, "extra": _Payload(str(marker))}, path)
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*malicious\.pt"):
        ResNet50FineTuned(num_classes=2, weights=path)
    assert not marker.exists(), "torch.load ran code from the checkpoint (weights_only is off)"
    # The control: an unrestricted load does run it, so the check above is meaningful.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


def test_non_dict_checkpoint_is_explained(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match=r"tensor\.pt holds a Tensor, not a state_dict"):
        load_checkpoint(path)


def test_offline_default_weights_fail_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    asked: list[str] = []

    def unreachable(url: str, timeout: float = 3.0) -> str:
        asked.append(url)
        return "download.pytorch.org is unreachable (test)"

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(checkpoint, "_reachable", unreachable)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(RuntimeError) as info:
        ResNet50FineTuned(num_classes=2)  # weights="DEFAULT"
    message = str(info.value)
    weights = torchvision.models.ResNet50_Weights.DEFAULT
    cache = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    assert str(cache) in message
    assert weights.url in message
    assert "weights=None" in message
    assert asked == [weights.url]  # checked once, answered without touching the network


def test_cached_default_weights_are_loaded_without_the_network(tmp_path, monkeypatch, shared_model):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet50_Weights.DEFAULT
    cache = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    cache.parent.mkdir(parents=True)
    backbone = torchvision.models.resnet50(weights=None)
    backbone.load_state_dict(
        {k: v for k, v in shared_model.state_dict().items() if not k.startswith("fc.")}
        | {"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    )
    torch.save(backbone.state_dict(), cache)

    def must_not_be_called(url: str, timeout: float = 3.0) -> str:
        raise AssertionError("the network was checked although the weights are cached")

    monkeypatch.setattr(checkpoint, "_reachable", must_not_be_called)
    # The file is not the real one, so the hash check must be skipped for this test.
    monkeypatch.setattr(
        torchvision.models.ResNet50_Weights,
        "get_state_dict",
        lambda self, progress=True, check_hash=True: torch.load(cache, weights_only=True),
    )
    model = ResNet50FineTuned(num_classes=2)
    torch.testing.assert_close(model.conv1.weight, shared_model.conv1.weight)
    assert model.fc.out_features == 2


@pytest.mark.parametrize("name", ["DEFAULT", "IMAGENET1K_V1", "ResNet50_Weights.IMAGENET1K_V2"])
def test_weights_names_win_over_files_of_that_name(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / name).write_bytes(b"not a checkpoint")  # a stray file called like the weights
    monkeypatch.setattr(checkpoint, "_reachable", lambda url, timeout=3.0: "offline (test)")
    with pytest.raises(RuntimeError, match=r"torchvision weights ResNet50_Weights\.IMAGENET1K_V"):
        ResNet50FineTuned(num_classes=2, weights=name)


@pytest.mark.parametrize("weights", ["IMAGENET1K_V3", "my_model", 3])
def test_unknown_weights_are_rejected_with_the_choices(weights):
    with pytest.raises(ValueError, match=rf"unknown weights {weights!r}: pass None .*'DEFAULT'"):
        ResNet50FineTuned(num_classes=2, weights=weights)
