"""The fast solver makes the same moves as the solver of commit 92257cd (bench/reference_solver.py):
the candidate labels, the bit-set swaps and cuts, and the partition loop's bookkeeping on labels
only skip or reorganise work, on random problems as on Co-Mixup partitions."""

import numpy as np
import pytest
import torch

from bench import reference_solver
from comixup.mixing import comix, comix_solver, swap_labelling

from tests.support.solver_calls import grid_labelling, potts_summary, top3


def random_problem(rng, n, n_labels):
    """Continuous costs (no exact ties): plain Potts, or with half-half labels built as the
    partition loop builds them (costs the parents' mean minus a little, weight 0.25 to them)."""
    unary = rng.normal(0, 0.1, (n_labels, n * n)) + rng.normal(0, 0.05, (n_labels, 1))
    potts = np.ones((n_labels, n_labels)) - np.eye(n_labels)
    for half in range(n_labels - 1, max(n_labels - 4, 2) - 1, -1):
        if rng.random() < 0.5:
            a, b = sorted(rng.choice(half, 2, replace=False))
            unary[half] = 0.5 * (unary[a] + unary[b]) - 5e-4
            potts[half, [a, b]] = potts[[a, b], half] = 0.25
    return unary, potts, float(rng.choice([0.02, 0.05, 0.1, 0.3]))


@pytest.mark.parametrize("n, max_labels", [(2, 12), (3, 12), (4, 23), (8, 12), (9, 8), (4, 70)])
def test_same_labelling_as_the_reference_solver(n, max_labels):
    # 8 x 8 is the largest grid of the bit-set path; 9 x 9 and 70 labels take the general path.
    rng = np.random.default_rng(n * 100 + max_labels)
    for _ in range(40 if n < 8 else 12):
        unary, potts, beta = random_problem(rng, n, int(rng.integers(2, max_labels + 1)))
        fast = grid_labelling(unary, potts, beta, n)
        reference = reference_solver.solve_grid_labelling(unary, potts, beta, n)
        np.testing.assert_array_equal(fast, reference)


def test_bit_set_and_general_paths_agree():
    rng = np.random.default_rng(5)
    for _ in range(60):
        n = int(rng.integers(2, 9))
        unary, potts, beta = random_problem(rng, n, int(rng.integers(2, 24)))
        special, heaviest = potts_summary(potts, unary.shape[0])
        bits = swap_labelling.make_workspace(n, unary.shape[0])
        general = (swap_labelling._bit_workspace(0, 0), swap_labelling._any_workspace(n, unary.shape[0]))
        labels = [np.zeros(n * n, dtype=np.int64) for _ in range(2)]
        swap_labelling.label_grid(unary, potts, beta, labels[0], bits, special, heaviest)
        swap_labelling.label_grid(unary, potts, beta, labels[1], general, special, heaviest)
        np.testing.assert_array_equal(labels[0], labels[1])


def test_same_partition_masks_as_the_reference_solver():
    rng = np.random.default_rng(7)
    for n, m in [(4, 20), (2, 9), (8, 6), (4, 70)]:
        cost = -rng.dirichlet(np.ones(n * n), size=m)
        A = 0.999 * np.eye(m) + 0.001 * rng.random((m, m))
        init = rng.integers(0, m, (m, n * n))
        args = (cost, A, init, n, 0.32 / n ** 2, 1.0 / n ** 2, 0.83 * n ** 2, True, True, 4)
        fast = comix_solver.solve_partition(*args)
        reference = reference_solver.solve_partition(*args)
        np.testing.assert_array_equal(fast, reference)
        assert ((fast.sum(1) > 0).sum(-1) >= 2).any()  # some output draws from several inputs
        assert (fast == 0.5).any() or n == 8  # half-half labels were used


def test_objective_on_labels_equals_the_published_obj_fn():
    rng = np.random.default_rng(11)
    for n, m in [(2, 5), (4, 20)]:
        n_out = m
        cost = rng.normal(0, 1, (m, n * n))
        first = rng.integers(0, m - 1, (n_out, n * n))
        second = np.where(rng.random((n_out, n * n)) < 0.3, first + 1 + rng.integers(0, m - 1, (n_out, n * n)), -1)
        second = np.where(second >= m, -1, second)
        mask = np.zeros((n_out, n * n, m))
        counts = np.zeros((n_out, m))
        for j in range(n_out):
            for p in range(n * n):
                if second[j, p] < 0:
                    mask[j, p, first[j, p]] = 1.0
                else:
                    mask[j, p, [first[j, p], second[j, p]]] = 0.5
            counts[j] = mask[j].sum(0)
        beta, gamma = 0.02, 0.06
        ours = comix_solver.objective(cost, first, second, counts, n, beta, gamma)
        published = float(comix.obj_fn(torch.from_numpy(cost.reshape(m, n, n)),
                                       torch.from_numpy(mask.reshape(n_out, n, n, m)), beta, gamma))
        assert ours == pytest.approx(published, rel=1e-12)


def test_top3_matches_torch_topk_on_random_counts():
    # the shortcut (third count above the fourth, or at most three inputs used) and the
    # replayed introselect both give torch's choice
    rng = np.random.default_rng(1)
    for _ in range(3000):
        size = int(rng.integers(3, 40))
        counts = rng.integers(0, 6, size) * 0.5 if rng.random() < 0.7 else rng.random(size)
        expected = sorted(torch.topk(torch.from_numpy(counts), 3).indices.tolist())
        assert top3(counts).tolist() == expected
