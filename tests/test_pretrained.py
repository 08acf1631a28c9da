"""ImageNet weights: the hub cache, a clear error when offline, never random weights."""

from __future__ import annotations

import os
import re
import socket
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from mura_lib.errors import WeightsUnavailableError
from mura_lib.models import pretrained
from mura_lib.models.build import build_model
from mura_lib.models.pretrained import imagenet_weights_path, load_imagenet_state_dict

RESNET18_FILE = "resnet18-f37072fd.pth"  # basename of torchvision's DEFAULT resnet18 URL


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub under tmp_path (TORCH_HOME); returns its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case someone called set_dir
    return tmp_path / "hub" / "checkpoints"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Make every download fail as on a machine without network; records the attempts."""
    attempts: list[tuple[str, str]] = []

    def fail(url: str, dst: str, *args, **kwargs) -> None:
        attempts.append((url, dst))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return attempts


def resnet18_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_expected_path_is_torchvisions_cache_file(hub):
    url, path = imagenet_weights_path("resnet18")
    assert url.endswith("/" + RESNET18_FILE)
    assert path == hub / RESNET18_FILE


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
        OSError(101, "Network is unreachable"),
        TimeoutError("timed out"),
    ],
)
def test_offline_raises_at_once_naming_the_file_and_the_way_out(hub, monkeypatch, error):
    attempts = []

    def fail(url, dst, *args, **kwargs):
        attempts.append((url, dst))
        raise error

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    timeout_before = socket.getdefaulttimeout()
    with pytest.raises(WeightsUnavailableError) as info:
        load_imagenet_state_dict("resnet18")
    message = str(info.value)
    expected = hub / RESNET18_FILE
    assert f"expected file: {expected}" in message
    assert "--weights none" in message and "TORCH_HOME" in message
    assert "resnet18" in message and str(error) in message
    assert attempts == [(imagenet_weights_path("resnet18")[0], str(expected))]  # one try
    assert not expected.exists()
    assert socket.getdefaulttimeout() == timeout_before  # the download timeout is undone


def test_build_model_never_falls_back_to_random_weights(hub, offline):
    with pytest.raises(WeightsUnavailableError, match="--weights none"):
        build_model("resnet18", "imagenet")
    assert len(offline) == 1


def test_cached_file_loads_without_download(hub, offline):
    hub.mkdir(parents=True)
    saved = resnet18_state_dict()
    torch.save(saved, hub / RESNET18_FILE)

    loaded = load_imagenet_state_dict("resnet18")
    assert offline == []
    assert loaded.keys() == saved.keys()
    for key, value in saved.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)

    model = build_model("resnet18", "imagenet")  # the pretrained layers are the cached ones
    torch.testing.assert_close(model.layer3[1].conv2.weight, saved["layer3.1.conv2.weight"])
    assert offline == []


def test_download_writes_the_cache_then_loads_it(hub, monkeypatch):
    saved = resnet18_state_dict()

    def download(url, dst, *args, **kwargs):
        torch.save(saved, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    loaded = load_imagenet_state_dict("resnet18")
    assert (hub / RESNET18_FILE).is_file()
    torch.testing.assert_close(loaded["fc.weight"], saved["fc.weight"], rtol=0, atol=0)


@pytest.mark.parametrize("content", [b"", b"<html>proxy login</html>", b"PK\x03\x04trunc"])
def test_corrupt_cached_file_says_which_and_what_to_do(hub, offline, content):
    hub.mkdir(parents=True)
    (hub / RESNET18_FILE).write_bytes(content)
    with pytest.raises(WeightsUnavailableError) as info:
        load_imagenet_state_dict("resnet18")
    message = str(info.value)
    assert str(hub / RESNET18_FILE) in message
    assert "cannot be read" in message and "delete it and run again" in message
    assert offline == []  # a present file is never silently replaced


class _RunsCode:
    """Unpickling this calls os.mkdir: a weights file that carries code, made visible."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_weights_file_that_carries_code_is_refused_unrun(hub, offline, tmp_path):
    hub.mkdir(parents=True)
    marker = tmp_path / "the code ran"
    torch.save({"fc.weight": torch.zeros(1), "extra": _RunsCode(marker)}, hub / RESNET18_FILE)
    with pytest.raises(WeightsUnavailableError, match="holds code or objects, not only tensors"):
        load_imagenet_state_dict("resnet18")
    assert not marker.exists()


def test_legacy_densenet_keys_are_renamed(hub, offline):
    """torchvision's DenseNet files use the old "norm.1" names; the model wants "norm1"."""
    torch.manual_seed(3)
    current = torchvision.models.densenet121(weights=None).state_dict()
    # as in the real files: old names, and no num_batches_tracked (older than that buffer)
    legacy = {
        re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key): value
        for key, value in current.items()
        if not key.endswith("num_batches_tracked")
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    _, path = imagenet_weights_path("densenet121")
    hub.mkdir(parents=True)
    torch.save(legacy, path)

    model = build_model("densenet121", "imagenet", in_chans=3)
    torch.testing.assert_close(
        model.features.denseblock4.denselayer16.conv2.weight,
        current["features.denseblock4.denselayer16.conv2.weight"],
        rtol=0,
        atol=0,
    )


def test_architecture_without_weights(hub):
    with pytest.raises(WeightsUnavailableError, match="no ImageNet weights for 'not_a_model'"):
        imagenet_weights_path("not_a_model")


def test_download_timeout_is_bounded():
    # an offline machine fails on DNS at once; a firewalled one must not hang for minutes
    assert 0 < pretrained.DOWNLOAD_TIMEOUT_S <= 60
