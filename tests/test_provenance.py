"""Code version and git state recorded in checkpoints and run manifests."""

import torch

from mura_lib import __version__, provenance


def test_code_version_names_the_package_version():
    assert provenance.code_version().startswith(f"{__version__}+")


def test_without_git_the_version_says_unknown(monkeypatch):
    monkeypatch.setattr(provenance, "git", lambda *args: "")
    assert provenance.code_version() == f"{__version__}+unknown"
    assert provenance.git_state() == {"commit": "unknown", "dirty": False}


def test_cpu_state_names_the_kind_of_cpu_from_the_first_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    first = "processor\t: 0\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC 9R14\n"
    cpuinfo.write_text(first + "\nprocessor\t: 1\nmodel name\t: something else\n")
    state = provenance.cpu_state(cpuinfo)
    assert state["model_name"] == "AMD EPYC 9R14"
    assert state["family_model"] == "25/17"
    assert state["capability"] == torch.backends.cpu.get_cpu_capability()  # AVX2, AVX512, ...


def test_cpu_state_without_cpuinfo_still_gives_the_vector_capability(tmp_path):
    state = provenance.cpu_state(tmp_path / "absent")
    assert state == {
        "model_name": "unknown",
        "family_model": "?/?",
        "capability": torch.backends.cpu.get_cpu_capability(),
    }
