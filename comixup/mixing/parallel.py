"""Co-Mixup partitions solved in parallel.

The published code started one CUDA process per partition (about 1 GB of GPU memory each) and
shipped tensors between them. Here the partition solver is compiled code that releases the GIL,
so a pool of threads in the training process solves the partitions concurrently: no extra
process, no GPU memory, no copies. The random draws of each partition are made before dispatch,
so a parallel run gives exactly the result of a sequential one with the same seed.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from torch import Tensor

from comixup.mixing.comix import mixup_process

__all__ = ["PartitionPool", "MixupProcessParallel", "default_workers"]


def default_workers(n_partitions: int) -> int:
    """Threads worth starting for n_partitions: one per partition, at most one per usable core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(n_partitions, cores))


class PartitionPool(ThreadPoolExecutor):
    """A thread pool for CoMixup(executor=...), closed by `close()` or by leaving a `with` block.

    Threads are joined on close, on an exception leaving the `with` block and, as for any
    ThreadPoolExecutor, at interpreter exit; a Ctrl-C while partitions are being solved lets
    the running ones finish (milliseconds) and raises in the caller.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        super().__init__(max_workers=workers, thread_name_prefix="comix-partition")
        self.workers = workers

    def close(self) -> None:
        self.shutdown(wait=True, cancel_futures=True)


class MixupProcessParallel:
    """The published class: ``mpp = MixupProcessParallel(part, batch_size, num_gpu)``, then
    ``mpp(out, target_reweighted, args=args, sc=sc, A_dist=A_dist)`` and ``mpp.close()``.

    num_gpu is accepted for compatibility and unused: the partitions are solved by threads of
    this process, whatever the device of the tensors.
    """

    def __init__(self, part: int = 20, batch_size: int = 100, num_gpu: int = 1, workers: int | None = None) -> None:
        n_partitions = -(-batch_size // part)
        self.pool = PartitionPool(workers or default_workers(n_partitions))

    def __call__(self, out: Tensor, target_reweighted: Tensor, args: Any = None, sc: Tensor | None = None,
                 A_dist: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return mixup_process(out, target_reweighted, args=args, sc=sc, A_dist=A_dist, executor=self.pool)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> MixupProcessParallel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
