"""Compiled solver for the Co-Mixup labelling problem of one partition.

The published solver runs, for every output, an alpha-beta swap of the GCO library from
Python: 400 library calls per CIFAR batch, each rebuilding its graph, and that dominates the
training step. This module runs the whole partition loop (modular approximation of
the diversity term, the outputs visited in turn, blended half-half labels, duplicate
resolution, early stop) as one compiled function that releases the GIL, so partitions can run
in threads. Each output's grid labelling is minimised by alpha-beta swap moves in the order
GCO's swap makes them (from label 0 everywhere, ties to the source label), each move a small
max-flow on the block grid, so the solver retraces the published one instead of approximating
it. Bounds, and a memory of the pairs found idle, skip the moves that provably change nothing;
a move settles the blocks whose own costs decide them and cuts only the rest.

Arrays are numpy, float64, blocks flattened row-major (p = row * n + col).
"""
from __future__ import annotations

from typing import Callable

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
def _min_cut(arcs, src, snk, cap, sink_side, parent, pdir, queue):
    """Minimum s-t cut by shortest augmenting paths, on a graph whose node i has up to 4 arcs
    (arcs[i, d]: the node that arc d leads to, or -1; that node's arc d ^ 2 leads back).

    src[i] / snk[i]: capacities s->i and i->t; cap[d, i]: capacity of arc d of i. All are
    residual capacities, changed in place. Writes sink_side[i]: True for the nodes that can
    still reach t, i.e. the smallest sink side over all minimum cuts. That is the side the
    Boykov-Kolmogorov max-flow inside GCO reports (nodes in neither search tree default to the
    source), so ties resolve as in the published solver. parent, pdir, queue: work arrays.
    """
    size = src.shape[0]
    for p in range(size):
        through = min(src[p], snk[p])
        src[p] -= through
        snk[p] -= through
    # Most of the flow runs s -> p -> q -> t: push it directly, then search for longer paths.
    # The nodes that reach t after a maximum flow are the same whatever paths carried it.
    for p in range(size):
        if src[p] <= _EPS:
            continue
        for d in range(4):
            q = arcs[p, d]
            if q >= 0 and snk[q] > _EPS and cap[d, p] > _EPS:
                flow = min(src[p], cap[d, p], snk[q])
                src[p] -= flow
                snk[q] -= flow
                cap[d, p] -= flow
                cap[d ^ 2, q] += flow
                if src[p] <= _EPS:
                    break
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
                q = arcs[p, d]
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
            cap[d ^ 2, q] += flow
            q = p
        src[q] -= flow
    # Nodes that reach t through unsaturated arcs: search backwards from t.
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
            p = arcs[q, d]
            # the arc p -> q runs in the direction opposite to d as seen from p
            if p >= 0 and not sink_side[p] and cap[d ^ 2, p] > _EPS:
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


# Fields of the work-array tuple of _workspace (numba indexes a tuple by constants only).
_WS_NBR = 0
_WS_ARCS = 1
_WS_FLOATS = 2
_WS_INTS = 3
_WS_QUEUE = 4
_WS_SINK_SIDE = 5
_WS_PRESENT = 6
_WS_BLOCK_STAMP = 7
_WS_LABEL_STAMP = 8
_WS_PAIR_STAMP = 9
_WS_BELOW = 10
_WS_CLOCK = 11
_WS_RANGES = 12


@njit(cache=True, nogil=True)
def _workspace(n, max_labels):
    """Work arrays for the labellings of an n x n grid with up to max_labels labels, made once
    per partition (numba takes them as one tuple, fields _WS_*)."""
    size = n * n
    return (_grid_neighbours(n),
            np.zeros((size, 4), dtype=np.int64),  # arcs of the cut graph
            np.zeros((8, size)),  # flip cost; gain, src, snk, cap[4] of the cut graph
            np.zeros((5, size), dtype=np.int64),  # graph index, side, degree, parent, pdir
            np.zeros(5 * size, dtype=np.int64),  # queue: each block enters it at most 5 times
            np.zeros(size, dtype=np.bool_),  # sink side
            np.zeros(max_labels, dtype=np.int64),  # blocks per label
            np.zeros(size, dtype=np.int64),  # move count when each block last changed label
            np.zeros(max_labels, dtype=np.int64),  # ... when each label last gained or lost a block
            np.zeros((max_labels, max_labels), dtype=np.int64),  # ... when each pair was last seen idle
            np.zeros(max_labels + 1, dtype=np.int64),  # largest label with a block under each label
            np.zeros(1, dtype=np.int64),  # moves made so far (the clock of the stamps)
            np.zeros((2, max_labels)))  # each label's cheapest and dearest block cost


