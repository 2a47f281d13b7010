"""Compiled solver for the Co-Mixup labelling problem of one partition.

The published solver runs, for every output, an alpha-beta swap of the GCO library from
Python: 400 library calls per CIFAR batch, each rebuilding its graph, and that dominates the
training step. This module runs the whole partition loop (modular approximation of
the diversity term, the outputs visited in turn, blended half-half labels, duplicate
resolution, early stop) as one compiled function that releases the GIL, so partitions can run
in threads. Each output's grid labelling (swap_labelling.py) makes GCO's alpha-beta swap
moves in GCO's order, so the solver retraces the published one instead of approximating it.
The loop keeps each output's labelling as block labels and input counts, not as a dense mask,
so its bookkeeping costs little next to the labellings.

Arrays are numpy, float64, blocks flattened row-major (p = row * n + col).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from comixup.mixing.compile_notice import announce_compilation
from comixup.mixing.swap_labelling import label_grid, make_workspace

SOLVERS = ("fast", "bkgco", "gco")

_HALF_COST_OFFSET = 5e-4  # published: a half-half label is slightly preferred to its parents' mean
_HALF_PARENT_WEIGHT = 0.25  # published Potts weight between a half-half label and either parent


@njit(cache=True, nogil=True)
def _modular_penalty_into(P, A_T, gamma, tau, hard, q, penalty):
    """Per-input cost of the diversity term with the other outputs fixed, written into penalty
    (m,), from the inputs' use P (m,) by the other outputs and the transposed compatibility
    A_T = A.T, with q (m,) as scratch: the partition loop calls it once per output and keeps
    all three.

    q = A @ P. Soft: 2 gamma max(q - tau, 0). Hard, as the published code computes it
    (`(q > tau).float() * A @ P` parses as `((q > tau) * A) @ P`): 2 gamma sum_k A_ik [q_k > tau] P_k,
    which equals the documented 2 gamma [q_i > tau] q_i when A is the identity and differs by
    O(omega) otherwise. The reference answers follow this form. Each sum runs over k in order,
    as the row-by-row loops would; running k outermost lets the compiler vectorise over i."""
    m = P.shape[0]
    q[:] = 0.0
    for k in range(m):  # q = A @ P, written out: numba's matrix product would need scipy's BLAS
        for i in range(m):
            q[i] += A_T[k, i] * P[k]
    if hard:
        penalty[:] = 0.0
        for k in range(m):
            if q[k] > tau:
                for i in range(m):
                    penalty[i] += A_T[k, i] * P[k]
        for i in range(m):
            penalty[i] = 2.0 * gamma * penalty[i]
    else:
        for i in range(m):
            penalty[i] = 2.0 * gamma * max(q[i] - tau, 0.0)


@njit(cache=True, nogil=True)
def _resolve_from_counts(counts):
    """Extra per-input cost (n_out, m) that pulls apart outputs using exactly the same set of
    inputs, from each output's input counts (n_out, m): for each pair j1 < j2 with identical
    input sets of two or more inputs, the first input costs one more in j1 and the second one
    more in j2 (scaled by gamma by the caller)."""
    n_out, m = counts.shape
    add = np.zeros((n_out, m))
    for j1 in range(n_out):
        for j2 in range(j1 + 1, n_out):
            same = True
            for i in range(m):
                if (counts[j1, i] > 0) != (counts[j2, i] > 0):
                    same = False
                    break
            if not same:
                continue
            first = -1
            second = -1
            for i in range(m):
                if counts[j1, i] > 0:
                    if first < 0:
                        first = i
                    elif second < 0:
                        second = i
            if second >= 0:
                add[j1, first] = 1.0
                add[j2, second] = 1.0
    return add


@njit(cache=True, nogil=True)
def objective(cost, first, second, counts, n, beta, gamma):
    """obj_fn of the published code for the labelling first/second (n_out, n*n): block p of
    output j holds input first[j, p], or half of it and half of second[j, p] > first[j, p]
    (second -1 when whole); counts (n_out, m): each output's blocks per input. Adds the terms
    in the order the published sums over a dense mask would (input by input, the unary term of
    a block, then its links right and down), skipping those that are zero, so the value is the
    same to the last bit."""
    n_out = first.shape[0]
    size = n * n
    m = cost.shape[0]
    half_beta = 0.5 * beta
    total = 0.0
    for j in range(n_out):
        for p in range(size):
            a = first[j, p]
            b = second[j, p]
            if b < 0:
                total += cost[a, p] * 1.0
            else:
                total += cost[a, p] * 0.5
                total += cost[b, p] * 0.5
            if p % n < n - 1:  # the block to the right, then the one below
                total = _add_link(total, half_beta, a, b, first[j, p + 1], second[j, p + 1])
            if p + n < size:
                total = _add_link(total, half_beta, a, b, first[j, p + n], second[j, p + n])
    own = 0.0
    P = np.zeros(m)
    for j in range(n_out):
        for i in range(m):
            P[i] += counts[j, i]
            own += counts[j, i] * counts[j, i]
    return total + gamma * ((P * P).sum() - own)


@njit(cache=True, nogil=True, inline="always")
def _add_link(total, half_beta, a, b, c, e):
    """total + half_beta * sum_i (x_i - y_i)^2 over the inputs in increasing order, for the
    mask rows x (input a, or halves of a < b) and y (input c, or halves of c < e)."""
    if b < 0 and e < 0:  # two whole inputs: nothing, or two equal terms
        if a != c:
            total += half_beta
            total += half_beta
        return total
    wa = 1.0 if b < 0 else 0.5
    wc = 1.0 if e < 0 else 0.5
    # merge the sorted index lists (a, b) and (c, e), b and e being -1 when absent
    i = 0  # position in (a, b)
    k = 0  # position in (c, e)
    while True:
        left = (a if i == 0 else b) if i < (1 if b < 0 else 2) else -1
        right = (c if k == 0 else e) if k < (1 if e < 0 else 2) else -1
        if left < 0 and right < 0:
            return total
        if right < 0 or (left >= 0 and left < right):
            diff = wa
            i += 1
        elif left < 0 or right < left:
            diff = -wc
            k += 1
        else:
            diff = wa - wc
            i += 1
            k += 1
        if diff != 0.0:
            total += half_beta * diff * diff


@njit(cache=True, nogil=True)
def _top3_into(counts, values, index, top):
    """Indices of the 3 largest counts into top (increasing), ties resolved as the published
    code's torch.topk(k=3); values and index: work arrays as long as counts.

    On the CPU torch.topk selects with std::nth_element (introselect, libstdc++) when
    k * 64 > n; the inputs with tied counts it picks decide which half-half labels exist, and
    so the whole trajectory of the solver. This replays that selection on (count, index)
    pairs. Past 191 inputs, or should introselect ever exhaust its depth budget (not seen in
    10^5 random trials), ties go to the lower index.
    """
    n = counts.shape[0]
    # the common case: the third largest count beats the fourth, so no tie decides the set
    v0 = v1 = v2 = v3 = -np.inf
    i0 = i1 = i2 = -1
    for i in range(n):
        v = counts[i]
        if v > v2:
            if v > v0:
                v0, v1, v2, v3 = v, v0, v1, v2
                i0, i1, i2 = i, i0, i1
            elif v > v1:
                v1, v2, v3 = v, v1, v2
                i1, i2 = i, i1
            else:
                v2, v3 = v, v2
                i2 = i
        elif v > v3:
            v3 = v
    if n >= 3 and v2 > v3:
        top[0] = i0
        top[1] = i1
        top[2] = i2
        top.sort()
        return
    for i in range(n):
        values[i] = counts[i]
        index[i] = i
    if n < 192:
        first = 0
        last = n
        nth = 2
        depth = 0
        size = n
        while size > 1:
            size >>= 1
            depth += 1
        depth = 2 * (depth)
        while last - first > 3 and depth > 0:
            depth -= 1
            a = first + 1
            b = first + (last - first) // 2
            c = last - 1
            if values[a] > values[b]:
                if values[b] > values[c]:
                    r = b
                elif values[a] > values[c]:
                    r = c
                else:
                    r = a
            elif values[a] > values[c]:
                r = a
            elif values[b] > values[c]:
                r = c
            else:
                r = b
            values[first], values[r] = values[r], values[first]
            index[first], index[r] = index[r], index[first]
            lo = first + 1
            hi = last
            while True:
                while values[lo] > values[first]:
                    lo += 1
                hi -= 1
                while values[first] > values[hi]:
                    hi -= 1
                if lo >= hi:
                    break
                values[lo], values[hi] = values[hi], values[lo]
                index[lo], index[hi] = index[hi], index[lo]
                lo += 1
            if lo <= nth:
                first = lo
            else:
                last = lo
        if last - first <= 3:
            for i in range(first + 1, last):
                v = values[i]
                k = index[i]
                j = i
                if v > values[first]:
                    while j > first:
                        values[j] = values[j - 1]
                        index[j] = index[j - 1]
                        j -= 1
                else:
                    while v > values[j - 1]:
                        values[j] = values[j - 1]
                        index[j] = index[j - 1]
                        j -= 1
                values[j] = v
                index[j] = k
            top[:] = index[:3]
            top.sort()
            return
    order = np.argsort(-counts, kind="mergesort")
    top[:] = order[:3]
    top.sort()


@njit(cache=True, nogil=True)
def _half_labels(counts, n_base, values, index, top, parents):
    """Parents of the half-half labels for an output whose current input counts are `counts`,
    into the rows of parents (3, 2); returns how many: one label (a, b) when the output uses two
    inputs; with three or more, one per pair (index order) of the three most used. values,
    index, top: work arrays of _top3_into."""
    used = 0
    for i in range(n_base):
        if counts[i] > 0:
            used += 1
    if used < 2:
        return 0
    if used <= 3:  # the used inputs are the top 3 (the rest count 0)
        k = 0
        for i in range(n_base):
            if counts[i] > 0:
                top[k] = i
                k += 1
        if used == 2:
            parents[0, 0] = top[0]
            parents[0, 1] = top[1]
            return 1
    else:
        _top3_into(counts, values, index, top)
    parents[0, 0] = top[0]
    parents[0, 1] = top[1]
    parents[1, 0] = top[0]
    parents[1, 1] = top[2]
    parents[2, 0] = top[1]
    parents[2, 1] = top[2]
    return 3


@njit(cache=True, nogil=True)
def _output_problem(parents, n_half, n_base, unary, potts):
    """Appends the n_half half-half labels (parents: their parents' rows) to an output's
    labelling problem: their costs in the rows of unary after its n_base input rows, their
    Potts weights in potts. Both are buffers of the partition loop sized for 3 half-half
    labels, potts keeping plain Potts weights between the inputs from call to call. Returns
    the number of labels."""
    n_labels = n_base + n_half
    size = unary.shape[1]
    for k in range(n_base, potts.shape[0]):  # the half-half rows of the previous output
        for i in range(potts.shape[0]):
            weight = 0.0 if i == k else 1.0
            potts[k, i] = weight
            potts[i, k] = weight
    for k in range(n_half):
        a = parents[k, 0]
        b = parents[k, 1]
        for p in range(size):
            unary[n_base + k, p] = 0.5 * (unary[a, p] + unary[b, p]) - _HALF_COST_OFFSET
        potts[n_base + k, a] = _HALF_PARENT_WEIGHT
        potts[a, n_base + k] = _HALF_PARENT_WEIGHT
        potts[n_base + k, b] = _HALF_PARENT_WEIGHT
        potts[b, n_base + k] = _HALF_PARENT_WEIGHT
    return n_labels


@njit(cache=True, nogil=True)
def _special_labels(parents, n_half, n_base):
    """label_grid's special labels of an output's problem (those with a Potts weight other
    than 0 and 1): its n_half half-half labels (after the n_base inputs) and their parents, as
    a bit set (0 past 64 labels)."""
    special = np.uint64(0)
    if n_base + n_half > 64:
        return special
    for k in range(n_half):
        for label in (n_base + k, parents[k, 0], parents[k, 1]):
            special |= np.uint64(1) << np.uint64(label)
    return special


@njit(cache=True, nogil=True)
def solve_partition(cost, A, init, n, beta, gamma, tau, hard, set_resolve, niter, grid_solver=None):
    """Co-Mixup masks for one partition, all weights already scaled by the grid.

    cost: (m, n*n) block costs of the m inputs (prior included); A: (m, m) compatibility;
    init: (n_out, n*n) initial input index per block; tau: threshold in blocks (thres * n*n).
    Returns mask (n_out, n*n, m) with rows summing to 1 and entries in {0, 0.5, 1}.
    grid_solver(unary, potts, beta, n) -> labels replaces the built-in labelling of one output;
    it is honoured when this function runs as plain Python (solve_partition.py_func), which is
    how the library backends (gco-wrapper, bkgco) reuse this loop.
    """
    m = cost.shape[0]
    n_out = init.shape[0]
    size = n * n
    # block p of output j: input first[j, p], or halves of it and of second[j, p] (-1: whole)
    first = init.copy()
    second = np.full((n_out, size), -1, dtype=np.int64)
    counts = np.zeros((n_out, m))  # blocks per input of each output, halves counting 0.5
    for j in range(n_out):
        for p in range(size):
            counts[j, first[j, p]] += 1.0
    P = np.zeros(m)
    for j in range(n_out):
        P += counts[j]
    extra = np.zeros((n_out, m))
    loss_prev = objective(cost, first, second, counts, n, beta, gamma)
    max_labels = m + 3  # up to 3 half-half labels
    unary = np.zeros((max_labels, size))
    potts = np.ones((max_labels, max_labels))
    for i in range(max_labels):
        potts[i, i] = 0.0
    A_T = np.ascontiguousarray(A.T)
    scratch = np.zeros(m)
    penalty = np.zeros(m)
    workspace = make_workspace(n, max_labels)
    labels = np.zeros(size, dtype=np.int64)
    parents = np.zeros((3, 2), dtype=np.int64)
    top_values = np.zeros(m)
    top_index = np.zeros(m, dtype=np.int64)
    top = np.zeros(3, dtype=np.int64)
    for it in range(niter):
        for j in range(n_out):
            P -= counts[j]
            _modular_penalty_into(P, A_T, gamma, tau, hard, scratch, penalty)
            for i in range(m):
                for p in range(size):
                    unary[i, p] = cost[i, p] + penalty[i] + gamma * extra[j, i]
            n_half = _half_labels(counts[j], m, top_values, top_index, top, parents) if it > 0 else 0
            n_labels = _output_problem(parents, n_half, m, unary, potts)
            if grid_solver is None:
                label_grid(unary[:n_labels], potts, beta, labels, workspace, _special_labels(parents, n_half, m), 1.0)
            else:
                labels = grid_solver(unary[:n_labels].copy(), potts[:n_labels, :n_labels].copy(), beta, n)
            counts[j] = 0.0
            for p in range(size):
                label = labels[p]
                if label < m:
                    first[j, p] = label
                    second[j, p] = -1
                    counts[j, label] += 1.0
                else:  # parents in increasing order
                    first[j, p] = parents[label - m, 0]
                    second[j, p] = parents[label - m, 1]
                    counts[j, first[j, p]] += 0.5
                    counts[j, second[j, p]] += 0.5
            P += counts[j]
        if set_resolve and it == niter - 2:
            extra = _resolve_from_counts(counts)
        loss = objective(cost, first, second, counts, n, beta, gamma)
        if abs(loss_prev - loss) < 1e-6 * abs(loss):
            break
        loss_prev = loss
    mask = np.zeros((n_out, size, m))
    for j in range(n_out):
        for p in range(size):
            if second[j, p] < 0:
                mask[j, p, first[j, p]] = 1.0
            else:
                mask[j, p, first[j, p]] = 0.5
                mask[j, p, second[j, p]] = 0.5
    return mask


def _gco_wrapper_swap(unary: np.ndarray, potts: np.ndarray, beta: float, n: int) -> np.ndarray:
    """One output's labelling with gco-wrapper, called exactly as the published code calls it
    (float32 arrays, which the wrapper scales to integers)."""
    gco = _import_gco_wrapper()
    n_labels = unary.shape[0]
    labels = gco.cut_grid_graph(
        np.ascontiguousarray(unary.T.reshape(n, n, n_labels), dtype=np.float32),
        potts.astype(np.float32),
        np.full((n - 1, n), beta, dtype=np.float32),
        np.full((n, n - 1), beta, dtype=np.float32),
        algorithm="swap",
    )
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def _bkgco_swap(unary: np.ndarray, potts: np.ndarray, beta: float, n: int) -> np.ndarray:
    """One output's labelling with bkgco's GCO alpha-beta swap, in float64."""
    import bkgco

    n_labels = unary.shape[0]
    weights = np.full((n, n), beta)
    with bkgco.GCO.grid((n, n), n_labels, dtype=np.float64) as graph:
        graph.set_data_cost(np.ascontiguousarray(unary.T.reshape(n, n, n_labels)))
        graph.set_smooth_cost_vh(np.ascontiguousarray(potts), weights, weights)
        graph.swap()
        return graph.get_labeling().astype(np.int64)


def _import_gco_wrapper():
    """Import gco-wrapper without keeping the aliases it adds to numpy (np.int, np.float,
    np.bool) for its own module-level code: they would change numpy for the whole process."""
    import numpy

    missing = [name for name in ("int", "float", "bool") if not hasattr(numpy, name)]
    import gco

    for name in missing:
        if hasattr(numpy, name):
            delattr(numpy, name)
    return gco


_LIBRARY_SWAPS: dict[str, Callable[[np.ndarray, np.ndarray, float, int], np.ndarray]] = {
    "bkgco": _bkgco_swap,
    "gco": _gco_wrapper_swap,
}


def solver_available(solver: str) -> bool:
    """Whether the named backend can run here ('fast' always can)."""
    if solver == "fast":
        return True
    module = {"bkgco": "bkgco", "gco": "gco"}.get(solver)
    if module is None:
        return False
    import importlib.util

    return importlib.util.find_spec(module) is not None


def solve(cost: np.ndarray, A: np.ndarray, init: np.ndarray, n: int, beta: float, gamma: float,
          tau: float, hard: bool, set_resolve: bool, niter: int, solver: str = "fast") -> np.ndarray:
    """solve_partition with the chosen backend: 'fast' (compiled here, default), or the GCO
    alpha-beta swap of 'bkgco' or of 'gco' (gco-wrapper, the published dependency) for each
    output, run from the same partition loop in plain Python."""
    args = (np.ascontiguousarray(cost, dtype=np.float64), np.ascontiguousarray(A, dtype=np.float64),
            np.ascontiguousarray(init, dtype=np.int64), int(n), float(beta), float(gamma), float(tau),
            bool(hard), bool(set_resolve), int(niter))
    if solver == "fast":
        announce_compilation(solve_partition, args, "the Co-Mixup solver")
        return solve_partition(*args)
    if solver not in _LIBRARY_SWAPS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if not solver_available(solver):
        package = {"bkgco": "bkgco", "gco": "gco-wrapper"}[solver]
        raise ValueError(f"solver {solver!r} needs the package {package}: pip install {package}")
    return solve_partition.py_func(*args, grid_solver=_LIBRARY_SWAPS[solver])
