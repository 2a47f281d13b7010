"""The partition solver as it was before the fast labelling (commit 92257cd), for bench/ only.

bench/solver_speed.py times it against comix_solver's current one in the same run, so the
speed-up is measured on the same machine under the same load. It is the previous grid
labelling (a cut over the whole grid for every move that a weaker bound did not rule out, work
arrays made per labelling) run inside comix_solver's compiled partition loop; its answers are
the same, move for move. Not used by training.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from comix_solver import _grid_neighbours, _labelling_energy, _min_cut, _swap_is_idle


@njit(cache=True, nogil=True)
def _previous_swap_move(alpha, beta_label, labels, unary, potts, beta, nbr, work_f, work_i, sink_side):
    """One alpha-beta swap: the blocks labelled alpha or beta_label take whichever of the two
    minimises the energy, the rest fixed; ties keep alpha (source side), as GCO does."""
    size = nbr.shape[0]
    gain = work_f[0]
    src = work_f[1]
    snk = work_f[2]
    cap = work_f[3:7]
    gain[:] = 0.0
    cap[:, :] = 0.0
    for p in range(size):
        if labels[p] != alpha and labels[p] != beta_label:
            continue
        gain[p] += unary[beta_label, p] - unary[alpha, p]
        for d in range(4):
            q = nbr[p, d]
            if q < 0:
                continue
            if labels[q] == alpha or labels[q] == beta_label:
                if d < 2:
                    # E(a,a) = E(b,b) = 0, E(a,b) = E(b,a) = w: y_p costs w, y_q gets -w, arc p->q 2w
                    w = beta * potts[alpha, beta_label]
                    gain[p] += w
                    gain[q] -= w
                    cap[d, p] += 2.0 * w
            else:
                gain[p] += beta * (potts[beta_label, labels[q]] - potts[alpha, labels[q]])
    for p in range(size):
        src[p] = gain[p] if gain[p] > 0 else 0.0
        snk[p] = -gain[p] if gain[p] < 0 else 0.0
    _min_cut(nbr, src, snk, cap, sink_side, work_i[0], work_i[1], work_i[2])
    for p in range(size):
        if labels[p] == alpha or labels[p] == beta_label:
            labels[p] = beta_label if sink_side[p] else alpha


@njit(cache=True, nogil=True)
def previous_grid_labelling(unary, potts, beta, n):
    """Alpha-beta swap minimisation of sum_p unary[l_p, p] + beta * sum_{p~q} potts[l_p, l_q]
    on an n x n grid, the move sequence of the published solver (GCO's swap): start from label
    0 everywhere; each cycle visits the pairs (a, b), a ascending, b descending from the last
    label to a + 1; cycles repeat while the energy decreases. Returns the labels (n*n,).
    """
    size = n * n
    nbr = _grid_neighbours(n)
    n_labels = unary.shape[0]
    labels = np.zeros(size, dtype=np.int64)
    work_f = np.zeros((7, size))
    work_i = np.zeros((3, size), dtype=np.int64)
    sink_side = np.zeros(size, dtype=np.bool_)
    present = np.zeros(n_labels, dtype=np.int64)
    present[0] = size
    lowest = np.empty(n_labels)
    highest = np.empty(n_labels)
    for label in range(n_labels):
        lowest[label] = unary[label].min()
        highest[label] = unary[label].max()
    reach = 4.0 * beta
    energy = _labelling_energy(labels, unary, potts, beta, nbr)
    previous = energy + 1.0
    while previous > energy:
        previous = energy
        for a in range(n_labels):
            for b in range(n_labels - 1, a, -1):
                if present[a] + present[b] == 0:
                    continue
                if present[b] == 0 and lowest[b] - highest[a] >= reach:
                    continue  # a keeps all its blocks (ties keep a)
                if present[a] == 0 and lowest[a] - highest[b] > reach:
                    continue  # b keeps all its blocks (ties would move them to a)
                if _swap_is_idle(a, b, labels, unary, potts, beta, nbr, True):
                    continue
                _previous_swap_move(a, b, labels, unary, potts, beta, nbr, work_f, work_i, sink_side)
                present[a] = 0
                present[b] = 0
                for p in range(size):
                    if labels[p] == a:
                        present[a] += 1
                    elif labels[p] == b:
                        present[b] += 1
        energy = _labelling_energy(labels, unary, potts, beta, nbr)
    return labels