_UNDECIDED = -1
_SOURCE = 0  # alpha
_SINK = 1  # beta_label


@njit(cache=True, nogil=True)
def _swap_move(alpha, beta_label, labels, unary, potts, beta, ws, clock):
    """One alpha-beta swap: the blocks labelled alpha or beta_label take whichever of the two
    minimises the energy, the rest fixed; ties keep alpha (source side), as GCO does.

    A swapping block whose own cost difference outweighs all its links to other swapping
    blocks takes its side in every minimum cut (alpha on a tie, which the smallest sink side
    allows); fixing it turns its links into costs of its neighbours, which may decide them in
    turn. Only the blocks left undecided go into a cut graph (numbered in block order). The
    result is the smallest-sink minimum cut of the whole swap, as before. Returns whether a
    block changed label; changed blocks, their labels and the counts are stamped with clock."""
    nbr = ws[_WS_NBR]
    arcs = ws[_WS_ARCS]
    floats = ws[_WS_FLOATS]
    ints = ws[_WS_INTS]
    queue = ws[_WS_QUEUE]
    sink_side = ws[_WS_SINK_SIDE]
    present = ws[_WS_PRESENT]
    block_stamp = ws[_WS_BLOCK_STAMP]
    label_stamp = ws[_WS_LABEL_STAMP]
    size = nbr.shape[0]
    flip = floats[0]  # energy change when the block takes beta_label instead of alpha
    local = ints[0]
    side = ints[1]
    degree = ints[2]
    w = beta * potts[alpha, beta_label]
    tail = 0
    for p in range(size):
        own = labels[p]
        if own != alpha and own != beta_label:
            side[p] = _UNDECIDED  # not swapping: never read
            continue
        cost = unary[beta_label, p] - unary[alpha, p]
        links = 0
        for d in range(4):
            q = nbr[p, d]
            if q < 0:
                continue
            label_q = labels[q]
            if label_q == alpha or label_q == beta_label:
                links += 1
            else:
                cost += beta * (potts[beta_label, label_q] - potts[alpha, label_q])
        flip[p] = cost
        degree[p] = links
        side[p] = _UNDECIDED
        queue[tail] = p
        tail += 1
    head = 0
    while head < tail:
        p = queue[head]
        head += 1
        if side[p] != _UNDECIDED:
            continue
        reach = w * degree[p]
        if flip[p] >= reach - _EPS:
            decided = _SOURCE
        elif flip[p] < -reach - _EPS:
            decided = _SINK
        else:
            continue
        side[p] = decided
        for d in range(4):
            q = nbr[p, d]
            if q < 0 or side[q] != _UNDECIDED:
                continue
            label_q = labels[q]
            if label_q != alpha and label_q != beta_label:
                continue
            # the link to p now costs w on the side q does not share with p
            flip[q] += w if decided == _SOURCE else -w
            degree[q] -= 1
            queue[tail] = q
            tail += 1
    k = 0
    for p in range(size):
        own = labels[p]
        if (own == alpha or own == beta_label) and side[p] == _UNDECIDED:
            local[p] = k
            queue[k] = p
            k += 1
        else:
            local[p] = -1
    if k > 0:
        gain = floats[1]
        src = floats[2, :k]
        snk = floats[3, :k]
        cap = floats[4:8]
        for i in range(k):
            gain[i] = flip[queue[i]]
        for i in range(k):
            p = queue[i]
            for d in range(4):
                cap[d, i] = 0.0
                arcs[i, d] = -1
                q = nbr[p, d]
                j = local[q] if q >= 0 else -1
                if j >= 0:
                    arcs[i, d] = j
                    if d < 2:
                        # E(a,a) = E(b,b) = 0, E(a,b) = E(b,a) = w: y_p costs w, y_q gets -w, arc p->q 2w
                        gain[i] += w
                        gain[j] -= w
                        cap[d, i] = 2.0 * w
        for i in range(k):
            src[i] = gain[i] if gain[i] > 0 else 0.0
            snk[i] = -gain[i] if gain[i] < 0 else 0.0
        _min_cut(arcs[:k], src, snk, cap[:, :k], sink_side[:k], ints[3], ints[4], ints[2])
        for i in range(k):
            side[queue[i]] = _SINK if sink_side[i] else _SOURCE
    changed = False
    for p in range(size):
        own = labels[p]
        if own != alpha and own != beta_label:
            continue
        new = beta_label if side[p] == _SINK else alpha
        if own != new:
            present[own] -= 1
            present[new] += 1
            labels[p] = new
            block_stamp[p] = clock
            changed = True
    if changed:
        label_stamp[alpha] = clock
        label_stamp[beta_label] = clock
    return changed


