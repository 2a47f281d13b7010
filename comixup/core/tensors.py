"""Tensor helpers the published code shares between its modules (``from utils import to_one_hot,
distance`` in the published repository): one-hot targets and pairwise distances."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["to_one_hot", "distance"]


def to_one_hot(inp: Tensor, num_classes: int) -> Tensor:
    """Class indices (B,) to float one-hot rows (B, num_classes) on the same device."""
    return F.one_hot(inp.long(), num_classes).float()


def distance(z: Tensor, dist_type: str = "l2") -> Tensor:
    """Pairwise distances between the rows of z (B, D): 'l2', 'l22' (squared), 'l1' or 'linf'."""
    diff = z.unsqueeze(1) - z.unsqueeze(0)
    if dist_type == "l2":
        return diff.pow(2).sum(-1).sqrt()
    if dist_type == "l22":
        return diff.pow(2).sum(-1)
    if dist_type == "l1":
        return diff.abs().sum(-1)
    if dist_type == "linf":
        return diff.abs().amax(-1)
    raise ValueError(f"unknown dist_type {dist_type!r}; choose l2, l22, l1 or linf")
