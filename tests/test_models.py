"""Tests for the models package: registry, shapes, published names, mixing interface, init."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from comixup import models
from comixup.models import MODELS, MixableClassifier, build_model, model_names

ALL_ARCHS = [
    "preactresnet18", "preactresnet34", "preactresnet50", "preactresnet101", "preactresnet152",
    "wrn16_8", "wrn28_2", "wrn28_10", "resnext29_4_24",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
]
TORCHVISION_ARCHS = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}
# a second or more per forward on 2 cores: in the whole suite only
DEEP_ARCHS = {"preactresnet101", "preactresnet152", "wrn28_10", "resnet50", "resnet101", "resnet152"}

# Channels of the activation at mixing depth 2 (output of the second stage), by hand from each
# architecture: pre-act basic 2c = 128, pre-act bottleneck 4 * 2c = 512, WRN 32k, ResNeXt 4 * 128,
# torchvision layer2 (basic 128, bottleneck 512).
DEPTH2_CHANNELS = {
    "preactresnet18": 128, "preactresnet34": 128,
    "preactresnet50": 512, "preactresnet101": 512, "preactresnet152": 512,
    "wrn16_8": 256, "wrn28_2": 64, "wrn28_10": 320, "resnext29_4_24": 512,
    "resnet18": 128, "resnet34": 128, "resnet50": 512, "resnet101": 512, "resnet152": 512,
}

# The published preactresnet18 state_dict keys, written out from the architecture description:
# stem conv1, layer1..4 of two pre-act blocks (bn1, conv1, bn2, conv2), a 1x1 projection
# shortcut in the first block of layer2..4 (where the shape changes), no final BN, linear.
PUBLISHED_PREACTRESNET18_KEYS = [
    "conv1.weight",
    "layer1.0.bn1.weight", "layer1.0.bn1.bias", "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var",
    "layer1.0.bn1.num_batches_tracked",
    "layer1.0.conv1.weight",
    "layer1.0.bn2.weight", "layer1.0.bn2.bias", "layer1.0.bn2.running_mean", "layer1.0.bn2.running_var",
    "layer1.0.bn2.num_batches_tracked",
    "layer1.0.conv2.weight",
    "layer1.1.bn1.weight", "layer1.1.bn1.bias", "layer1.1.bn1.running_mean", "layer1.1.bn1.running_var",
    "layer1.1.bn1.num_batches_tracked",
    "layer1.1.conv1.weight",
    "layer1.1.bn2.weight", "layer1.1.bn2.bias", "layer1.1.bn2.running_mean", "layer1.1.bn2.running_var",
    "layer1.1.bn2.num_batches_tracked",
    "layer1.1.conv2.weight",
    "layer2.0.bn1.weight", "layer2.0.bn1.bias", "layer2.0.bn1.running_mean", "layer2.0.bn1.running_var",
    "layer2.0.bn1.num_batches_tracked",
    "layer2.0.conv1.weight",
    "layer2.0.bn2.weight", "layer2.0.bn2.bias", "layer2.0.bn2.running_mean", "layer2.0.bn2.running_var",
    "layer2.0.bn2.num_batches_tracked",
    "layer2.0.conv2.weight",
    "layer2.0.shortcut.0.weight",
    "layer2.1.bn1.weight", "layer2.1.bn1.bias", "layer2.1.bn1.running_mean", "layer2.1.bn1.running_var",
    "layer2.1.bn1.num_batches_tracked",
    "layer2.1.conv1.weight",
    "layer2.1.bn2.weight", "layer2.1.bn2.bias", "layer2.1.bn2.running_mean", "layer2.1.bn2.running_var",
    "layer2.1.bn2.num_batches_tracked",
    "layer2.1.conv2.weight",
    "layer3.0.bn1.weight", "layer3.0.bn1.bias", "layer3.0.bn1.running_mean", "layer3.0.bn1.running_var",
    "layer3.0.bn1.num_batches_tracked",
    "layer3.0.conv1.weight",
    "layer3.0.bn2.weight", "layer3.0.bn2.bias", "layer3.0.bn2.running_mean", "layer3.0.bn2.running_var",
    "layer3.0.bn2.num_batches_tracked",
    "layer3.0.conv2.weight",
    "layer3.0.shortcut.0.weight",
    "layer3.1.bn1.weight", "layer3.1.bn1.bias", "layer3.1.bn1.running_mean", "layer3.1.bn1.running_var",
    "layer3.1.bn1.num_batches_tracked",
    "layer3.1.conv1.weight",
    "layer3.1.bn2.weight", "layer3.1.bn2.bias", "layer3.1.bn2.running_mean", "layer3.1.bn2.running_var",
    "layer3.1.bn2.num_batches_tracked",
    "layer3.1.conv2.weight",
    "layer4.0.bn1.weight", "layer4.0.bn1.bias", "layer4.0.bn1.running_mean", "layer4.0.bn1.running_var",
    "layer4.0.bn1.num_batches_tracked",
    "layer4.0.conv1.weight",
    "layer4.0.bn2.weight", "layer4.0.bn2.bias", "layer4.0.bn2.running_mean", "layer4.0.bn2.running_var",
    "layer4.0.bn2.num_batches_tracked",
    "layer4.0.conv2.weight",
    "layer4.0.shortcut.0.weight",
    "layer4.1.bn1.weight", "layer4.1.bn1.bias", "layer4.1.bn1.running_mean", "layer4.1.bn1.running_var",
    "layer4.1.bn1.num_batches_tracked",
    "layer4.1.conv1.weight",
    "layer4.1.bn2.weight", "layer4.1.bn2.bias", "layer4.1.bn2.running_mean", "layer4.1.bn2.running_var",
    "layer4.1.bn2.num_batches_tracked",
    "layer4.1.conv2.weight",
    "linear.weight", "linear.bias",
]

# Small, fast representatives of every family (and both pre-act block types).
FAMILY_REPRESENTATIVES = [
    ("preactresnet18", {"initial_channels": 8}),
    ("preactresnet50", {"initial_channels": 4}),
    ("wrn28_2", {}),
    ("resnext29_4_24", {}),
    ("resnet18", {}),
]


def _build(arch: str, num_classes: int = 10, seed: int = 0, **kwargs) -> MixableClassifier:
    torch.manual_seed(seed)
    return build_model(arch, num_classes, **kwargs).eval()


def _first_stage_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Depth-1 activation computed from the model's named submodules, independently of forward."""
    if isinstance(model, models.preactresnet.PreActResNet | models.wide_resnet.WideResNet):
        return model.layer1(model.conv1(x))
    if isinstance(model, models.resnext.CifarResNeXt):
        return model.stage_1(torch.relu(model.bn_1(model.conv_1_3x3(x))))
    return model.layer1(model.maxpool(torch.relu(model.bn1(model.conv1(x)))))