@njit(cache=True, nogil=True)
def _swap_is_idle(alpha, beta_label, labels, unary, potts, beta, nbr, all_links=False):
    """True when the alpha-beta swap provably changes nothing, so the cut can be skipped.

    Flipping a set F of the swapping blocks changes the energy by the sum over p in F of
    d_p (p's own cost change, its fixed neighbours included) plus w = beta * potts[alpha,
    beta_label] for each cut pair of equal labels minus w for each cut pair of unequal labels,
    which is at least the sum over p in F of d_p - w * (p's neighbours of the other label).
    When that is >= 0 for every alpha block and > 0 for every beta block, no flip lowers the
    energy and every flip that keeps it moves alpha blocks only, so the smallest-sink minimum
    cut is the current labelling. With 20 labels most pairs are skipped this way. all_links:
    subtract w for every swapping neighbour, the weaker bound of the previous solver (which
    bench/solver_speed.py times against this one).
    """
    w = beta * potts[alpha, beta_label]
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
            label_q = labels[q]
            if label_q == other or (all_links and label_q == own):
                margin -= w
            elif label_q != own:
                margin += beta * (potts[other, label_q] - potts[own, label_q])
        if own == alpha and margin < 0.0:
            return False
        if own == beta_label and margin <= 0.0:
            return False
    return True


@njit(cache=True, nogil=True)
def _unchanged_since(seen, alpha, beta_label, labels, ws):
    """True when no block labelled alpha or beta_label, nor any of their neighbours, nor the
    two labels' block sets changed after move count `seen`: the swap then faces the same
    problem as when it was last found idle, and is idle again."""
    nbr = ws[_WS_NBR]
    block_stamp = ws[_WS_BLOCK_STAMP]
    label_stamp = ws[_WS_LABEL_STAMP]
    if label_stamp[alpha] > seen or label_stamp[beta_label] > seen:
        return False
    for p in range(nbr.shape[0]):
        if labels[p] != alpha and labels[p] != beta_label:
            continue
        if block_stamp[p] > seen:
            return False
        for d in range(4):
            q = nbr[p, d]
            if q >= 0 and block_stamp[q] > seen:
                return False
    return True


