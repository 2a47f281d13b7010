"""One-call forms of the compiled solver's parts, for tests: the package runs them inside the
partition loop with work arrays it keeps (comixup/mixing/comix_solver.py), tests call them one
problem at a time."""
from __future__ import annotations

import numpy as np

from comixup.mixing import comix_solver, swap_labelling


def potts_summary(potts: np.ndarray, n_labels: int) -> tuple[np.uint64, float]:
    """label_grid's (special, heaviest) for the first n_labels labels of potts: the bit set of the
    labels with a weight other than 0 and 1 to some label (0 past 64 labels, where label_grid
    does not read it), and the largest weight."""
    weights = potts[:n_labels, :n_labels]
    special = 0
    if n_labels <= 64:
        for label in range(n_labels):
            if ((weights[label] != 0.0) & (weights[label] != 1.0)).any():
                special |= 1 << label
    return np.uint64(special), max(0.0, float(weights.max()))


def grid_labelling(unary: np.ndarray, potts: np.ndarray, beta: float, n: int) -> np.ndarray:
    """The labels (n*n,) that label_grid gives on an n x n grid, with fresh work arrays."""
    labels = np.zeros(n * n, dtype=np.int64)
    special, heaviest = potts_summary(potts, unary.shape[0])
    swap_labelling.label_grid(unary, potts, beta, labels, swap_labelling.make_workspace(n, unary.shape[0]),
                              special, heaviest)
    return labels


def top3(counts: np.ndarray) -> np.ndarray:
    """The indices (increasing) of the 3 largest counts as the partition loop picks them."""
    top = np.zeros(3, dtype=np.int64)
    comix_solver._top3_into(counts, np.zeros(counts.shape[0]), np.zeros(counts.shape[0], dtype=np.int64), top)
    return top


def modular_penalty(P: np.ndarray, A: np.ndarray, gamma: float, tau: float, hard: bool) -> np.ndarray:
    """Each input's cost (m,) of the diversity term given its use P (m,) by the other outputs."""
    penalty = np.zeros(P.shape[0])
    comix_solver._modular_penalty_into(P, np.ascontiguousarray(A.T), gamma, tau, hard, np.zeros(P.shape[0]),
                                       penalty)
    return penalty


def resolve_cost(mask: np.ndarray) -> np.ndarray:
    """The extra per-input cost (n_out, m) that pulls apart outputs of the masks (n_out, blocks, m)
    using exactly the same inputs."""
    return comix_solver._resolve_from_counts(np.ascontiguousarray(mask.sum(axis=1)))
