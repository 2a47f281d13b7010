"""The partition solver as it was when the GPU-speed work began (commit 92257cd), frozen for bench/ only.

bench/solver_speed.py times it against comix_solver.solve_partition in the same run, so the
speed-up is measured on the same machine under the same load, against the whole solver of
that time: its partition loop (dense masks, arrays made per output) and its grid labelling
(GCO's alpha-beta swap, a cut over the whole grid for every move a weak bound did not rule
out). Its answers are the current solver's, move for move (tests/test_fast_labelling.py).
Not used by training; kept verbatim (apart from comments and an unused import), so do not improve it.
"""
from __future__ import annotations

import numpy as np
from numba import njit

SOLVERS = ("fast", "bkgco", "gco")

_EPS = 1e-12
_HALF_COST_OFFSET = 5e-4  # published: a half-half label is slightly preferred to its parents' mean
_HALF_PARENT_WEIGHT = 0.25  # published Potts weight between a half-half label and either parent


@njit(cache=True, nogil=True)
def _neighbour(p: int, d: int, n: int) -> int:
    """Block next to p in direction d (0 right, 1 down, 2 left, 3 up), or -1 at the border."""
    row = p // n
    col = p - row * n
    if d == 0:
        return p + 1 if col < n - 1 else -1
    if d == 1:
        return p + n if row < n - 1 else -1
    if d == 2:
        return p - 1 if col > 0 else -1
    return p - n if row > 0 else -1


@njit(cache=True, nogil=True)
def _grid_neighbours(n: int) -> np.ndarray:
    """Table (n*n, 4) of _neighbour, looked up in the inner loops instead of recomputed."""
    table = np.empty((n * n, 4), dtype=np.int64)
    for p in range(n * n):
        for d in range(4):
            table[p, d] = _neighbour(p, d, n)
    return table


@njit(cache=True, nogil=True)
def _min_cut(nbr, src, snk, cap, sink_side, parent, pdir, queue):
    """Minimum s-t cut on a 4-connected grid (nbr: _grid_neighbours) by shortest augmenting paths.

    src[p] / snk[p]: capacities s->p and p->t; cap[d, p]: capacity p -> neighbour in direction d.
    All are residual capacities, changed in place. Writes sink_side[p]: True for the blocks that
    can still reach t, i.e. the smallest sink side over all minimum cuts. That is the side the
    Boykov-Kolmogorov max-flow inside GCO reports (blocks in neither search tree default to the
    source), so ties resolve as in the published solver. parent, pdir, queue: work arrays.
    """
    size = nbr.shape[0]
    for p in range(size):
        through = min(src[p], snk[p])
        src[p] -= through
        snk[p] -= through
    while True:
        head = 0
        tail = 0
        for p in range(size):
            if src[p] > _EPS:
                parent[p] = -1
                queue[tail] = p
                tail += 1
            else:
                parent[p] = -2
        found = -1
        while head < tail:
            p = queue[head]
            head += 1
            if snk[p] > _EPS:
                found = p
                break
            for d in range(4):
                q = nbr[p, d]
                if q >= 0 and parent[q] == -2 and cap[d, p] > _EPS:
                    parent[q] = p
                    pdir[q] = d
                    queue[tail] = q
                    tail += 1
        if found < 0:
            break
        flow = snk[found]
        q = found
        while parent[q] != -1:
            p = parent[q]
            flow = min(flow, cap[pdir[q], p])
            q = p
        flow = min(flow, src[q])
        snk[found] -= flow
        q = found
        while parent[q] != -1:
            p = parent[q]
            d = pdir[q]
            cap[d, p] -= flow
            cap[(d + 2) % 4, q] += flow
            q = p
        src[q] -= flow
    # Blocks that reach t through unsaturated arcs: search backwards from t.
    head = 0
    tail = 0
    for p in range(size):
        sink_side[p] = snk[p] > _EPS
        if sink_side[p]:
            queue[tail] = p
            tail += 1
    while head < tail:
        q = queue[head]
        head += 1
        for d in range(4):
            p = nbr[q, d]
            # the arc p -> q runs in the direction opposite to d as seen from p
            if p >= 0 and not sink_side[p] and cap[(d + 2) % 4, p] > _EPS:
                sink_side[p] = True
                queue[tail] = p
                tail += 1


@njit(cache=True, nogil=True)
def _labelling_energy(labels, unary, potts, beta, nbr):
    size = nbr.shape[0]
    energy = 0.0
    for p in range(size):
        energy += unary[labels[p], p]
        for d in range(2):
            q = nbr[p, d]
            if q >= 0:
                energy += beta * potts[labels[p], labels[q]]
    return energy