def test_registry_holds_every_published_arch_and_exports_constructors():
    import models as published_models  # the published import path, models/ at the top

    assert sorted(MODELS) == sorted(ALL_ARCHS)
    assert model_names() == sorted(ALL_ARCHS)
    for name in ALL_ARCHS:
        assert getattr(models, name) is MODELS[name]
        # the published main.py builds its model as models.__dict__[args.arch](...)
        assert published_models.__dict__[name] is MODELS[name]


@pytest.mark.parametrize("arch", [pytest.param(arch, marks=pytest.mark.slow) if arch in DEEP_ARCHS else arch
                                  for arch in ALL_ARCHS])
def test_forward_shapes_at_32_stride1_and_64_stride2(arch):
    x32 = torch.randn(2, 3, 32, 32)
    x64 = torch.randn(2, 3, 64, 64)
    captured: list[torch.Size] = []

    def capture(h: torch.Tensor) -> torch.Tensor:
        captured.append(h.shape)
        return h

    with torch.no_grad():
        model = _build(arch, num_classes=7, stride=1)
        assert isinstance(model, MixableClassifier)
        assert model.num_mix_layers == 3
        out32 = model(x32)
        del model
        model = _build(arch, num_classes=7, stride=2)
        out64 = model(x64, mix_layer=2, mix_fn=capture)
    assert out32.shape == (2, 7) and out64.shape == (2, 7)
    assert torch.isfinite(out32).all() and torch.isfinite(out64).all()
    # CIFAR nets honour stride=2, so 64x64 reaches layer2 at the size 32x32 does with stride 1
    # (16x16); the torchvision stem divides by 4 whatever the stride, then layer2 halves: 8x8.
    side = 8 if arch in TORCHVISION_ARCHS else 16
    assert captured == [torch.Size([2, DEPTH2_CHANNELS[arch], side, side])]


