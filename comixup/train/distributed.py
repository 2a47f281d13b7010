"""Multi-process training under ``torchrun``: process-group setup and teardown, rank helpers,
metric reductions.

``torchrun`` (``python -m torch.distributed.run``) starts one process per GPU (or per CPU
worker) and tells each its place through the environment: WORLD_SIZE, RANK, LOCAL_RANK and the
rendezvous address (MASTER_ADDR/MASTER_PORT). :func:`session` reads them and, when WORLD_SIZE
> 1, joins the process group with PyTorch's ``env://`` rendezvous (NCCL on CUDA, each process on
``cuda:LOCAL_RANK``; gloo on the CPU), and leaves it again at the end or on an error. Without
torchrun (or with one process) nothing is initialised and the run is the plain single-process
one.

Everything else here is a thin helper over ``torch.distributed`` that also works, as the
identity, in a single process: summing metrics across ranks (:func:`sum_across_ranks`: sums
and counts, never averages of averages), gathering per-rank objects, copying rank 0's module
buffers and the per-rank seeds.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["LaunchError", "DistInfo", "env_world", "env_rank", "session", "init", "shutdown",
           "sum_across_ranks", "max_across_ranks", "gather_objects", "broadcast_buffers", "rank_seed"]


class LaunchError(Exception):
    """The torchrun environment cannot be used (bad variables, a missing GPU); one line for the user."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank (global), local_rank (on its node), world_size, the device it
    trains on, the process-group backend (None when no group was created: a single process) and
    local_world_size (processes on this node, which share its CPU cores)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        """True when several processes train together (a process group exists)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints, logs and writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise LaunchError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None


def env_world() -> tuple[int, int, int]:
    """(world_size, rank, local_rank) as torchrun set them in the environment; (1, 0, 0) without
    torchrun. LaunchError when they are malformed or inconsistent."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise LaunchError(f"inconsistent torchrun environment: WORLD_SIZE={world_size}, RANK={rank}, "
                          f"LOCAL_RANK={local_rank} (need WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE, LOCAL_RANK >= 0)")
    return world_size, rank, local_rank


def env_rank() -> int:
    """This process's rank from the environment (0 without torchrun, or when it is unreadable)."""
    try:
        return env_world()[1]
    except LaunchError:
        return 0


def init(use_cuda: bool) -> DistInfo:
    """Join the process group when torchrun started several processes; return where this one stands.

    Single process: no group; the device is ``cuda`` (the current GPU) when ``use_cuda``, else
    the CPU. Several: ``cuda:LOCAL_RANK`` with NCCL when ``use_cuda``, else the CPU with gloo;
    the rendezvous is torchrun's (``env://``). LaunchError when LOCAL_RANK has no GPU.
    """
    world_size, rank, local_rank = env_world()
    if world_size == 1:
        return DistInfo(device=torch.device("cuda") if use_cuda else torch.device("cpu"))
    if not dist.is_available():
        raise LaunchError("this PyTorch build has no torch.distributed; run a single process")
    if use_cuda:
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise LaunchError(f"LOCAL_RANK {local_rank} has no GPU: {count} visible on this node "
                              f"(use --nproc_per_node {count} or fewer, or --ngpu 0 for the CPU)")
        device = torch.device("cuda", local_rank)
        # Before the group exists, so that NCCL and every later CUDA call use this process's GPU.
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    dist.init_process_group(backend=backend, store=_attempt_store(rank, world_size), world_size=world_size,
                            rank=rank, device_id=device if use_cuda else None)
    local_world_size = min(max(1, _env_int("LOCAL_WORLD_SIZE", 1)), world_size)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device, backend=backend,
                    local_world_size=local_world_size)


def _attempt_store(rank: int, world_size: int) -> dist.Store:
    """torchrun's rendezvous store (MASTER_ADDR:MASTER_PORT, as ``env://`` reads it), its keys
    prefixed by torchrun's restart count: after an elastic restart (``--max-restarts``) the
    processes of the new attempt must not read the addresses that the failed attempt's
    processes left in the store (a rank would connect to a dead peer and the group would hang)."""
    from torch.distributed.rendezvous import _create_c10d_store

    host, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), _env_int("MASTER_PORT", 29500)
    store = _create_c10d_store(host, port, rank, world_size, timeout=dist.default_pg_timeout)
    return dist.PrefixStore(f"comix/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def shutdown() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def session(use_cuda: bool) -> Iterator[DistInfo]:
    """``with session(use_cuda) as info:`` :func:`init` on entry, :func:`shutdown` on exit,
    whether the body returns or raises (a KeyboardInterrupt or main.Interrupted from SIGINT or
    SIGTERM included: the group is destroyed before the exception goes on)."""
    try:
        yield init(use_cuda)
    finally:
        shutdown()


def sum_across_ranks(values: Sequence[float], info: DistInfo) -> list[float]:
    """Element-wise sums of ``values`` over all ranks (float64; the input itself in a single
    process). Every rank must call it with the same number of values."""
    if not info.distributed:
        return [float(v) for v in values]
    # NCCL reduces device tensors only; gloo CPU tensors.
    buffer = torch.tensor([float(v) for v in values], dtype=torch.float64, device=info.device)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.tolist()


def max_across_ranks(values: Sequence[float], info: DistInfo) -> list[float]:
    """The element-wise maximum of ``values`` over all ranks (one MAX all-reduce), the same list on
    every rank; ``values`` itself in a single process. Every rank must call it."""
    if not info.distributed:
        return [float(v) for v in values]
    buffer = torch.tensor([float(v) for v in values], dtype=torch.float64, device=info.device)
    dist.all_reduce(buffer, op=dist.ReduceOp.MAX)
    return buffer.tolist()


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` in a single process."""
    if not info.distributed:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


@torch.no_grad()
def broadcast_buffers(module: nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), which are what rank 0
    saves: each rank updated its own from its own batches since DDP last synchronised them."""
    if not info.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s python/numpy/torch random streams: ``seed`` itself on rank 0
    (a single process draws as before), a distinct seed derived from (seed, rank) elsewhere."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint32)[0])
