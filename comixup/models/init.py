"""Weight initialisation of the published ImageNet recipe, for torchvision-style ResNets.

:func:`init_published_imagenet` sets, from torch's global random state:

- every convolution: N(0, sqrt(2 / (k_h * k_w * out_channels))) (He, fan-out);
- every BatchNorm: weight (gamma) 1, bias (beta) 0;
- the last BatchNorm of every residual block (BasicBlock.bn2, Bottleneck.bn3) gamma 0, so each
  block starts as the identity;
- every Linear weight (the fc head): N(0, 0.01). Linear biases keep PyTorch's default
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)): the recipe sets only the weights.

The default init of :mod:`models` (torchvision's for these ResNets) is untouched unless this is
called.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck

__all__ = ["INITS", "init_published_imagenet", "zero_init_residual", "apply_init"]

FC_STD = 0.01

INITS = ("default", "published_imagenet")
"""Choices of --init: the model's own initialisation, or :func:`init_published_imagenet`."""


def conv_std(conv: nn.Conv2d) -> float:
    """sqrt(2 / (k_h * k_w * out_channels)): the published convolution weights' deviation."""
    k_h, k_w = conv.kernel_size
    return math.sqrt(2.0 / (k_h * k_w * conv.out_channels))


def zero_init_residual(model: nn.Module) -> int:
    """Set gamma of the last BatchNorm of every residual block to 0; returns how many blocks."""
    blocks = 0
    for module in model.modules():
        last = module.bn3 if isinstance(module, Bottleneck) else module.bn2 if isinstance(module, BasicBlock) else None
        if last is not None:
            nn.init.zeros_(last.weight)
            blocks += 1
    return blocks


@torch.no_grad()
def init_published_imagenet(model: nn.Module) -> None:
    """Initialise ``model`` in place as the published ImageNet recipe (see the module text).
    ValueError when it has no residual block of torchvision's kinds: the recipe is for ResNets."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.normal_(0.0, conv_std(module))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            module.weight.normal_(0.0, FC_STD)
    if zero_init_residual(model) == 0:
        raise ValueError(f"the published ImageNet initialisation is for torchvision's ResNets "
                         f"(--arch resnet18 ... resnet152), and {type(model).__name__} has none of their "
                         f"residual blocks")


def apply_init(model: nn.Module, init: str) -> None:
    """Apply the ``--init`` choice to a freshly built model."""
    if init == "published_imagenet":
        init_published_imagenet(model)
    elif init != "default":
        raise ValueError(f"unknown initialisation {init!r}; choose from {', '.join(INITS)}")
