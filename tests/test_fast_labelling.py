"""The fast grid labelling makes the same moves as the previous one (bench/reference_solver.py):
the bounds, the idle-pair memory and the settling of blocks before a cut only skip work."""
import sys
from pathlib import Path

import numpy as np
import pytest

import comix_solver

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import reference_solver  # noqa: E402


def random_problem(rng, n, n_labels):
    """Continuous costs (no exact ties), plain Potts or with a half-half label as the solver builds."""
    unary = rng.normal(0, 0.1, (n_labels, n * n)) + rng.normal(0, 0.05, (n_labels, 1))
    potts = np.ones((n_labels, n_labels)) - np.eye(n_labels)
    if n_labels >= 4 and rng.random() < 0.5:
        half = n_labels - 1
        unary[half] = 0.5 * (unary[0] + unary[1]) - 5e-4
        potts[half, :2] = potts[:2, half] = 0.25
    return unary, potts, float(rng.choice([0.02, 0.05, 0.1, 0.3]))


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_same_labelling_as_the_previous_solver(n):
    rng = np.random.default_rng(n)
    for _ in range(60):
        unary, potts, beta = random_problem(rng, n, int(rng.integers(2, 13)))
        fast = comix_solver.solve_grid_labelling(unary, potts, beta, n)
        previous = reference_solver.previous_grid_labelling(unary, potts, beta, n)
        np.testing.assert_array_equal(fast, previous)


def test_same_partition_masks_as_the_previous_solver():
    rng = np.random.default_rng(7)
    for n, m in [(4, 20), (2, 9), (8, 6)]:
        cost = -rng.dirichlet(np.ones(n * n), size=m)
        A = 0.999 * np.eye(m) + 0.001 * rng.random((m, m))
        init = rng.integers(0, m, (m, n * n))
        args = (cost, A, init, n, 0.32 / n ** 2, 1.0 / n ** 2, 0.83 * n ** 2, True, True, 4)
        fast = comix_solver.solve_partition(*args)
        previous = comix_solver.solve_partition(*args, grid_solver=reference_solver.previous_grid_labelling)
        np.testing.assert_array_equal(fast, previous)
        assert ((fast.sum(1) > 0).sum(-1) >= 2).any()  # some output draws from several inputs
