"""GPU check: where a Co-Mixup step's time goes, throughput against vanilla, a short accuracy run.

    python bench/gpu_check.py --data_dir DIR --out results.json          # on a GPU, < 8 minutes
    python bench/gpu_check.py --device cpu --quick --data_dir DIR        # seconds; the test suite runs it

DIR holds CIFAR-format images as class folders: DIR/train/<class>/*.png and DIR/test/<class>/*.png
(for instance 5,000 + 1,000 CIFAR-10 images, written from the CIFAR-10 archive as docs/data.md
shows; the default DIR is that folder). Everything runs on images held on the device
(uint8, cropped, flipped and normalised there), preactresnet18 at full width, batch 100. Prints
and writes to --out (JSON, written whole or not at all):

(a) breakdown of one Co-Mixup step, the phases run one after another and timed with CUDA events
    (on a CPU with the clock): clean pass, saliency pooling, device-to-host copy, solve,
    host-to-device copy, mixing, mixed pass, optimiser step;
(b) step time and images/s of vanilla, Co-Mixup with the fast solver and Co-Mixup with the
    bkgco backend (the published algorithm, one library call per graph cut; skipped when bkgco
    is not importable), in float32 and in bf16 autocast with channels_last; Co-Mixup steps use
    CoMixup.start/finish with the partitions on a thread pool, as training does;
(c) vanilla, input mixup and Co-Mixup trained the same number of epochs (as many as fit in
    --accuracy_seconds), test accuracy on the test images.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comixup import models
from comixup.data.device_loader import crop_flip_normalise, draw_crops_and_flips
from comixup.mixing import baselines, comix, comix_solver
from comixup.mixing.parallel import PartitionPool, default_workers

MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
BATCH = 100
QUICK_BATCH = 40  # --quick: two partitions of 20
PADDING = 4


class UsageError(Exception):
    """Bad input: reported as one `error:` line, exit 2."""


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--data_dir", default="data/cifar10-images",
                        help="folder with train/ and test/ class folders of 32x32 images")
    parser.add_argument("--out", default="gpu_check.json", help="results file (JSON)")
    parser.add_argument("--quick", action="store_true",
                        help="batch 40, one step each, a narrow model, one epoch on 80 images: checks that it runs")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration in (b)")
    parser.add_argument("--accuracy_seconds", type=float, default=200.0, help="time budget of (c)")
    parser.add_argument("--max_epochs", type=int, default=60)
    parser.add_argument("--workers", type=int, default=0, help="solver threads (0: one per partition, up to the cores)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


# --------------------------------------------------------------------------- data

def load_split(folder: Path, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, H, W, 3) and labels of a class-folder split, classes in sorted order."""
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise UsageError(f"{folder} has no class folders; expected {folder}/<class>/*.png (CIFAR-format images)")
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            try:
                with Image.open(path) as image:
                    images.append(np.asarray(image.convert("RGB")))
            except OSError as error:
                raise UsageError(f"cannot read image {path}: {error}") from None
            labels.append(label)
    if len({image.shape for image in images}) != 1:
        raise UsageError(f"images under {folder} differ in size; CIFAR-format images are all 32x32")
    order = np.random.default_rng(0).permutation(len(images))[:limit]
    return torch.from_numpy(np.stack(images)[order]), torch.tensor(labels)[order]


def batches(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, train: bool, batch: int):
    """Shuffled (train: whole batches only), augmented, normalised batches on the images' device."""
    count = images.shape[0]
    order = torch.randperm(count, generator=generator) if train else torch.arange(count)
    for start in range(0, count - (batch - 1 if train else 0), batch):
        idx = order[start:start + batch].to(images.device)
        chosen = images[idx]
        if train:
            top, left, flip = draw_crops_and_flips(len(idx), PADDING, generator)
        else:
            top = left = torch.full((len(idx),), PADDING)
            flip = torch.zeros(len(idx), dtype=torch.bool)
        yield crop_flip_normalise(chosen, top, left, flip, PADDING, MEAN, STD), labels[idx]


# --------------------------------------------------------------------------- steps

class Clock:
    """Marks on the device's timeline: CUDA events on a GPU, the wall clock on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object]] = []

    def mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append((name, event))
        else:
            self.marks.append((name, time.perf_counter()))

    def phases_ms(self) -> dict[str, float]:
        """Milliseconds from each mark to the next, under the later mark's name."""
        if self.cuda:
            torch.cuda.synchronize()
        out = {}
        for (_, before), (name, after) in itertools.pairwise(self.marks):
            out[name] = before.elapsed_time(after) if self.cuda else 1e3 * (after - before)
        return out


def soft_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits.float(), 1)).sum(1).mean()


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


