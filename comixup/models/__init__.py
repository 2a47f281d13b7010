"""Image classifiers for Co-Mixup training, by architecture name.

Every constructor has the published call ``arch(num_classes, dropout=False, stride=1)`` and is
importable as ``models.<arch>`` (the published code does
``models.__dict__[args.arch](num_classes, args.dropout, stride)``); ``build_model`` is the checked
entry point. ``stride`` is the first conv's stride: 1 for 32x32 inputs (CIFAR), 2 for 64x64
(Tiny-ImageNet); the torchvision ResNets ignore it.

Only the ``preactresnet*`` family takes ``initial_channels`` (its width c; published choices 16 or
64). The other families have a width fixed by their name; ``build_model`` accepts the default
``initial_channels=64`` for them and rejects any other value rather than silently ignoring it.

Every model is a ``MixableClassifier``: ``model(x, mix_layer=k, mix_fn=f)`` replaces the
activation at depth k (0 input, 1 after the first stage, 2 after the second) by ``f(h)``, for
manifold mixup; ``model.num_mix_layers == 3``.
"""
from __future__ import annotations

from collections.abc import Callable

from .mixable import MixableClassifier, check_initial_channels
from .preactresnet import preactresnet18, preactresnet34, preactresnet50, preactresnet101, preactresnet152
from .resnext import resnext29_4_24
from .torchvision_resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from .wide_resnet import wrn16_8, wrn28_2, wrn28_10

MODELS: dict[str, Callable[..., MixableClassifier]] = {
    "preactresnet18": preactresnet18,
    "preactresnet34": preactresnet34,
    "preactresnet50": preactresnet50,
    "preactresnet101": preactresnet101,
    "preactresnet152": preactresnet152,
    "wrn16_8": wrn16_8,
    "wrn28_2": wrn28_2,
    "wrn28_10": wrn28_10,
    "resnext29_4_24": resnext29_4_24,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
}
"""Architecture name -> constructor ``(num_classes, dropout=False, stride=1, ...)``."""

WIDTH_ARCHS = frozenset(name for name in MODELS if name.startswith("preactresnet"))
"""Architectures whose constructor takes ``initial_channels``."""

TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
"""torchvision's ImageNet ResNets (what --init published_imagenet initialises)."""

DEFAULT_INITIAL_CHANNELS = 64

__all__ = [
    "MODELS",
    "WIDTH_ARCHS",
    "TORCHVISION_RESNETS",
    "MixableClassifier",
    "build_model",
    "model_names",
    *MODELS,
]


def model_names() -> list[str]:
    """All architecture names, sorted."""
    return sorted(MODELS)


def build_model(
    arch: str,
    num_classes: int,
    dropout: bool = False,
    stride: int = 1,
    initial_channels: int = DEFAULT_INITIAL_CHANNELS,
) -> MixableClassifier:
    """A freshly initialised ``arch`` with ``num_classes`` outputs.

    Raises ValueError (one line saying what is allowed) for an unknown arch, a non-positive or
    non-int num_classes, a stride other than 1 or 2, a non-positive initial_channels, or an
    initial_channels other than 64 for an architecture of fixed width.
    """
    if arch not in MODELS:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(model_names())}")
    check_initial_channels(initial_channels)
    constructor = MODELS[arch]
    if arch in WIDTH_ARCHS:
        return constructor(num_classes, dropout, stride, initial_channels=initial_channels)
    if initial_channels != DEFAULT_INITIAL_CHANNELS:
        raise ValueError(
            f"initial_channels={initial_channels} applies only to {', '.join(sorted(WIDTH_ARCHS))}; "
            f"{arch} has a fixed width (leave initial_channels at {DEFAULT_INITIAL_CHANNELS})"
        )
    return constructor(num_classes, dropout, stride)