@njit(cache=True, nogil=True)
def _swap_move(alpha, beta_label, labels, unary, potts, beta, nbr, work_f, work_i, sink_side):
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
def _swap_is_idle(alpha, beta_label, labels, unary, potts, beta, nbr):
    """True when the alpha-beta swap provably changes nothing, so the cut can be skipped.

    It does when every alpha block prefers alpha (ties allowed) and every beta block strictly
    prefers beta_label, whatever the other swapping blocks pick: then any relabelling is a
    sequence of single flips none of which lowers the energy, and the smallest-sink minimum
    cut is the current labelling. The worst case of a swapping neighbour costs
    -beta * potts[alpha, beta_label]. With 20 labels most pairs are skipped this way.
    """
    for p in range(nbr.shape[0]):
        own = labels[p]
        if own != alpha and own != beta_label:
            continue
        other = beta_label if own == alpha else alpha
        margin = unary[other, p] - unary[own, p]
        for d in range(4):
            q = nbr[p, d]
            if q < 0:
                continue
            if labels[q] == alpha or labels[q] == beta_label:
                margin -= beta * potts[alpha, beta_label]
            else:
                margin += beta * (potts[other, labels[q]] - potts[own, labels[q]])
        if own == alpha and margin < 0.0:
            return False
        if own == beta_label and margin <= 0.0:
            return False
    return True


@njit(cache=True, nogil=True)
def solve_grid_labelling(unary, potts, beta, n):
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
    # Each block's Potts terms change by at most 4 beta when it switches label (weights <= 1):
    # a label whose cheapest block costs that much more than the other label's dearest block
    # cannot take any block from it, which rules out most pairs without looking at the grid.
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
                if _swap_is_idle(a, b, labels, unary, potts, beta, nbr):
                    continue
                _swap_move(a, b, labels, unary, potts, beta, nbr, work_f, work_i, sink_side)
                present[a] = 0
                present[b] = 0
                for p in range(size):
                    if labels[p] == a:
                        present[a] += 1
                    elif labels[p] == b:
                        present[b] += 1
        energy = _labelling_energy(labels, unary, potts, beta, nbr)
    return labels


@njit(cache=True, nogil=True)
def modular_penalty(P, A, gamma, tau, hard):
    """Per-input cost of the diversity term with the other outputs fixed.

    q = A @ P. Soft: 2 gamma max(q - tau, 0). Hard, as the published code computes it
    (`(q > tau).float() * A @ P` parses as `((q > tau) * A) @ P`): 2 gamma sum_k A_ik [q_k > tau] P_k,
    which equals the documented 2 gamma [q_i > tau] q_i when A is the identity and differs by
    O(omega) otherwise. The reference answers follow this form.
    """
    m = P.shape[0]
    q = np.zeros(m)  # A @ P, written out: numba's matrix product would need scipy's BLAS
    for i in range(m):
        for k in range(m):
            q[i] += A[i, k] * P[k]
    penalty = np.zeros(m)
    if hard:
        for i in range(m):
            total = 0.0
            for k in range(m):
                if q[k] > tau:
                    total += A[i, k] * P[k]
            penalty[i] = 2.0 * gamma * total
    else:
        for i in range(m):
            penalty[i] = 2.0 * gamma * max(q[i] - tau, 0.0)
    return penalty


@njit(cache=True, nogil=True)
def resolve_cost(mask):
    """Extra per-input cost that pulls apart outputs using exactly the same set of inputs.

    For each pair j1 < j2 with identical input sets of two or more inputs, the first input
    costs one more in j1 and the second one more in j2 (scaled by gamma by the caller).
    """
    n_out = mask.shape[0]
    m = mask.shape[2]
    used = np.zeros((n_out, m), dtype=np.bool_)
    for j in range(n_out):
        for i in range(m):
            used[j, i] = mask[j, :, i].sum() > 0
    add = np.zeros((n_out, m))
    for j1 in range(n_out):
        for j2 in range(j1 + 1, n_out):
            same = True
            for i in range(m):
                if used[j1, i] != used[j2, i]:
                    same = False
                    break
            if not same:
                continue
            first = -1
            second = -1
            for i in range(m):
                if used[j1, i]:
                    if first < 0:
                        first = i
                    elif second < 0:
                        second = i
            if second >= 0:
                add[j1, first] = 1.0
                add[j2, second] = 1.0
    return add


@njit(cache=True, nogil=True)
def objective(cost, mask, n, beta, gamma):
    """obj_fn of the published code for a mask (n_out, n*n, m) and cost (m, n*n)."""
    n_out = mask.shape[0]
    size = n * n
    m = mask.shape[2]
    total = 0.0
    P = np.zeros(m)
    own = 0.0
    for j in range(n_out):
        counts = np.zeros(m)
        for p in range(size):
            for i in range(m):
                v = mask[j, p, i]
                if v != 0.0:
                    total += cost[i, p] * v
                    counts[i] += v
            for d in range(2):
                q = _neighbour(p, d, n)
                if q >= 0:
                    for i in range(m):
                        diff = mask[j, p, i] - mask[j, q, i]
                        total += 0.5 * beta * diff * diff
        for i in range(m):
            P[i] += counts[i]
            own += counts[i] * counts[i]
    return total + gamma * ((P * P).sum() - own)


