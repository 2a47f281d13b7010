"""What the two saliency-guided mixers (Co-Mixup in comix.py, Puzzle Mix in puzzlemix.py) share:
the saliency averaged over a grid of blocks, the grid size drawn per batch (and the check that every
grid that can be drawn fits the images), and a config read from an argparse namespace whose fields
are checked for their types."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from comixup.mixing.base import check_bool, check_int, check_number

__all__ = ["BLOCK_CHOICES", "block_saliency", "draw_grid_size", "check_grid", "NamespaceConfig"]

BLOCK_CHOICES = (2, 4, 8, 16)
"""Grid sizes drawn per batch when a mixer's grid is -1 (both published codes)."""

_Config = TypeVar("_Config", bound="NamespaceConfig")


def block_saliency(saliency: Tensor, n: int) -> Tensor:
    """Saliency (B, H, W) averaged over an n x n grid of blocks, normalised to sum 1 per image
    (B, n, n), float32. Saliency is a magnitude: negative entries count as 0, and an image
    without positive saliency gets a uniform map. ValueError when n does not divide the image
    size."""
    height, width = saliency.shape[-2:]
    if height % n or width % n:
        raise ValueError(f"image size {height}x{width} is not divisible by the grid size {n}")
    pooled = F.adaptive_avg_pool2d(saliency.float().clamp_min(0).unsqueeze(1), n).squeeze(1)
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


def check_grid(name: str, grid: int, height: int, width: int) -> None:
    """ValueError when the grid setting ``name`` = ``grid`` cannot mix height x width images: a fixed
    grid that does not divide them, or -1 when one of the grids it may draw does not (refused at
    once rather than failing at the random batch that draws it)."""
    drawn = BLOCK_CHOICES if grid == -1 else (grid,)
    bad = [n for n in drawn if height % n or width % n]
    if not bad:
        return
    fitting = [n for n in range(1, min(height, width) + 1) if height % n == 0 and width % n == 0]
    what = (f"{name}=-1 draws grids of {', '.join(map(str, BLOCK_CHOICES))} blocks, and {', '.join(map(str, bad))} "
            f"{'does' if len(bad) == 1 else 'do'} not divide" if grid == -1 else f"{name}={grid} does not divide")
    raise ValueError(f"{what} the {height}x{width} images; use a grid size that does: "
                     f"{', '.join(map(str, fitting))}")


_FIELD_TYPES: dict[str, Callable[[str, Any], Any]] = {
    "int": check_int, "float": check_number, "bool": check_bool,
}


class NamespaceConfig:
    """A mixin for a mixer's config dataclass: :meth:`from_namespace` reads its fields from the
    command line's namespace (or any object); :meth:`check_types` (called first by the config's
    ``__post_init__``) refuses a value of the wrong type with one line naming the field, so that a
    string or float does not fail later, deep inside a call."""

    def check_types(self) -> None:
        """Each ``int``, ``float`` and ``bool`` field holds a value of its type (numpy numbers
        converted); ``str`` fields hold strings. TypeError naming the field otherwise."""
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type in _FIELD_TYPES:
                setattr(self, field.name, _FIELD_TYPES[field.type](field.name, value))
            elif field.type == "str" and not isinstance(value, str):
                raise TypeError(f"{field.name} must be a string, got {type(value).__name__} {value!r}")

    @classmethod
    def from_namespace(cls: type[_Config], args: Any) -> _Config:
        """Read the fields of an argparse namespace (or any object); missing ones keep their defaults."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})
