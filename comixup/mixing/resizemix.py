"""ResizeMix (Qin et al., "ResizeMix: Mixing Data with Preserved Object Information and True Labels",
2020): the whole partner image, shrunk, pasted into the image.

**The paper** (no official code was released): the partner image is resized by a scale rate
tau ~ U(0.1, 0.8) and pasted onto a random region of the image; the labels are weighed by the pasted
area's share of the image.

**What is taken from OpenMixup** (Westlake-AI/openmixup, ``openmixup/models/augments/resizemix.py``),
the implementation behind the published CIFAR benchmarks, where the paper leaves it open: the region
is a box reaching ``cut // 2`` pixels each way, ``cut = int(side * tau)``, from a centre drawn uniformly
over the image (column first, then row), and **clipped** to the image; the partner image is resized
with **nearest** interpolation to the clipped box, so a box cut by the border squashes the whole image
into what is left of it. The label weight of the image's own label is 1 - box area / image area.

**Options.** ``use_alpha=False`` (default) draws tau ~ U(scope) as the paper does (and as OpenMixup's
class default does). ``use_alpha=True`` is OpenMixup's CIFAR configuration
(``mix_args.resizemix=dict(scope=(0.1, 0.8), use_alpha=True)`` with ``alpha=1``): tau ~ Beta(alpha,
alpha), drawn again uniformly over ``scope`` when it falls outside it.

**Differences from OpenMixup, by design**: the permutation comes from numpy (``torch.randperm``
there), so one saved numpy state resumes a run; and for images that are not square, OpenMixup sizes
and places the box's columns by the image's height and its rows by its width, while here each side
uses its own length (the same boxes for square images).

**Random draws**, from ``rng`` or numpy's global state, in OpenMixup's order: the permutation, tau
(one or two numbers), the centre's column, then its row.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from comixup.mixing.base import Mixer, check_bool, check_float
from comixup.mixing.baselines import draw_lambda, draw_permutation, mix_targets
from comixup.mixing.random_draws import draw_integer, draw_uniform

__all__ = ["draw_scale", "resize_box", "paste_resized", "ResizeMixDraw", "ResizeMix"]


def draw_scale(scope: tuple[float, float], alpha: float | None = None,
               rng: np.random.Generator | None = None) -> float:
    """The scale rate tau: uniform over ``scope`` when ``alpha`` is None (the paper); else
    Beta(alpha, alpha), drawn again uniformly over ``scope`` when outside it (OpenMixup's use_alpha)."""
    low, high = scope
    if alpha is not None:
        tau = draw_lambda(alpha, rng)
        if low <= tau <= high:
            return tau
    return draw_uniform(low, high, rng)


def resize_box(height: int, width: int, tau: float, centre_row: int, centre_col: int) -> tuple[int, int, int, int]:
    """The ResizeMix box ``(top, bottom, left, right)`` (rows top:bottom, columns left:right).

    Each side reaches ``cut // 2`` pixels from the centre, ``cut = int(side * tau)``, clipped to the
    image (OpenMixup's ``get_bbox``). The box may be empty where ``cut`` < 2.
    """
    cut_rows, cut_cols = int(height * tau), int(width * tau)
    top = int(np.clip(centre_row - cut_rows // 2, 0, height))
    bottom = int(np.clip(centre_row + cut_rows // 2, 0, height))
    left = int(np.clip(centre_col - cut_cols // 2, 0, width))
    right = int(np.clip(centre_col + cut_cols // 2, 0, width))
    return top, bottom, left, right


def paste_resized(x: Tensor, perm: np.ndarray | Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """A copy of the images x (B, C, H, W) where image i holds the whole image ``x[perm[i]]``,
    resized by nearest interpolation to ``box`` = (top, bottom, left, right)."""
    top, bottom, left, right = box
    mixed = x.clone()
    if bottom > top and right > left:
        partners = x[torch.as_tensor(np.asarray(perm, dtype=np.int64), device=x.device)]
        mixed[:, :, top:bottom, left:right] = F.interpolate(partners, size=(bottom - top, right - left),
                                                            mode="nearest")
    return mixed


@dataclass(frozen=True)
class ResizeMixDraw:
    """One ResizeMix draw for a batch: image i holds image ``perm[i]``, resized into ``box``
    (top, bottom, left, right); ``kept`` (1 - the box's area share) weighs its own label."""

    perm: np.ndarray
    tau: float
    box: tuple[int, int, int, int]
    kept: float


def _check_scope(scope: Any) -> tuple[float, float]:
    if isinstance(scope, (str, bytes)) or not hasattr(scope, "__len__") or len(scope) != 2 or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in scope):
        raise TypeError(f"scope must be two numbers (low, high), got {type(scope).__name__} {scope!r}")
    low = check_float("scope[0]", scope[0], minimum=0, maximum=1)
    high = check_float("scope[1]", scope[1], minimum=0, maximum=1)
    if low > high:
        raise ValueError(f"scope must be (low, high) with low <= high, got {scope!r}")
    return low, high


class ResizeMix(Mixer):
    """ResizeMix (module docstring): each image's partner, resized into one random clipped box.

    Args:
        scope: the range (low, high) of the scale rate tau, within [0, 1]; (0.1, 0.8) in the paper.
        use_alpha: False (default): tau ~ U(scope), the paper's; True: tau ~ Beta(alpha, alpha),
            redrawn uniformly when outside ``scope``, OpenMixup's CIFAR configuration.
        alpha: the Beta concentration when ``use_alpha``; 1.0 in OpenMixup's CIFAR configuration.
        num_classes: the class count, needed when ``y`` holds class indices.
        rng: a numpy Generator, or None for numpy's global state.
    """

    def __init__(self, *, scope: tuple[float, float] = (0.1, 0.8), use_alpha: bool = False, alpha: float = 1.0,
                 num_classes: int | None = None, rng: np.random.Generator | None = None) -> None:
        super().__init__(num_classes=num_classes, rng=rng)
        self.scope = _check_scope(scope)
        self.use_alpha = check_bool("use_alpha", use_alpha)
        self.alpha = check_float("alpha", alpha, minimum=0, strict_minimum=True)

    def __repr__(self) -> str:
        return f"ResizeMix(scope={self.scope}, use_alpha={self.use_alpha}, alpha={self.alpha})"

    def draw(self, batch: int, height: int, width: int) -> ResizeMixDraw:
        """Draw the partners, tau and the box for a batch, in OpenMixup's order (module docstring)."""
        perm = draw_permutation(batch, self.rng)
        tau = draw_scale(self.scope, self.alpha if self.use_alpha else None, self.rng)
        centre_col = draw_integer(0, width, self.rng)
        centre_row = draw_integer(0, height, self.rng)
        top, bottom, left, right = resize_box(height, width, tau, centre_row, centre_col)
        kept = 1 - (bottom - top) * (right - left) / (height * width)
        return ResizeMixDraw(perm=perm, tau=tau, box=(top, bottom, left, right), kept=kept)

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor, saliency: None = None) -> tuple[Tensor, Tensor]:
        """Mix a batch.

        Args:
            x: images (B, C, H, W), floating point.
            y: class indices (B,) or soft targets (B, K).
            saliency: must be None: this mixer reads no saliency map given to it.

        Returns:
            ``(mixed_x, mixed_y)``: the images with their resized partners pasted in, in x's dtype,
            and ``kept * y + (1 - kept) * y[perm]`` (B, K) float32, kept = 1 - the box's area share.
        """
        x, targets, _ = self._door(x, y, saliency)
        drawn = self.draw(x.shape[0], x.shape[-2], x.shape[-1])
        return paste_resized(x, drawn.perm, drawn.box), mix_targets(targets, drawn.perm, drawn.kept)
