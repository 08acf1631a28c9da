"""Checkpoints: plain dicts loadable with weights_only=True, atomic saves, clear load errors."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

from mura_lib.config import GRAY_MEAN, GRAY_STD
from mura_lib.errors import CheckpointError, DiskFullError
from mura_lib.models.build import build_model, model_from_checkpoint
from mura_lib.models.checkpoint import FORMAT, load_checkpoint, save_checkpoint, to_cpu

pytest_plugins = ["fixtures_training"]  # one_torch_thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(one_torch_thread) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet18", "none")
    # non-trivial BatchNorm buffers, so the round trip has to carry them
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 1, 32, 32))
    return model.eval()


def make_checkpoint(model: torch.nn.Module, threshold: float = 0.4) -> dict:
    return {
        "model": model.state_dict(),
        "model_args": {"arch": "resnet18", "in_chans": 1, "trainable": None},
        "image_size": 32,
        "resize": "letterbox",
        "normalization": {"mean": [GRAY_MEAN], "std": [GRAY_STD]},
        "threshold": threshold,
        "threshold_rule": "max_kappa",
        "history": [{"epoch": 1, "val_loss": 0.5, "study_auroc": None}],
        "epoch": 0,
    }


def tensors_of(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensors_of(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors_of(v)]
    return []


def test_round_trip_is_a_plain_dict_of_cpu_tensors(tmp_path, model):
    path = save_checkpoint(make_checkpoint(model), tmp_path / "run" / "best.pt")
    raw = torch.load(path, weights_only=True)  # no unpickling of arbitrary objects
    assert type(raw) is dict and raw["format"] == FORMAT
    assert raw["threshold"] == 0.4 and raw["history"][0]["study_auroc"] is None
    tensors = tensors_of(raw)
    assert len(tensors) == len(model.state_dict())
    assert all(t.device.type == "cpu" for t in tensors)

    rebuilt = model_from_checkpoint(load_checkpoint(path))
    assert not rebuilt.training
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_checkpoint_of_a_cuda_model_loads_on_a_cpu_only_machine(tmp_path, model):
    cuda_model = copy.deepcopy(model).cuda()
    path = save_checkpoint(make_checkpoint(cuda_model), tmp_path / "best.pt")
    raw = torch.load(path, weights_only=True)  # no map_location: the file itself is on CPU
    assert all(t.device.type == "cpu" for t in tensors_of(raw))


def test_to_cpu_keeps_the_structure():
    value = {"a": [torch.ones(2, requires_grad=True), (1, "x")], "b": {"c": torch.zeros(1)}}
    moved = to_cpu(value)
    assert isinstance(moved["a"], list) and moved["a"][1] == (1, "x")
    assert not moved["a"][0].requires_grad  # detached: nothing of the graph is saved


@pytest.mark.parametrize("interrupt", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_interrupted_save_keeps_the_previous_file(tmp_path, model, monkeypatch, interrupt):
    path = save_checkpoint(make_checkpoint(model, threshold=0.3), tmp_path / "last.pt")
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:  # leave a truncated file where it was writing
            handle.truncate(100)
        raise interrupt

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    # a full disk is said in one line naming the folder; Ctrl-C passes through
    expected = DiskFullError if isinstance(interrupt, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as info:
        save_checkpoint(make_checkpoint(model, threshold=0.9), path)
    monkeypatch.undo()
    if expected is DiskFullError:
        assert f"no space left on the device of {tmp_path} while writing the checkpoint" in str(
            info.value
        )

    assert load_checkpoint(path)["threshold"] == 0.3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left


def test_save_refuses_an_incomplete_checkpoint(tmp_path, model):
    checkpoint = make_checkpoint(model)
    del checkpoint["normalization"]
    with pytest.raises(ValueError, match="lacks \\['normalization'\\]"):
        save_checkpoint(checkpoint, tmp_path / "best.pt")
    assert not (tmp_path / "best.pt").exists()


def _garbage(path: Path, model: torch.nn.Module) -> None:
    path.write_bytes(b"GIF89a not a checkpoint at all")


def _foreign_dict(path: Path, model: torch.nn.Module) -> None:
    torch.save({"epoch": 3, "model_state": model.state_dict()}, path)


def _bare_state_dict(path: Path, model: torch.nn.Module) -> None:
    torch.save(model.state_dict(), path)


def _pickled_module(path: Path, model: torch.nn.Module) -> None:
    torch.save(torch.nn.Linear(2, 1), path)  # the original project's habit: a pickled object


def _incomplete(path: Path, model: torch.nn.Module) -> None:
    checkpoint = {"format": FORMAT, **make_checkpoint(model)}
    del checkpoint["image_size"], checkpoint["resize"]
    torch.save(checkpoint, path)


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (None, "does not exist: train one with `python -m mura_lib train`"),
        (_garbage, "is not a readable checkpoint"),
        (
            _pickled_module,
            "holds code or objects, not only tensors (torch.nn.modules.linear.Linear)",
        ),
        (_foreign_dict, f"is not a {FORMAT} checkpoint (a bare state dict or another project"),
        (_bare_state_dict, f"is not a {FORMAT} checkpoint"),
        (_incomplete, "lacks ['image_size', 'resize']: it is incomplete, retrain"),
    ],
)
def test_load_errors_name_the_file_and_the_fix(tmp_path, model, write, expected):
    path = tmp_path / "model.pt"
    if write is not None:
        write(path, model)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


class _RunsCode:
    """Unpickling this calls os.mkdir: what a malicious "checkpoint" carries, made visible."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_file_that_carries_code_is_refused_unrun(tmp_path, model):
    path, marker = tmp_path / "evil.pt", tmp_path / "the code ran"
    torch.save({"format": FORMAT, **make_checkpoint(model), "extra": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert not marker.exists()
    message = str(info.value)
    assert f"{path} holds code or objects, not only tensors ({os.name}.mkdir)" in message
    assert "Do not load it with weights_only=False: that would run code" in message
    assert "\n" not in message
    # nothing of torch's own advice, which says to retry with weights_only=False
    for hint in ("will likely succeed", "add_safe_globals", "In PyTorch 2.6", "WeightsUnpickler"):
        assert hint not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_cli_refuses_a_code_carrying_ensemble_member(tmp_path, model, capsys):
    from mura_lib.cli import main
    from mura_lib.disk import sha256_file
    from mura_lib.inference.ensemble import MANIFEST_FORMAT

    member = tmp_path / "evil.pt"
    marker = tmp_path / "the code ran"
    torch.save({"format": FORMAT, **make_checkpoint(model), "extra": _RunsCode(marker)}, member)
    manifest = tmp_path / "ens.json"
    manifest.write_text(
        json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "members": [{"path": "evil.pt", "sha256": sha256_file(member)}],
            }
        )
    )
    assert main(["predict", "--checkpoint", str(manifest), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "holds code or objects, not only tensors" in err and err.count("\n") == 1
    assert not marker.exists()
