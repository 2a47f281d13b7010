"""Puzzle Mix's objectives and one-call forms of its compiled parts, for tests: the package only
minimises them inside solve_levels and solve_transport (comixup/mixing/puzzlemix.py)."""
from __future__ import annotations

import numpy as np

from comixup.mixing.puzzlemix import _assign


def level_energy(labels: np.ndarray, unary: np.ndarray, w_down: np.ndarray, w_right: np.ndarray) -> np.ndarray:
    """E(k) of level labellings: labels (..., n, n) ints in 0..L-1 for one problem (unary
    (L, n*n), w_down (n-1, n), w_right (n, n-1)); returns the energies (...,) in float64."""
    labels = np.asarray(labels)
    n_labels = unary.shape[0]
    n = labels.shape[-1]
    flat = labels.reshape(labels.shape[:-2] + (n * n,))
    energy = np.take_along_axis(np.broadcast_to(unary, flat.shape[:-1] + unary.shape),
                                flat[..., None, :], axis=-2)[..., 0, :].sum(-1)
    mask = labels / (n_labels - 1)
    energy = energy + (w_down * (mask[..., :-1, :] - mask[..., 1:, :]) ** 2).sum((-1, -2))
    return energy + (w_right * (mask[..., :, :-1] - mask[..., :, 1:]) ** 2).sum((-1, -2))



def linear_assignment(cost: np.ndarray) -> np.ndarray:
    """dest (M,): the permutation minimising sum_i cost[i, dest[i]] for a square cost matrix."""
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1] or not np.isfinite(cost).all():
        raise ValueError(f"cost must be a finite square matrix, got shape {cost.shape}")
    m = cost.shape[0]
    dest = np.empty(m, np.int64)
    _assign(cost, dest, np.empty(m, np.int64), np.empty(m), np.empty(m), np.empty(m), np.empty(m, np.int64),
            np.empty(m, np.bool_), np.empty(m, np.bool_))
    return dest



def transport_cost(saliency: np.ndarray, keep: np.ndarray, t_eps: float) -> np.ndarray:
    """The transport cost matrices (B, M, M), M = T*T: moving block i (row-major) of an image
    with block saliency (B, T, T) to position j costs t_eps |pos_i - pos_j|^2 / (T-1)^2 -
    saliency_i * keep_j."""
    saliency = np.asarray(saliency, dtype=np.float64)
    batch, side, _ = saliency.shape
    rows, cols = np.divmod(np.arange(side * side), side)
    dist = (rows[:, None] - rows[None]) ** 2 + (cols[:, None] - cols[None]) ** 2
    dist = dist / (side - 1) ** 2 if side > 1 else dist * 0.0
    return t_eps * dist[None] - saliency.reshape(batch, -1, 1) * np.asarray(keep, np.float64).reshape(batch, 1, -1)