def test_preactresnet18_state_dict_keys_are_the_published_ones():
    assert len(PUBLISHED_PREACTRESNET18_KEYS) == 102
    assert list(models.preactresnet18(100).state_dict().keys()) == PUBLISHED_PREACTRESNET18_KEYS


def test_preactresnet18_parameter_count():
    # By hand, 100 classes: conv1 1,728; layer1 147,968; layer2 525,184 (shortcut 8,192);
    # layer3 2,098,944 (shortcut 32,768); layer4 8,392,192 (shortcut 131,072); linear 51,300.
    # 11,220,132 would be the post-activation CIFAR ResNet18, which adds a stem BN, BNs on the
    # shortcuts and sizes BNs by output channels: 2,816 parameters more.
    model = models.preactresnet18(100)
    assert sum(p.numel() for p in model.parameters()) == 11_217_316
    assert sum(p.numel() for p in model.layer4.parameters()) == 8_392_192


def test_initial_channels_16_gives_narrower_preactresnet18():
    model = build_model("preactresnet18", 100, initial_channels=16)
    assert model.conv1.out_channels == 16
    assert model.layer4[1].conv2.out_channels == 128
    assert model.linear.in_features == 128
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_preact_bottleneck_keys_and_widths():
    model = models.preactresnet50(10, initial_channels=8)
    keys = set(model.state_dict())
    assert {"layer1.0.bn3.weight", "layer1.0.conv3.weight", "layer1.0.shortcut.0.weight"} <= keys
    assert "layer1.1.shortcut.0.weight" not in keys
    assert model.layer4[0].conv3.out_channels == 8 * 8 * 4
    assert model.linear.in_features == 256


def test_published_call_style():
    model = models.preactresnet18(100, False, 1)
    assert model.linear.out_features == 100 and model.conv1.stride == (1, 1)
    assert models.preactresnet18(10, False, 2).conv1.stride == (2, 2)
    wrn = models.__dict__["wrn28_2"](10, True, 1)
    dropouts = [m for m in wrn.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 12 and all(m.p == 0.3 for m in dropouts)
    assert not any(isinstance(m, nn.Dropout) for m in models.wrn28_2(10, False, 1).modules())


def test_dropout_flag_makes_training_forward_stochastic():
    x = torch.randn(4, 3, 32, 32)
    for arch, kwargs in [("preactresnet18", {"initial_channels": 8}), ("resnext29_4_24", {}), ("resnet18", {})]:
        model = build_model(arch, 10, dropout=True, **kwargs)
        heads = [m for m in model.modules() if isinstance(m, nn.Dropout)]
        assert [m.p for m in heads] == [0.5]
        model.eval()
        with torch.no_grad():
            assert torch.equal(model(x), model(x))
            model.train()
            assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("arch,kwargs", FAMILY_REPRESENTATIVES)
def test_identity_mix_fn_equals_plain_forward(arch, kwargs):
    model = _build(arch, **kwargs)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        for k in range(3):
            assert torch.allclose(model(x, mix_layer=k, mix_fn=lambda h: h), plain, atol=1e-6), k


@pytest.mark.parametrize("arch,kwargs", FAMILY_REPRESENTATIVES)
def test_mix_depths_are_input_and_stage_outputs(arch, kwargs):
    model = _build(arch, **kwargs)
    x = torch.randn(2, 3, 32, 32)
    seen: list[torch.Tensor] = []

    def record(h: torch.Tensor) -> torch.Tensor:
        seen.append(h.clone())
        return h

    def swap_halves(h: torch.Tensor) -> torch.Tensor:
        return 0.7 * h + 0.3 * h.flip(0)

    with torch.no_grad():
        model(x, mix_layer=0, mix_fn=record)
        model(x, mix_layer=1, mix_fn=record)
        assert torch.equal(seen[0], x)
        assert torch.allclose(seen[1], _first_stage_output(model, x), atol=1e-6)
        # Mixing at depth 0 is mixing the input batch.
        assert torch.allclose(model(x, mix_layer=0, mix_fn=swap_halves), model(swap_halves(x)), atol=1e-5)


@pytest.mark.parametrize("arch,kwargs", FAMILY_REPRESENTATIVES)
def test_zeroed_first_stage_output_depends_only_on_biases(arch, kwargs):
    model = _build(arch, **kwargs)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        zeroed = model(x, mix_layer=1, mix_fn=torch.zeros_like)
        other = model(torch.randn(3, 3, 32, 32), mix_layer=1, mix_fn=torch.zeros_like)
    assert not torch.allclose(zeroed, plain)
    assert torch.allclose(zeroed, zeroed[:1].expand_as(zeroed), atol=1e-6)
    assert torch.allclose(zeroed, other, atol=1e-6)


def test_zeroed_first_stage_of_fresh_preactresnet_gives_linear_bias():
    # Fresh BN (running mean 0, var 1, weight 1, bias 0) maps 0 to 0 and the convs have no bias,
    # so zeros reach the classifier and only its bias is left.
    model = _build("preactresnet18", initial_channels=8)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32), mix_layer=1, mix_fn=torch.zeros_like)
    assert torch.allclose(out, model.linear.bias.expand(2, -1), atol=1e-6)


