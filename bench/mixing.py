"""Benchmark: Co-Mixup mixing time per batch, its objective, and the training-step cost.

    python bench/mixing.py --data_dir ./data/cifar10-images/train --train_epochs 4
    python bench/mixing.py                      # generated saliency instead of real images

Prints, for each solver backend available here (fast = the compiled solver, bkgco / gco = the
GCO alpha-beta swap from Python, the published design), the time of `mixup_process` on a batch
(saliency pooling, compatibility, solving, mixing), sequential and on a thread pool, and the
mean published objective (obj_fn) and thresholded objective per partition. With --step it then
runs bench/step_times.py for Co-Mixup: one training step of preactresnet18 (clean pass + mixing +
mixed pass) against a vanilla step, and their ratio. Saliency is the real input gradient of a model on real images
(`--data_dir`, an ImageFolder of CIFAR-sized images, e.g. the one docs/data.md shows how to write
from the CIFAR-10 archive), from a fresh model, one trained --train_epochs epochs on those images,
or a `--resume`d one.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comixup import models
from comixup.mixing import comix, comix_solver
from comixup.mixing.parallel import PartitionPool, default_workers

CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="", help="ImageFolder of 32x32 images; empty: generated saliency")
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--batches", type=int, default=10, help="distinct batches, each timed --repeats times")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--solvers", default="fast,bkgco,gco", help="comma-separated; unavailable ones are skipped")
    parser.add_argument("--workers", type=int, default=0, help="threads for the parallel run (0: one per core)")
    parser.add_argument("--m_block_num", type=int, default=4)
    parser.add_argument("--m_part", type=int, default=20)
    parser.add_argument("--resume", default="", help="checkpoint whose model gives the saliency")
    parser.add_argument("--train_epochs", type=int, default=0,
                        help="first train the saliency model this many epochs on --data_dir (vanilla SGD), "
                             "so that its saliency looks like a trained network's")
    parser.add_argument("--step", action="store_true",
                        help="then time a Co-Mixup training step against a vanilla one (bench/step_times.py)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def real_batches(data_dir: str, batch_size: int, count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    import torchvision
    from torchvision import transforms

    dataset = torchvision.datasets.ImageFolder(
        data_dir,
        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)]))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    batches = []
    for b in range(count):
        idx = order[b * batch_size:(b + 1) * batch_size].tolist()
        if len(idx) < batch_size:
            break
        items = [dataset[i] for i in idx]
        batches.append((torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])))
    return batches


def generated_batches(batch_size: int, count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Images whose gradient saliency is replaced below by smooth random blobs."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch_size, 3, 32, 32, generator=generator),
             torch.randint(0, 10, (batch_size,), generator=generator)) for _ in range(count)]


def blob_saliency(batch: int, generator: torch.Generator) -> torch.Tensor:
    centres = torch.rand(batch, 2, generator=generator) * 32
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    dist2 = (ys - centres[:, 0, None, None]) ** 2 + (xs - centres[:, 1, None, None]) ** 2
    widths = 20 + 60 * torch.rand(batch, 1, 1, generator=generator)
    return torch.exp(-dist2 / widths) + 0.05 * torch.rand(batch, 32, 32, generator=generator)


def build_model(num_classes: int, resume: str) -> torch.nn.Module:
    model = models.build_model("preactresnet18", num_classes)
    if resume:
        state = torch.load(resume, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    return model


def train_briefly(model: torch.nn.Module, data_dir: str, epochs: int, seed: int) -> None:
    import torchvision
    from torchvision import transforms

    augment = transforms.Compose([transforms.RandomCrop(32, padding=2), transforms.RandomHorizontalFlip(),
                                  transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    loader = torch.utils.data.DataLoader(torchvision.datasets.ImageFolder(data_dir, transform=augment), batch_size=100,
                                         shuffle=True, generator=torch.Generator().manual_seed(seed))
    # cross-entropy wants a smaller step than the published BCE-on-softmax recipe's 0.2
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-4)
    model.train()
    for epoch in range(epochs):
        correct = 0
        for x, y in loader:
            optimizer.zero_grad()
            logits = model(x)
            F.cross_entropy(logits, y).backward()
            optimizer.step()
            correct += (logits.argmax(1) == y).sum().item()
        print(f"saliency model, epoch {epoch + 1}/{epochs}: train accuracy {100 * correct / len(loader.dataset):.1f}%",
              flush=True)


def partition_objectives(saliency: torch.Tensor, masks: list[torch.Tensor],
                         args: argparse.Namespace) -> tuple[float, float]:
    cfg = comix.CoMixupConfig()
    n = masks[0].shape[1]
    costs = comix.block_cost(saliency, n)
    objs, thres = [], []
    start = 0
    for mask in masks:
        m = mask.shape[-1]
        cost = costs[start:start + m].double()
        objs.append(float(comix.obj_fn(cost, mask.double(), cfg.m_beta / n ** 2, cfg.m_gamma / n ** 2)))
        thres.append(float(comix.obj_fn_thres(cost, mask.double(), cfg.m_beta / n ** 2, cfg.m_gamma / n ** 2,
                                              cfg.m_thres * n ** 2)))
        start += m
    return statistics.mean(objs), statistics.mean(thres)


def time_mixing(batches, saliencies, solver: str, executor, args) -> tuple[list[float], float, float]:
    mixer = comix.CoMixup(num_classes=10, executor=executor, m_solver=solver, m_block_num=args.m_block_num,
                          m_part=args.m_part)
    np.random.seed(args.seed)
    mixer(batches[0][0], batches[0][1], saliencies[0])  # compile / warm up
    times, objs, thres = [], [], []
    for (x, y), sal in zip(batches, saliencies, strict=True):
        for _ in range(args.repeats):
            np.random.seed(args.seed)
            start = time.perf_counter()
            mixer(x, y, sal)
            times.append(time.perf_counter() - start)
        np.random.seed(args.seed)
        obj, thr = partition_objectives(sal, mixer.masks(sal), args)
        objs.append(obj)
        thres.append(thr)
    return times, statistics.mean(objs), statistics.mean(thres)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    if args.data_dir:
        batches = real_batches(args.data_dir, args.batch_size, args.batches, args.seed)
        model = build_model(10, args.resume)
        if args.train_epochs:
            train_briefly(model, args.data_dir, args.train_epochs, args.seed)
        saliencies = [comix.saliency_and_clean_loss(model, x, y, 1.0, 10)[0] for x, y in batches]
        trained = (f"a preactresnet18 trained {args.train_epochs} epochs" if args.train_epochs
                   else "a fresh preactresnet18")
        source = f"input-gradient saliency of {'the checkpoint' if args.resume else trained} on {args.data_dir}"
    else:
        batches = generated_batches(args.batch_size, args.batches, args.seed)
        generator = torch.Generator().manual_seed(args.seed)
        saliencies = [blob_saliency(args.batch_size, generator) for _ in batches]
        source = "generated blob saliency"
    print(f"batch {args.batch_size}, 32x32, {args.m_block_num}x{args.m_block_num} blocks, partitions of "
          f"{args.m_part}; {len(batches)} batches x {args.repeats}; {source}; torch threads {torch.get_num_threads()}")
    workers = args.workers or default_workers(-(-args.batch_size // args.m_part))
    for solver in args.solvers.split(","):
        if not comix_solver.solver_available(solver):
            print(f"{solver:>6}: not installed, skipped")
            continue
        runs = [("sequential", None)]
        if solver == "fast":
            runs.append((f"parallel ({workers} threads)", PartitionPool(workers)))
        for label, pool in runs:
            try:
                times, obj, thr = time_mixing(batches, saliencies, solver, pool, args)
            finally:
                if pool is not None:
                    pool.close()
            print(f"{solver:>6} {label:<22} {1e3 * statistics.mean(times):8.1f} ms/batch (median "
                  f"{1e3 * statistics.median(times):.1f})  obj_fn {obj:9.3f}  obj_fn_thres {thr:9.3f}")
    if args.step:
        from bench import step_times

        print()
        return step_times.main(["--methods", "comix", "--batch_size", str(args.batch_size), "--seed", str(args.seed)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
