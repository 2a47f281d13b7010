"""torchvision's ImageNet ResNets (resnet18/34/50/101/152) behind the shared mixing interface.

Each model is built by torchvision's own builder with ``weights=None`` and ``num_classes``, and
its submodules are adopted unchanged, so parameter names and initialisation are torchvision's
(``conv1, bn1, layer1..layer4, fc``) and torchvision state dicts load. Mixing depths: 0 input,
1 after ``layer1``, 2 after ``layer2``.

``stride`` is validated but ignored: the ImageNet stem (7x7 stride-2 conv and max pool) always
divides the input side by 4; these models still run on 32x32 and 64x64 inputs. The width is
fixed by the architecture name: there is no ``initial_channels``. ``dropout=True`` applies
dropout (p=0.5) before ``fc``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn as nn
import torchvision.models as tvm
from torch import Tensor

from .mixable import HEAD_DROPOUT_P, MixableClassifier, check_model_args


class TorchvisionResNet(MixableClassifier):
    """A torchvision ResNet whose forward supports ``mix_layer`` / ``mix_fn``."""

    def __init__(self, builder: Callable[..., tvm.ResNet], num_classes: int, dropout: bool = False,
                 stride: int = 1) -> None:
        check_model_args(num_classes, dropout, stride)
        super().__init__()
        self.num_classes = num_classes
        net = builder(weights=None, num_classes=num_classes)
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        self.avgpool = net.avgpool
        self.dropout: nn.Module = nn.Dropout(HEAD_DROPOUT_P) if dropout else nn.Identity()
        self.fc = net.fc

    def stem(self, x: Tensor) -> Tensor:
        """7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max pool."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def stages(self) -> Sequence[nn.Module]:
        """layer1 .. layer4."""
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def head(self, h: Tensor) -> Tensor:
        """Global average pool, dropout (if enabled), fc."""
        return self.fc(self.dropout(self.avgpool(h).flatten(1)))


def resnet18(num_classes: int, dropout: bool = False, stride: int = 1) -> TorchvisionResNet:
    """torchvision ResNet-18 (random init); ``stride`` is ignored."""
    return TorchvisionResNet(tvm.resnet18, num_classes, dropout, stride)


def resnet34(num_classes: int, dropout: bool = False, stride: int = 1) -> TorchvisionResNet:
    """torchvision ResNet-34 (random init); ``stride`` is ignored."""
    return TorchvisionResNet(tvm.resnet34, num_classes, dropout, stride)


def resnet50(num_classes: int, dropout: bool = False, stride: int = 1) -> TorchvisionResNet:
    """torchvision ResNet-50 (random init); ``stride`` is ignored."""
    return TorchvisionResNet(tvm.resnet50, num_classes, dropout, stride)


def resnet101(num_classes: int, dropout: bool = False, stride: int = 1) -> TorchvisionResNet:
    """torchvision ResNet-101 (random init); ``stride`` is ignored."""
    return TorchvisionResNet(tvm.resnet101, num_classes, dropout, stride)


def resnet152(num_classes: int, dropout: bool = False, stride: int = 1) -> TorchvisionResNet:
    """torchvision ResNet-152 (random init); ``stride`` is ignored."""
    return TorchvisionResNet(tvm.resnet152, num_classes, dropout, stride)