@njit(cache=True, nogil=True)
def _label_grid(unary, potts, beta, labels, ws):
    """solve_grid_labelling into labels (n*n,), with the work arrays ws of _workspace.

    Stamps count moves over all the labellings that share ws, so nothing is reset between
    them: a pair stamp from an earlier labelling is older than this one's start."""
    nbr = ws[_WS_NBR]
    present = ws[_WS_PRESENT]
    below = ws[_WS_BELOW]
    pair_stamp = ws[_WS_PAIR_STAMP]
    size = nbr.shape[0]
    n_labels = unary.shape[0]
    labels[:] = 0
    present[:n_labels] = 0
    present[0] = size
    _present_below(present, below, n_labels)
    start = ws[_WS_CLOCK][0] + 1
    clock = start
    ranges = ws[_WS_RANGES]
    lowest = ranges[0]
    highest = ranges[1]
    _cost_ranges(unary, lowest, highest)
    reach = 4.0 * beta  # see _cost_ranges
    energy = _labelling_energy(labels, unary, potts, beta, nbr)
    previous = energy + 1.0
    while previous > energy:
        previous = energy
        for a in range(n_labels):
            # b runs down from the last label; while a has no block, over labels that have one
            b = n_labels - 1 if present[a] > 0 else below[n_labels]
            while b > a:
                if present[b] == 0 and lowest[b] - highest[a] >= reach:
                    pass  # nothing to move: a keeps all its blocks (ties keep a)
                elif present[a] == 0 and lowest[a] - highest[b] > reach:
                    pass  # nothing to move: b keeps all its blocks (ties would move them to a)
                elif present[a] + present[b] > 0:
                    seen = pair_stamp[a, b]
                    if seen == clock or (seen >= start and _unchanged_since(seen, a, b, labels, ws)):
                        pair_stamp[a, b] = clock
                    elif _swap_is_idle(a, b, labels, unary, potts, beta, nbr):
                        pair_stamp[a, b] = clock
                    elif _swap_move(a, b, labels, unary, potts, beta, ws, clock + 1):
                        clock += 1
                        _present_below(present, below, n_labels)
                    else:
                        pair_stamp[a, b] = clock
                b = b - 1 if present[a] > 0 else below[b]
        energy = _labelling_energy(labels, unary, potts, beta, nbr)
    ws[_WS_CLOCK][0] = clock


@njit(cache=True, nogil=True)
def _cost_ranges(unary, lowest, highest):
    """Each label's cheapest and dearest block cost, into lowest and highest. Each block's Potts
    terms change by at most 4 beta when it switches label (weights <= 1): a label whose
    cheapest block costs that much more than the other label's dearest block cannot take any
    block from it, which rules out most pairs without looking at the grid."""
    for label in range(unary.shape[0]):
        low = unary[label, 0]
        high = low
        for p in range(1, unary.shape[1]):
            value = unary[label, p]
            if value < low:
                low = value
            elif value > high:
                high = value
        lowest[label] = low
        highest[label] = high


@njit(cache=True, nogil=True)
def _present_below(present, below, n_labels):
    """below[b]: the largest label under b that has a block (-1 if none), for b <= n_labels."""
    last = -1
    for label in range(n_labels + 1):
        below[label] = last
        if label < n_labels and present[label] > 0:
            last = label


@njit(cache=True, nogil=True)
def solve_grid_labelling(unary, potts, beta, n):
    """Alpha-beta swap minimisation of sum_p unary[l_p, p] + beta * sum_{p~q} potts[l_p, l_q]
    on an n x n grid, the move sequence of the published solver (GCO's swap): start from label
    0 everywhere; each cycle visits the pairs (a, b), a ascending, b descending from the last
    label to a + 1; cycles repeat while the energy decreases. Returns the labels (n*n,).

    Moves that provably change nothing are skipped (a bound on the labels' costs, a bound on
    any flip's energy change, or nothing near the pair's blocks having changed since the pair
    was last idle), which leaves the result, move for move, as it was.
    """
    labels = np.zeros(n * n, dtype=np.int64)
    _label_grid(unary, potts, beta, labels, _workspace(n, unary.shape[0]))
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
    penalty = np.zeros(m)
    _modular_penalty_into(P, A, gamma, tau, hard, np.zeros(m), penalty)
    return penalty


