"""Puzzle Mix: the exact graph cut, the energy terms, the exact transport, mixing and targets."""
import itertools
from argparse import Namespace
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comixup.data.synthetic import blob_saliency
from comixup.mixing import comix
from comixup.mixing import puzzlemix as pm

from tests.support.puzzle_calls import level_energy, linear_assignment, transport_cost


def all_labellings(n, n_labels):
    return np.array(list(itertools.product(range(n_labels), repeat=n * n))).reshape(-1, n, n)


def random_problem(rng, n, n_labels, kind):
    if kind == "ties":  # small integers: many labellings share the minimum
        unary = rng.integers(-2, 3, size=(n_labels, n * n)).astype(float)
        w_down = rng.integers(0, 3, size=(n - 1, n)).astype(float)
        return unary, w_down, rng.integers(0, 3, size=(n, n - 1)).astype(float)
    scale = {"weak": 0.05, "strong": 3.0}[kind]
    w_down = rng.exponential(scale, size=(n - 1, n)) * (rng.random((n - 1, n)) > 0.2)
    return rng.normal(size=(n_labels, n * n)), w_down, rng.exponential(scale, size=(n, n - 1))


def energy_by_loops(labels, unary, w_down, w_right):
    n_labels, n = unary.shape[0], labels.shape[0]
    m = labels / (n_labels - 1)
    total = sum(unary[labels[r, c], r * n + c] for r in range(n) for c in range(n))
    total += sum(w_down[r, c] * (m[r, c] - m[r + 1, c]) ** 2 for r in range(n - 1) for c in range(n))
    return total + sum(w_right[r, c] * (m[r, c] - m[r, c + 1]) ** 2 for r in range(n) for c in range(n - 1))


# --------------------------------------------------------------------------- graph cut

@pytest.mark.parametrize("n,n_labels", [(2, 2), (2, 3), (3, 2), (3, 3), (2, 4)])
def test_graph_cut_reaches_the_brute_force_minimum(n, n_labels):
    rng = np.random.default_rng(n * 10 + n_labels)
    every = all_labellings(n, n_labels)
    problems = [random_problem(rng, n, n_labels, kind) for kind in ("weak", "strong", "ties") for _ in range(6)]
    unary = np.stack([p[0] for p in problems])
    labels = pm.solve_levels(unary, np.stack([p[1] for p in problems]), np.stack([p[2] for p in problems]))
    assert labels.shape == (len(problems), n, n) and labels.min() >= 0 and labels.max() < n_labels
    for (u, wd, wr), found in zip(problems, labels, strict=True):
        energies = level_energy(every, u, wd, wr)
        assert level_energy(found, u, wd, wr) == pytest.approx(energies.min(), abs=1e-9)
        assert level_energy(found, u, wd, wr) == pytest.approx(energy_by_loops(found, u, wd, wr), abs=1e-12)
    assert len({tuple(lab.ravel()) for lab in labels}) > 3  # the problems were not all trivial


def test_graph_cut_uses_middle_levels_when_they_pay():
    # block (0, 0) prefers level 2 and block (0, 1) level 0, but a strong edge joins them
    unary = np.zeros((1, 3, 4))
    unary[0, :, 0] = [1.0, 0.4, 0.0]
    unary[0, :, 1] = [0.0, 0.4, 1.0]
    w_right = np.array([[[10.0], [0.0]]])
    labels = pm.solve_levels(unary, np.zeros((1, 1, 2)), w_right)
    assert labels[0, 0].tolist() == [1, 1]
    assert pm.solve_levels(unary, np.zeros((1, 1, 2)), 0 * w_right)[0, 0].tolist() == [2, 0]


