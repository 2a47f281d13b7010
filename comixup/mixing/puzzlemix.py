"""Puzzle Mix (J.-H. Kim, W. Choo, H. O. Song, ICML 2020, arXiv 2009.06962), as the Co-Mixup paper's baseline.

The library's one mixer dialect (:mod:`comixup.mixing.base`): x (B, C, H, W), any float dtype and
device, square images; class indices or soft targets y; saliency (B, H, W), e.g. the input-gradient
saliency of ``comixup.saliency_and_clean_loss``. The partner of image i is ``x[perm[i]]``, perm a
random permutation; one ``lam ~ Beta(mixup_alpha, mixup_alpha)`` per batch; the grid size n is
drawn from {2, 4, 8, 16} per batch when ``block_num = -1`` (as the published code does). Draw
order: n, perm, lam. Randomness comes from ``rng`` (a ``numpy.random.Generator``) or numpy's
global state when it is None. Mixed images keep x's device and dtype; mixed targets are
float32, ``share * y + (1 - share) * y[perm]`` with share the mean of image i's final mask, which
is its exact area share (transport only permutes each image's blocks).

Per pair (self i, partner j = perm[i]), on an n x n grid (N = n^2 blocks):

1. Mask. Each block p takes a level k_p in {0 .. L-1} (L = n_labels); the mask
   m_p = k_p / (L-1) is the weight of image i in the block (1 - m_p that of j). The level
   labelling minimises

       E(k) = sum_p theta_p(k_p) + sum_{p~q} w_pq (m_p - m_q)^2           (p~q: 4-neighbours)
       theta_p(k) = m A_p + (1 - m) B_p - (eta/N) log(Binom(k; L-1, lam) + 1e-8),  m = k/(L-1)
       A_p = s_j(p) + rho1_p,  B_p = s_i(p) + rho0_p

   s = saliency averaged over each block and normalised to sum 1 per image (so m A + (1-m) B
   is the saliency a block loses), the Binomial prior pulls the mask share toward lam. The data
   smoothness uses d^ab_pq, the mean absolute colour difference across the border of block p
   of image a and the next block q of image b (a, b: 1 self, 0 partner), measured on the
   de-normalised images average-pooled by neigh_size, averaged over channels and along the
   border. With beta' = beta / (16 n), as published:

       w_pq = max(0, beta' + beta' gamma (d^10 + d^01 - d^00 - d^11) / 2)
       rho1_p += beta' gamma (d^10 + d^11) / 2, rho0_p += beta' gamma (d^01 + d^00) / 2  (p above/left of q)
       rho1_q += beta' gamma (d^01 + d^11) / 2, rho0_q += beta' gamma (d^10 + d^00) / 2

   For a binary mask this equals, up to a constant, saliency lost + prior +
   sum_{p~q} (beta' [m_p != m_q] + beta' gamma d^{m_p m_q}_pq), the paper's energy; with more
   levels the published code interpolates the terms linearly in m, and so does this.
   The clamp at 0 never acts for gamma <= 1 on images in [0, 1] (d lies in [-1, 1]); it keeps
   the energy solvable otherwise (pass mean/std so the smoothness sees pixel values).

   Solver: w_pq >= 0 and (m_p - m_q)^2 is convex in k_p - k_q, so the exact minimum is one
   s-t minimum cut of Ishikawa's layered graph (L-1 binary nodes "k_p >= l" per block, infinite
   arcs for their order, and arcs of capacity 2 w / (L-1)^2 between every pair of layers of
   neighbouring blocks, whose cut cost is the quadratic up to linear terms folded into the
   terminals); the max-flow is Dinic's, compiled with numba. The published code runs GCO's
   alpha-beta swap on an integer-rounded copy of the same energy, a local minimum; this one is
   global, so its energy is never higher.

2. Transport (``transport=True``). On a T x T grid (T = W / min(t_size, W/n); t_size = -1:
   T = n) each image's blocks are permuted to put its salient blocks where its mask keeps it:
   block i goes to position pi(i), minimising

       sum_i t_eps |pos_i - pos_pi(i)|^2 / (T-1)^2 - s_i z_pi(i)

   with s the T x T block saliency (normalised), z = [mask > 0] for the self image and
   z = [mask < 1] for the partner. The published code approximates this with a few rounds of
   row-wise best choices in which losing rows can drop their block; here it is solved exactly
   as a linear assignment (shortest augmenting paths, compiled), so every block is used once.

3. Mix: ``mask * moved_self + (1 - mask) * moved_partner`` (mask upsampled nearest).

The image smoothness term needs pixel values: pass the dataset's per-channel ``mean`` and
``std`` (``x * std + mean`` is what the term sees, as in the published code); leave them None
when x is already in pixel units. Pairs are solved one after another, or in chunks on an
``executor`` (a thread pool; the compiled solvers release the GIL); all random draws happen
before, so both give the same result.

Usage::

    mixer = PuzzleMix(num_classes=K, mean=info.mean, std=info.std)   # published CIFAR defaults
    saliency = input_gradient_saliency(model, x, labels)              # eval mode, as published (clean_lam 0)
    mixed_x, mixed_y = mixer(x, labels, saliency)
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit
from torch import Tensor

from comixup.mixing.base import Mixer, check_executor, check_images, check_int, check_saliency, soft_targets
from comixup.mixing.baselines import draw_lambda, draw_permutation, mix_targets
from comixup.mixing.compile_notice import announce_compilation
from comixup.mixing.saliency_blocks import BLOCK_CHOICES, NamespaceConfig, block_saliency, check_grid, draw_grid_size

__all__ = [
    "PuzzleMix", "PuzzleMixConfig", "PuzzlePlan", "BLOCK_CHOICES", "block_saliency", "boundary_mismatch", "graph_terms",
    "level_prior", "solve_levels", "solve_transport",
    "move_blocks",
]

PRIOR_EPS = 1e-8  # published: inside the log of the Binomial prior
_INF = 1e30


@dataclass
class PuzzleMixConfig(NamespaceConfig):
    """Puzzle Mix hyperparameters under the published command-line names; the defaults are the
    published CIFAR command. block_num = -1 draws the grid size from 2, 4, 8, 16 per batch;
    t_size = -1 transports on the mask's own grid."""

    mixup_alpha: float = 1.0
    n_labels: int = 3
    beta: float = 1.2
    gamma: float = 0.5
    eta: float = 0.2
    neigh_size: int = 4
    transport: bool = True
    t_eps: float = 0.8
    t_size: int = 4
    block_num: int = -1

    def __post_init__(self) -> None:
        self.check_types()
        problems = []
        if not (math.isfinite(self.mixup_alpha) and self.mixup_alpha > 0):
            problems.append(f"mixup_alpha must be > 0 (Beta concentration), got {self.mixup_alpha}")
        if not isinstance(self.n_labels, int) or self.n_labels < 2:
            problems.append(f"n_labels must be an int >= 2 (mask levels), got {self.n_labels!r}")
        for name in ("beta", "gamma", "eta", "t_eps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be a finite number >= 0, got {value}")
        if not isinstance(self.neigh_size, int) or self.neigh_size < 1:
            problems.append(f"neigh_size must be a positive int, got {self.neigh_size!r}")
        if not isinstance(self.t_size, int) or (self.t_size < 1 and self.t_size != -1):
            problems.append(f"t_size must be a positive int or -1 (the mask's grid), got {self.t_size!r}")
        if not isinstance(self.block_num, int) or (self.block_num < 1 and self.block_num != -1):
            problems.append(f"block_num must be a positive grid size or -1 (drawn per batch), got {self.block_num!r}")
        if not isinstance(self.transport, bool):
            problems.append(f"transport must be True or False, got {self.transport!r}")
        if problems:
            raise ValueError("; ".join(problems))


