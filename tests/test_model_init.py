"""models/init.py: the published ImageNet initialisation of torchvision's ResNets, checked
statistically (tolerances of five standard errors) and exactly where it sets constants."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from comixup import models
from comixup.models.init import FC_STD, apply_init, conv_std, init_published_imagenet


def _check_normal(weight: torch.Tensor, std: float, what: str) -> None:
    """Mean 0 and standard deviation ``std``, within five standard errors of each estimate."""
    n = weight.numel()
    sample = weight.double().flatten()
    assert abs(sample.mean().item()) < 5 * std / math.sqrt(n), what
    assert abs(sample.std().item() / std - 1) < 5 / math.sqrt(2 * (n - 1)), (what, sample.std().item(), std)


@pytest.mark.parametrize("arch, block, last", [("resnet18", BasicBlock, "bn2"), ("resnet50", Bottleneck, "bn3")])
def test_published_init_of_a_resnet(arch, block, last):
    torch.manual_seed(0)
    model = models.build_model(arch, 10)
    fc_bias = model.fc.bias.detach().clone()
    torch.manual_seed(1)
    init_published_imagenet(model)

    last_bns = {id(getattr(m, last)) for m in model.modules() if isinstance(m, block)}
    assert len(last_bns) == (8 if arch == "resnet18" else 16)
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            expected_gamma = 0.0 if id(module) in last_bns else 1.0
            assert torch.equal(module.weight, torch.full_like(module.weight, expected_gamma)), name
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), name
        elif isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            assert conv_std(module) == math.sqrt(2 / (k_h * k_w * module.out_channels))
            _check_normal(module.weight, conv_std(module), name)
    _check_normal(model.fc.weight, FC_STD, "fc")
    assert torch.equal(model.fc.bias, fc_bias)  # left as PyTorch initialised it


def test_init_is_reproducible_and_changes_the_default():
    torch.manual_seed(0)
    a = models.build_model("resnet18", 10)
    default_fc = a.fc.weight.detach().clone()
    torch.manual_seed(3)
    init_published_imagenet(a)
    torch.manual_seed(0)
    b = models.build_model("resnet18", 10)
    torch.manual_seed(3)
    apply_init(b, "published_imagenet")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert default_fc.std().item() > 2 * FC_STD  # torchvision's default fc is much wider
    c = models.build_model("resnet18", 10)
    before = {k: v.clone() for k, v in c.state_dict().items()}
    apply_init(c, "default")
    assert all(torch.equal(before[k], v) for k, v in c.state_dict().items())


def test_init_refuses_models_without_resnet_blocks():
    with pytest.raises(ValueError, match="for torchvision's ResNets"):
        init_published_imagenet(models.build_model("preactresnet18", 10))
    with pytest.raises(ValueError, match="unknown initialisation 'kaiming'"):
        apply_init(models.build_model("resnet18", 10), "kaiming")