def test_mix_gradients_flow_through_mix_fn():
    model = _build("preactresnet18", initial_channels=4).train()
    x = torch.randn(4, 3, 32, 32)
    weight = torch.tensor(0.6, requires_grad=True)
    out = model(x, mix_layer=2, mix_fn=lambda h: weight * h + (1 - weight) * h.flip(0))
    out.sum().backward()
    assert weight.grad is not None and weight.grad.abs() > 0
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [-1, 3, True, 1.0, "1"])
def test_invalid_mix_layer_raises(bad):
    model = _build("preactresnet18", initial_channels=4)
    with pytest.raises(ValueError, match="mix_layer"):
        model(torch.randn(1, 3, 32, 32), mix_layer=bad, mix_fn=lambda h: h)


def test_mix_layer_and_mix_fn_come_together():
    model = _build("wrn28_2")
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="mix_fn"):
        model(x, mix_layer=1)
    with pytest.raises(ValueError, match="mix_layer"):
        model(x, mix_fn=lambda h: h)


def test_build_model_rejects_unknown_arch_naming_allowed_ones():
    with pytest.raises(ValueError, match="preactresnet18") as info:
        build_model("preactresnet19", 10)
    assert "preactresnet19" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": -3}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"stride": 3}, "stride"),
        ({"stride": 0}, "stride"),
        ({"initial_channels": 0}, "initial_channels"),
        ({"initial_channels": -16}, "initial_channels"),
        ({"dropout": "yes"}, "dropout"),
    ],
)
def test_build_model_rejects_bad_arguments(kwargs, needle):
    args = {"num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=needle):
        build_model("preactresnet18", **args)


def test_fixed_width_archs_reject_a_non_default_initial_channels():
    with pytest.raises(ValueError, match="initial_channels"):
        build_model("wrn28_2", 10, initial_channels=16)
    assert isinstance(build_model("wrn28_2", 10, initial_channels=64), MixableClassifier)


def test_constructors_validate_arguments_too():
    with pytest.raises(ValueError, match="stride"):
        models.resnext29_4_24(10, False, 4)
    with pytest.raises(ValueError, match="num_classes"):
        models.resnet18(0)


def test_init_is_standard_and_reproducible():
    a = _build("preactresnet18", seed=3)
    b = _build("preactresnet18", seed=3)
    c = _build("preactresnet18", seed=4)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    bn = a.layer3[1].bn2
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    # PyTorch's default conv init, as the published models: uniform(+-1/sqrt(fan_in)), so a std
    # of 1/sqrt(3 fan_in) over 2.4M draws (kaiming normal would be sqrt(6) times larger).
    conv = a.layer4[1].conv2.weight
    expected_std = (1.0 / (3 * 512 * 9)) ** 0.5
    assert abs(conv.std().item() / expected_std - 1) < 0.01
    assert abs(conv.mean().item()) < 0.01 * expected_std


def test_preactresnet_forward_is_the_published_composition():
    # Pre-activation blocks whose projection shortcut reads the pre-activated input, and no BN or
    # ReLU after layer4: the published forward, written out from the submodules.
    model = _build("preactresnet18", initial_channels=8)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(size, generator=generator) * 0.1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = model.conv1(x)
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            for block in layer:
                pre = torch.relu(block.bn1(h))
                residual = block.shortcut(pre) if block.shortcut is not None else h
                h = block.conv2(torch.relu(block.bn2(block.conv1(pre)))) + residual
        expected = model.linear(h.mean(dim=(2, 3)))
        assert torch.allclose(model(x), expected, atol=1e-5)
