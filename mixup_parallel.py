"""The published module ``mixup_parallel``: Co-Mixup partitions solved in parallel.

``MixupProcessParallel(part, batch_size, num_gpu)`` keeps the published call; the partitions
are solved by a pool of threads of the training process (:mod:`comixup.mixing.parallel`).
"""
from comixup.mixing.parallel import MixupProcessParallel, PartitionPool, default_workers

__all__ = ["MixupProcessParallel", "PartitionPool", "default_workers"]
