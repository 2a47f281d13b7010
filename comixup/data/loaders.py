"""Loaders of a run: a training order that is a function of (seed, epoch) alone (:class:`EpochSampler`),
per-image seeds in worker processes, evaluation shards under torchrun, kept-alive workers."""
from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, get_worker_info

from comixup.data.datasets import DataError


def get_loaders(train_set: Dataset, valid_set: Dataset | None, test_set: Dataset, batch_size: int,
                workers: int, seed: int = 0, distributed: bool = False, pin_memory: bool = False, *,
                drop_last: bool = False) -> tuple[DataLoader, DataLoader | None, DataLoader]:
    """Build (train_loader, valid_loader or None, test_loader).

    The training loader's sampler is an :class:`EpochSampler`: call its ``set_epoch`` before each
    epoch; the order is then a function of (``seed``, epoch) alone, and, when ``distributed``, this
    rank's share of it (rank and world size from the process group), as DistributedSampler
    pads and splits it. Random transforms run with ``workers == 0`` draw from the global torch
    generator, which the caller seeds (and saves in checkpoints); in worker processes each image's
    transforms draw from a seed of (``seed``, epoch, image index), so what a worker produces does
    not depend on which worker it is or on what it produced before: a resumed run gets the
    images an uninterrupted one would. Every image is used, the last batch may be partial,
    unless ``drop_last``: then each epoch's last partial training batch is left out (as the
    published ImageNet loader does; its images come in other epochs' full batches).
    Validation and test loaders keep the data set order; when ``distributed`` each rank gets every
    world_size-th image from its rank on (the ranks together see each image exactly once, so
    their sums add up to the whole set's; the training order instead is padded so that every
    rank takes the same number of steps). ``batch_size`` is per process. Worker processes
    (``workers > 0``) are started once and kept alive across epochs; :func:`shutdown_workers`
    ends them.
    """
    train_loader = get_train_loader(train_set, batch_size, workers, seed, distributed, pin_memory,
                                    drop_last=drop_last)
    valid_loader = (get_test_loader(valid_set, batch_size, workers, distributed, pin_memory)
                    if valid_set is not None else None)
    test_loader = get_test_loader(test_set, batch_size, workers, distributed, pin_memory)
    return train_loader, valid_loader, test_loader


def get_train_loader(train_set: Dataset, batch_size: int, workers: int, seed: int = 0, distributed: bool = False,
                     pin_memory: bool = False, *, drop_last: bool = False) -> DataLoader:
    """The training loader of :func:`get_loaders` alone (a phase of a multi-phase run builds one
    per phase): an :class:`EpochSampler` over ``train_set``, ``batch_size`` images per process;
    ``drop_last``: each epoch's last partial batch left out (len(loader) counts full batches
    only), DataError when the images of a process fill no batch at all."""
    common = _loader_options(batch_size, workers, pin_memory)
    generator = torch.Generator()
    generator.manual_seed(seed)
    rank, world_size = 0, 1
    if distributed:
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    sampler = EpochSampler(len(train_set), seed=seed, rank=rank, world_size=world_size)
    if drop_last and len(sampler) < batch_size:
        share = f" ({len(sampler)} per process of {world_size})" if world_size > 1 else ""
        raise DataError(f"the {len(train_set)} training images{share} fill no batch of {batch_size} images per "
                        f"process, and the last partial batch of each epoch is left out; use a smaller batch "
                        f"or more images")
    common["drop_last"] = drop_last
    return DataLoader(_SeededItems(train_set), sampler=sampler, generator=generator, **common)


def get_test_loader(test_set: Dataset, batch_size: int, workers: int, distributed: bool = False,
                    pin_memory: bool = False) -> DataLoader:
    """An evaluation loader as :func:`get_loaders` builds them: ``test_set`` in order (under
    ``distributed``, this rank's shard of it)."""
    if distributed:
        test_set = _eval_shard(test_set, torch.distributed.get_rank(), torch.distributed.get_world_size())
    return DataLoader(test_set, shuffle=False, **_loader_options(batch_size, workers, pin_memory))


