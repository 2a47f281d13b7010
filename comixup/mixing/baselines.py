"""Mixup baselines of the Co-Mixup paper: input mixup, manifold mixup and CutMix.

Each is a mixer of the library's one dialect (:mod:`comixup.mixing.base`): keyword-only
hyperparameters, ``num_classes=`` and ``rng=``, called on images and class indices or soft targets::

    mixer = CutMix(num_classes=100, alpha=1.0)                 # or InputMixup(...)
    mixed_x, mixed_y = mixer(x, labels)
    loss = soft_cross_entropy(model(mixed_x), mixed_y)

    manifold = ManifoldMixup(num_classes=100, alpha=2.0)       # mixes hidden features
    draw, mixed_y = manifold(x, labels)
    loss = soft_cross_entropy(draw.forward(model, x), mixed_y)

- Pairs are a shuffled copy of the batch: the partner of image i is ``x[perm[i]]``, ``perm`` a
  random permutation of ``range(B)``; one weight ``lam ~ Beta(alpha, alpha)`` per batch, drawn
  after the permutation (the published order).
- Randomness comes from ``rng``, a ``numpy.random.Generator``, or from numpy's global state
  (``np.random.*``) when ``rng`` is None, so seeding numpy (and saving its state in a
  checkpoint) makes runs reproducible.
- Mixed images keep the device and dtype of x. Mixed targets are float32 on the device of y,
  ``w * y + (1 - w) * y[perm]`` with w the actual share of image i in its mixed image (lam,
  or one minus the pasted box's area after clipping), so rows sum to 1.

The functions :func:`input_mixup` and :func:`cutmix` and the class :class:`ManifoldMix` (its
``draw(y)``) are the earlier spellings, kept for existing code; they take soft targets.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from comixup.mixing.base import Mixer, check_float

__all__ = [
    "draw_lambda", "draw_permutation", "draw_pairing", "PairMix", "mix_targets", "InputMixup", "input_mixup",
    "cutmix_box", "CutMixPlan", "draw_cutmix", "CutMix", "cutmix", "ManifoldDraw", "ManifoldMixup", "ManifoldMix",
]


# --------------------------------------------------------------------------- random draws

def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0 (Beta(alpha, alpha) concentration), got {alpha!r}")


def draw_lambda(alpha: float, rng: np.random.Generator | None = None) -> float:
    """One mixing weight lam ~ Beta(alpha, alpha)."""
    _check_alpha(alpha)
    return float(rng.beta(alpha, alpha) if rng is not None else np.random.beta(alpha, alpha))


def draw_permutation(batch: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """A random permutation of range(batch) (int64): the partner of image i is perm[i]."""
    if batch < 1:
        raise ValueError(f"the batch must hold at least one image, got {batch}")
    perm = rng.permutation(batch) if rng is not None else np.random.permutation(batch)
    return perm.astype(np.int64)


def draw_pairing(batch: int, alpha: float, rng: np.random.Generator | None = None) -> tuple[float, np.ndarray]:
    """(lam, perm) for one batch, drawn in the published order: the permutation, then lam."""
    _check_alpha(alpha)
    perm = draw_permutation(batch, rng)
    return draw_lambda(alpha, rng), perm


# --------------------------------------------------------------------------- checks and targets

def _check_soft_targets(y: Tensor) -> None:
    """The earlier spellings take soft targets only, as they always did."""
    if not isinstance(y, Tensor) or y.dim() != 2:
        raise ValueError(f"y must be soft targets (B, K) (to_one_hot turns class indices into such rows; the "
                         f"mixer classes take either), got {tuple(y.shape) if isinstance(y, Tensor) else y!r}")


def _index(perm: np.ndarray | Tensor, device: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(perm, dtype=np.int64), device=device)


def mix_targets(y: Tensor, perm: np.ndarray | Tensor, weight: float | Tensor) -> Tensor:
    """``weight * y + (1 - weight) * y[perm]`` in float32 on y's device; weight is one number or
    one per row (B,), the share of image i in its mixed image."""
    y32 = y.float()
    if isinstance(weight, Tensor):
        weight = weight.to(device=y.device, dtype=torch.float32).reshape(-1, 1)
    return weight * y32 + (1 - weight) * y32[_index(perm, y.device)]


class PairMix:
    """The mixing function ``h -> lam * h + (1 - lam) * h[perm]`` over the batch dimension.

    Works on any tensor whose first dimension is the batch (images or hidden features), on its
    device and in its dtype. It is the ``mix_fn`` handed to ``model(x, mix_layer, mix_fn)``.
    """

    def __init__(self, lam: float, perm: np.ndarray) -> None:
        self.lam = float(lam)
        self.perm = np.asarray(perm, dtype=np.int64)

    def __repr__(self) -> str:
        return f"PairMix(lam={self.lam:.4f}, batch={len(self.perm)})"

    def __call__(self, h: Tensor) -> Tensor:
        if h.shape[0] != len(self.perm):
            raise ValueError(f"mix_fn was drawn for a batch of {len(self.perm)}, got a tensor of batch {h.shape[0]}")
        return self.lam * h + (1 - self.lam) * h[_index(self.perm, h.device)]


# --------------------------------------------------------------------------- methods

class InputMixup(Mixer):
    """Input mixup (Zhang et al., ICLR 2018): ``lam * x + (1 - lam) * x[perm]``, targets alike.

    Args:
        num_classes: K, needed when ``y`` holds class indices.
        alpha: lam ~ Beta(alpha, alpha), one per batch (the published CIFAR command: 1.0).
        rng: a ``numpy.random.Generator`` for the draws; None uses numpy's global state.
    """

    def __init__(self, *, num_classes: int | None = None, alpha: float = 1.0,
                 rng: np.random.Generator | None = None) -> None:
        super().__init__(num_classes=num_classes, rng=rng)
        self.alpha = check_float("alpha", alpha, minimum=0, strict_minimum=True)

    def __repr__(self) -> str:
        return f"InputMixup(num_classes={self.num_classes}, alpha={self.alpha})"

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor, saliency: None = None) -> tuple[Tensor, Tensor]:
        """Mix a batch.

        Args:
            x: images (B, C, H, W), floating point, any device.
            y: class indices (B,) (needs ``num_classes``) or soft targets (B, K).

        Returns:
            (mixed_x like x, mixed_y (B, K) float32, rows summing to 1).
        """
        x, targets, _ = self._door(x, y, saliency)
        lam, perm = draw_pairing(x.shape[0], self.alpha, self.rng)
        return PairMix(lam, perm)(x), mix_targets(targets, perm, lam)


def input_mixup(x: Tensor, y: Tensor, alpha: float,
                rng: np.random.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Input mixup of soft targets y (B, K): ``InputMixup(alpha=alpha, rng=rng)(x, y)``."""
    _check_soft_targets(y)
    return InputMixup(alpha=alpha, rng=rng)(x, y)


