"""Benchmark: time of one partition's solve on one CPU thread, before and after the GPU-speed work.

    python bench/solver_speed.py --data_dir ./data/cifar10-images/train --train_epochs 4
    python bench/solver_speed.py --data_dir ./data/cifar10-images/train --resume MODEL
    python bench/solver_speed.py                        # generated saliency instead of real images

Builds the partitions of a few batches exactly as Co-Mixup does (block costs with the Dirichlet
prior, compatibility, random initial labelling; published defaults: 4x4 blocks, partitions of
20, 4 iterations) and solves each with the current solver (comix_solver.solve_partition) and
with the solver as it was before (bench/reference_solver.py, frozen at commit 92257cd: its
partition loop and its grid labelling), taking turns partition by partition so that both see
the same load. Prints the median time per partition of each, on the wall clock and as CPU time
of the solving thread (steadier on a shared machine), their ratio, and checks that both return
the same masks. ``--data_dir`` is an ImageFolder of 32x32 images (docs/data.md shows how to
write one from the CIFAR-10 archive).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import mixing, reference_solver  # batches and saliency model; the frozen solver
from comixup.mixing import comix, comix_solver


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="", help="ImageFolder of 32x32 images; empty: generated saliency")
    parser.add_argument("--resume", default="", help="checkpoint whose model gives the saliency")
    parser.add_argument("--train_epochs", type=int, default=0, help="first train the saliency model this many epochs")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="timings of each partition by each solver")
    parser.add_argument("--m_block_num", type=int, default=4)
    parser.add_argument("--m_part", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def saliency_batches(args: argparse.Namespace) -> tuple[list[torch.Tensor], str]:
    torch.manual_seed(args.seed)
    if not args.data_dir:
        generator = torch.Generator().manual_seed(args.seed)
        return [mixing.blob_saliency(100, generator) for _ in range(args.batches)], "generated blob saliency"
    batches = mixing.real_batches(args.data_dir, 100, args.batches, args.seed)
    model = mixing.build_model(10, args.resume)
    if args.train_epochs:
        mixing.train_briefly(model, args.data_dir, args.train_epochs, args.seed)
    source = "the checkpoint" if args.resume else f"a preactresnet18 trained {args.train_epochs} epochs"
    return ([comix.saliency_and_clean_loss(model, x, y, 1.0, 10)[0] for x, y in batches],
            f"input-gradient saliency of {source} on {args.data_dir}")


def partition_jobs(saliencies: list[torch.Tensor], args: argparse.Namespace) -> list[tuple]:
    """The arguments of solve_partition for every partition, made as CoMixup.submit makes them
    (pooled saliency, then per partition the random draws, compatibility and scaled weights)."""
    mixer = comix.CoMixup(m_block_num=args.m_block_num, m_part=args.m_part)
    rng = np.random.default_rng(args.seed)
    settings = mixer._solver_settings()
    cfg = mixer.config
    n = args.m_block_num
    jobs = []
    for saliency in saliencies:
        pooled = mixer.pool(saliency, n_block=n).cpu()
        for start in range(0, pooled.shape[0], cfg.m_part):
            stop = min(start + cfg.m_part, pooled.shape[0])
            m = stop - start
            draws = comix._draw_partition(m, m, n * n, cfg.mixup_alpha, None, rng)
            A = comix.compatibility(pooled[start:stop, n * n + start:n * n + stop], cfg.m_omega)
            job = comix._partition_job(pooled[start:stop, :n * n].reshape(m, n, n), A, draws, settings)
            jobs.append(job[:-1])  # without the backend's name
    return jobs


def time_once(solve, job) -> tuple[float, float, np.ndarray]:
    wall, cpu = time.perf_counter(), time.thread_time()
    mask = solve(job)
    return time.perf_counter() - wall, time.thread_time() - cpu, mask


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    torch.set_num_threads(1)
    saliencies, source = saliency_batches(args)
    jobs = partition_jobs(saliencies, args)
    solvers = {
        "previous": lambda job: reference_solver.solve_partition(*job),
        "current": lambda job: comix_solver.solve_partition(*job),
    }
    for solve in solvers.values():
        solve(jobs[0])  # compile (or load from numba's cache)
    times = {name: ([], []) for name in solvers}
    same = 0
    for job in jobs:
        for _ in range(args.repeats):
            masks = []
            for name, solve in solvers.items():
                wall, cpu, mask = time_once(solve, job)
                times[name][0].append(wall)
                times[name][1].append(cpu)
                masks.append(mask)
        same += bool(np.array_equal(masks[0], masks[1]))
    print(f"{len(jobs)} partitions of {args.m_part} ({args.m_block_num}x{args.m_block_num} blocks, "
          f"{comix.CoMixupConfig().m_niter} iterations), {args.repeats} timings each; {source}; one thread")
    for name, (wall, cpu) in times.items():
        print(f"{name:>9}: {1e3 * statistics.median(wall):6.3f} ms per partition (wall, median), "
              f"{1e3 * statistics.median(cpu):6.3f} ms (thread CPU time)")
    ratio_wall = statistics.median(times["previous"][0]) / statistics.median(times["current"][0])
    ratio_cpu = statistics.median(times["previous"][1]) / statistics.median(times["current"][1])
    print(f"speed-up: {ratio_wall:.2f}x (wall), {ratio_cpu:.2f}x (CPU time); identical masks in {same} of "
          f"{len(jobs)} partitions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