class Trainer:
    """A preactresnet18, its optimiser, and one training step per method."""

    def __init__(self, device: torch.device, width: int, bf16: bool, workers: int, solver: str = "fast") -> None:
        self.device = device
        self.bf16 = bf16
        self.model = models.build_model("preactresnet18", 10, initial_channels=width).to(device)
        if bf16:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                         weight_decay=5e-4)
        self.pool = PartitionPool(workers)
        self.mixer = comix.CoMixup(num_classes=10, executor=self.pool, m_solver=solver)

    def close(self) -> None:
        self.pool.close()

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.bf16 else x

    def step(self, method: str, x: torch.Tensor, y: torch.Tensor) -> None:
        x = self._input(x)
        self.optimizer.zero_grad(set_to_none=True)
        targets = F.one_hot(y, 10).float()
        if method == "vanilla":
            mixed_x, mixed_y = x, targets
        elif method == "mixup":
            mixed_x, mixed_y = baselines.input_mixup(x, targets, 1.0)
        else:
            with autocast(self.device, self.bf16):
                saliency, _, _ = comix.saliency_and_clean_loss(self.model, x, y, 1.0, 10)
            mixed_x, mixed_y = self.mixer.finish(self.mixer.start(saliency), x, targets)
            mixed_x = self._input(mixed_x)
        with autocast(self.device, self.bf16):
            logits = self.model(mixed_x)
        soft_loss(logits, mixed_y).backward()
        self.optimizer.step()

    def comix_breakdown(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One Co-Mixup step with its phases run one after another, timed on the device."""
        x = self._input(x)
        clock = Clock(self.device)
        clock.mark("start")
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.bf16):
            saliency, _, _ = comix.saliency_and_clean_loss(self.model, x, y, 1.0, 10)
        clock.mark("clean pass")
        pooled = self.mixer.pool(saliency)
        clock.mark("saliency pooling")
        host = pooled.cpu()
        clock.mark("copy to host")
        masks = self.mixer.submit(host).masks()
        clock.mark("solve")
        masks = comix.masks_to_device(masks, self.device)
        clock.mark("copy to device")
        mixed_x, mixed_y = self.mixer.mix(masks, x, F.one_hot(y, 10).float())
        mixed_x = self._input(mixed_x)
        clock.mark("mixing")
        with autocast(self.device, self.bf16):
            logits = self.model(mixed_x)
        soft_loss(logits, mixed_y).backward()
        clock.mark("mixed pass")
        self.optimizer.step()
        clock.mark("optimiser")
        return clock.phases_ms()

    @torch.no_grad()
    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        self.model.eval()
        correct = 0
        for x, y in batches(images, labels, torch.Generator(), False, BATCH):
            with autocast(self.device, self.bf16):
                correct += int((self.model(self._input(x)).argmax(1) == y).sum())
        self.model.train()
        return 100.0 * correct / images.shape[0]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(trainer: Trainer, method: str, data: list, steps: int, warmup: int) -> float:
    """Median seconds per step over `steps` steps (after `warmup`), synchronised per step."""
    times = []
    for k in range(warmup + steps):
        x, y = data[k % len(data)]
        synchronize(trainer.device)
        started = time.perf_counter()
        trainer.step(method, x, y)
        synchronize(trainer.device)
        if k >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


# --------------------------------------------------------------------------- the three parts

def breakdown(device, width, workers, data, steps) -> dict:
    trainer = Trainer(device, width, bf16=False, workers=workers)
    try:
        for x, y in data[:1 if steps == 1 else 2]:
            trainer.step("comix", x, y)  # warm up (and compile the solver)
        runs = [trainer.comix_breakdown(*data[k % len(data)]) for k in range(steps)]
    finally:
        trainer.close()
    phases = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    phases["total"] = sum(phases.values())
    return phases


def throughput(device, width, workers, data, steps) -> list[dict]:
    batch = data[0][0].shape[0]
    solvers = ["fast"] + (["bkgco"] if comix_solver.solver_available("bkgco") else [])
    rows = []
    for bf16 in (False, True):
        for method, solver in [("vanilla", "fast")] + [("comix", s) for s in solvers]:
            trainer = Trainer(device, width, bf16=bf16, workers=workers, solver=solver)
            try:
                seconds = time_steps(trainer, method, data, steps if solver == "fast" else max(1, steps // 4),
                                     min(steps, 3))
            finally:
                trainer.close()
            rows.append({"precision": "bf16 autocast, channels_last" if bf16 else "float32",
                         "method": method if method == "vanilla" else f"comix ({solver})",
                         "step_ms": 1e3 * seconds, "images_per_s": batch / seconds})
        vanilla = rows[-1 - len(solvers)]["step_ms"]
        for row in rows[-1 - len(solvers):]:
            row["vs_vanilla"] = row["step_ms"] / vanilla
    return rows


def accuracy_runs(device, width, workers, train, test, budget_s, max_epochs, seed, batch) -> dict:
    trainers = {}
    epoch_s = {}
    methods = ("vanilla", "mixup", "comix")
    generators = {}
    try:
        for method in methods:
            torch.manual_seed(seed)
            np.random.seed(seed)
            trainers[method] = Trainer(device, width, bf16=False, workers=workers)
            generators[method] = torch.Generator().manual_seed(seed)
        epochs = max_epochs
        for epoch in range(max_epochs):
            for method in methods:
                trainer = trainers[method]
                lr = 0.1 * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
                for group in trainer.optimizer.param_groups:
                    group["lr"] = lr
                synchronize(device)
                started = time.perf_counter()
                for x, y in batches(*train, generators[method], True, batch):
                    trainer.step(method, x, y)
                synchronize(device)
                epoch_s.setdefault(method, time.perf_counter() - started)
            if epoch == 0:  # all runs get the same number of epochs: as many as fit in the budget
                epochs = int(min(max_epochs, max(1, budget_s // sum(epoch_s.values()))))
            if epoch + 1 >= epochs:
                break
        return {"epochs": epochs, "train_images": int(train[0].shape[0]), "test_images": int(test[0].shape[0]),
                "first_epoch_s": epoch_s,
                "test_accuracy": {method: trainers[method].accuracy(*test) for method in methods}}
    finally:
        for trainer in trainers.values():
            trainer.close()


def write_json(path: Path, results: dict) -> None:
    """Whole or not at all: a temporary file beside it, renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(results, handle, indent=2)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run(args: argparse.Namespace) -> dict:
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device must be cpu, cuda or cuda:N, got {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but no CUDA device is visible here; use --device cpu to try the script")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    if args.steps < 1 or args.max_epochs < 1 or not args.accuracy_seconds > 0 or args.workers < 0:
        raise UsageError("--steps and --max_epochs must be >= 1, --accuracy_seconds > 0, --workers >= 0")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    data_dir = Path(args.data_dir)
    quick = args.quick
    batch = QUICK_BATCH if quick else BATCH
    train = load_split(data_dir / "train", 2 * QUICK_BATCH if quick else None)
    test = load_split(data_dir / "test", QUICK_BATCH if quick else None)
    if train[0].shape[0] < batch:
        raise UsageError(f"{data_dir / 'train'} holds {train[0].shape[0]} images; the check needs at least {batch}")
    if train[0].shape[1:3] != (32, 32):
        raise UsageError(f"images must be 32x32 (CIFAR format), got {tuple(train[0].shape[1:3])}")
    train = (train[0].to(device), train[1].to(device))
    test = (test[0].to(device), test[1].to(device))
    width = 4 if quick else 64
    workers = args.workers or default_workers(-(-batch // comix.CoMixupConfig().m_part))
    steps = 1 if quick else args.steps
    data = list(batches(*train, torch.Generator().manual_seed(args.seed), True, batch))
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    results = {"device": name, "torch": torch.__version__, "python": platform.python_version(),
               "cpu_threads_for_solver": workers, "batch": batch, "model": f"preactresnet18 width {width}",
               "quick": quick}
    print(f"device: {name}; torch {torch.__version__}; batch {batch}; preactresnet18 width {width}; "
          f"solver threads {workers}", flush=True)
    started = time.perf_counter()
    results["breakdown_ms"] = breakdown(device, width, workers, data, steps)
    print("(a) Co-Mixup step, phases one after another (median ms):", flush=True)
    for phase, ms in results["breakdown_ms"].items():
        print(f"    {phase:<18} {ms:8.2f}")
    results["throughput"] = throughput(device, width, workers, data, steps)
    print(f"(b) step time at batch {batch} (median):", flush=True)
    for row in results["throughput"]:
        print(f"    {row['precision']:<30} {row['method']:<15} {row['step_ms']:8.2f} ms  {row['images_per_s']:8.0f} "
              f"images/s  {row['vs_vanilla']:.2f}x vanilla")
    if not comix_solver.solver_available("bkgco"):
        print("    (bkgco is not importable here: its rows are skipped)")
    budget = 1.0 if quick else args.accuracy_seconds
    results["accuracy"] = accuracy_runs(device, width, workers, train, test, budget, 1 if quick else args.max_epochs,
                                        args.seed, batch)
    acc = results["accuracy"]
    print(f"(c) {acc['epochs']} epochs each on {acc['train_images']} images, test accuracy on "
          f"{acc['test_images']}: " + ", ".join(f"{m} {a:.1f}%" for m, a in acc["test_accuracy"].items()), flush=True)
    results["seconds"] = time.perf_counter() - started
    return results


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        results = run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_json(Path(args.out), results)
    print(f"results written to {args.out} ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