def cutmix_box(height: int, width: int, lam: float,
               rng: np.random.Generator | None = None) -> tuple[int, int, int, int]:
    """The CutMix box ``(top, bottom, left, right)`` (rows top:bottom, columns left:right).

    As the Puzzle Mix repository draws it: a box of sides ``sqrt(1 - lam)`` times the image's,
    its centre uniform over the image (row first, then column), its edges clipped at the border
    and truncated to whole pixels; so its area share is about 1 - lam, less where it is
    clipped. The box may be empty.
    """
    if not 0 <= lam <= 1:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    uniform = rng.uniform if rng is not None else np.random.uniform
    centre_row = uniform(0, height)
    centre_col = uniform(0, width)
    half_h = math.sqrt(1 - lam) * height / 2
    half_w = math.sqrt(1 - lam) * width / 2
    top = int(np.clip(centre_row - half_h, 0, height))
    bottom = int(np.clip(centre_row + half_h, 0, height))
    left = int(np.clip(centre_col - half_w, 0, width))
    right = int(np.clip(centre_col + half_w, 0, width))
    return top, bottom, left, right


@dataclass(frozen=True)
class CutMixPlan:
    """One CutMix draw: each image i takes the box (top, bottom, left, right) from image perm[i];
    ``kept`` is the share of each image's own pixels (1 - the box's clipped area share)."""

    perm: np.ndarray
    box: tuple[int, int, int, int]
    kept: float

    @torch.no_grad()
    def apply(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The mixed images and their soft targets (weights by the box's actual area)."""
        top, bottom, left, right = self.box
        mixed = x.clone()
        mixed[:, :, top:bottom, left:right] = x[_index(self.perm, x.device)][:, :, top:bottom, left:right]
        return mixed, mix_targets(y, self.perm, self.kept)


def draw_cutmix(batch: int, height: int, width: int, alpha: float,
                rng: np.random.Generator | None = None) -> CutMixPlan:
    """Draw a CutMix plan: lam ~ Beta(alpha, alpha) and a partner per image
    (:func:`draw_pairing`), then one box for the whole batch (:func:`cutmix_box`)."""
    lam, perm = draw_pairing(batch, alpha, rng)
    top, bottom, left, right = cutmix_box(height, width, lam, rng)
    kept = 1 - (bottom - top) * (right - left) / (height * width)
    return CutMixPlan(perm=perm, box=(top, bottom, left, right), kept=kept)


class CutMix(Mixer):
    """CutMix (Yun et al., ICCV 2019), as the Puzzle Mix repository runs it: one box
    (:func:`cutmix_box`, the same for the whole batch) pasted from each image's partner; targets
    by the box's actual area after clipping.

    Args:
        num_classes: K, needed when ``y`` holds class indices.
        alpha: lam ~ Beta(alpha, alpha), one per batch; the box's sides are sqrt(1 - lam) times the
            image's (the published CIFAR command: 1.0).
        rng: a ``numpy.random.Generator`` for the draws; None uses numpy's global state.
    """

    def __init__(self, *, num_classes: int | None = None, alpha: float = 1.0,
                 rng: np.random.Generator | None = None) -> None:
        super().__init__(num_classes=num_classes, rng=rng)
        self.alpha = check_float("alpha", alpha, minimum=0, strict_minimum=True)

    def __repr__(self) -> str:
        return f"CutMix(num_classes={self.num_classes}, alpha={self.alpha})"

    def plan(self, x: Tensor) -> CutMixPlan:
        """Draw the partners and the box for the batch x (the draws of one call)."""
        return draw_cutmix(x.shape[0], x.shape[-2], x.shape[-1], self.alpha, self.rng)

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor, saliency: None = None) -> tuple[Tensor, Tensor]:
        """Mix a batch.

        Args:
            x: images (B, C, H, W), floating point, any device.
            y: class indices (B,) (needs ``num_classes``) or soft targets (B, K).

        Returns:
            (mixed_x like x, mixed_y (B, K) float32, rows summing to 1).
        """
        x, targets, _ = self._door(x, y, saliency)
        return self.plan(x).apply(x, targets)


def cutmix(x: Tensor, y: Tensor, alpha: float,
           rng: np.random.Generator | None = None) -> tuple[Tensor, Tensor]:
    """CutMix of soft targets y (B, K): ``CutMix(alpha=alpha, rng=rng)(x, y)``."""
    _check_soft_targets(y)
    return CutMix(alpha=alpha, rng=rng)(x, y)


@dataclass(frozen=True)
class ManifoldDraw:
    """One batch's manifold mixup: the depth ``mix_layer`` at which the hidden features are mixed,
    and ``mix_fn`` (a :class:`PairMix`) that mixes them."""

    mix_layer: int
    mix_fn: PairMix

    def forward(self, model: Any, x: Tensor) -> Tensor:
        """``model(x, mix_layer=..., mix_fn=...)``: the logits of the mixed batch (any
        ``comixup.models.MixableClassifier``)."""
        return model(x, mix_layer=self.mix_layer, mix_fn=self.mix_fn)


def _check_layers(layers: Any) -> tuple[int, ...]:
    layers = tuple(layers) if isinstance(layers, (tuple, list, range)) else None
    if not layers or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0
                         for k in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct non-negative ints (0 input, 1 after the first stage, "
                         f"2 after the second), got {layers!r}")
    return tuple(int(k) for k in layers)


class ManifoldMixup(Mixer):
    """Manifold mixup (Verma et al., ICML 2019): input mixup of the hidden features at a depth drawn
    uniformly from ``layers`` (0 input, 1 after the first stage, 2 after the second; see
    ``comixup.models.MixableClassifier``).

    It mixes inside the model, so a call cannot return mixed images: it returns the draw, whose
    ``forward(model, x)`` runs the mixed forward pass, and the mixed targets.

    Args:
        num_classes: K, needed when ``y`` holds class indices.
        alpha: lam ~ Beta(alpha, alpha), one per batch (the published CIFAR command: 2.0).
        layers: the depths to draw from.
        rng: a ``numpy.random.Generator`` for the draws; None uses numpy's global state.
    """

    def __init__(self, *, num_classes: int | None = None, alpha: float = 2.0, layers: Sequence[int] = (0, 1, 2),
                 rng: np.random.Generator | None = None) -> None:
        super().__init__(num_classes=num_classes, rng=rng)
        self.alpha = check_float("alpha", alpha, minimum=0, strict_minimum=True)
        self.layers = _check_layers(layers)

    def __repr__(self) -> str:
        return f"ManifoldMixup(num_classes={self.num_classes}, alpha={self.alpha}, layers={self.layers})"

    def _draw(self, batch: int) -> tuple[int, PairMix, np.ndarray, float]:
        if self.rng is not None:
            layer = self.layers[int(self.rng.integers(len(self.layers)))]
        else:
            layer = self.layers[np.random.randint(len(self.layers))]
        lam, perm = draw_pairing(batch, self.alpha, self.rng)
        return layer, PairMix(lam, perm), perm, lam

    def __call__(self, x: Tensor, y: Tensor, saliency: None = None) -> tuple[ManifoldDraw, Tensor]:
        """Draw the mixing of a batch.

        Args:
            x: images (B, C, H, W), floating point, any device (only checked here).
            y: class indices (B,) (needs ``num_classes``) or soft targets (B, K).

        Returns:
            (the :class:`ManifoldDraw`, whose ``forward(model, x)`` gives the mixed logits;
            mixed_y (B, K) float32, rows summing to 1).
        """
        x, targets, _ = self._door(x, y, saliency)
        layer, mix_fn, perm, lam = self._draw(x.shape[0])
        return ManifoldDraw(layer, mix_fn), mix_targets(targets, perm, lam)


class ManifoldMix(ManifoldMixup):
    """The earlier spelling: ``ManifoldMix(alpha, layers, rng).draw(y)`` returns ``(mix_layer,
    mix_fn, mixed_y)`` for soft targets y (B, K), the draws of :class:`ManifoldMixup`."""

    def __init__(self, alpha: float, layers: Sequence[int] = (0, 1, 2),
                 rng: np.random.Generator | None = None) -> None:
        super().__init__(alpha=alpha, layers=layers, rng=rng)

    def __repr__(self) -> str:
        return f"ManifoldMix(alpha={self.alpha}, layers={self.layers})"

    def draw(self, y: Tensor) -> tuple[int, PairMix, Tensor]:
        """(mix_layer, mix_fn, mixed_y) for a batch with soft targets y (B, K)."""
        _check_soft_targets(y)
        layer, mix_fn, perm, lam = self._draw(y.shape[0])
        return layer, mix_fn, mix_targets(y, perm, lam)
