"""The background checkpoint writer: what it writes is the state at submit time, errors surface."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from gradcam_kit.models import checkpoint as checkpoint_module
from gradcam_kit.models.checkpoint import checkpoint_payload, load_checkpoint
from gradcam_kit.training.checkpointing import CheckpointWriter, save_epoch


def _model_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 8, 8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    return model, optimizer


def _step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    loss = model(torch.randn(2, 3, 8, 8)).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_a_payload_shares_no_tensor_with_the_model_or_the_optimizer():
    model, optimizer = _model_and_optimizer()
    _step(model, optimizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = optimizer.state_dict()["state"][0]["exp_avg"].clone()
    payload = checkpoint_payload(model, optimizer=optimizer.state_dict(), epoch=3, sizes=(4, 5))
    _step(model, optimizer)  # changes parameters, BN buffers and the moments in place
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    for key, value in payload["state_dict"].items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(payload["optimizer"]["state"][0]["exp_avg"], moments)
    assert payload["epoch"] == 3 and payload["sizes"] == (4, 5)


def test_save_epoch_in_the_background_writes_the_state_of_its_epoch(tmp_path, monkeypatch):
    model, optimizer = _model_and_optimizer()
    _step(model, optimizer)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    release = threading.Event()
    write = checkpoint_module.write_checkpoint

    def held_write(payload, path):  # the write starts only after training went on
        assert release.wait(10)
        return write(payload, path)

    monkeypatch.setattr(checkpoint_module, "write_checkpoint", held_write)
    writer = CheckpointWriter()
    save_epoch(
        tmp_path, model, {"epoch": 0, "num_classes": 2}, improved=True, optimizer=optimizer,
        scheduler=None, scaler=None, best=0.5, bad_epochs=0, history=[], writer=writer,
    )
    assert not (tmp_path / "last.pt").exists()
    _step(model, optimizer)  # the next epoch trains while the files are in flight
    release.set()
    writer.close()
    for name in ("best.pt", "last.pt"):
        saved = load_checkpoint(tmp_path / name)["state_dict"]
        assert saved.keys() == expected.keys()
        for key, value in saved.items():
            assert torch.equal(value, expected[key]), (name, key)
    assert "optimizer" in load_checkpoint(tmp_path / "last.pt")
    assert "optimizer" not in load_checkpoint(tmp_path / "best.pt")
    assert not list(tmp_path.glob("*.tmp"))


def test_a_failed_write_is_raised_by_close_and_by_the_next_submit(tmp_path):
    model, _ = _model_and_optimizer()
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    writer = CheckpointWriter()
    writer.submit([(blocker / "last.pt", checkpoint_payload(model))])
    with pytest.raises(RuntimeError, match="could not write a checkpoint"):
        writer.close()
    writer.close()  # the error is reported once; the writer stays usable
    writer.submit([(blocker / "best.pt", checkpoint_payload(model))])
    with pytest.raises(RuntimeError, match="could not write a checkpoint"):
        writer.submit([(tmp_path / "ok.pt", checkpoint_payload(model))])
    assert not (tmp_path / "ok.pt").exists()  # a submit that raised started nothing
    writer.submit([(tmp_path / "ok.pt", checkpoint_payload(model, epoch=1))])
    writer.close()
    assert load_checkpoint(tmp_path / "ok.pt")["epoch"] == 1


def test_save_epoch_without_a_writer_has_written_everything_when_it_returns(tmp_path):
    model, optimizer = _model_and_optimizer()
    save_epoch(
        tmp_path, model, {"epoch": 0}, improved=False, optimizer=optimizer, scheduler=None,
        scaler=None, best=0.0, bad_epochs=0, history=[],
    )
    assert (tmp_path / "last.pt").is_file() and not (tmp_path / "best.pt").exists()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 0
