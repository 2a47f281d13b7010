"""Wide ResNets for CIFAR-sized inputs: wrn16_8, wrn28_2, wrn28_10.

Structure (parameter names as in the published Co-Mixup code, so its weights load): 3x3 stem
``conv1`` with 16 channels (stride ``stride``), three stages ``layer1..layer3`` of
(depth - 4) / 6 pre-activation wide basic blocks each, widths 16k, 32k, 64k (k = widen factor) and
strides 1, 2, 2, then ``bn1``-ReLU, global average pool and ``linear``. Convolutions carry biases,
as in the published code. The width is fixed by the architecture name: there is no
``initial_channels``.

Like the published code, a block puts its stride on the second convolution and its projection
shortcut (1x1 conv, where the shape changes) reads the raw block input. ``dropout=True`` applies
dropout with p=0.3 inside every block, between the two convolutions, as in the WRN paper.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .mixable import MixableClassifier, check_model_args

BLOCK_DROPOUT_P = 0.3
"""Dropout probability inside every wide block when a model is built with ``dropout=True``."""


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3 (strided), plus shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout_p: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout: nn.Module = nn.Dropout(dropout_p) if dropout_p > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=True)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=True))

    def forward(self, x: Tensor) -> Tensor:
        """Block output, same batch size; channels ``planes``, spatial size divided by stride."""
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        residual = self.shortcut(x) if self.shortcut is not None else x
        return out + residual


class WideResNet(MixableClassifier):
    """WRN-depth-k for 32x32 inputs (64x64 with ``stride=2``); depth must be 6n + 4."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int, dropout: bool = False, stride: int = 1) -> None:
        check_model_args(num_classes, dropout, stride)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"Wide ResNet depth must be 6n + 4 with n >= 1 (e.g. 16, 28), got {depth}")
        super().__init__()
        self.num_classes = num_classes
        blocks_per_stage = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        dropout_p = BLOCK_DROPOUT_P if dropout else 0.0
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=stride, padding=1, bias=True)
        self.layer1 = self._make_layer(widths[1], blocks_per_stage, 1, dropout_p)
        self.layer2 = self._make_layer(widths[2], blocks_per_stage, 2, dropout_p)
        self.layer3 = self._make_layer(widths[3], blocks_per_stage, 2, dropout_p)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)

    def _make_layer(self, planes: int, count: int, stride: int, dropout_p: float) -> nn.Sequential:
        blocks = []
        for block_stride in [stride] + [1] * (count - 1):
            blocks.append(WideBasicBlock(self.in_planes, planes, block_stride, dropout_p))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def stem(self, x: Tensor) -> Tensor:
        """The 3x3 stem convolution."""
        return self.conv1(x)

    def stages(self) -> Sequence[nn.Module]:
        """layer1 .. layer3."""
        return (self.layer1, self.layer2, self.layer3)

    def head(self, h: Tensor) -> Tensor:
        """BN-ReLU, global average pool, linear."""
        pooled = F.adaptive_avg_pool2d(F.relu(self.bn1(h)), 1).flatten(1)
        return self.linear(pooled)


def wrn16_8(num_classes: int, dropout: bool = False, stride: int = 1) -> WideResNet:
    """WRN-16-8 (2 blocks per stage, widths 128, 256, 512)."""
    return WideResNet(16, 8, num_classes, dropout, stride)


def wrn28_2(num_classes: int, dropout: bool = False, stride: int = 1) -> WideResNet:
    """WRN-28-2 (4 blocks per stage, widths 32, 64, 128)."""
    return WideResNet(28, 2, num_classes, dropout, stride)


def wrn28_10(num_classes: int, dropout: bool = False, stride: int = 1) -> WideResNet:
    """WRN-28-10 (4 blocks per stage, widths 160, 320, 640)."""
    return WideResNet(28, 10, num_classes, dropout, stride)
