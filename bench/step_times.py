"""Benchmark: one training step of every mixing method, relative to vanilla, and images/s.

    python bench/step_times.py                                # CPU, preactresnet18, batch 100
    python bench/step_times.py --device cuda --steps 20 --amp bf16
    python bench/step_times.py --methods vanilla,puzzle --threads 2
    python bench/step_times.py --methods comix --data_dir ./data/cifar10-images/train

A step is what main.py's train_one_epoch does per batch: zero_grad, the method's forward passes
(for comix and puzzle the clean pass that gives the saliency, then the mixing, then the mixed
pass), backward, SGD step. Each method starts from the same freshly initialised preactresnet18
(CIFAR-100 head) and the same batches of smooth random 32x32 images (low-frequency colour noise
plus pixel noise, normalised like CIFAR-100), with main.py's default flags for that method (its
published mixup_alpha / clean_lam; comix and puzzle solve on a thread pool as with --parallel
True). Prints, per method, the median over --steps timed steps (after --warmup untimed ones,
which also compile the numba solvers) of the step time, its ratio to vanilla's, and the median
time spent mixing, and the training throughput in images per second. Methods take turns step
by step, so a change of the machine's load during the run affects them alike. ``--data_dir``
(an ImageFolder of 32x32 images, e.g. CIFAR-10's: see docs/data.md) uses real images instead,
whose saliency makes the mask solvers work harder; ``--amp`` runs the forward passes under
autocast as main.py's ``--amp``.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comixup import models
from comixup.data.datasets import dataset_info
from comixup.mixing.parallel import PartitionPool
from comixup.train import methods

import main as training

DATASET = "cifar100"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--arch", default="preactresnet18", choices=models.model_names())
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method before the timed ones")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave torch's default)")
    parser.add_argument("--methods", default=",".join(methods.METHODS),
                        help="comma-separated methods to time (vanilla is always timed, as the reference)")
    parser.add_argument("--parallel", default="True", help="--parallel for comix/puzzle (True/False)")
    parser.add_argument("--amp", default="off", choices=methods.AMP_MODES, help="as main.py's --amp")
    parser.add_argument("--data_dir", default="", help="ImageFolder of 32x32 images (empty: generated images)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def smooth_images(batch: int, generator: torch.Generator) -> torch.Tensor:
    """Images in [0, 1] with image-like structure (colour blobs and edges), CIFAR-100-normalised."""
    coarse = torch.rand(batch, 3, 4, 4, generator=generator)
    middle = torch.rand(batch, 3, 8, 8, generator=generator)
    pixels = (0.6 * F.interpolate(coarse, size=32, mode="bilinear", align_corners=False)
              + 0.3 * F.interpolate(middle, size=32, mode="nearest")
              + 0.1 * torch.rand(batch, 3, 32, 32, generator=generator)).clamp(0, 1)
    info = dataset_info(DATASET)
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    return (pixels - mean) / std


def folder_images(data_dir: str, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` images of an ImageFolder, normalised like CIFAR-100, repeated if it has fewer."""
    import torchvision.datasets as tv_datasets
    import torchvision.transforms as T

    info = dataset_info(DATASET)
    folder = tv_datasets.ImageFolder(data_dir, T.Compose([T.ToTensor(), T.Normalize(info.mean, info.std)]))
    order = torch.randperm(len(folder), generator=generator).tolist()
    order = (order * -(-count // len(order)))[:count]
    return torch.stack([folder[i][0] for i in order])


def device_name(device: torch.device) -> str:
    """A readable name of the device the benchmark runs on."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"CPU {cpu}, {len(os.sched_getaffinity(0))} usable cores"


def method_args(name: str, batch_size: int, parallel: str, amp: str) -> argparse.Namespace:
    args = training.get_args_parser().parse_args(["--method", name, "--dataset", DATASET, "--batch_size",
                                                  str(batch_size), "--parallel", parallel, "--amp", amp])
    training.resolve_method(args)
    training.validate_args(args)
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Runner:
    """One method's model, optimiser, Method and thread pool, stepping on given batches."""

    def __init__(self, name: str, initial: torch.nn.Module, device: torch.device, options: argparse.Namespace):
        self.name = name
        self.args = method_args(name, options.batch_size, options.parallel, options.amp)
        self.device = device
        self.model = copy.deepcopy(initial).to(device).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.02, momentum=0.9, nesterov=True,
                                         weight_decay=1e-4)
        workers = methods.pool_workers(self.args)
        self.pool = PartitionPool(workers) if workers else None
        self.method = methods.build_method(self.args, 100, dataset_info(DATASET), executor=self.pool,
                                           precision=methods.Precision.from_flag(options.amp, device))
        self.step_times: list[float] = []
        self.mix_times: list[float] = []

    def step(self, images: torch.Tensor, labels: torch.Tensor, timed: bool) -> None:
        images, labels = images.to(self.device), labels.to(self.device)
        synchronize(self.device)
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        result = self.method(self.model, images, labels)
        scaler = self.method.precision.scaler
        if scaler is not None:  # --amp fp16, as main.train_one_epoch does it
            scaler.scale(result.loss).backward()
            scaler.step(self.optimizer)
            scaler.update()
        else:
            result.loss.backward()
            self.optimizer.step()
        synchronize(self.device)
        if timed:
            self.step_times.append(time.perf_counter() - started)
            self.mix_times.append(result.mix_time)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def main(argv: list[str] | None = None) -> int:
    options = get_args_parser().parse_args(argv)
    chosen = [name.strip() for name in options.methods.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in methods.METHODS]
    if unknown or options.steps < 1 or options.warmup < 0:
        print(f"error: --methods takes {', '.join(methods.METHODS)} (got {', '.join(unknown) or 'ok'}); "
              f"--steps >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    chosen = ["vanilla"] + [name for name in chosen if name != "vanilla"]
    if options.threads:
        torch.set_num_threads(options.threads)
    device = torch.device(options.device)
    try:
        methods.Precision.from_flag(options.amp, device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(options.seed)
    initial = models.build_model(options.arch, 100, stride=dataset_info(DATASET).stride)
    generator = torch.Generator().manual_seed(options.seed)
    count = options.warmup + options.steps
    if options.data_dir:
        images = folder_images(options.data_dir, count * options.batch_size, generator).split(options.batch_size)
    else:
        images = [smooth_images(options.batch_size, generator) for _ in range(count)]
    batches = [(x, torch.randint(0, 100, (options.batch_size,), generator=generator)) for x in images]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"device: {device_name(device)}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{options.arch}, batch {options.batch_size}, 32x32, --amp {options.amp}, "
          f"{'images from ' + options.data_dir if options.data_dir else 'generated images'}, "
          f"{options.warmup} warm-up + {options.steps} timed steps per method (median)"
          + (f", load average before {load[0]:.2f}" if load else ""), flush=True)
    # Round robin (every method's step k, then every method's step k+1, ...), so that a change in
    # the machine's load during the run touches all methods alike.
    np.random.seed(options.seed)
    runners = [_Runner(name, initial, device, options) for name in chosen]
    try:
        for index, (images, labels) in enumerate(batches):
            for runner in runners:
                runner.step(images, labels, timed=index >= options.warmup)
    finally:
        for runner in runners:
            runner.close()
    print(f"{'method':<9} {'step s':>8} {'x vanilla':>10} {'mixing s':>9} {'images/s':>9}  settings")
    reference = statistics.median(runners[0].step_times)
    for runner in runners:
        median = statistics.median(runner.step_times)
        args = runner.args
        settings = f"mixup_alpha {args.mixup_alpha}" if args.mixup_alpha is not None else ""
        if runner.name in ("comix", "puzzle"):
            settings += f", clean_lam {args.clean_lam}, {methods.pool_workers(args) or 'no'} solver threads"
        print(f"{runner.name:<9} {median:8.3f} {median / reference:9.2f}x {statistics.median(runner.mix_times):9.3f}"
              f" {options.batch_size / median:9.1f}  {settings}")
    if load:
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