def test_pipeline_energy_is_the_papers_binary_energy():
    """With two levels the solved energy is, up to a constant, saliency lost + prior + beta' per
    label change + beta' gamma times the border mismatch of the images that meet there."""
    rng = np.random.default_rng(7)
    n, lam, beta, gamma, eta = 3, 0.3, 1.2, 0.5, 0.2
    sal = rng.random((2, n, n))
    sal /= sal.sum((1, 2), keepdims=True)
    down, right = rng.random((1, 2, 2, n - 1, n)), rng.random((1, 2, 2, n, n - 1))
    unary, w_down, w_right = pm.graph_terms(sal[:1], sal[1:], down, right, lam, 2, beta, gamma, eta)
    beta_n = beta / (16 * n)
    every = all_labellings(n, 2)

    def papers(z):  # z = 1: the block is the self image's
        prior = -np.log(np.where(z == 1, lam, 1 - lam) + 1e-8) * eta / n ** 2
        total = np.sum(np.where(z == 1, sal[1], sal[0]) + prior)
        for r, c in itertools.product(range(n), range(n)):
            if r + 1 < n:
                total += beta_n * (z[r, c] != z[r + 1, c]) + beta_n * gamma * down[0, z[r, c], z[r + 1, c], r, c]
            if c + 1 < n:
                total += beta_n * (z[r, c] != z[r, c + 1]) + beta_n * gamma * right[0, z[r, c], z[r, c + 1], r, c]
        return total

    reference = np.array([papers(z) for z in every])
    ours = level_energy(every, unary[0], w_down[0], w_right[0])
    np.testing.assert_allclose(ours - reference, (ours - reference)[0], atol=1e-12)  # a constant apart
    found = pm.solve_levels(unary, w_down, w_right)[0]
    assert papers(found) == pytest.approx(reference.min(), abs=1e-12)


def test_prior_alone_picks_the_likeliest_level():
    n = 4
    flat = np.full((1, n, n), 1 / n ** 2)
    zeros_d, zeros_r = np.zeros((1, 2, 2, n - 1, n)), np.zeros((1, 2, 2, n, n - 1))
    for lam, level in ((0.9, 2), (0.5, 1), (0.2, 0)):  # argmax of Binomial(2, lam)
        terms = pm.graph_terms(flat, flat, zeros_d, zeros_r, lam, 3, beta=0.0, gamma=0.0, eta=0.2)
        assert (pm.solve_levels(*terms) == level).all()
    np.testing.assert_allclose(np.exp(-pm.level_prior(0.3, 4)), [0.343, 0.441, 0.189, 0.027], atol=1e-7)