def _loader_options(batch_size: int, workers: int, pin_memory: bool) -> dict:
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1; got {batch_size}")
    if workers < 0:
        raise DataError(f"workers must be 0 or more; got {workers}")
    return dict(batch_size=batch_size, num_workers=workers, pin_memory=pin_memory,
                persistent_workers=workers > 0, worker_init_fn=_seed_worker, drop_last=False)


def shutdown_workers(*loaders: Any) -> None:
    """End the kept-alive worker processes of these loaders now (joined; a worker that does not
    stop in time is terminated) instead of whenever the loader is garbage collected. A loader
    used again afterwards starts new workers. Anything else (None, a DeviceLoader) is skipped."""
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None) if isinstance(loader, DataLoader) else None
        if iterator is None:
            continue
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        loader._iterator = None


def epoch_order(size: int, seed: int, epoch: int, rank: int, world_size: int) -> Tensor:
    """This rank's training order of an epoch: a permutation of range(size) drawn from (seed, epoch)
    alone, the same on every rank, padded by repeating its head to a multiple of world_size (as
    DistributedSampler does, so every rank takes as many steps), then every world_size-th item
    from ``rank`` on."""
    order = torch.randperm(size, generator=epoch_generator(seed, epoch))
    padded = -(-size // world_size) * world_size
    if padded > size:
        order = torch.cat([order, order.repeat(-(-(padded - size) // size))[:padded - size]])
    return order[rank::world_size]


def _mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 values (wrapping arithmetic): a cheap bijective scramble."""
    values = values + np.uint64(0x9E3779B97F4A7C15)
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


class EpochSampler(Sampler):
    """The training sampler of :func:`get_loaders`: yields (image index, image seed) pairs.

    :meth:`set_epoch` picks the epoch; the order is :func:`epoch_order` of (seed, epoch, rank,
    world_size), the image seed a 63-bit function of (seed, epoch, index), so both depend on
    nothing that happened in earlier epochs (nor on how many processes ran them, for the seeds).
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if size < 1:
            raise DataError("the training set is empty")
        if not 0 <= rank < world_size:
            raise DataError(f"rank must lie in [0, world_size) = [0, {world_size}); got {rank}")
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Use epoch ``epoch``'s order and image seeds from the next iteration on, leaving out its
        first ``skip`` items (already trained on before a mid-epoch checkpoint)."""
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return -(-self.size // self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        base = np.random.SeedSequence([self.seed, self.epoch, 0xA0A]).generate_state(1, dtype=np.uint64)[0]
        order = epoch_order(self.size, self.seed, self.epoch, self.rank, self.world_size).numpy()
        seeds = _mix64(order.astype(np.uint64) ^ base) >> np.uint64(1)
        yield from zip(order.tolist()[self.skip:], seeds.tolist()[self.skip:], strict=False)


class _SeededItems(Dataset):
    """``dataset[index]`` for the (index, seed) keys of an :class:`EpochSampler`. In a loader worker
    the global torch, numpy and random generators are first seeded with the image's seed; in the
    training process (no workers) the key's seed is unused and the transforms draw from the
    process's own (seeded, checkpointed) generators."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> object:
        index, seed = key
        if get_worker_info() is not None:
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
        return self.dataset[index]


def _eval_shard(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    """Every world_size-th item of ``dataset`` from ``rank`` on (the whole set for one process)."""
    if world_size == 1:
        return dataset
    return Subset(dataset, range(rank, len(dataset), world_size))


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a worker from its torch seed, which the loader derives from its generator."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def epoch_generator(*entropy: int) -> torch.Generator:
    """A CPU generator seeded from the given integers (seed, epoch[, rank]) and nothing else."""
    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0]))
    return generator
