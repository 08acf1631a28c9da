"""A small CNN that trains from scratch on a CPU in minutes: the bundled sample's model.

torchvision's smallest ResNet (resnet18, 11 M parameters, 0.6 GFLOPs at 128 px) learns the
synthetic sample too slowly on a 2-core CPU, and its ImageNet weights cannot be had offline.
This network costs about a tenth of that. It exists for CPU demonstrations and tests; real
MURA runs use a torchvision architecture with ImageNet weights.

Two choices make it learn radiographic findings quickly:
- it downsamples by max pooling, not strided convolutions, so a thin bright or dark line
  (a fracture gap, a wire, a cortical break) survives to the deeper layers;
- it pools its last feature maps with a global max: a finding occupies a few cells of the
  map, and averaging over a whole film would dilute it.
It is built by the entry point :func:`small_cnn` (``arch: small_cnn``), as a researcher's own
factory would be (:mod:`mura_lib.models.backbones`).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A strided 3x3 stem, then 3x3 convolutions of widths 32-64-128 each followed by a 2x2
    max pool, a last 3x3 convolution (128), global max pooling and a linear classifier.
    The last feature maps are 1/16 of the input side (8 x 8 at 128 px).

    Args:
        in_chans: input channels (1 for radiographs; 3 for RGB).
        num_classes: outputs of the classifier.
    """

    def __init__(self, in_chans: int = 1, num_classes: int = 1) -> None:
        super().__init__()
        layers, c_in = [_conv_bn_relu(in_chans, 16, stride=2)], 16
        for width in (32, 64, 128):
            layers += [_conv_bn_relu(c_in, width), nn.MaxPool2d(2)]
            c_in = width
        layers.append(_conv_bn_relu(c_in, 128))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).amax(dim=(2, 3)))


def small_cnn() -> SmallCNN:
    """The sample's model: one input channel, one logit."""
    return SmallCNN(in_chans=1, num_classes=1)