# --------------------------------------------------------------------------- energy terms

def boundary_mismatch(pixels: Tensor, perm: np.ndarray | Tensor, n: int, neigh_size: int) -> tuple[Tensor, Tensor]:
    """Data smoothness d^ab of every pair (self i, partner perm[i]) across every block border.

    pixels: (B, C, H, W) images in pixel units. Returns (down, right), float32 on pixels'
    device: down[b, a, c, r, col] compares block (r, col) of image a with block (r+1, col) of
    image c, right[b, a, c, r, col] block (r, col) with (r, col+1); image index 1 is the self
    image b, 0 its partner. Each value is the mean absolute difference, over channels and
    along the border, between the last pooled row (column) of the first block and the first of
    the second, after average pooling by min(neigh_size, H/n).
    """
    batch, _, height, width = pixels.shape
    block = width // n
    pool = min(neigh_size, block)
    if block % pool:
        raise ValueError(f"block side {block} (image {width} / grid {n}) is not divisible by neigh_size {pool}")
    per_block = block // pool
    pooled = F.avg_pool2d(pixels.float(), pool)
    side = pooled.shape[-1]
    images = (pooled[torch.as_tensor(np.asarray(perm), device=pixels.device)], pooled)
    down = pixels.new_zeros((batch, 2, 2, n - 1, n), dtype=torch.float32)
    right = pixels.new_zeros((batch, 2, 2, n, n - 1), dtype=torch.float32)
    for a in (0, 1):
        for c in (0, 1):
            # last pooled row (column) of every block but the last, against the first of the next
            last, first = slice(per_block - 1, side - 1, per_block), slice(per_block, side, per_block)
            vertical = images[a][:, :, last, :] - images[c][:, :, first, :]
            down[:, a, c] = vertical.abs().mean(1).reshape(batch, n - 1, n, per_block).mean(-1)
            horizontal = images[a][:, :, :, last] - images[c][:, :, :, first]
            right[:, a, c] = horizontal.abs().mean(1).reshape(batch, n, per_block, n - 1).mean(2)
    return down, right


