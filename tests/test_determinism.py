"""The deterministic switch: it sets torch's, cuDNN's and cuBLAS's flags for a run and puts
torch's back afterwards (checked on the CPU: the flags are process state, set before any GPU
work)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mura_lib.errors import ConfigError
from mura_lib.training import determinism
from mura_lib.training.config import TrainConfig, field_docs
from mura_lib.training.determinism import CUBLAS_VARIABLE, deterministic_algorithms


def _flags() -> tuple:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )


def test_the_switch_sets_the_flags_and_restores_them(monkeypatch):
    monkeypatch.delenv(CUBLAS_VARIABLE, raising=False)
    before = _flags()
    with deterministic_algorithms(True):
        assert _flags() == (True, False, True)
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert determinism.os.environ[CUBLAS_VARIABLE] == ":4096:8"
    assert _flags() == before
    # left set: a second run in the same process starts CUDA's work alike
    assert determinism.os.environ[CUBLAS_VARIABLE] == ":4096:8"


def test_off_changes_nothing(monkeypatch):
    monkeypatch.delenv(CUBLAS_VARIABLE, raising=False)
    before = _flags()
    with deterministic_algorithms(False):
        assert _flags() == before
    assert CUBLAS_VARIABLE not in determinism.os.environ


def test_flags_are_restored_when_the_run_fails(monkeypatch):
    monkeypatch.setenv(CUBLAS_VARIABLE, ":4096:8")
    before = _flags()
    with pytest.raises(RuntimeError), deterministic_algorithms(True):
        raise RuntimeError("a failing run")
    assert _flags() == before


def test_too_late_for_cublas_is_one_line(monkeypatch):
    monkeypatch.delenv(CUBLAS_VARIABLE, raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(ConfigError, match="restart the kernel"), deterministic_algorithms(True):
        pass


def test_deterministic_is_a_documented_training_parameter_off_by_default():
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}["deterministic"]
    assert field.default is False
    assert "GPU" in field_docs()["deterministic"]
    assert "--deterministic" in TrainConfig(deterministic=True).to_argv()
