"""CIFAR ResNeXt: resnext29_4_24 (ResNeXt-29, cardinality 4, bottleneck width 24).

Structure (parameter names as in the published Co-Mixup code, so its weights load): 3x3 stem
``conv_1_3x3`` with 64 channels (stride ``stride``) and ``bn_1``-ReLU, three stages
``stage_1..stage_3`` of (depth - 2) / 9 post-activation type-C bottlenecks, output widths 256,
512, 1024 and strides 1, 2, 2, global average pool, optional dropout (p=0.5) and ``classifier``.
A bottleneck with stage width w has 4 groups of floor(w * 24 / 64) channels in its grouped 3x3
conv. The width is fixed by the architecture name: there is no ``initial_channels``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .mixable import HEAD_DROPOUT_P, MixableClassifier, check_model_args


class ResNeXtBottleneck(nn.Module):
    """conv1x1-BN-ReLU, grouped conv3x3 (strided)-BN-ReLU, conv1x1 (x4)-BN, add shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, cardinality: int, base_width: int, stride: int = 1) -> None:
        super().__init__()
        group_width = (planes * base_width) // 64
        inner = group_width * cardinality
        out_planes = planes * self.expansion
        self.conv_reduce = nn.Conv2d(in_planes, inner, kernel_size=1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(inner)
        self.conv_conv = nn.Conv2d(
            inner, inner, kernel_size=3, stride=stride, padding=1, groups=cardinality, bias=False
        )
        self.bn = nn.BatchNorm2d(inner)
        self.conv_expand = nn.Conv2d(inner, out_planes, kernel_size=1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_planes)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        """Block output, same batch size; channels ``4 * planes``, spatial size divided by stride."""
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.conv_expand(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + residual)


class CifarResNeXt(MixableClassifier):
    """ResNeXt for 32x32 inputs (64x64 with ``stride=2``); depth must be 9n + 2."""

    def __init__(
        self,
        depth: int,
        cardinality: int,
        base_width: int,
        num_classes: int,
        dropout: bool = False,
        stride: int = 1,
    ) -> None:
        check_model_args(num_classes, dropout, stride)
        if depth < 11 or (depth - 2) % 9 != 0:
            raise ValueError(f"CIFAR ResNeXt depth must be 9n + 2 with n >= 1 (e.g. 29), got {depth}")
        super().__init__()
        self.num_classes = num_classes
        self.cardinality = cardinality
        self.base_width = base_width
        blocks_per_stage = (depth - 2) // 9
        self.in_planes = 64
        self.conv_1_3x3 = nn.Conv2d(3, 64, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        self.stage_1 = self._make_layer(64, blocks_per_stage, 1)
        self.stage_2 = self._make_layer(128, blocks_per_stage, 2)
        self.stage_3 = self._make_layer(256, blocks_per_stage, 2)
        self.dropout: nn.Module = nn.Dropout(HEAD_DROPOUT_P) if dropout else nn.Identity()
        self.classifier = nn.Linear(256 * ResNeXtBottleneck.expansion, num_classes)

    def _make_layer(self, planes: int, count: int, stride: int) -> nn.Sequential:
        blocks = []
        for block_stride in [stride] + [1] * (count - 1):
            blocks.append(ResNeXtBottleneck(self.in_planes, planes, self.cardinality, self.base_width, block_stride))
            self.in_planes = planes * ResNeXtBottleneck.expansion
        return nn.Sequential(*blocks)

    def stem(self, x: Tensor) -> Tensor:
        """3x3 stem conv, BN, ReLU."""
        return F.relu(self.bn_1(self.conv_1_3x3(x)))

    def stages(self) -> Sequence[nn.Module]:
        """stage_1 .. stage_3."""
        return (self.stage_1, self.stage_2, self.stage_3)

    def head(self, h: Tensor) -> Tensor:
        """Global average pool, dropout (if enabled), classifier."""
        pooled = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.classifier(self.dropout(pooled))


def resnext29_4_24(num_classes: int, dropout: bool = False, stride: int = 1) -> CifarResNeXt:
    """ResNeXt-29, cardinality 4, bottleneck width 24 (3 blocks per stage)."""
    return CifarResNeXt(29, 4, 24, num_classes, dropout, stride)