@njit(cache=True, nogil=True)
def _modular_penalty_into(P, A, gamma, tau, hard, q, penalty):
    """modular_penalty written into penalty, with q (m,) as scratch: the partition loop calls
    it once per output and keeps both arrays."""
    m = P.shape[0]
    for i in range(m):  # q = A @ P, written out: numba's matrix product would need scipy's BLAS
        total = 0.0
        for k in range(m):
            total += A[i, k] * P[k]
        q[i] = total
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
def _output_problem(parents, n_base, unary, potts):
    """Appends the half-half labels to an output's labelling problem: their costs in the rows
    of unary after its n_base input rows, their Potts weights in potts. Both are buffers of
    the partition loop sized for 3 half-half labels, potts keeping plain Potts weights between
    the inputs from call to call. Returns the number of labels."""
    n_half = parents.shape[0]
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
def _input_counts(mask_j, counts):
    """counts[i]: the blocks of input i in one output's mask (size, m), halves counting 0.5
    (exact in any order: the sums are multiples of 0.5)."""
    counts[:] = 0.0
    for p in range(mask_j.shape[0]):
        for i in range(mask_j.shape[1]):
            counts[i] += mask_j[p, i]


@njit(cache=True, nogil=True)
def solve_partition(cost, A, init, n, beta, gamma, tau, hard, set_resolve, niter, grid_solver=None):
    """Co-Mixup masks for one partition, all weights already scaled by the grid.

    cost: (m, n*n) block costs of the m inputs (prior included); A: (m, m) compatibility;
    init: (n_out, n*n) initial input index per block; tau: threshold in blocks (thres * n*n).
    Returns mask (n_out, n*n, m) with rows summing to 1 and entries in {0, 0.5, 1}.
    grid_solver(unary, potts, beta, n) -> labels replaces the built-in labelling of one output:
    a Python function through solve_partition.py_func (how the library backends, gco-wrapper and
    bkgco, reuse this loop), or a numba-compiled one here (bench/reference_solver.py's previous
    labelling, which bench/solver_speed.py times against the built-in one).
    """
    m = cost.shape[0]
    n_out = init.shape[0]
    size = n * n
    mask = np.zeros((n_out, size, m))
    for j in range(n_out):
        for p in range(size):
            mask[j, p, init[j, p]] = 1.0
    P = np.zeros(m)
    counts = np.zeros(m)
    for j in range(n_out):
        _input_counts(mask[j], counts)
        P += counts
    extra = np.zeros((n_out, m))
    loss_prev = objective(cost, mask, n, beta, gamma)
    max_labels = m + 3  # up to 3 half-half labels
    unary = np.zeros((max_labels, size))
    potts = np.ones((max_labels, max_labels))
    for i in range(max_labels):
        potts[i, i] = 0.0
    scratch = np.zeros(m)
    penalty = np.zeros(m)
    workspace = _workspace(n, max_labels)
    labels = np.zeros(size, dtype=np.int64)
    no_half = np.zeros((0, 2), dtype=np.int64)
    for it in range(niter):
        for j in range(n_out):
            _input_counts(mask[j], counts)
            P -= counts
            _modular_penalty_into(P, A, gamma, tau, hard, scratch, penalty)
            for i in range(m):
                for p in range(size):
                    unary[i, p] = cost[i, p] + penalty[i] + gamma * extra[j, i]
            parents = _half_labels(counts, m) if it > 0 else no_half
            n_labels = _output_problem(parents, m, unary, potts)
            if grid_solver is None:
                _label_grid(unary[:n_labels], potts, beta, labels, workspace)
            else:
                labels = grid_solver(unary[:n_labels].copy(), potts[:n_labels, :n_labels].copy(), beta, n)
            mask[j] = 0.0
            for p in range(size):
                label = labels[p]
                if label < m:
                    mask[j, p, label] = 1.0
                else:
                    mask[j, p, parents[label - m, 0]] = 0.5
                    mask[j, p, parents[label - m, 1]] = 0.5
            _input_counts(mask[j], counts)
            P += counts
        if set_resolve and it == niter - 2:
            extra = resolve_cost(mask)
        loss = objective(cost, mask, n, beta, gamma)
        if abs(loss_prev - loss) < 1e-6 * abs(loss):
            break
        loss_prev = loss
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
        return solve_partition(*args)
    if solver not in _LIBRARY_SWAPS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if not solver_available(solver):
        package = {"bkgco": "bkgco", "gco": "gco-wrapper"}[solver]
        raise ValueError(f"solver {solver!r} needs the package {package}: pip install {package}")
    return solve_partition.py_func(*args, grid_solver=_LIBRARY_SWAPS[solver])
