"""Mixup baselines of the Co-Mixup paper: input mixup, manifold mixup and CutMix.

Common contract (shared with :mod:`puzzlemix`):

- x: (B, C, H, W), any float dtype and device; y: soft targets (B, K), rows summing to 1
  (``comix.to_one_hot`` turns class indices into such rows).
- Pairs are a shuffled copy of the batch: the partner of image i is ``x[perm[i]]``, ``perm`` a
  random permutation of ``range(B)``; one weight ``lam ~ Beta(alpha, alpha)`` per batch.
- Randomness comes from ``rng``, a ``numpy.random.Generator``, or from numpy's global state
  (``np.random.*``) when ``rng`` is None, so seeding numpy (and saving its state in a
  checkpoint) makes runs reproducible.
- Mixed images keep the device and dtype of x. Mixed targets are float32 on the device of y,
  ``w * y + (1 - w) * y[perm]`` with w the actual share of image i in its mixed image (lam,
  or one minus the pasted box's area after clipping), so rows sum to 1.

Use in a training loop (y already soft)::

    mixed_x, mixed_y = input_mixup(x, y, alpha=1.0)            # or cutmix(x, y, alpha=1.0)
    loss = soft_cross_entropy(model(mixed_x), mixed_y)

    manifold = ManifoldMix(alpha=2.0)
    mix_layer, mix_fn, mixed_y = manifold.draw(y)
    loss = soft_cross_entropy(model(x, mix_layer=mix_layer, mix_fn=mix_fn), mixed_y)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "draw_lambda", "draw_permutation", "draw_pairing", "PairMix", "mix_targets", "input_mixup",
    "cutmix_box", "CutMixPlan", "draw_cutmix", "cutmix", "ManifoldMix",
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

def _check_images(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[0] < 1:
        raise ValueError(f"x must be a non-empty batch (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")


def _check_targets(y: Tensor, batch: int | None = None) -> None:
    if y.dim() != 2 or y.shape[0] < 1:
        raise ValueError(f"y must be soft targets (B, K) (comix.to_one_hot turns class indices into "
                         f"such rows), got shape {tuple(y.shape)}")
    if batch is not None and y.shape[0] != batch:
        raise ValueError(f"got {y.shape[0]} target rows for {batch} images")


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

@torch.no_grad()
def input_mixup(x: Tensor, y: Tensor, alpha: float,
                rng: np.random.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Input mixup (Zhang et al. 2018): ``lam * x + (1 - lam) * x[perm]``, targets alike."""
    _check_images(x)
    _check_targets(y, x.shape[0])
    lam, perm = draw_pairing(x.shape[0], alpha, rng)
    return PairMix(lam, perm)(x), mix_targets(y, perm, lam)


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


@torch.no_grad()
def cutmix(x: Tensor, y: Tensor, alpha: float,
           rng: np.random.Generator | None = None) -> tuple[Tensor, Tensor]:
    """CutMix (Yun et al. 2019): one box (:func:`cutmix_box`, the same for the whole batch)
    pasted from each image's partner; targets by the box's actual area after clipping."""
    _check_images(x)
    _check_targets(y, x.shape[0])
    return draw_cutmix(x.shape[0], x.shape[-2], x.shape[-1], alpha, rng).apply(x, y)


class ManifoldMix:
    """Manifold mixup (Verma et al. 2019): input mixup of the hidden features at a depth drawn
    uniformly from ``layers`` (0 input, 1 after the first stage, 2 after the second; see
    ``models.mixable.MixableClassifier``).

    ``draw(y)`` returns ``(mix_layer, mix_fn, mixed_y)`` for one batch: the loop then runs
    ``model(x, mix_layer=mix_layer, mix_fn=mix_fn)`` against ``mixed_y``. mix_fn is a
    :class:`PairMix` (its ``lam`` and ``perm`` are attributes).
    """

    def __init__(self, alpha: float, layers: Sequence[int] = (0, 1, 2),
                 rng: np.random.Generator | None = None) -> None:
        _check_alpha(alpha)
        layers = tuple(layers)
        if not layers or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0
                             for k in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"layers must be distinct non-negative ints (0 input, 1 after the first stage, "
                             f"2 after the second), got {layers!r}")
        self.alpha = alpha
        self.layers = tuple(int(k) for k in layers)
        self.rng = rng

    def __repr__(self) -> str:
        return f"ManifoldMix(alpha={self.alpha}, layers={self.layers})"

    def draw(self, y: Tensor) -> tuple[int, PairMix, Tensor]:
        """(mix_layer, mix_fn, mixed_y) for a batch with soft targets y (B, K)."""
        _check_targets(y)
        if self.rng is not None:
            layer = self.layers[int(self.rng.integers(len(self.layers)))]
        else:
            layer = self.layers[np.random.randint(len(self.layers))]
        lam, perm = draw_pairing(y.shape[0], self.alpha, self.rng)
        return layer, PairMix(lam, perm), mix_targets(y, perm, lam)
