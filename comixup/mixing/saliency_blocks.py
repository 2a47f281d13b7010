"""What the two saliency-guided mixers (Co-Mixup in comix.py, Puzzle Mix in puzzlemix.py) share:
the saliency averaged over a grid of blocks, the grid size drawn per batch, and reading a config
from an argparse namespace."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BLOCK_CHOICES", "block_saliency", "draw_grid_size", "NamespaceConfig"]

BLOCK_CHOICES = (2, 4, 8, 16)
"""Grid sizes drawn per batch when a mixer's grid is -1 (both published codes)."""

_Config = TypeVar("_Config", bound="NamespaceConfig")


def block_saliency(saliency: Tensor, n: int) -> Tensor:
    """Saliency (B, H, W) averaged over an n x n grid of blocks, normalised to sum 1 per image
    (B, n, n), float32. An image without any saliency gets a uniform map. ValueError when n does
    not divide the image size."""
    height, width = saliency.shape[-2:]
    if height % n or width % n:
        raise ValueError(f"image size {height}x{width} is not divisible by the grid size {n}")
    pooled = F.adaptive_avg_pool2d(saliency.float().unsqueeze(1), n).squeeze(1)
    total = pooled.flatten(1).sum(1).view(-1, 1, 1)
    uniform = torch.full_like(pooled, 1.0 / (n * n))
    return torch.where(total > 0, pooled / total.clamp_min(torch.finfo(pooled.dtype).tiny), uniform)


def draw_grid_size(fixed: int, rng: np.random.Generator | None = None) -> int:
    """``fixed`` unless it is -1; then one of :data:`BLOCK_CHOICES`, drawn from ``rng`` (or
    numpy's global generator, as the published code draws it)."""
    if fixed != -1:
        return fixed
    if rng is None:
        return BLOCK_CHOICES[np.random.randint(len(BLOCK_CHOICES))]
    return BLOCK_CHOICES[int(rng.integers(len(BLOCK_CHOICES)))]


class NamespaceConfig:
    """A mixin for a mixer's config dataclass: :meth:`from_namespace` reads its fields from the
    command line's namespace (or any object)."""

    @classmethod
    def from_namespace(cls: type[_Config], args: Any) -> _Config:
        """Read the fields of an argparse namespace (or any object); missing ones keep their defaults."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})