@njit(cache=True, nogil=True)
def _top3_like_torch(counts):
    """Indices of the 3 largest counts, ties resolved as the published code's torch.topk(k=3).

    On the CPU torch.topk selects with std::nth_element (introselect, libstdc++) when
    k * 64 > n; the inputs with tied counts it picks decide which half-half labels exist, and
    so the whole trajectory of the solver. This replays that selection on (count, index)
    pairs. Past 191 inputs, or should introselect ever exhaust its depth budget (not seen in
    10^5 random trials), ties go to the lower index.
    """
    n = counts.shape[0]
    values = counts.copy()
    index = np.arange(n)
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
            top = index[:3].copy()
            top.sort()
            return top
    order = np.argsort(-counts, kind="mergesort")
    top = order[:3].copy()
    top.sort()
    return top


@njit(cache=True, nogil=True)
def _half_labels(counts, n_base):
    """Parents of the half-half labels for an output whose current input counts are `counts`:
    one label (a, b) when it uses two inputs; with three or more, one per pair (index order)
    of the three most used."""
    used = 0
    for i in range(n_base):
        if counts[i] > 0:
            used += 1
    if used < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if used == 2:
        parents = np.zeros((1, 2), dtype=np.int64)
        k = 0
        for i in range(n_base):
            if counts[i] > 0:
                parents[0, k] = i
                k += 1
        return parents
    top = _top3_like_torch(counts)
    parents = np.zeros((3, 2), dtype=np.int64)
    parents[0, 0] = top[0]
    parents[0, 1] = top[1]
    parents[1, 0] = top[0]
    parents[1, 1] = top[2]
    parents[2, 0] = top[1]
    parents[2, 1] = top[2]
    return parents


@njit(cache=True, nogil=True)
def _output_problem(unary_base, parents, n_base):
    """Unary and Potts matrices with the half-half labels appended."""
    n_half = parents.shape[0]
    n_labels = n_base + n_half
    size = unary_base.shape[1]
    unary = np.zeros((n_labels, size))
    unary[:n_base] = unary_base
    potts = np.ones((n_labels, n_labels))
    for i in range(n_labels):
        potts[i, i] = 0.0
    for k in range(n_half):
        a = parents[k, 0]
        b = parents[k, 1]
        for p in range(size):
            unary[n_base + k, p] = 0.5 * (unary_base[a, p] + unary_base[b, p]) - _HALF_COST_OFFSET
        potts[n_base + k, a] = _HALF_PARENT_WEIGHT
        potts[a, n_base + k] = _HALF_PARENT_WEIGHT
        potts[n_base + k, b] = _HALF_PARENT_WEIGHT
        potts[b, n_base + k] = _HALF_PARENT_WEIGHT
    return unary, potts


@njit(cache=True, nogil=True)
def solve_partition(cost, A, init, n, beta, gamma, tau, hard, set_resolve, niter, grid_solver=None):
    """Co-Mixup masks for one partition, all weights already scaled by the grid.

    cost: (m, n*n) block costs of the m inputs (prior included); A: (m, m) compatibility;
    init: (n_out, n*n) initial input index per block; tau: threshold in blocks (thres * n*n).
    Returns mask (n_out, n*n, m) with rows summing to 1 and entries in {0, 0.5, 1}.
    grid_solver replaces solve_grid_labelling for one output; it is only honoured when this
    function runs as plain Python (solve_partition.py_func), which is how the library backends
    (gco-wrapper, bkgco) reuse this loop.
    """
    m = cost.shape[0]
    n_out = init.shape[0]
    size = n * n
    mask = np.zeros((n_out, size, m))
    for j in range(n_out):
        for p in range(size):
            mask[j, p, init[j, p]] = 1.0
    P = np.zeros(m)
    for j in range(n_out):
        for i in range(m):
            P[i] += mask[j, :, i].sum()
    extra = np.zeros((n_out, m))
    loss_prev = objective(cost, mask, n, beta, gamma)
    unary_base = np.zeros((m, size))
    for it in range(niter):
        for j in range(n_out):
            counts = np.zeros(m)
            for i in range(m):
                counts[i] = mask[j, :, i].sum()
            P -= counts
            penalty = modular_penalty(P, A, gamma, tau, hard)
            for i in range(m):
                unary_base[i] = cost[i] + penalty[i] + gamma * extra[j, i]
            if it > 0:
                parents = _half_labels(counts, m)
            else:
                parents = np.zeros((0, 2), dtype=np.int64)
            unary, potts = _output_problem(unary_base, parents, m)
            if grid_solver is None:
                labels = solve_grid_labelling(unary, potts, beta, n)
            else:
                labels = grid_solver(unary, potts, beta, n)
            mask[j] = 0.0
            for p in range(size):
                label = labels[p]
                if label < m:
                    mask[j, p, label] = 1.0
                else:
                    mask[j, p, parents[label - m, 0]] = 0.5
                    mask[j, p, parents[label - m, 1]] = 0.5
            for i in range(m):
                P[i] += mask[j, :, i].sum()
        if set_resolve and it == niter - 2:
            extra = resolve_cost(mask)
        loss = objective(cost, mask, n, beta, gamma)
        if abs(loss_prev - loss) < 1e-6 * abs(loss):
            break
        loss_prev = loss
    return mask


