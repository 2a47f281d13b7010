"""The random draws of the successor mixers (SaliencyMix, FMix, ResizeMix, GuidedMixup), from one place.

Every draw comes from ``rng``, a ``numpy.random.Generator``, or, when ``rng`` is None, from numpy's
global legacy state (``np.random.*``), which ``main.py`` saves in its checkpoints so that a resumed run
draws what the uninterrupted one would have. With ``rng`` None each function calls the legacy function
the official code calls (``np.random.rand``, ``np.random.beta``, ``np.random.randn``, ...), so a seeded
global state gives the official values where the official code draws from numpy too. The permutation
and the mixing weight Beta(alpha, alpha) are :func:`comixup.mixing.baselines.draw_permutation` and
:func:`comixup.mixing.baselines.draw_lambda`.
"""
from __future__ import annotations

import numpy as np

__all__ = ["draw_unit", "draw_uniform", "draw_integer", "draw_normals"]


def draw_unit(rng: np.random.Generator | None = None) -> float:
    """One number uniform in [0, 1) (``np.random.rand()`` with the global state)."""
    return float(rng.random() if rng is not None else np.random.rand())


def draw_uniform(low: float, high: float, rng: np.random.Generator | None = None) -> float:
    """One number uniform in [low, high) (``np.random.uniform(low, high)`` with the global state)."""
    return float(rng.uniform(low, high) if rng is not None else np.random.uniform(low, high))


def draw_integer(low: int, high: int, rng: np.random.Generator | None = None) -> int:
    """One int uniform in [low, high) (``np.random.randint(low, high)`` with the global state)."""
    return int(rng.integers(low, high) if rng is not None else np.random.randint(low, high))


def draw_normals(shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
    """Standard normal float64 numbers of ``shape``, in C order (``np.random.randn(*shape)`` with the
    global state)."""
    return rng.standard_normal(shape) if rng is not None else np.random.randn(*shape)
