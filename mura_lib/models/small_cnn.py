"""A small CNN that trains from scratch on a CPU in minutes: the bundled sample's model.

torchvision's smallest ResNet (resnet18, 11 M parameters, 0.6 GFLOPs at 128 px) learns the
synthetic sample too slowly on a 2-core CPU, and its ImageNet weights cannot be had offline.
This network keeps what matters for class activation maps (convolutional features, global
average pooling, one linear layer: the same ``features``/``classifier`` layout as torchvision's
DenseNet) at about a tenth of the cost. It exists for CPU demonstrations and tests; real MURA
runs use a torchvision architecture with ImageNet weights.
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
    """Five stages of 3x3 convolutions (widths 24-48-96-160-192), each halving the resolution,
    then global average pooling and a linear classifier.

    Args:
        in_chans: input channels (1 for radiographs; 3 for RGB).
        num_classes: outputs of the classifier.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000) -> None:
        super().__init__()
        widths = (24, 48, 96, 160, 192)
        layers, c_in = [], in_chans
        for width in widths:
            layers += [_conv_bn_relu(c_in, width, stride=2), _conv_bn_relu(width, width)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).amax(dim=(2, 3)))
