"""build_model: freezing presets, one-channel input conv, one-logit head, frozen BatchNorm."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from mura_lib.config import GRAY_MEAN, GRAY_STD
from mura_lib.errors import ConfigError
from mura_lib.models.build import (
    build_model,
    count_parameters,
    freeze_batchnorm_stats,
    resolve_trainable,
)
from mura_lib.models.checkpoint import save_checkpoint

pytest_plugins = ["fixtures_training"]  # one_torch_thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def fake_imagenet(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, torch.Tensor]]:
    """Serve a fresh torchvision model's state dict as 'ImageNet weights' (no network, no cache).

    Returns the dict of state dicts served, by architecture, so tests can compare with them.
    """
    served: dict[str, dict[str, torch.Tensor]] = {}

    def load(arch: str) -> dict[str, torch.Tensor]:
        torch.manual_seed(1)
        served[arch] = torchvision.models.get_model(arch, weights=None).state_dict()
        return served[arch]

    monkeypatch.setattr("mura_lib.models.pretrained.load_imagenet_state_dict", load)
    return served


def trainable_modules(model: torch.nn.Module) -> set[str]:
    """Top-level modules with at least one trainable parameter."""
    return {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}


def frozen_modules(model: torch.nn.Module) -> set[str]:
    return {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}


def test_resnet18_imagenet_preset_freezes_stem_and_layer1(fake_imagenet):
    model = build_model("resnet18", "imagenet")
    assert trainable_modules(model) == {"layer2", "layer3", "layer4", "fc"}
    assert frozen_modules(model) == {"conv1", "bn1", "layer1"}
    # every parameter of the trained modules trains, none of the frozen ones does
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith(("layer2", "layer3", "layer4", "fc"))
    counts = count_parameters(model)
    assert 0 < counts["trainable"] < counts["total"]


@pytest.mark.parametrize(
    ("arch", "weights", "trainable"),
    [
        ("resnet18", "none", "auto"),  # from scratch: freezing random layers only cripples
        ("resnet18", "imagenet", "all"),
        ("densenet169", "imagenet", "auto"),  # the paper fine-tunes everything
    ],
)
def test_presets_that_train_everything(fake_imagenet, arch, weights, trainable):
    model = build_model(arch, weights, trainable=trainable)
    assert all(p.requires_grad for p in model.parameters())
    assert resolve_trainable(arch, weights, trainable) is None


@pytest.mark.parametrize("trainable", [["layer4", "fc"], "layer4, fc", "layer4,fc,"])
def test_explicit_prefixes(trainable):
    model = build_model("resnet18", "none", trainable=trainable)
    assert trainable_modules(model) == {"layer4", "fc"}
    assert resolve_trainable("resnet18", "none", trainable) == ["layer4", "fc"]


def test_unknown_prefix_is_refused_with_the_module_names():
    with pytest.raises(ConfigError) as info:
        build_model("resnet18", "none", trainable=["layer4", "layer9"])
    message = str(info.value)
    assert "['layer9']" in message and "match no parameter" in message
    assert "'conv1'" in message and "'fc'" in message  # says what the choices are


@pytest.mark.parametrize("trainable", ["", " , ", []])
def test_empty_prefix_list_is_refused(trainable):
    # freezing everything would fail later in the optimizer with an unrelated message
    with pytest.raises(ConfigError, match="names no parameter prefix.*'all', 'auto'"):
        build_model("resnet18", "none", trainable=trainable)


def test_unknown_architecture_message():
    with pytest.raises(ConfigError) as info:
        build_model("resnet19")
    assert "unknown architecture 'resnet19'" in str(info.value)
    assert "torchvision classification model name" in str(info.value)


@pytest.mark.parametrize(
    ("arch", "conv"), [("resnet18", "conv1"), ("densenet121", "features.conv0")]
)
def test_one_channel_conv_sums_the_rgb_weights(fake_imagenet, arch, conv):
    model = build_model(arch, "imagenet")
    rgb = fake_imagenet[arch][f"{conv}.weight"]
    gray = model.get_submodule(conv).weight
    assert rgb.shape[1] == 3 and gray.shape == (rgb.shape[0], 1, *rgb.shape[2:])
    torch.testing.assert_close(gray, rgb.sum(dim=1, keepdim=True), rtol=0, atol=0)
    # so an image replicated into RGB gives the same response as the gray image
    x = torch.randn(2, 1, 32, 32)
    reference = torch.nn.functional.conv2d(x.expand(-1, 3, -1, -1), rgb, stride=2, padding=3)
    torch.testing.assert_close(torch.nn.functional.conv2d(x, gray, stride=2, padding=3), reference)


def test_three_channels_keep_the_pretrained_conv(fake_imagenet):
    model = build_model("resnet18", "imagenet", in_chans=3)
    torch.testing.assert_close(
        model.conv1.weight, fake_imagenet["resnet18"]["conv1.weight"], rtol=0, atol=0
    )


@pytest.mark.parametrize("arch", ["resnet18", "densenet121", "mobilenet_v3_small"])
def test_one_logit_per_image(arch):
    model = build_model(arch, "none").eval()
    with torch.no_grad():
        out = model(torch.randn(3, 1, 32, 32))
    assert out.shape == (3, 1)


def test_freeze_batchnorm_stats_keeps_frozen_running_stats(fake_imagenet):
    model = build_model("resnet18", "imagenet")
    frozen_bns = {"bn1": model.bn1, "layer1.0.bn1": model.layer1[0].bn1}
    trained_bn = model.layer2[0].bn1
    before = {n: (bn.running_mean.clone(), bn.running_var.clone()) for n, bn in frozen_bns.items()}
    trained_before = trained_bn.running_mean.clone()

    model.train()
    freeze_batchnorm_stats(model)
    model(torch.randn(4, 1, 32, 32) * 3 + 1)

    for name, bn in frozen_bns.items():
        assert not bn.training
        torch.testing.assert_close(bn.running_mean, before[name][0], rtol=0, atol=0)
        torch.testing.assert_close(bn.running_var, before[name][1], rtol=0, atol=0)
    assert trained_bn.training
    assert not torch.equal(trained_bn.running_mean, trained_before)


def _checkpoint_of(model: torch.nn.Module, arch: str, path: Path) -> Path:
    return save_checkpoint(
        {
            "model": model.state_dict(),
            "model_args": {"arch": arch, "in_chans": 1},
            "image_size": 32,
            "resize": "letterbox",
            "normalization": {"mean": [GRAY_MEAN], "std": [GRAY_STD]},
        },
        path,
    )


def test_weights_from_one_of_our_checkpoints(tmp_path):
    source = build_model("resnet18", "none")
    path = _checkpoint_of(source, "resnet18", tmp_path / "best.pt")
    model = build_model("resnet18", str(path), trainable="all")
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = _checkpoint_of(build_model("resnet18", "none"), "resnet18", tmp_path / "best.pt")
    with pytest.raises(ConfigError) as info:
        build_model("resnet34", str(path))
    assert str(path) in str(info.value) and "pass --arch resnet18" in str(info.value)
