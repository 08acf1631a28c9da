"""Code version and git state recorded in checkpoints and run manifests."""

from mura_lib import __version__, provenance


def test_code_version_names_the_package_version():
    assert provenance.code_version().startswith(f"{__version__}+")


def test_without_git_the_version_says_unknown(monkeypatch):
    monkeypatch.setattr(provenance, "git", lambda *args: "")
    assert provenance.code_version() == f"{__version__}+unknown"
    assert provenance.git_state() == {"commit": "unknown", "dirty": False}
