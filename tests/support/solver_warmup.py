"""Compile numba's solvers once per test session, in the background, while the workers start.

A fresh checkout has no numba cache: the Co-Mixup solver takes most of a minute of CPU to compile,
Puzzle Mix's and the frozen reference solver (bench/reference_solver.py) tens of seconds more, and
two pytest-xdist workers that reach the same solver before it is cached both compile it. So the
controller starts the warm-up (:func:`start`): two processes, ``python -m tests.support.solver_warmup
co-mixup`` and ``... others``, that call each solver as the suite does and so write the shared
on-disk cache, and hold an exclusive lock on a file while they run. A worker about to compile a
signature the cache does not hold yet waits until the warm-up has cached it (or has ended), and then
loads it (:func:`wait_before_compiling`): tests that need no compiled code, or code already cached,
never wait. The workers run at a lower priority (``nice``) than the warm-up, so that it is done as
soon as it can be; two processes keep both cores busy when both workers wait. With a warm cache the
warm-up ends in seconds.

If the warm-up fails or misses a signature, a worker compiles what it needs itself, as without it:
only time is lost, never a result.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

try:
    import fcntl
except ImportError:  # not POSIX: no warm-up, each worker compiles for itself
    fcntl = None


class Warmup:
    """The controller's handle on the warm-up: two processes (Co-Mixup's solver, the longest to
    compile, and the others), the lock file the workers wait on, a log."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="solver-warmup-"))
        self.lock_path = self.folder / "lock"
        self.log_path = self.folder / "log"
        descriptor = os.open(self.lock_path, os.O_CREAT | os.O_RDWR)
        try:
            # Taken here and handed to the children: the lock is held from before any worker exists
            # until both have exited, however they exit.
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            with open(self.log_path, "w") as log:
                self.processes = [
                    subprocess.Popen([sys.executable, "-m", "tests.support.solver_warmup", part], cwd=ROOT,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     pass_fds=(descriptor,))
                    for part in PARTS]
        finally:
            os.close(descriptor)

    def failure(self) -> str | None:
        """What went wrong, if a warm-up process has ended and failed (the log's end)."""
        codes = [process.poll() for process in self.processes]
        if all(code in (None, 0) for code in codes):
            return None
        return f"the solver warm-up failed (exit codes {codes}): {self.log_path.read_text()[-2000:]}"

    def stop(self) -> None:
        """End the warm-up (killed if the session ended first: numba writes each cache entry whole)."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for path in (self.lock_path, self.log_path):
            path.unlink(missing_ok=True)
        self.folder.rmdir()


def start() -> Warmup | None:
    """In the controller of a pytest-xdist session: start compiling the solvers in the background."""
    return Warmup() if fcntl is not None else None


_warmup_over = threading.Event()


def wait_before_compiling(lock_path: str) -> None:
    """In a worker: while the warm-up runs, make numba's compile (or cache load) of a signature the
    cache does not hold yet wait until the warm-up has put it there, or has ended. Calls the cache
    holds go straight on; after the warm-up, everything does (forked children too)."""
    from numba.core.dispatcher import Dispatcher

    compile_for_args = getattr(Dispatcher, "_compile_for_args", None)
    if fcntl is None or compile_for_args is None:  # numba's internals changed: each compiles for itself
        return

    def wait_then_compile(self, *args, **kwargs):
        if not _warmup_over.is_set():
            _wait_for_cache(self, args, lock_path)
        return compile_for_args(self, *args, **kwargs)

    Dispatcher._compile_for_args = wait_then_compile
    os.nice(5)  # the warm-up first: everything after it runs faster


def _wait_for_cache(dispatcher, args: tuple, lock_path: str) -> None:
    from comixup.mixing.compile_notice import will_compile

    while will_compile(dispatcher, args):
        if _ended(lock_path):
            _warmup_over.set()
            return
        time.sleep(0.2)


def _ended(lock_path: str) -> bool:
    """Whether the warm-up has ended: nobody holds its lock (or the session is ending)."""
    try:
        descriptor = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)


def compile_co_mixup() -> None:
    """Co-Mixup's solver, through comix_solver.solve, which gives the compiled solver the same
    argument types whatever the caller passes; numpy only (no torch to import: with a warm cache this
    process ends in about a second)."""
    import numpy as np

    from comixup.mixing import comix_solver

    rng = np.random.default_rng(0)
    n, m = 4, 4
    cost = -rng.dirichlet(np.ones(n * n), size=m)
    init = rng.integers(0, m, (m, n * n))
    comix_solver.solve(cost, np.eye(m), init, n, 0.32 / n ** 2, 1.0 / n ** 2, 0.83 * n ** 2, True, True, 4)


def compile_the_others() -> None:
    """Puzzle Mix's solvers (seconds), then the reference solver of bench/ as the tests call it."""
    import numpy as np
    import torch

    from bench import reference_solver
    from comixup.mixing.puzzlemix import PuzzleMix

    images, labels, saliency = torch.rand(4, 3, 32, 32), torch.arange(4), torch.rand(4, 32, 32)
    PuzzleMix(num_classes=4, rng=np.random.default_rng(0))(images, labels, saliency)

    rng = np.random.default_rng(0)
    n, m = 4, 6
    unary = rng.normal(0, 0.1, (m, n * n))
    potts = np.ones((m, m)) - np.eye(m)
    reference_solver.solve_grid_labelling(unary, potts, 0.1, n)
    cost = -rng.dirichlet(np.ones(n * n), size=m)
    A = 0.999 * np.eye(m) + 0.001 * rng.random((m, m))
    init = rng.integers(0, m, (m, n * n))
    reference_solver.solve_partition(cost, A, init, n, 0.32 / n ** 2, 1.0 / n ** 2, 0.83 * n ** 2, True, True, 4)


# Two processes, so that the warm-up keeps both cores busy while both workers wait for it.
PARTS = {"co-mixup": compile_co_mixup, "others": compile_the_others}

if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the workers run tests meanwhile
    PARTS[sys.argv[1]]()
