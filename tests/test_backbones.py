"""Backbones from torchvision, timm and a researcher's own module: build, weights, errors, and
`mura train` / `evaluate` / `predict --cam` end to end for each source."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mura_lib.cli import main
from mura_lib.errors import CheckpointError, ConfigError, WeightsUnavailableError
from mura_lib.models.backbones import arch_source, check_output, create_backbone
from mura_lib.models.build import build_model, model_from_checkpoint
from mura_lib.models.checkpoint import load_checkpoint

pytest_plugins = ["fixtures_training"]  # tiny_tree, shared_cache_dir, one_torch_thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")

MYMODELS = '''
from torch import nn


def tiny_cnn():
    """Two convolutions, global average pooling and one logit."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1),
    )


def not_a_model():
    return "a string"


def two_logits():
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))


def broken():
    raise ValueError("depth must be positive")
'''


@pytest.fixture
def mymodels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module of the researcher's own, ``mymodels.py``, in a folder on PYTHONPATH."""
    folder = tmp_path / "own"
    folder.mkdir()
    (folder / "mymodels.py").write_text(MYMODELS)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)  # each test imports its own
    monkeypatch.setenv("PYTHONPATH", str(folder))  # for the subprocesses of the CLI tests
    return folder / "mymodels.py"


@pytest.mark.parametrize(
    ("arch", "source"),
    [
        ("resnet18", "torchvision"),
        ("efficientnet_b0", "torchvision"),
        ("timm/resnet10t", "timm"),
        ("mymodels:tiny_cnn", "module"),
        ("small_cnn", "module"),  # the project's own factory, by its short name
    ],
)
def test_arch_names_their_source(arch, source):
    assert arch_source(arch) == source


@pytest.mark.parametrize("arch", ["timm/resnet10t", "mymodels:tiny_cnn", "convnext_tiny"])
def test_every_source_gives_one_channel_and_one_logit(mymodels, arch):
    model = build_model(arch, "none").eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 32, 32)).shape == (3, 1)


@pytest.mark.parametrize(
    ("arch", "trainable", "trains"),
    [
        ("timm/resnet10t", "layer4,fc", ("layer4", "fc")),
        ("mymodels:tiny_cnn", "6", ("6",)),  # the Linear of the Sequential above
    ],
)
def test_freezing_by_prefix_for_every_source(mymodels, arch, trainable, trains):
    model = build_model(arch, "none", trainable=trainable)
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith(trains), name


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("timm/resnet_does_not_exist", "timm has no model 'resnet_does_not_exist'"),
        ("nomodule:tiny_cnn", "cannot import 'nomodule': put nomodule.py in the project root"),
        ("mymodels:nothing", "defines no callable 'nothing'"),
        ("mymodels:not_a_model", "the factory returned a str, not a torch nn.Module"),
        ("resnet19", "unknown architecture 'resnet19'"),
    ],
)
def test_bad_arch_names_say_what_to_do(mymodels, arch, message):
    with pytest.raises(ConfigError, match=message):
        build_model(arch, "none")


@pytest.mark.parametrize(
    ("source", "arch", "message"),
    [
        (
            "def tiny_cnn(:\n",
            "badsyntax:tiny_cnn",
            r"importing badsyntax failed \(.*badsyntax.py:1\): SyntaxError",
        ),
        (
            "import not_installed_lib\n",
            "badimport:f",
            r"importing badimport failed \(.*badimport.py:1\): ModuleNotFoundError",
        ),
        (
            None,
            "mymodels:broken",
            r"its factory failed \(.*mymodels.py:\d+\): ValueError: depth must be positive",
        ),
    ],
)
def test_errors_in_own_code_are_one_line_naming_the_file(mymodels, source, arch, message):
    if source is not None:
        module = arch.partition(":")[0]
        (mymodels.parent / f"{module}.py").write_text(source)
        sys.modules.pop(module, None)
    with pytest.raises(ConfigError, match=message) as info:
        build_model(arch, "none")
    assert "\n" not in str(info.value)


def test_a_factory_of_the_wrong_shape_is_refused_before_training(mymodels):
    model = build_model("mymodels:two_logits", "none")
    with pytest.raises(ConfigError, match=r"to \(2, 2\), not to \(2, 1\) logits"):
        check_output(model, "mymodels:two_logits", 32)


def test_own_factories_have_no_imagenet_weights(mymodels):
    with pytest.raises(ConfigError, match="has no ImageNet weights: use --weights none"):
        create_backbone("mymodels:tiny_cnn", pretrained=True)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, and no network."""
    import huggingface_hub

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def offline(*_args, **_kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(socket, "create_connection", offline)
    return cache


def test_timm_weights_offline_are_one_clear_error(hf_cache):
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("timm/resnet10t", "imagenet")
    message = str(info.value)
    assert "\n" not in message and "timm/resnet10t.c3_in1k" in message
    assert str(hf_cache) in message and "--weights none" in message


def test_timm_weights_come_from_the_hugging_face_cache(hf_cache):
    """A cached file is loaded by timm, which sums the first convolution's RGB filters."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    served = timm.create_model("resnet10t").state_dict()
    repo = hf_cache / "models--timm--resnet10t.c3_in1k"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    save_file(served, repo / "snapshots" / "abc" / "model.safetensors")

    model = build_model("timm/resnet10t", "imagenet", trainable="all")
    stem = served["conv1.0.weight"]
    torch.testing.assert_close(model.conv1[0].weight, stem.sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.layer4[0].conv1.weight, served["layer4.0.conv1.weight"])
    assert model.fc.out_features == 1


def rgb_film(path: Path) -> Path:
    """A 512 x 420 RGB film (wider than high), as a real radiograph export can be."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (420, 512, 3), dtype=np.uint8), "RGB").save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch", ["efficientnet_b0", "convnext_tiny", "timm/resnet10t", "mymodels:tiny_cnn"]
)
def test_train_evaluate_predict_with_cams_for_every_source(
    tmp_path, tiny_tree, shared_cache_dir, mymodels, capsys, arch
):
    run, film = tmp_path / "run", rgb_film(tmp_path / "film.png")
    common = ["--cache-dir", str(shared_cache_dir)]
    assert main([
        "train", "--data", str(tiny_tree), "--out", str(run), "--arch", arch,
        "--epochs", "1", "--image-size", "32", "--batch-size", "16", "--device", "cpu",
        *common,
    ]) == 0  # fmt: skip
    assert main([
        "evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(tiny_tree),
        "--out", str(tmp_path / "eval"), "--n-boot", "10", "--device", "cpu", *common,
    ]) == 0  # fmt: skip
    capsys.readouterr()
    cams = tmp_path / "cams"
    assert main([
        "predict", "--checkpoint", str(run / "best.pt"), str(film), "--cam", str(cams),
        "--device", "cpu",
    ]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out.strip())
    assert 0 <= result["prob"] <= 1
    (overlay,) = cams.iterdir()
    assert Image.open(overlay).size == (512, 420)  # the film's own size

    args = load_checkpoint(run / "best.pt")["model_args"]
    assert args["arch"] == arch and args["source"] == arch_source(arch)
    if args["source"] == "module":
        assert args["file"] == str(mymodels)


def test_a_checkpoint_whose_module_is_gone_names_its_file(tmp_path, mymodels, monkeypatch):
    ckpt = {
        "model": build_model("mymodels:tiny_cnn").state_dict(),
        "model_args": {"arch": "mymodels:tiny_cnn", "in_chans": 1, "file": str(mymodels)},
    }
    monkeypatch.delitem(sys.modules, "mymodels")
    mymodels.unlink()
    with pytest.raises(CheckpointError, match=f"trained with {mymodels}.*cannot import"):
        model_from_checkpoint(ckpt)