def test_mask_keeps_each_image_where_it_is_salient():
    n = 4
    left = np.zeros((1, n, n))
    left[..., : n // 2] = 1
    left /= left.sum()
    right = left[..., ::-1].copy()
    d, r = np.zeros((1, 2, 2, n - 1, n)), np.zeros((1, 2, 2, n, n - 1))
    terms = pm.graph_terms(left, right, d, r, 0.5, 3, beta=1.2, gamma=0.5, eta=0.2)  # self salient on the left
    mask = pm.solve_levels(*terms)[0] / 2
    assert (mask[:, : n // 2] == 1).all() and (mask[:, n // 2:] == 0).all()


def test_boundary_mismatch_matches_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(3, 3, 16, 16, generator=g)
    perm = np.array([2, 0, 1])
    for n, neigh in ((4, 2), (8, 4), (2, 4)):
        down, right = pm.boundary_mismatch(pixels, perm, n, neigh)
        pool = min(neigh, 16 // n)
        per_block = 16 // n // pool
        pooled = F.avg_pool2d(pixels, pool)
        for b, a, c in itertools.product(range(3), (0, 1), (0, 1)):
            first, second = (pooled[b] if a else pooled[perm[b]]), (pooled[b] if c else pooled[perm[b]])
            for r, col in itertools.product(range(n), range(n)):
                span = slice(col * per_block, (col + 1) * per_block)
                last, nxt = (r + 1) * per_block - 1, (r + 1) * per_block
                if r + 1 < n:  # rows: block (r, col) over block (r + 1, col)
                    expected = (first[:, last, span] - second[:, nxt, span]).abs().mean()
                    assert down[b, a, c, r, col].item() == pytest.approx(expected.item(), abs=1e-6)
                span_r = slice(r * per_block, (r + 1) * per_block)
                lastc, nxtc = (col + 1) * per_block - 1, (col + 1) * per_block
                if col + 1 < n:  # columns: block (r, col) left of block (r, col + 1)
                    expected = (first[:, span_r, lastc] - second[:, span_r, nxtc]).abs().mean()
                    assert right[b, a, c, r, col].item() == pytest.approx(expected.item(), abs=1e-6)


# --------------------------------------------------------------------------- transport

def objective(cost, dest):
    return cost[np.arange(len(dest)), dest].sum()


@pytest.mark.parametrize("m", [1, 2, 3, 5, 6])
def test_linear_assignment_is_exact(m):
    rng = np.random.default_rng(m)
    for trial in range(12):
        cost = rng.normal(size=(m, m)) if trial % 3 else rng.integers(-1, 2, size=(m, m)).astype(float)
        if trial == 0:
            cost[:] = 1.0  # every assignment ties
        dest = linear_assignment(cost)
        assert sorted(dest.tolist()) == list(range(m))
        best = min(objective(cost, np.array(p)) for p in itertools.permutations(range(m)))
        assert objective(cost, dest) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("side", [2, 4, 8])
def test_transport_keeps_every_block_once_and_never_loses_to_identity(side):
    rng = np.random.default_rng(side)
    batch = 6
    sal = rng.random((batch, side, side)) ** 4
    sal /= sal.sum((1, 2), keepdims=True)
    keep = rng.random((batch, side, side)) > 0.5
    sal[0] = 1 / side ** 2  # ties: uniform saliency ...
    keep[1] = True  # ... everything kept ...
    keep[2] = False  # ... nothing kept
    for t_eps in (0.0, 0.05, 0.8):
        dest = pm.solve_transport(sal, keep, t_eps)
        cost = transport_cost(sal, keep, t_eps)
        for b in range(batch):
            assert sorted(dest[b].tolist()) == list(range(side * side))
            assert objective(cost[b], dest[b]) <= objective(cost[b], np.arange(side * side)) + 1e-12
            if side == 2:
                best = min(objective(cost[b], np.array(p)) for p in itertools.permutations(range(4)))
                assert objective(cost[b], dest[b]) == pytest.approx(best, abs=1e-12)
        if t_eps > 0:  # with a positive move cost, nothing moves when moving gains nothing
            assert (dest[1] == np.arange(side * side)).all() and (dest[2] == np.arange(side * side)).all()
    # with a small move cost, salient blocks do move into the kept part
    dest = pm.solve_transport(sal, keep, 0.05)
    cost = transport_cost(sal, keep, 0.05)
    if side > 2:
        identity = np.arange(side * side)
        assert any(objective(cost[b], dest[b]) < objective(cost[b], identity) - 1e-6 for b in range(3, 6))


def test_transport_moves_a_salient_block_into_the_kept_half():
    side = 4
    keep = np.zeros((1, side, side), bool)
    keep[..., :2] = True  # the mask keeps the left half
    sal = np.full((1, side, side), 1e-3)
    sal[0, 1, 3] = 1.0  # the salient block sits on the right
    sal /= sal.sum()
    dest = pm.solve_transport(sal, keep, 0.8)[0]
    assert dest[1 * side + 3] % side < 2
    assert sorted(dest.tolist()) == list(range(16))


def test_move_blocks_puts_each_block_at_its_destination():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 8, 8, generator=g)
    dest = np.stack([np.random.default_rng(s).permutation(16) for s in range(2)])
    moved = pm.move_blocks(images, dest, 4)
    for b, i in itertools.product(range(2), range(16)):
        j = dest[b, i]
        src = images[b, :, 2 * (i // 4):2 * (i // 4) + 2, 2 * (i % 4):2 * (i % 4) + 2]
        assert torch.equal(moved[b, :, 2 * (j // 4):2 * (j // 4) + 2, 2 * (j % 4):2 * (j % 4) + 2], src)


# --------------------------------------------------------------------------- the mixer

def data(batch=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=g)
    y = torch.eye(batch)[torch.randperm(batch, generator=g)]  # distinct classes
    return x, y, blob_saliency(batch, size, seed)


def cell(k, side, size):
    """Pixel slices of block k (row-major) of a side x side grid on size x size images."""
    t = size // side
    return slice(None), slice(t * (k // side), t * (k // side + 1)), slice(t * (k % side), t * (k % side + 1))


def expected_mix(plan, x):
    """The mixed batch rebuilt block by block from the plan."""
    batch, _, size, _ = x.shape
    n = plan.block_num
    out = torch.empty_like(x)
    for i in range(batch):
        own, partner = x[i], x[plan.perm[i]]
        if plan.t_grid is not None:  # block src of each image goes to position dest[i, src]
            moved_own, moved_partner = torch.empty_like(own), torch.empty_like(partner)
            side = plan.t_grid
            for src in range(side ** 2):
                moved_own[cell(plan.self_dest[i, src], side, size)] = own[cell(src, side, size)]
                moved_partner[cell(plan.partner_dest[i, src], side, size)] = partner[cell(src, side, size)]
            own, partner = moved_own, moved_partner
        for k in range(n * n):
            m = plan.levels[i].ravel()[k] / (plan.n_labels - 1)
            out[i][cell(k, n, size)] = m * own[cell(k, n, size)] + (1 - m) * partner[cell(k, n, size)]
    return out


@pytest.mark.parametrize("block_num,t_size,transport", [(4, 4, True), (8, 4, True), (2, -1, True), (4, 4, False)])
def test_mixed_images_and_targets_follow_the_final_mask(block_num, t_size, transport):
    x, y, sal = data()
    mixer = pm.PuzzleMix(block_num=block_num, t_size=t_size, transport=transport, rng=np.random.default_rng(1))
    plan = mixer.plan(x, sal)
    mixed_x, mixed_y = mixer.apply(plan, x, y)
    torch.testing.assert_close(mixed_x, expected_mix(plan, x))
    assert (plan.t_grid is not None) == transport
    if transport:
        assert plan.t_grid == 32 // (t_size if t_size > 0 else 32 // block_num)
        for dest in (plan.self_dest, plan.partner_dest):
            assert all(sorted(row.tolist()) == list(range(plan.t_grid ** 2)) for row in dest)
    # targets: each input's share of the final mixed mask
    expected = torch.zeros_like(y)
    for i in range(6):
        share = plan.levels[i].mean() / (plan.n_labels - 1)
        expected[i, y[i].argmax()] += share
        expected[i, y[plan.perm[i]].argmax()] += 1 - share
    torch.testing.assert_close(mixed_y, expected)
    torch.testing.assert_close(mixed_y.sum(1), torch.ones(6))
    assert len(np.unique(plan.levels)) > 1  # the masks do mix


def test_default_mixer_draws_the_published_grid_sizes():
    x, y, sal = data(batch=4)
    mixer = pm.PuzzleMix(rng=np.random.default_rng(0))
    assert {mixer.grid_size() for _ in range(60)} == {2, 4, 8, 16}
    config = pm.PuzzleMixConfig.from_namespace(Namespace(beta=0.8, t_size=-1, m_beta=5.0))
    assert (config.beta, config.t_size, config.gamma, config.n_labels) == (0.8, -1, 0.5, 3)
    for _ in range(4):
        plan = mixer.plan(x, sal)
        assert plan.block_num in (2, 4, 8, 16) and plan.t_grid == max(plan.block_num, 8)
        torch.testing.assert_close(mixer.apply(plan, x, y)[0], expected_mix(plan, x))


def test_mean_and_std_give_the_smoothness_pixel_values():
    x, y, sal = data()
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    on_pixels = pm.PuzzleMix(block_num=8, gamma=1.0, beta=8.0, rng=np.random.default_rng(3)).plan(x, sal)
    on_normalised = pm.PuzzleMix(mean=mean, std=std, block_num=8, gamma=1.0, beta=8.0,
                                 rng=np.random.default_rng(3)).plan(normalised, sal)
    assert np.array_equal(on_pixels.levels, on_normalised.levels)
    ignoring = pm.PuzzleMix(block_num=8, gamma=1.0, beta=8.0, rng=np.random.default_rng(3)).plan(normalised, sal)
    assert not np.array_equal(ignoring.levels, on_pixels.levels)  # the smoothness term does matter


def test_seeds_reproduce_and_threads_agree():
    x, y, sal = data(batch=10)
    runs = []
    with ThreadPoolExecutor(2) as pool:
        for seed, executor in ((5, None), (5, pool), (6, None)):
            mixer = pm.PuzzleMix(block_num=-1, executor=executor, chunks=3, rng=np.random.default_rng(seed))
            runs.append([mixer(x, y, sal) for _ in range(3)])
    for (xa, ya), (xb, yb) in zip(runs[0], runs[1], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(runs[0], runs[2], strict=True))
    np.random.seed(8)
    first = pm.PuzzleMix()(x, y, sal)
    np.random.seed(8)
    again = pm.PuzzleMix()(x, y, sal)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_images_mix_like_float32(dtype):
    x, y, sal = data()
    mixer = pm.PuzzleMix(block_num=4, rng=np.random.default_rng(2))
    plan = mixer.plan(x.to(dtype), sal)
    mixed_x, mixed_y = mixer.apply(plan, x.to(dtype), y)
    assert mixed_x.dtype == dtype and mixed_y.dtype == torch.float32
    torch.testing.assert_close(mixed_x.float(), expected_mix(plan, x.to(dtype).float()), atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(mixed_y.sum(1), torch.ones(6))


def test_bad_input_is_refused_with_a_clear_message():
    x, y, sal = data()
    mixer = pm.PuzzleMix(block_num=4)
    with pytest.raises(ValueError, match="square"):
        mixer(x[..., :16], y, sal[..., :16])
    with pytest.raises(ValueError, match="saliency must be"):
        mixer(x, y, sal[:3])
    with pytest.raises(ValueError, match="give the mixer num_classes=K"):
        mixer(x, y.argmax(1), sal)
    with pytest.raises(ValueError, match="both mean and std"):
        pm.PuzzleMix(mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="n_labels"):
        pm.PuzzleMix(n_labels=1)
    with pytest.raises(ValueError, match="gamma"):
        pm.PuzzleMix(gamma=-1.0)
    with pytest.raises(ValueError, match="neigh_size"):
        pm.PuzzleMix(block_num=4, neigh_size=4)(x[..., :24, :24], y, sal[..., :24, :24])  # 6-pixel blocks
    with pytest.raises(ValueError, match="block_num=3 does not divide the 32x32 images"):
        pm.PuzzleMix(block_num=3)(x, y, sal)
    with pytest.raises(ValueError, match="weights >= 0"):
        pm.solve_levels(np.zeros((1, 2, 4)), -np.ones((1, 1, 2)), np.zeros((1, 2, 1)))
    assert np.isfinite(pm.level_prior(0.0, 3)).all()  # lam at the end of [0, 1] still gives a finite prior


# --------------------------------------------------------------------------- all-zero saliency

@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("block_num", [2, 4, 8, 16])
@pytest.mark.parametrize("transport", [True, False])
def test_all_zero_saliency_puzzle_mix(block_num, transport):
    rng = np.random.default_rng(block_num)
    x = torch.randn(8, 3, 32, 32)
    y = comix.to_one_hot(torch.arange(8) % 3, 3)
    mixer = pm.PuzzleMix(block_num=block_num, transport=transport, rng=rng)
    mixed_x, mixed_y = mixer(x, y, torch.zeros(8, 32, 32))
    assert mixed_x.shape == x.shape and torch.isfinite(mixed_x).all()
    assert torch.isfinite(mixed_y).all() and (mixed_y >= 0).all()
    torch.testing.assert_close(mixed_y.sum(1), torch.ones(8))
    assert mixed_x.abs().max() <= x.abs().max() + 1e-5  # convex combinations of (moved) input pixels
