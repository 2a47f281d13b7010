"""What every model family here shares.

- ``MixableClassifier``: the manifold-mixup forward ``forward(x, mix_layer=None, mix_fn=None)``.
- ``check_model_args`` / ``check_initial_channels``: one clear ValueError for bad constructor input.

Layers keep PyTorch's default initialisation, as in the published code: the published
learning rate (0.2 with the BCE-on-softmax loss) was tuned with it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn as nn
from torch import Tensor

MixFn = Callable[[Tensor], Tensor]

ALLOWED_STRIDES = (1, 2)
HEAD_DROPOUT_P = 0.5
"""Dropout probability before the classifier when a model is built with ``dropout=True``."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_model_args(num_classes: int, dropout: bool, stride: int) -> None:
    """Raise ValueError unless num_classes is a positive int, dropout a bool and stride 1 or 2."""
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(dropout, bool):
        raise ValueError(f"dropout must be True or False, got {dropout!r}")
    if not _is_int(stride) or stride not in ALLOWED_STRIDES:
        raise ValueError(
            f"stride must be 1 (32x32 inputs, CIFAR) or 2 (64x64 inputs, Tiny-ImageNet), got {stride!r}"
        )


def check_initial_channels(initial_channels: int) -> None:
    """Raise ValueError unless initial_channels is a positive int (published choices: 16 or 64)."""
    if not _is_int(initial_channels) or initial_channels < 1:
        raise ValueError(
            f"initial_channels must be a positive int (published choices 16 or 64), got {initial_channels!r}"
        )


class MixableClassifier(nn.Module):
    """An image classifier whose forward can replace one hidden activation (manifold mixup).

    A subclass splits its network into ``stem`` (input to the first stage), ``stages()`` (the
    residual stages in order) and ``head`` (last stage's output to logits). ``forward`` with
    ``mix_layer=k`` and ``mix_fn=f`` replaces the activation at depth k by ``f(h)`` and goes on:
    k=0 is the input itself, k=1 the output of the first stage, k=2 the output of the second.
    Valid k are ``0 .. num_mix_layers - 1``.
    """

    num_mix_layers: int = 3

    def stem(self, x: Tensor) -> Tensor:
        """Input batch to the input of the first stage."""
        raise NotImplementedError

    def stages(self) -> Sequence[nn.Module]:
        """The residual stages in forward order (at least ``num_mix_layers - 1`` of them)."""
        raise NotImplementedError

    def head(self, h: Tensor) -> Tensor:
        """Output of the last stage to logits (B x num_classes)."""
        raise NotImplementedError

    def _check_mix_args(self, mix_layer: int | None, mix_fn: MixFn | None) -> None:
        if mix_layer is None:
            if mix_fn is not None:
                raise ValueError("mix_fn was given without mix_layer; pass both or neither")
            return
        if not _is_int(mix_layer) or not 0 <= mix_layer < self.num_mix_layers:
            raise ValueError(
                f"mix_layer must be an int in 0..{self.num_mix_layers - 1} "
                f"(0 input, 1 after the first stage, 2 after the second), got {mix_layer!r}"
            )
        if mix_fn is None:
            raise ValueError(f"mix_layer={mix_layer} needs a mix_fn (a function Tensor -> Tensor)")

    def forward(self, x: Tensor, mix_layer: int | None = None, mix_fn: MixFn | None = None) -> Tensor:
        """Logits for ``x``; with ``mix_layer=k`` the activation at depth k is replaced by ``mix_fn(h)``.

        Raises ValueError for k outside ``0 .. num_mix_layers - 1`` or when only one of
        ``mix_layer`` / ``mix_fn`` is given.
        """
        self._check_mix_args(mix_layer, mix_fn)
        h = x
        if mix_fn is not None and mix_layer == 0:
            h = mix_fn(h)
        h = self.stem(h)
        for depth, stage in enumerate(self.stages(), start=1):
            h = stage(h)
            if mix_fn is not None and depth == mix_layer:
                h = mix_fn(h)
        return self.head(h)
