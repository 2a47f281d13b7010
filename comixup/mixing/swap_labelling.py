"""The grid labelling of one Co-Mixup output: GCO's alpha-beta swap, compiled.

label_grid minimises sum_p unary[l_p, p] + beta * sum_{p~q} potts[l_p, l_q] on an
n x n grid of blocks by alpha-beta swap moves in the order GCO's swap makes them (from label 0
everywhere, pairs (a, b) with a ascending and b descending, cycles while the energy drops,
ties to the source label), each move the smallest-sink minimum cut of its blocks, so it
retraces the published solver move for move. Only moves that provably change nothing are
skipped.

Two paths make the same moves. Grids of up to 64 blocks with up to 64 labels (every published
setting but the 16 x 16 grid) keep block and label sets in 64-bit words: a block's candidate
labels (those cheap enough there that a swap could move it to them) rule out most label pairs
and most blocks of a pair before any work; each swap's idle test, settling rounds and cut
are branch-free loops over the blocks or searches that move whole bit sets, which the
compiler turns into vector code; they allocate nothing and are compiled without numba's
reference counting (_nrt=False), whose updates at each call with array arguments would cost
more than a swap. Larger problems take the general path: per-block loops, a
bound on each pair's labels, a memory of the pairs found idle, and a max-flow over the blocks
that the settling leaves undecided.

Arrays are numpy, float64, blocks flattened row-major (p = row * n + col). The functions
release the GIL and share work arrays across the labellings of a partition (make_workspace).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_EPS = 1e-12
_UNDECIDED = -1
_SOURCE = 0  # alpha
_SINK = 1  # beta_label

# Directions of a block's links (and of a cut-graph node's arcs); the reverse of d is d ^ 2.
_RIGHT = 0
_DOWN = 1
_LEFT = 2
_UP = 3

# Work arrays are 2-d, one row per role, indexed by these module-level constants (compile-time
# constants to numba, so the compiled code is that of literal row numbers).
#
# Rows of the float work array of both paths that hold the cut graph, by node: residual
# capacities, changed in place by the cut (_min_cut, _bit_cut).
_CUT_SOURCE = 2  # s -> node
_CUT_SINK = 3  # node -> t
_CUT_ARC = 4  # rows _CUT_ARC + d: the node's arc in direction d

# The general path (_any_workspace, _swap_move, _min_cut). Float rows:
_ANY_FLIP = 0  # by block: energy change when it takes beta_label instead of alpha, its fixed links included
_ANY_GAIN = 1  # by cut-graph node: the flip cost with the node's links to other nodes folded in
_ANY_FLOAT_ROWS = _CUT_ARC + 4
# Int rows, by block while settling, by cut-graph node in _min_cut:
_ANY_NODE = 0  # the block's node in the cut graph, -1 for none
_ANY_SIDE = 1  # _SOURCE, _SINK or _UNDECIDED
_ANY_DEGREE = 2  # links to swapping blocks still undecided (read while settling only)
_CUT_QUEUE = 2  # _min_cut's search queue: the degree row, free once settling is done
_CUT_PARENT = 3  # _min_cut: the node an augmenting path reached the node from (-1 source, -2 unseen)
_CUT_PARENT_ARC = 4  # _min_cut: the parent's arc that leads to the node
_ANY_INT_ROWS = 5


@njit(cache=True, nogil=True)
def _neighbour(p: int, d: int, n: int) -> int:
    """Block next to p in direction d (_RIGHT, _DOWN, _LEFT, _UP), or -1 at the border."""
    row = p // n
    col = p - row * n
    if d == _RIGHT:
        return p + 1 if col < n - 1 else -1
    if d == _DOWN:
        return p + n if row < n - 1 else -1
    if d == _LEFT:
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


@njit(cache=True, nogil=True, _nrt=False)
def _min_cut(size, arcs, floats, ints, sink_side):
    """Minimum s-t cut by shortest augmenting paths, on the graph of nodes 0..size-1 (the
    arrays may be longer), node i having up to 4 arcs (arcs[i, d]: the node that arc d leads
    to, or -1; that node's arc d ^ 2 leads back).

    floats[_CUT_SOURCE, i] / floats[_CUT_SINK, i]: capacities s->i and i->t;
    floats[_CUT_ARC + d, i]: capacity of arc d of i. All are residual capacities, changed in
    place. Writes sink_side[i]: True for the nodes that can still reach t, i.e. the smallest
    sink side over all minimum cuts. That is the side the Boykov-Kolmogorov max-flow inside GCO
    reports (nodes in neither search tree default to the source), so ties resolve as in the
    published solver. Work rows of ints: _CUT_QUEUE, _CUT_PARENT, _CUT_PARENT_ARC (the caller's
    degree row among them: see _swap_move). floats and ints are the caller's whole work arrays,
    so the cut allocates nothing.
    """
    for p in range(size):
        through = min(floats[_CUT_SOURCE, p], floats[_CUT_SINK, p])
        floats[_CUT_SOURCE, p] -= through
        floats[_CUT_SINK, p] -= through
    # Most of the flow runs s -> p -> q -> t: push it directly, then search for longer paths.
    # The nodes that reach t after a maximum flow are the same whatever paths carried it.
    for p in range(size):
        if floats[_CUT_SOURCE, p] <= _EPS:
            continue
        for d in range(4):
            q = arcs[p, d]
            if q >= 0 and floats[_CUT_SINK, q] > _EPS and floats[_CUT_ARC + d, p] > _EPS:
                flow = min(floats[_CUT_SOURCE, p], floats[_CUT_ARC + d, p], floats[_CUT_SINK, q])
                floats[_CUT_SOURCE, p] -= flow
                floats[_CUT_SINK, q] -= flow
                floats[_CUT_ARC + d, p] -= flow
                floats[_CUT_ARC + (d ^ 2), q] += flow
                if floats[_CUT_SOURCE, p] <= _EPS:
                    break
    while True:
        head = 0
        tail = 0
        for p in range(size):
            if floats[_CUT_SOURCE, p] > _EPS:
                ints[_CUT_PARENT, p] = -1
                ints[_CUT_QUEUE, tail] = p
                tail += 1
            else:
                ints[_CUT_PARENT, p] = -2
        found = -1
        while head < tail:
            p = ints[_CUT_QUEUE, head]
            head += 1
            if floats[_CUT_SINK, p] > _EPS:
                found = p
                break
            for d in range(4):
                q = arcs[p, d]
                if q >= 0 and ints[_CUT_PARENT, q] == -2 and floats[_CUT_ARC + d, p] > _EPS:
                    ints[_CUT_PARENT, q] = p
                    ints[_CUT_PARENT_ARC, q] = d
                    ints[_CUT_QUEUE, tail] = q
                    tail += 1
        if found < 0:
            break
        flow = floats[_CUT_SINK, found]
        q = found
        while ints[_CUT_PARENT, q] != -1:
            p = ints[_CUT_PARENT, q]
            flow = min(flow, floats[_CUT_ARC + ints[_CUT_PARENT_ARC, q], p])
            q = p
        flow = min(flow, floats[_CUT_SOURCE, q])
        floats[_CUT_SINK, found] -= flow
        q = found
        while ints[_CUT_PARENT, q] != -1:
            p = ints[_CUT_PARENT, q]
            d = ints[_CUT_PARENT_ARC, q]
            floats[_CUT_ARC + d, p] -= flow
            floats[_CUT_ARC + (d ^ 2), q] += flow
            q = p
        floats[_CUT_SOURCE, q] -= flow
    # Nodes that reach t through unsaturated arcs: search backwards from t.
    head = 0
    tail = 0
    for p in range(size):
        sink_side[p] = floats[_CUT_SINK, p] > _EPS
        if sink_side[p]:
            ints[_CUT_QUEUE, tail] = p
            tail += 1
    while head < tail:
        q = ints[_CUT_QUEUE, head]
        head += 1
        for d in range(4):
            p = arcs[q, d]
            # the arc p -> q runs in the direction opposite to d as seen from p
            if p >= 0 and not sink_side[p] and floats[_CUT_ARC + (d ^ 2), p] > _EPS:
                sink_side[p] = True
                ints[_CUT_QUEUE, tail] = p
                tail += 1


@njit(cache=True, nogil=True, _nrt=False)
def _labelling_energy(labels, unary, potts, beta, nbr):
    size = nbr.shape[0]
    energy = 0.0
    for p in range(size):
        energy += unary[labels[p], p]
        for d in range(2):  # _RIGHT and _DOWN: each link once
            q = nbr[p, d]
            if q >= 0:
                energy += beta * potts[labels[p], labels[q]]
    return energy


# Fields of the work-array tuple of _any_workspace (numba indexes a tuple by constants only).
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
def _any_workspace(n, max_labels):
    """Work arrays for the labellings of an n x n grid with up to max_labels labels, made once
    per partition (numba takes them as one tuple, fields _WS_*)."""
    size = n * n
    return (_grid_neighbours(n),
            np.zeros((size, 4), dtype=np.int64),  # arcs of the cut graph
            np.zeros((_ANY_FLOAT_ROWS, size)),  # rows _ANY_* and _CUT_*
            np.zeros((_ANY_INT_ROWS, size), dtype=np.int64),  # rows _ANY_* and _CUT_*
            np.zeros(5 * size, dtype=np.int64),  # queue: each block enters it at most 5 times
            np.zeros(size, dtype=np.bool_),  # sink side
            np.zeros(max_labels, dtype=np.int64),  # blocks per label
            np.zeros(size, dtype=np.int64),  # move count when each block last changed label
            np.zeros(max_labels, dtype=np.int64),  # ... when each label last gained or lost a block
            np.zeros((max_labels, max_labels), dtype=np.int64),  # ... when each pair was last seen idle
            np.zeros(max_labels + 1, dtype=np.int64),  # largest label with a block under each label
            np.zeros(1, dtype=np.int64),  # moves made so far (the clock of the stamps)
            np.zeros((2, max_labels)))  # each label's cheapest and dearest block cost



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
    flip = floats[_ANY_FLIP]
    node = ints[_ANY_NODE]
    side = ints[_ANY_SIDE]
    degree = ints[_ANY_DEGREE]
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
            node[p] = k
            queue[k] = p
            k += 1
        else:
            node[p] = -1
    if k > 0:
        # the cut graph of the undecided blocks; _min_cut then reuses the degree row as its queue
        gain = floats[_ANY_GAIN]
        source = floats[_CUT_SOURCE]
        sink = floats[_CUT_SINK]
        for i in range(k):
            gain[i] = flip[queue[i]]
        for i in range(k):
            p = queue[i]
            for d in range(4):
                floats[_CUT_ARC + d, i] = 0.0
                arcs[i, d] = -1
                q = nbr[p, d]
                j = node[q] if q >= 0 else -1
                if j >= 0:
                    arcs[i, d] = j
                    if d == _RIGHT or d == _DOWN:
                        # E(a,a) = E(b,b) = 0, E(a,b) = E(b,a) = w: y_p costs w, y_q gets -w, arc p->q 2w
                        gain[i] += w
                        gain[j] -= w
                        floats[_CUT_ARC + d, i] = 2.0 * w
        for i in range(k):
            source[i] = gain[i] if gain[i] > 0 else 0.0
            sink[i] = -gain[i] if gain[i] < 0 else 0.0
        _min_cut(k, arcs, floats, ints, sink_side)
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
def _swap_is_idle(alpha, beta_label, labels, unary, potts, beta, nbr):
    """True when the alpha-beta swap provably changes nothing, so the cut can be skipped.

    Flipping a set F of the swapping blocks changes the energy by the sum over p in F of
    d_p (p's own cost change, its fixed neighbours included) plus w = beta * potts[alpha,
    beta_label] for each cut pair of equal labels minus w for each cut pair of unequal labels,
    which is at least the sum over p in F of d_p - w * (p's neighbours of the other label).
    When that is >= 0 for every alpha block and > 0 for every beta block, no flip lowers the
    energy and every flip that keeps it moves alpha blocks only, so the smallest-sink minimum
    cut is the current labelling. With 20 labels most pairs are skipped this way.
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
            if label_q == other:
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
def _label_grid_any(unary, potts, beta, labels, ws):
    """label_grid into labels (n*n,) for any grid and label count, with the work
    arrays ws of _any_workspace.

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


# ---- Grids of up to 64 blocks with up to 64 labels: block and label sets as 64-bit words ----

_ONE = np.uint64(1)
_NO_BITS = np.uint64(0)
_CANDIDATE_SLACK = 1e-9  # keeps rounding from ruling out a label that a move might take


def _zero_count(method: str):
    """A numba intrinsic counting the trailing ("cttz") or leading ("ctlz") zero bits of a
    uint64 with LLVM's instruction for it (tzcnt, lzcnt)."""

    @intrinsic
    def count(typingctx, bits):
        if not isinstance(bits, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            return getattr(builder, method)(args[0], ir.Constant(ir.IntType(1), 0))

        return types.int64(types.uint64), codegen

    return count


_trailing_zeros = _zero_count("cttz")
_leading_zeros = _zero_count("ctlz")


@njit(cache=True, nogil=True, inline="always")
def _lowest_bit(bits):
    """Index of the lowest set bit of a non-zero word."""
    return _trailing_zeros(np.uint64(bits))


@njit(cache=True, nogil=True, inline="always")
def _highest_bit(bits):
    """Index of the highest set bit of a non-zero word."""
    return 63 - _leading_zeros(np.uint64(bits))


@njit(cache=True, nogil=True, inline="always")
def _has(bits, index):
    return (bits >> np.uint64(index)) & _ONE != _NO_BITS


@njit(cache=True, nogil=True, inline="always")
def _count(bits):
    """Number of set bits (LLVM turns this into one popcnt instruction)."""
    bits = bits - ((bits >> np.uint64(1)) & np.uint64(0x5555555555555555))
    bits = (bits & np.uint64(0x3333333333333333)) + ((bits >> np.uint64(2)) & np.uint64(0x3333333333333333))
    bits = (bits + (bits >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((bits * np.uint64(0x0101010101010101)) >> np.uint64(56))


# Fields of the work-array tuple of _bit_workspace.
_BW_NBR_BITS = 0
_BW_NBR = 1
_BW_LIMIT = 2
_BW_BLOCKS = 3
_BW_CANDIDATE_OF = 4
_BW_FLOATS = 5
_BW_INTS = 6
_BW_GRID = 7
_BW_RELATIVES = 8

# Rows of the bit-set path's float work array (ws[_BW_FLOATS]), by block; rows _CUT_SOURCE,
# _CUT_SINK and _CUT_ARC + d hold _bit_cut's graph.
_BIT_FLIP = 0  # energy change when the block takes b rather than a, its fixed links included
_BIT_CUT_FLIP = 1  # the flip cost given the settled blocks: what _bit_cut decides from
_BIT_RELATIVE_LINKS = 8  # what its links to relatives of a or b outside the swap add (0 between swaps)
_BIT_FLOAT_ROWS = 9
# Rows of its int work array (ws[_BW_INTS]), by search depth (_bit_cut):
_BIT_PATH = 0  # the augmenting path, one step per depth: block * 4 + direction of the arc taken
_BIT_LAYERS = 1  # the breadth-first search's layers, each a bit set (stored as int64)
_BIT_INT_ROWS = 2


# Entries of the grid's bit masks (_grid_masks).
_GRID_NOT_FIRST_COLUMN = 0
_GRID_NOT_LAST_COLUMN = 1
_GRID_ALL = 2
_GRID_SIDE = 3  # n, the blocks per row


@njit(cache=True, nogil=True)
def _grid_masks(n):
    """The bit masks of an n x n grid, entries _GRID_*: blocks not in the first column, blocks
    not in the last column, all blocks, and n."""
    masks = np.zeros(4, dtype=np.uint64)
    for p in range(n * n):
        bit = _ONE << np.uint64(p)
        if p % n != 0:
            masks[_GRID_NOT_FIRST_COLUMN] |= bit
        if p % n != n - 1:
            masks[_GRID_NOT_LAST_COLUMN] |= bit
        masks[_GRID_ALL] |= bit
    masks[_GRID_SIDE] = np.uint64(n)
    return masks


@njit(cache=True, nogil=True, inline="always")
def _with_neighbours(bits, grid):
    """The blocks of bits and their 4 neighbours (grid: _grid_masks)."""
    n = grid[_GRID_SIDE]
    return (bits | ((bits << _ONE) & grid[_GRID_NOT_FIRST_COLUMN]) | ((bits >> _ONE) & grid[_GRID_NOT_LAST_COLUMN])
            | ((bits << n) & grid[_GRID_ALL]) | (bits >> n))


@njit(cache=True, nogil=True)
def _bit_workspace(n, max_labels):
    """Work arrays of the bit-set labelling of an n x n grid (n * n <= 64, max_labels <= 64),
    made once per partition (fields _BW_*; rows of the float and int arrays: _BIT_*, _CUT_*)."""
    size = n * n
    nbr = _grid_neighbours(n)
    nbr_bits = np.zeros(size, dtype=np.uint64)
    for p in range(size):
        for d in range(4):
            if nbr[p, d] >= 0:
                nbr_bits[p] |= _ONE << np.uint64(nbr[p, d])
    return (nbr_bits,
            nbr,
            np.zeros(size),  # each block's candidate limit
            np.zeros(max_labels, dtype=np.uint64),  # each label's blocks
            np.zeros(max_labels, dtype=np.uint64),  # the blocks that have the label as a candidate
            np.zeros((_BIT_FLOAT_ROWS, size)),  # rows _BIT_* and _CUT_*
            np.zeros((_BIT_INT_ROWS, size), dtype=np.int64),  # rows _BIT_PATH, _BIT_LAYERS
            _grid_masks(n),
            np.zeros(max_labels, dtype=np.uint64))  # the labels with a weight other than 0 and 1 to the label


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _candidates_of(label, unary, limit, size):
    """The blocks where label costs at most the block's limit (its candidate limit)."""
    bits = _NO_BITS
    for p in range(size):
        bits |= np.uint64(unary[label, p] <= limit[p]) << np.uint64(p)
    return bits


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _bit_swap(a, b, movable, labels, unary, potts, beta, blocks, relatives, grid, nbr_bits, floats, ints):
    """The alpha-beta swap of labels a < b, where only the blocks `movable` (a bit set) can
    change: every other block of a or b has costs that keep it where it is whatever its
    neighbours do, so it is fixed, and its links become costs of its movable neighbours.
    Returns the blocks that changed label (written into labels), 0 when none did.

    The idle test of _swap_is_idle on the movable blocks; then the blocks whose own cost
    outweighs all their links to undecided blocks are settled, round after round (a settled
    block only makes its neighbours easier to settle, on the side they would take anyway, so
    the order does not matter); _bit_cut decides the rest. The result is the smallest-sink
    minimum cut of the swap, as _swap_move finds it. Each step is a loop over all the blocks
    with bit-set arithmetic and no branches, which the compiler turns into vector code.

    relatives[x]: the labels with a Potts weight other than 0 and 1 to label x (a half-half
    label's parents, a parent's half-half labels). Every other weight between two labels is 1,
    so a neighbour outside the swap costs the same whether a block takes a or b unless its
    label is a relative of a or b. Rows of floats: _BIT_FLIP, _BIT_RELATIVE_LINKS (kept at 0
    between swaps), and _BIT_CUT_FLIP, which it fills for _bit_cut."""
    size = nbr_bits.shape[0]
    w = beta * potts[a, b]
    blocks_a = blocks[a]
    blocks_b = blocks[b]
    swap = blocks_a | blocks_b
    fixed_a = blocks_a & ~movable
    fixed_b = blocks_b & ~movable
    extras = False
    related = (relatives[a] | relatives[b]) & ~((_ONE << np.uint64(a)) | (_ONE << np.uint64(b)))
    if related:
        near = _with_neighbours(movable, grid) & ~swap
        while related:
            label = _lowest_bit(related)
            related &= related - _ONE
            there = blocks[label] & near
            step = beta * (potts[b, label] - potts[a, label])
            if there != _NO_BITS and step != 0.0:
                extras = True
                for p in range(size):
                    floats[_BIT_RELATIVE_LINKS, p] += step * _count(nbr_bits[p] & there)
    # the idle test (a flip of one block that gains its links to blocks of the other label)
    # and the first round of settling
    busy = _NO_BITS
    to_a = _NO_BITS
    to_b = _NO_BITS
    for p in range(size):
        around = nbr_bits[p]
        diff = unary[b, p] - unary[a, p] + floats[_BIT_RELATIVE_LINKS, p]
        in_a = (blocks_a >> np.uint64(p)) & _ONE
        if_a = diff - w * _count(around & blocks_b)
        if_b = -diff - w * _count(around & blocks_a)
        busy |= np.uint64((if_a < 0.0) if in_a else (if_b <= 0.0)) << np.uint64(p)
        cost = diff + w * (_count(around & fixed_a) - _count(around & fixed_b))
        floats[_BIT_FLIP, p] = cost
        reach = w * _count(around & movable)
        to_a |= np.uint64(cost >= reach - _EPS) << np.uint64(p)
        to_b |= np.uint64(cost < -reach - _EPS) << np.uint64(p)
    if extras:
        for p in range(size):
            floats[_BIT_RELATIVE_LINKS, p] = 0.0
    if busy & movable == _NO_BITS:
        return _NO_BITS
    to_a &= movable
    to_b &= movable
    undecided = movable & ~(to_a | to_b)
    settled = to_a | to_b
    while settled and undecided:
        now_a = _NO_BITS
        now_b = _NO_BITS
        for p in range(size):
            around = nbr_bits[p]
            flip = floats[_BIT_FLIP, p] + w * (_count(around & to_a) - _count(around & to_b))
            reach = w * _count(around & undecided)
            now_a |= np.uint64(flip >= reach - _EPS) << np.uint64(p)
            now_b |= np.uint64(flip < -reach - _EPS) << np.uint64(p)
        now_a &= undecided
        now_b &= undecided
        to_a |= now_a
        to_b |= now_b
        settled = now_a | now_b
        undecided &= ~settled
    if undecided:
        for p in range(size):
            around = nbr_bits[p]
            floats[_BIT_CUT_FLIP, p] = floats[_BIT_FLIP, p] + w * (_count(around & to_a) - _count(around & to_b))
        to_b |= _bit_cut(undecided, w, grid, floats, ints)
    changed = (to_b & blocks_a) | (movable & blocks_b & ~to_b)
    rest = changed
    while rest:
        p = _lowest_bit(rest)
        rest &= rest - _ONE
        labels[p] = b if _has(blocks_a, p) else a
    return changed


@njit(cache=True, nogil=True, _nrt=False)
def _bit_cut(undecided, w, grid, floats, ints):
    """The smallest-sink minimum cut deciding the undecided blocks (a bit set;
    floats[_BIT_CUT_FLIP, p]: the flip cost of block p given the settled blocks, a link between
    two undecided blocks costing w when cut), as _min_cut finds it, with the graph and its
    searches on bit sets: a breadth-first search moves a whole layer of blocks one step in each
    of the 4 directions at once. Returns the blocks on the sink side (those that take b).

    Graph (as in _swap_move): s -> p with capacity max(gain_p, 0), p -> t with max(-gain_p, 0),
    and for each link (p, q), q right of or below p, an arc p -> q of capacity 2w; gain_p is
    the flip cost plus w per link to a block right or below minus w per link to one left or
    above. Work rows, indexed by block: floats[_CUT_SOURCE], floats[_CUT_SINK] the terminal
    capacities, floats[_CUT_ARC + d] the arcs'; ints[_BIT_PATH] the augmenting path,
    ints[_BIT_LAYERS] the search's layers."""
    n = grid[_GRID_SIDE]
    row = np.int64(n)  # the index step between a block and the one below
    # residual_*: the blocks whose arc in that direction has capacity left
    right = undecided & (undecided >> _ONE) & grid[_GRID_NOT_LAST_COLUMN]
    down = undecided & (undecided >> n)
    residual_right = right if 2.0 * w > _EPS else _NO_BITS
    residual_down = down if 2.0 * w > _EPS else _NO_BITS
    residual_left = _NO_BITS
    residual_up = _NO_BITS
    sources = _NO_BITS
    sinks = _NO_BITS
    rest = undecided
    while rest:
        p = _lowest_bit(rest)
        rest &= rest - _ONE
        gain = floats[_BIT_CUT_FLIP, p]
        if _has(right, p):
            gain += w
        if _has(down, p):
            gain += w
        if p >= 1 and _has(right, p - 1):
            gain -= w
        if p >= row and _has(down, p - row):
            gain -= w
        floats[_CUT_ARC + _RIGHT, p] = 2.0 * w if _has(right, p) else 0.0
        floats[_CUT_ARC + _DOWN, p] = 2.0 * w if _has(down, p) else 0.0
        floats[_CUT_ARC + _LEFT, p] = 0.0
        floats[_CUT_ARC + _UP, p] = 0.0
        floats[_CUT_SOURCE, p] = gain if gain > 0 else 0.0
        floats[_CUT_SINK, p] = -gain if gain < 0 else 0.0
        if floats[_CUT_SOURCE, p] > _EPS:
            sources |= _ONE << np.uint64(p)
        if floats[_CUT_SINK, p] > _EPS:
            sinks |= _ONE << np.uint64(p)
    while sources and sinks:
        # breadth-first layers from the sources, stored as bit sets in ints[_BIT_LAYERS]
        layer = sources
        visited = sources
        depth = 0
        ints[_BIT_LAYERS, 0] = np.int64(layer)
        while layer & sinks == _NO_BITS:
            layer = (((layer & residual_right) << _ONE) | ((layer & residual_down) << n)
                     | ((layer & residual_left) >> _ONE) | ((layer & residual_up) >> n)) & ~visited
            if layer == _NO_BITS:
                break
            visited |= layer
            depth += 1
            ints[_BIT_LAYERS, depth] = np.int64(layer)
        if layer == _NO_BITS:
            break
        # walk back from a sink block of the last layer, one predecessor per layer
        q = _lowest_bit(layer & sinks)
        end = q
        flow = floats[_CUT_SINK, q]
        for level in range(depth - 1, -1, -1):
            previous = np.uint64(ints[_BIT_LAYERS, level])
            if q >= 1 and _has(previous & residual_right, q - 1):
                p, d = q - 1, _RIGHT
            elif q >= row and _has(previous & residual_down, q - row):
                p, d = q - row, _DOWN
            elif q + 1 < 64 and _has(previous & residual_left, q + 1):
                p, d = q + 1, _LEFT
            else:
                p, d = q + row, _UP
            ints[_BIT_PATH, level] = p * 4 + d
            flow = min(flow, floats[_CUT_ARC + d, p])
            q = p
        flow = min(flow, floats[_CUT_SOURCE, q])
        floats[_CUT_SOURCE, q] -= flow
        if floats[_CUT_SOURCE, q] <= _EPS:
            sources &= ~(_ONE << np.uint64(q))
        floats[_CUT_SINK, end] -= flow
        if floats[_CUT_SINK, end] <= _EPS:
            sinks &= ~(_ONE << np.uint64(end))
        for level in range(depth):
            p = ints[_BIT_PATH, level] // 4
            d = ints[_BIT_PATH, level] % 4
            q = p + (1 if d == _RIGHT else row if d == _DOWN else -1 if d == _LEFT else -row)
            floats[_CUT_ARC + d, p] -= flow
            floats[_CUT_ARC + (d ^ 2), q] += flow
            bit_p = _ONE << np.uint64(p)
            bit_q = _ONE << np.uint64(q)
            if d == _RIGHT:
                if floats[_CUT_ARC + _RIGHT, p] <= _EPS:
                    residual_right &= ~bit_p
                residual_left |= bit_q
            elif d == _DOWN:
                if floats[_CUT_ARC + _DOWN, p] <= _EPS:
                    residual_down &= ~bit_p
                residual_up |= bit_q
            elif d == _LEFT:
                if floats[_CUT_ARC + _LEFT, p] <= _EPS:
                    residual_left &= ~bit_p
                residual_right |= bit_q
            else:
                if floats[_CUT_ARC + _UP, p] <= _EPS:
                    residual_up &= ~bit_p
                residual_down |= bit_q
    # the blocks that can still reach t: backwards from the blocks with sink capacity left
    reach = sinks
    while True:
        more = (((reach >> _ONE) & residual_right) | ((reach >> n) & residual_down)
                | ((reach << _ONE) & residual_left) | ((reach << n) & residual_up)) & ~reach & undecided
        if more == _NO_BITS:
            return reach
        reach |= more


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _wanted(a, blocks, candidate_of, n_labels):
    """The labels b > a such that the swap of a and b has a block that can move: one of a
    with b as a candidate, or one of b with a."""
    wanted = _NO_BITS
    own_a = blocks[a]
    reach_a = candidate_of[a]
    for b in range(a + 1, n_labels):
        hit = (own_a & candidate_of[b]) | (blocks[b] & reach_a)
        wanted |= np.uint64(hit != _NO_BITS) << np.uint64(b)
    return wanted


@njit(cache=True, nogil=True, _nrt=False)
def _label_grid_bits(unary, potts, beta, labels, ws, special, heaviest):
    """_label_grid_any for grids of up to 64 blocks and up to 64 labels: the same moves.

    A block can only move to a label whose cost there is within heaviest * beta * (its
    neighbour count) of its own label's (a link changes the energy by at most heaviest * beta
    when the block switches label): its candidates. In the swap of a and b, a block of a that
    has not b as a candidate (or one of b without a) stays where it is whatever its neighbours
    do. So the pair (a, b) is visited only when some of its blocks can move (in GCO's order
    among those pairs), and the swap solves for those blocks only.
    """
    nbr_bits = ws[_BW_NBR_BITS]
    nbr = ws[_BW_NBR]
    limit = ws[_BW_LIMIT]
    blocks = ws[_BW_BLOCKS]
    candidate_of = ws[_BW_CANDIDATE_OF]
    relatives = ws[_BW_RELATIVES]
    floats = ws[_BW_FLOATS]
    ints = ws[_BW_INTS]
    grid = ws[_BW_GRID]
    size = nbr_bits.shape[0]
    n_labels = unary.shape[0]
    for p in range(size):
        labels[p] = 0
        links = _count(nbr_bits[p])
        limit[p] = unary[0, p] + heaviest * beta * links + _CANDIDATE_SLACK
    for label in range(n_labels):
        blocks[label] = _NO_BITS
        relatives[label] = _NO_BITS
        candidate_of[label] = _candidates_of(label, unary, limit, size)
    blocks[0] = ~_NO_BITS if size == 64 else (_ONE << np.uint64(size)) - _ONE
    rest = special
    while rest:
        label = _lowest_bit(rest)
        rest &= rest - _ONE
        related = _NO_BITS
        others = special
        while others:
            other = _lowest_bit(others)
            others &= others - _ONE
            if potts[label, other] != 0.0 and potts[label, other] != 1.0:
                related |= _ONE << np.uint64(other)
        relatives[label] = related
    energy = _labelling_energy(labels, unary, potts, beta, nbr)
    previous = energy + 1.0
    while previous > energy:
        previous = energy
        moved = False
        for a in range(n_labels):
            if blocks[a] == _NO_BITS and candidate_of[a] == _NO_BITS:
                continue  # no block of a, and none that could take a
            wanted = _wanted(a, blocks, candidate_of, n_labels)
            while wanted:
                b = _highest_bit(wanted)
                wanted &= (_ONE << np.uint64(b)) - _ONE
                own_a = blocks[a]
                movable = (own_a & candidate_of[b]) | (blocks[b] & candidate_of[a])
                changed = _bit_swap(a, b, movable, labels, unary, potts, beta, blocks, relatives, grid, nbr_bits,
                                    floats, ints)
                if changed == _NO_BITS:
                    continue
                moved = True
                below_b = (_ONE << np.uint64(b)) - _ONE
                to_b = own_a & changed
                blocks[a] = (own_a & ~changed) | (blocks[b] & changed)
                blocks[b] = (blocks[b] & ~changed) | to_b
                rest = changed
                while rest:
                    p = _lowest_bit(rest)
                    rest &= rest - _ONE
                    limit[p] = unary[labels[p], p] + heaviest * beta * _count(nbr_bits[p]) + _CANDIDATE_SLACK
                for label in range(n_labels):
                    candidate_of[label] = _candidates_of(label, unary, limit, size)
                wanted = _wanted(a, blocks, candidate_of, n_labels) & below_b
        if moved:
            energy = _labelling_energy(labels, unary, potts, beta, nbr)


@njit(cache=True, nogil=True)
def make_workspace(n, max_labels):
    """Work arrays for the labellings of an n x n grid with up to max_labels labels (label_grid):
    (the bit-set path's, the general path's), the one that will not run made empty."""
    if n * n <= 64 and max_labels <= 64:
        return _bit_workspace(n, max_labels), _any_workspace(0, 0)
    return _bit_workspace(0, 0), _any_workspace(n, max_labels)


@njit(cache=True, nogil=True, _nrt=False)
def label_grid(unary, potts, beta, labels, ws, special, heaviest):
    """Alpha-beta swap minimisation of sum_p unary[l_p, p] + beta * sum_{p~q} potts[l_p, l_q]
    on an n x n grid, the move sequence of the published solver (GCO's swap): start from label
    0 everywhere; each cycle visits the pairs (a, b), a ascending, b descending from the last
    label to a + 1; cycles repeat while the energy decreases. Writes the labels into labels
    (n*n,). Moves that provably change nothing are skipped, which leaves the result, move for
    move, as it was.

    unary (n_labels, n*n); potts: its first n_labels rows and columns, non-negative weights;
    ws: make_workspace(n, at least n_labels), shared by the labellings of a partition. special:
    the labels with a weight other than 0 and 1 to some label, as a bit set (read up to 64
    labels only); heaviest: the largest weight, or any bound above it (a tighter bound rules
    out more moves before any work). The caller that builds potts knows both without looking
    (the partition loop: the half-half labels and their parents, and 1).
    """
    bit_ws = ws[0]
    any_ws = ws[1]
    if bit_ws[_BW_NBR_BITS].shape[0] == labels.shape[0] and unary.shape[0] <= 64:
        _label_grid_bits(unary, potts, beta, labels, bit_ws, special, heaviest)
    else:
        _label_grid_any(unary, potts, beta, labels, any_ws)
