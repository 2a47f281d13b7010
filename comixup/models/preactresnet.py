"""Pre-activation ResNet for CIFAR-sized inputs.

The pre-activation ResNet keeps the parameter names of the published Co-Mixup code
(``conv1``, ``layerK.N.{bn1,conv1,bn2,conv2[,bn3,conv3]}``, ``layerK.0.shortcut.0``, ``linear``)
so that its published checkpoints load. Like the published model it has no BN or ReLU after
``layer4``: the last block's sum is pooled directly.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .mixable import HEAD_DROPOUT_P, MixableClassifier, check_initial_channels, check_model_args


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut.

    A projection shortcut (1x1 conv, no bias) is applied to the pre-activated input wherever the
    shape changes; otherwise the shortcut is the raw input.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)
            )

    def forward(self, x: Tensor) -> Tensor:
        """Block output, same batch size; channels ``planes``, spatial size divided by stride."""
        pre = F.relu(self.bn1(x))
        residual = self.shortcut(pre) if self.shortcut is not None else x
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + residual


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-conv1x1, BN-ReLU-conv3x3 (strided), BN-ReLU-conv1x1 (x4).

    Shortcut as in ``PreActBlock``.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)
            )

    def forward(self, x: Tensor) -> Tensor:
        """Block output, same batch size; channels ``4 * planes``, spatial size divided by stride."""
        pre = F.relu(self.bn1(x))
        residual = self.shortcut(pre) if self.shortcut is not None else x
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + residual


class PreActResNet(MixableClassifier):
    """Pre-activation ResNet for 32x32 inputs (64x64 with ``stride=2``).

    3x3 stem conv ``conv1`` (stride ``stride``), four stages ``layer1..layer4`` of widths
    c, 2c, 4c, 8c (c = ``initial_channels``) and strides 1, 2, 2, 2, no final BN, global average
    pool (the published 4x4 pool at 32x32), optional dropout (p=0.5), classifier ``linear``.
    """

    def __init__(
        self,
        block: type[PreActBlock] | type[PreActBottleneck],
        num_blocks: Sequence[int],
        num_classes: int,
        dropout: bool = False,
        stride: int = 1,
        initial_channels: int = 64,
    ) -> None:
        check_model_args(num_classes, dropout, stride)
        check_initial_channels(initial_channels)
        super().__init__()
        self.num_classes = num_classes
        self.in_planes = initial_channels
        self.conv1 = nn.Conv2d(3, initial_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.layer1 = self._make_layer(block, initial_channels, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, initial_channels * 2, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, initial_channels * 4, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, initial_channels * 8, num_blocks[3], stride=2)
        self.dropout: nn.Module = nn.Dropout(HEAD_DROPOUT_P) if dropout else nn.Identity()
        self.linear = nn.Linear(initial_channels * 8 * block.expansion, num_classes)

    def _make_layer(
        self, block: type[PreActBlock] | type[PreActBottleneck], planes: int, count: int, stride: int
    ) -> nn.Sequential:
        blocks = []
        for block_stride in [stride] + [1] * (count - 1):
            blocks.append(block(self.in_planes, planes, block_stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*blocks)

    def stem(self, x: Tensor) -> Tensor:
        """The 3x3 stem convolution."""
        return self.conv1(x)

    def stages(self) -> Sequence[nn.Module]:
        """layer1 .. layer4."""
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def head(self, h: Tensor) -> Tensor:
        """Global average pool, dropout (if enabled), linear."""
        pooled = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.linear(self.dropout(pooled))


def preactresnet18(
    num_classes: int, dropout: bool = False, stride: int = 1, initial_channels: int = 64
) -> PreActResNet:
    """PreActResNet-18: basic blocks [2, 2, 2, 2]."""
    return PreActResNet(PreActBlock, [2, 2, 2, 2], num_classes, dropout, stride, initial_channels)


def preactresnet34(
    num_classes: int, dropout: bool = False, stride: int = 1, initial_channels: int = 64
) -> PreActResNet:
    """PreActResNet-34: basic blocks [3, 4, 6, 3]."""
    return PreActResNet(PreActBlock, [3, 4, 6, 3], num_classes, dropout, stride, initial_channels)


def preactresnet50(
    num_classes: int, dropout: bool = False, stride: int = 1, initial_channels: int = 64
) -> PreActResNet:
    """PreActResNet-50: bottleneck blocks [3, 4, 6, 3]."""
    return PreActResNet(PreActBottleneck, [3, 4, 6, 3], num_classes, dropout, stride, initial_channels)


def preactresnet101(
    num_classes: int, dropout: bool = False, stride: int = 1, initial_channels: int = 64
) -> PreActResNet:
    """PreActResNet-101: bottleneck blocks [3, 4, 23, 3]."""
    return PreActResNet(PreActBottleneck, [3, 4, 23, 3], num_classes, dropout, stride, initial_channels)


def preactresnet152(
    num_classes: int, dropout: bool = False, stride: int = 1, initial_channels: int = 64
) -> PreActResNet:
    """PreActResNet-152: bottleneck blocks [3, 8, 36, 3]."""
    return PreActResNet(PreActBottleneck, [3, 8, 36, 3], num_classes, dropout, stride, initial_channels)
