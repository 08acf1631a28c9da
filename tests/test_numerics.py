"""Pinned CPU numerics: which runs are pinned, what a user's setting changes, what is recorded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mura_lib import numerics
from mura_lib.numerics import PINNED, SWITCH, cpu_numerics, pin, pinned_cpu_numerics, wants_pinning


@pytest.fixture
def avx2(monkeypatch):
    """A CPU with AVX2, whatever runs the tests."""
    monkeypatch.setattr(numerics, "cpu_has_avx2", lambda: True)


@pytest.mark.parametrize(
    ("device", "switch", "gpu", "expected"),
    [
        ("cpu", None, True, True),  # asked for the CPU on a GPU machine
        ("auto", None, False, True),  # a CPU machine
        ("auto", None, True, False),  # auto picks the GPU
        ("cuda", None, True, False),
        ("cpu", "0", False, False),  # the user's switch wins
        ("cuda", "1", True, True),
    ],
)
def test_cpu_runs_are_pinned_and_gpu_runs_not(monkeypatch, device, switch, gpu, expected):
    monkeypatch.setattr(numerics, "gpu_visible", lambda environ: gpu)
    environ = {} if switch is None else {SWITCH: switch}
    assert wants_pinning(device, environ) is expected


def test_a_value_the_user_set_wins(avx2):
    environ = {"MKL_CBWR": "COMPATIBLE", "CUDA_VISIBLE_DEVICES": ""}
    added = pin("auto", environ)
    assert environ["MKL_CBWR"] == "COMPATIBLE"
    assert added == {k: v for k, v in PINNED.items() if k != "MKL_CBWR"}
    assert cpu_numerics(environ)["pinned"] is False  # not the pinned numerics: recorded as such


def test_no_avx2_no_pinning(monkeypatch):
    """torch would run AVX2 code on the strength of ATEN_CPU_CAPABILITY alone."""
    monkeypatch.setattr(numerics, "cpu_has_avx2", lambda: False)
    environ = {"CUDA_VISIBLE_DEVICES": ""}
    assert pin("cpu", environ) == {} and environ == {"CUDA_VISIBLE_DEVICES": ""}


def test_cpu_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.setattr(numerics.platform, "machine", lambda: "x86_64")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n")
    assert numerics.cpu_has_avx2(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx\n")
    assert not numerics.cpu_has_avx2(cpuinfo)
    assert not numerics.cpu_has_avx2(tmp_path / "absent")


def test_gpu_visibility_follows_cuda_visible_devices(tmp_path):
    (tmp_path / "nvidia0").touch()
    assert numerics.gpu_visible({}, tmp_path)
    assert not numerics.gpu_visible({"CUDA_VISIBLE_DEVICES": ""}, tmp_path)
    assert not numerics.gpu_visible({"CUDA_VISIBLE_DEVICES": "-1"}, tmp_path)
    assert not numerics.gpu_visible({}, tmp_path / "no-devices")


def test_the_environment_is_restored_after_a_run(avx2, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)
    with pinned_cpu_numerics("cpu") as added:
        assert added == PINNED
        assert cpu_numerics()["pinned"] is True
    assert not set(PINNED) & set(os.environ)


def test_mura_pins_before_torch_is_imported(tmp_path):
    """The `mura` entry point sets the caps before any command imports torch, so that MKL,
    oneDNN and torch read them when they start."""
    script = (  # `mura describe` with a describe_mura that reports what torch found
        "import sys, types\n"
        "def describe_mura(root, **kwargs):\n"
        "    import os, torch\n"
        "    return f\"{os.environ.get('MKL_CBWR')} {torch.backends.cpu.get_cpu_capability()}\"\n"
        "fake = types.SimpleNamespace(describe_mura=describe_mura)\n"
        "sys.modules['mura_lib.data.describe'] = fake\n"
        "from mura_lib.cli import main\n"
        "sys.exit(main(['describe', '.']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in PINNED and k != SWITCH}
    env["CUDA_VISIBLE_DEVICES"] = ""
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    if numerics.cpu_has_avx2():
        assert out == ["AVX2,STRICT", "AVX2"]
    else:
        assert out[0] == "None"