def level_prior(lam: float, n_labels: int) -> np.ndarray:
    """-log(Binom(k; n_labels-1, lam) + 1e-8) for k = 0 .. n_labels-1 (k: level of the self image)."""
    trials = n_labels - 1
    k = np.arange(n_labels)
    pmf = np.array([math.comb(trials, int(i)) for i in k]) * lam ** k * (1 - lam) ** (trials - k)
    return -np.log(pmf + PRIOR_EPS)


def graph_terms(sal_self: np.ndarray, sal_partner: np.ndarray, down: np.ndarray, right: np.ndarray, lam: float,
                n_labels: int, beta: float, gamma: float, eta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mask energy of every pair (module docstring), float64.

    sal_self, sal_partner: (B, n, n) normalised block saliency of the self and partner images;
    down, right: :func:`boundary_mismatch`. Returns unary (B, L, n*n) = theta_p(k) and the
    edge weights w_down (B, n-1, n) (block (r, c) with (r+1, c)) and w_right (B, n, n-1).
    """
    sal_self = np.asarray(sal_self, dtype=np.float64)
    batch, n, _ = sal_self.shape
    beta_n = beta / (16 * n)
    smooth_down = beta_n * gamma * np.asarray(down, dtype=np.float64)
    smooth_right = beta_n * gamma * np.asarray(right, dtype=np.float64)
    coef_self = np.array(sal_partner, dtype=np.float64)  # A: multiplies m (the block is self's)
    coef_partner = sal_self.copy()  # B: multiplies 1 - m
    every = slice(None)
    for first, second, d in (((every, slice(None, -1)), (every, slice(1, None)), smooth_down),
                             ((every, every, slice(None, -1)), (every, every, slice(1, None)), smooth_right)):
        coef_self[first] += (d[:, 1, 0] + d[:, 1, 1]) / 2
        coef_partner[first] += (d[:, 0, 1] + d[:, 0, 0]) / 2
        coef_self[second] += (d[:, 0, 1] + d[:, 1, 1]) / 2
        coef_partner[second] += (d[:, 1, 0] + d[:, 0, 0]) / 2
    w_down = np.maximum(0.0, beta_n + (smooth_down[:, 1, 0] + smooth_down[:, 0, 1]
                                      - smooth_down[:, 1, 1] - smooth_down[:, 0, 0]) / 2)
    w_right = np.maximum(0.0, beta_n + (smooth_right[:, 1, 0] + smooth_right[:, 0, 1]
                                       - smooth_right[:, 1, 1] - smooth_right[:, 0, 0]) / 2)
    levels = np.linspace(0.0, 1.0, n_labels).reshape(1, n_labels, 1, 1)
    prior = eta / (n * n) * level_prior(lam, n_labels).reshape(1, n_labels, 1, 1)
    unary = levels * coef_self[:, None] + (1 - levels) * coef_partner[:, None] + prior
    return unary.reshape(batch, n_labels, n * n), w_down, w_right




# --------------------------------------------------------------------------- compiled graph cut

@njit(cache=True, nogil=True)
def _level_graph(n, n_labels):
    """Arcs of Ishikawa's graph for an n x n grid with n_labels levels, in CSR order.

    Node p * (L-1) + (l-1) is "k_p >= l"; the source and sink are the last two nodes. Edges, in
    order: source -> node, node -> sink (one each per node), order arcs (p, l+1) -> (p, l), then
    for every grid edge (down edges, then right edges) and every layer pair (l, l'), an arc pair
    (p, l) <-> (q, l'). Returns (first, arc_to, rev, slot_fwd, slot_bwd, tails, heads): arcs of
    node u are first[u]:first[u+1]; edge e sits at slot_fwd[e] with its reverse at slot_bwd[e].
    """
    layers = n_labels - 1
    n_nodes = n * n * layers
    source = n_nodes
    sink = n_nodes + 1
    n_grid = 2 * n * (n - 1)
    n_edges = 2 * n_nodes + n * n * (layers - 1) + n_grid * layers * layers
    tails = np.empty(n_edges, np.int64)
    heads = np.empty(n_edges, np.int64)
    e = 0
    for u in range(n_nodes):
        tails[e] = source
        heads[e] = u
        e += 1
    for u in range(n_nodes):
        tails[e] = u
        heads[e] = sink
        e += 1
    for p in range(n * n):
        for level in range(1, layers):
            tails[e] = p * layers + level
            heads[e] = p * layers + level - 1
            e += 1
    for direction in range(2):
        for row in range(n):
            for col in range(n):
                if (direction == 0 and row >= n - 1) or (direction == 1 and col >= n - 1):
                    continue
                p = row * n + col
                q = p + n if direction == 0 else p + 1
                for a in range(layers):
                    for b in range(layers):
                        tails[e] = p * layers + a
                        heads[e] = q * layers + b
                        e += 1
    degree = np.zeros(n_nodes + 3, np.int64)
    for i in range(n_edges):
        degree[tails[i] + 1] += 1
        degree[heads[i] + 1] += 1
    first = np.zeros(n_nodes + 3, np.int64)
    for u in range(n_nodes + 2):
        first[u + 1] = first[u] + degree[u + 1]
    fill = first.copy()
    arc_to = np.empty(2 * n_edges, np.int64)
    rev = np.empty(2 * n_edges, np.int64)
    slot_fwd = np.empty(n_edges, np.int64)
    slot_bwd = np.empty(n_edges, np.int64)
    for i in range(n_edges):
        fwd = fill[tails[i]]
        fill[tails[i]] += 1
        bwd = fill[heads[i]]
        fill[heads[i]] += 1
        arc_to[fwd] = heads[i]
        arc_to[bwd] = tails[i]
        rev[fwd] = bwd
        rev[bwd] = fwd
        slot_fwd[i] = fwd
        slot_bwd[i] = bwd
    return first, arc_to, rev, slot_fwd, slot_bwd, tails, heads


@njit(cache=True, nogil=True)
def _source_side(first, arc_to, rev, cap, source, sink, eps, level, queue, cursor, path, reach):
    """Dinic's max-flow from source to sink on residual capacities cap (changed in place);
    writes reach[u] = True for the nodes still reachable from the source (the minimal source
    side of a minimum cut). level, queue, cursor, path: work arrays of one entry per node."""
    n_nodes = first.shape[0] - 1
    while True:
        for u in range(n_nodes):
            level[u] = -1
        level[source] = 0
        queue[0] = source
        head = 0
        tail = 1
        while head < tail:
            u = queue[head]
            head += 1
            for e in range(first[u], first[u + 1]):
                v = arc_to[e]
                if level[v] < 0 and cap[e] > eps:
                    level[v] = level[u] + 1
                    queue[tail] = v
                    tail += 1
        if level[sink] < 0:
            break
        for u in range(n_nodes):
            cursor[u] = first[u]
        depth = 0
        u = source
        while True:
            if u == sink:
                flow = _INF
                for d in range(depth):
                    flow = min(flow, cap[path[d]])
                back = -1
                for d in range(depth):
                    e = path[d]
                    cap[e] -= flow
                    cap[rev[e]] += flow
                    if back < 0 and cap[e] <= eps:
                        back = d
                # resume from the tail of the first saturated arc
                depth = back
                u = source if depth == 0 else arc_to[path[depth - 1]]
                continue
            advanced = False
            while cursor[u] < first[u + 1]:
                e = cursor[u]
                v = arc_to[e]
                if cap[e] > eps and level[v] == level[u] + 1:
                    path[depth] = e
                    depth += 1
                    u = v
                    advanced = True
                    break
                cursor[u] += 1
            if not advanced:
                if u == source:
                    break
                level[u] = -1  # a dead end for the rest of this phase
                depth -= 1
                u = source if depth == 0 else arc_to[path[depth - 1]]
                cursor[u] += 1
    for u in range(n_nodes):
        reach[u] = False
    reach[source] = True
    queue[0] = source
    head = 0
    tail = 1
    while head < tail:
        u = queue[head]
        head += 1
        for e in range(first[u], first[u + 1]):
            v = arc_to[e]
            if not reach[v] and cap[e] > eps:
                reach[v] = True
                queue[tail] = v
                tail += 1


@njit(cache=True, nogil=True)
def _solve_levels_batch(unary, w_down, w_right, n):
    """Exact level labellings (B, n*n) for unary (B, L, n*n), w_down (B, n-1, n), w_right
    (B, n, n-1): one minimum cut of Ishikawa's graph per problem."""
    batch, n_labels, size = unary.shape
    layers = n_labels - 1
    first, arc_to, rev, slot_fwd, slot_bwd, tails, heads = _level_graph(n, n_labels)
    n_nodes = size * layers
    source = n_nodes
    sink = n_nodes + 1
    order_start = 2 * n_nodes
    pair_start = order_start + size * (layers - 1)
    cap = np.empty(arc_to.shape[0], np.float64)
    linear = np.empty(n_nodes, np.float64)
    level = np.empty(n_nodes + 2, np.int64)
    queue = np.empty(n_nodes + 2, np.int64)
    cursor = np.empty(n_nodes + 2, np.int64)
    path = np.empty(n_nodes + 2, np.int64)
    reach = np.empty(n_nodes + 2, np.bool_)
    labels = np.zeros((batch, size), np.int64)
    scale = 1.0 / (layers * layers)
    for b in range(batch):
        cap[:] = 0.0
        for p in range(size):
            for a in range(layers):
                linear[p * layers + a] = unary[b, a + 1, p] - unary[b, a, p]
        largest = 0.0
        e = pair_start
        for direction in range(2):
            for row in range(n):
                for col in range(n):
                    if (direction == 0 and row >= n - 1) or (direction == 1 and col >= n - 1):
                        continue
                    w = (w_down[b, row, col] if direction == 0 else w_right[b, row, col]) * scale
                    p = row * n + col
                    q = p + n if direction == 0 else p + 1
                    # with x_pl = [k_p >= l]: (k_p - k_q)^2 = sum_l (2l-1)(x_pl + x_ql)
                    #   - sum_{l,l'} (x_pl + x_ql') + sum_{l,l'} |x_pl - x_ql'|
                    for a in range(layers):
                        linear[p * layers + a] += w * (2 * (a + 1) - n_labels)
                        linear[q * layers + a] += w * (2 * (a + 1) - n_labels)
                    for _ in range(layers * layers):
                        cap[slot_fwd[e]] = w
                        cap[slot_bwd[e]] = w
                        e += 1
                    largest = max(largest, w)
        for u in range(n_nodes):
            value = linear[u]
            largest = max(largest, abs(value))
            if value < 0:
                cap[slot_fwd[u]] = -value  # source -> u: paid when x_u = 0
            else:
                cap[slot_fwd[n_nodes + u]] = value  # u -> sink: paid when x_u = 1
        for i in range(order_start, pair_start):
            cap[slot_fwd[i]] = _INF
        eps = 1e-13 * largest if largest > 0 else 1e-300
        _source_side(first, arc_to, rev, cap, source, sink, eps, level, queue, cursor, path, reach)
        for p in range(size):
            k = 0
            for a in range(layers):
                if reach[p * layers + a]:
                    k += 1
            labels[b, p] = k
    return labels


def _in_chunks(solve: Callable[..., np.ndarray], arrays: Sequence[np.ndarray], extra: tuple,
               executor: Executor | None, chunks: int) -> np.ndarray:
    batch = arrays[0].shape[0]
    if executor is None or batch < 2 or chunks < 2:
        return solve(*arrays, *extra)
    bounds = np.linspace(0, batch, min(chunks, batch) + 1).astype(int)
    parts = executor.map(lambda lo_hi: solve(*(a[lo_hi[0]:lo_hi[1]] for a in arrays), *extra),
                         list(zip(bounds[:-1], bounds[1:], strict=False)))
    return np.concatenate(list(parts))


def solve_levels(unary: np.ndarray, w_down: np.ndarray, w_right: np.ndarray,
                 executor: Executor | None = None, chunks: int = 8) -> np.ndarray:
    """Exact minimisers (B, n, n) of the mask energy for a batch of problems (unary (B, L, n*n),
    w_down (B, n-1, n), w_right (B, n, n-1), weights >= 0): labels k (n, n) in 0..L-1 minimising
    sum_p unary[k_p, p] + sum of w * (k_p - k_q)^2 / (L-1)^2 over the down and right neighbours."""
    unary = np.ascontiguousarray(unary, dtype=np.float64)
    batch, n_labels, size = unary.shape
    n = math.isqrt(size)
    if n * n != size or n_labels < 2:
        raise ValueError(f"unary must be (B, L >= 2, n*n), got {unary.shape}")
    w_down = np.ascontiguousarray(np.broadcast_to(w_down, (batch, n - 1, n)), dtype=np.float64)
    w_right = np.ascontiguousarray(np.broadcast_to(w_right, (batch, n, n - 1)), dtype=np.float64)
    if (w_down < 0).any() or (w_right < 0).any() or not (np.isfinite(unary).all() and np.isfinite(w_down).all()
                                                          and np.isfinite(w_right).all()):
        raise ValueError("the mask energy needs finite unaries and finite edge weights >= 0")
    announce_compilation(_solve_levels_batch, (unary[:1], w_down[:1], w_right[:1], n), "the Puzzle Mix mask solver")
    labels = _in_chunks(_solve_levels_batch, (unary, w_down, w_right), (n,), executor, chunks)
    return labels.reshape(batch, n, n)


# --------------------------------------------------------------------------- compiled transport

@njit(cache=True, nogil=True)
def _assign(cost, dest, owner, u, v, shortest, path, row_seen, col_seen):
    """Minimum-cost perfect assignment of rows to columns of a square cost matrix by shortest
    augmenting paths with dual potentials (Jonker-Volgenant family): dest[i] is row i's column."""
    m = cost.shape[0]
    for i in range(m):
        dest[i] = -1
        owner[i] = -1
        u[i] = 0.0
        v[i] = 0.0
    for start in range(m):
        for j in range(m):
            shortest[j] = _INF
            path[j] = -1
            row_seen[j] = False
            col_seen[j] = False
        i = start
        reached = 0.0
        sink = -1
        while sink < 0:
            row_seen[i] = True
            best = _INF
            best_j = -1
            for j in range(m):
                if col_seen[j]:
                    continue
                r = reached + cost[i, j] - u[i] - v[j]
                if r < shortest[j]:
                    shortest[j] = r
                    path[j] = i
                s = shortest[j]
                # on ties prefer a free column: the search ends there
                if best_j < 0 or s < best or (s == best and owner[j] < 0 and owner[best_j] >= 0):
                    best = s
                    best_j = j
            col_seen[best_j] = True
            reached = best
            if owner[best_j] < 0:
                sink = best_j
            else:
                i = owner[best_j]
        u[start] += reached
        for r in range(m):
            if row_seen[r] and r != start:
                u[r] += reached - shortest[dest[r]]
        for j in range(m):
            if col_seen[j]:
                v[j] -= reached - shortest[j]
        j = sink
        while True:
            i = path[j]
            owner[j] = i
            previous = dest[i]
            dest[i] = j
            if i == start:
                break
            j = previous


@njit(cache=True, nogil=True)
def _transport_batch(saliency, keep, t_eps, side):
    """dest (B, M) of every image's exact transport; saliency (B, M), keep (B, M) bool, M = side^2."""
    batch, m = saliency.shape
    distance = np.empty((m, m), np.float64)
    norm = 1.0 / ((side - 1) * (side - 1)) if side > 1 else 0.0
    for i in range(m):
        for j in range(m):
            dr = i // side - j // side
            dc = i % side - j % side
            distance[i, j] = t_eps * (dr * dr + dc * dc) * norm
    cost = np.empty((m, m), np.float64)
    dest = np.empty((batch, m), np.int64)
    owner = np.empty(m, np.int64)
    u = np.empty(m, np.float64)
    v = np.empty(m, np.float64)
    shortest = np.empty(m, np.float64)
    path = np.empty(m, np.int64)
    row_seen = np.empty(m, np.bool_)
    col_seen = np.empty(m, np.bool_)
    for b in range(batch):
        for i in range(m):
            for j in range(m):
                cost[i, j] = distance[i, j] - saliency[b, i] * keep[b, j]
        _assign(cost, dest[b], owner, u, v, shortest, path, row_seen, col_seen)
    return dest






def solve_transport(saliency: np.ndarray, keep: np.ndarray, t_eps: float,
                    executor: Executor | None = None, chunks: int = 8) -> np.ndarray:
    """Exact transport of a batch of images: dest (B, T*T), dest[b, i] the position (row-major)
    block i of image b moves to, minimising the sum over blocks of the cost of moving block i to
    position j, t_eps |pos_i - pos_j|^2 / (T-1)^2 - saliency_i * keep_j; every block is used
    exactly once. saliency (B, T, T) normalised block saliency, keep (B, T, T)."""
    saliency = np.ascontiguousarray(saliency, dtype=np.float64)
    batch, side, _ = saliency.shape
    flat_sal = saliency.reshape(batch, side * side)
    flat_keep = np.ascontiguousarray(np.asarray(keep, dtype=np.float64).reshape(batch, side * side))
    announce_compilation(_transport_batch, (flat_sal[:1], flat_keep[:1], float(t_eps), side),
                         "the Puzzle Mix transport solver")
    return _in_chunks(_transport_batch, (flat_sal, flat_keep), (float(t_eps), side), executor, chunks)


def move_blocks(images: Tensor, dest: np.ndarray | Tensor, side: int) -> Tensor:
    """Images (B, C, H, W) with block i of a side x side grid moved to position dest[b, i]."""
    batch, channels, height, width = images.shape
    bh, bw = height // side, width // side
    dest = torch.as_tensor(np.asarray(dest), device=images.device)
    source = torch.empty_like(dest)
    source.scatter_(1, dest, torch.arange(side * side, device=images.device).expand(batch, -1))
    blocks = images.reshape(batch, channels, side, bh, side, bw).permute(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(batch, channels, side * side, bh, bw)
    moved = torch.gather(blocks, 2, source.view(batch, 1, -1, 1, 1).expand(-1, channels, -1, bh, bw))
    moved = moved.reshape(batch, channels, side, side, bh, bw).permute(0, 1, 2, 4, 3, 5)
    return moved.reshape(batch, channels, height, width)


# --------------------------------------------------------------------------- the mixer

@dataclass
class PuzzlePlan:
    """Everything one batch's Puzzle Mix decided: the pairs, lam, the grid, the mask levels
    (B, n, n) (mask = levels / (n_labels - 1), the weight of the self image) and, with
    transport, the destinations (B, T*T) of the self and partner images' blocks on the T x T
    grid (None without transport)."""

    perm: np.ndarray
    lam: float
    block_num: int
    n_labels: int
    levels: np.ndarray
    t_grid: int | None = None
    self_dest: np.ndarray | None = None
    partner_dest: np.ndarray | None = None

    def mask(self) -> np.ndarray:
        """The block mask (B, n, n) in [0, 1], float64."""
        return self.levels / (self.n_labels - 1)

    def shares(self) -> np.ndarray:
        """Area share (B,) of each self image in its mixed image."""
        return self.mask().reshape(len(self.perm), -1).mean(1)


def _channel_stats(values: Sequence[float] | Tensor | None, name: str) -> Tensor | None:
    if values is None:
        return None
    stats = torch.as_tensor(values, dtype=torch.float32).flatten()
    if stats.numel() < 1 or not torch.isfinite(stats).all():
        raise ValueError(f"{name} must be finite per-channel values, got {values!r}")
    if name == "std" and (stats <= 0).any():
        raise ValueError(f"std must be positive per-channel values, got {values!r}")
    return stats


class PuzzleMix(Mixer):
    """Puzzle Mix as the Co-Mixup paper's baseline (module docstring for the method): each image
    paired with a random partner, a saliency-guided block mask of several levels and an optimal
    transport of each image's blocks, solved by compiled code.

    Args:
        num_classes: K, needed when ``y`` holds class indices.
        mean, std: the per-channel normalisation of x (the image smoothness term needs pixel
            values); None (both): x is in pixel units.
        mixup_alpha: lam ~ Beta(mixup_alpha, mixup_alpha), one per batch.
        n_labels: mask levels; beta, gamma: label and data smoothness; eta: prior weight.
        neigh_size: pooling of the border colour differences.
        transport: move each image's salient blocks (t_eps: its distance cost; t_size: its block
            side, -1 for the mask's grid).
        block_num: the mask grid; -1 draws it from 2, 4, 8, 16 per batch.
        executor: a thread pool that solves the pairs in ``chunks`` concurrently (same result).
        rng: a ``numpy.random.Generator`` for every draw; None uses numpy's global state.

    The defaults are the published CIFAR command's. :meth:`plan` makes the draws and solves the
    masks and transports; :meth:`apply` mixes a batch by a plan.
    """

    needs_saliency = True

    def __init__(self, *, num_classes: int | None = None, mean: Sequence[float] | Tensor | None = None,
                 std: Sequence[float] | Tensor | None = None, mixup_alpha: float = 1.0, n_labels: int = 3,
                 beta: float = 1.2, gamma: float = 0.5, eta: float = 0.2, neigh_size: int = 4, transport: bool = True,
                 t_eps: float = 0.8, t_size: int = 4, block_num: int = -1, executor: Executor | None = None,
                 chunks: int = 8, rng: np.random.Generator | None = None) -> None:
        given = dict(locals())  # the hyperparameters, by the names PuzzleMixConfig checks them under
        super().__init__(num_classes=num_classes, rng=rng)
        self.config = PuzzleMixConfig(**{field.name: given[field.name] for field in fields(PuzzleMixConfig)})
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std (the normalisation of x) or neither (x in pixel units)")
        self.mean = _channel_stats(mean, "mean")
        self.std = _channel_stats(std, "std")
        self.executor = check_executor(executor)
        self.chunks = check_int("chunks", chunks, minimum=1)

    def __repr__(self) -> str:
        return f"PuzzleMix({self.config})"

    def grid_size(self) -> int:
        """The grid size for the next batch (drawn from 2, 4, 8, 16 when block_num == -1)."""
        return draw_grid_size(self.config.block_num, self.rng)

    def _pixels(self, x: Tensor) -> Tensor:
        pixels = x.float()
        if self.mean is None:
            return pixels
        if self.mean.numel() not in (1, x.shape[1]) or self.std.numel() not in (1, x.shape[1]):
            raise ValueError(f"mean/std have {self.mean.numel()}/{self.std.numel()} values for {x.shape[1]} channels")
        return pixels * self.std.to(x.device).view(1, -1, 1, 1) + self.mean.to(x.device).view(1, -1, 1, 1)

    @torch.no_grad()
    def plan(self, x: Tensor, saliency: Tensor) -> PuzzlePlan:
        """Draw n, the pairs and lam, then solve every pair's mask and transports. ValueError for
        non-square images, a grid that does not fit them, or a saliency that is not finite."""
        x = check_images(x)
        return self._plan(x, check_saliency(saliency, x))

    def _plan(self, x: Tensor, saliency: Tensor) -> PuzzlePlan:
        batch, _, height, width = x.shape
        if height != width:
            raise ValueError(f"Puzzle Mix needs square images, got {height}x{width}")
        cfg = self.config
        check_grid("block_num", cfg.block_num, height, width)
        n = self.grid_size()
        perm = draw_permutation(batch, self.rng)
        lam = draw_lambda(cfg.mixup_alpha, self.rng)
        block = width // n
        down, right = boundary_mismatch(self._pixels(x), perm, n, cfg.neigh_size)
        sal = block_saliency(saliency, n).double().cpu().numpy()
        finite = np.isfinite(sal).reshape(batch, -1).all(axis=1)
        if not finite.all():
            raise ValueError(f"saliency of image {int(np.flatnonzero(~finite)[0])} holds NaN or infinite values; "
                             f"saliency must be finite")
        unary, w_down, w_right = graph_terms(sal, sal[perm], down.double().cpu().numpy(),
                                             right.double().cpu().numpy(), lam, cfg.n_labels, cfg.beta,
                                             cfg.gamma, cfg.eta)
        levels = solve_levels(unary, w_down, w_right, self.executor, self.chunks)
        plan = PuzzlePlan(perm=perm, lam=lam, block_num=n, n_labels=cfg.n_labels, levels=levels)
        if not cfg.transport:
            return plan
        t_block = block if cfg.t_size == -1 else min(cfg.t_size, block)
        if block % t_block:
            raise ValueError(f"block side {block} (image {width} / grid {n}) is not divisible by t_size {t_block}")
        side = width // t_block
        repeat = side // n
        mask_t = np.repeat(np.repeat(plan.mask(), repeat, axis=1), repeat, axis=2)
        sal_t = block_saliency(saliency, side).double().cpu().numpy()
        plan.t_grid = side
        plan.self_dest = solve_transport(sal_t, mask_t > 0, cfg.t_eps, self.executor, self.chunks)
        plan.partner_dest = solve_transport(sal_t[perm], mask_t < 1, cfg.t_eps, self.executor, self.chunks)
        return plan

    @torch.no_grad()
    def apply(self, plan: PuzzlePlan, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mix x (B, C, H, W) and its labels y (class indices or soft targets) by a plan made for
        this batch."""
        x = check_images(x)
        return self._apply(plan, x, soft_targets(y, x.shape[0], self.num_classes))

    def _apply(self, plan: PuzzlePlan, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        batch, _, height, width = x.shape
        if len(plan.perm) != batch:
            raise ValueError(f"the plan was made for a batch of {len(plan.perm)}, got {batch} images")
        index = torch.as_tensor(plan.perm, device=x.device)
        own, partner = x, x[index]
        if plan.t_grid is not None:
            own = move_blocks(own, plan.self_dest, plan.t_grid)
            partner = move_blocks(partner, plan.partner_dest, plan.t_grid)
        mask = torch.as_tensor(plan.mask(), device=x.device).to(x.dtype).unsqueeze(1)
        mask = F.interpolate(mask, size=(height, width), mode="nearest")
        mixed = mask * own + (1 - mask) * partner
        return mixed, mix_targets(y, plan.perm, torch.as_tensor(plan.shares(), dtype=torch.float32))

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor, saliency: Tensor) -> tuple[Tensor, Tensor]:
        """Mix a batch.

        Args:
            x: square images (B, C, H, W), floating point, any device.
            y: class indices (B,) (needs ``num_classes``) or soft targets (B, K).
            saliency: (B, H, W) on x's device, e.g. from :func:`comixup.saliency_and_clean_loss`.

        Returns:
            (mixed_x like x, mixed_y (B, K) float32, rows summing to 1: each image's mask share).
        """
        x, targets, saliency = self._door(x, y, saliency)
        return self._apply(self._plan(x, saliency), x, targets)
