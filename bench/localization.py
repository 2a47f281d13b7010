"""Benchmark: the localization evaluation's time per 1,000 images, and where it goes.

    python bench/localization.py                              # CPU, resnet50, 96 images
    python bench/localization.py --device cuda --images 2000 --batch_size 128 --workers 8

Writes --images generated 256 x 256 images (textured background, one coloured rectangle, its box)
in the published pickle layout into a temporary folder, then runs localization.evaluate with a
freshly initialised --arch (1,000 classes; the weights do not change the cost) exactly as
``python localization.py`` does: 224 center crop, one forward pass per batch for the logits and
the CAM, boxes at th 0.25 and the MaxBoxAcc sweep (step 0.01) on the CPU. Prints the whole time
per 1,000 images (after one untimed warm-up batch), the share of the forward pass + CAM (timed
alone on the same batches) and of the boxes, and the peak resident memory of the process.
"""
from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comixup import models
from comixup.localization import evaluate as localization
from comixup.localization.cam import (
    LocalizationScores,
    box_from_gray,
    boxes_from_gray,
    class_activation_maps,
    logits_and_features,
    to_gray,
)
from comixup.localization.corrupt import PickledListWriter
from comixup.localization.datasets import CroppedSet, PickleSet, collate

SIDE = 256
CROP = 224


def write_set(folder: Path, count: int, seed: int) -> None:
    import pickle

    rng = np.random.default_rng(seed)
    labels, boxes = [], []
    with open(folder / "input.pkl", "wb") as f:
        writer = PickledListWriter(f)
        for _ in range(count):
            image = rng.integers(40, 200, size=(SIDE, SIDE, 3), dtype=np.uint8)
            x0, y0 = rng.integers(0, SIDE // 2, size=2)
            w, h = rng.integers(SIDE // 8, SIDE // 2, size=2)
            image[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, size=3, dtype=np.uint8)
            writer.append(image)
            labels.append(int(rng.integers(1000)))
            boxes.append(np.array([[x0, y0, x0 + w, y0 + h]], dtype=np.float32) / SIDE)
        writer.close()
    for name, obj in (("label.pkl", labels), ("bbox.pkl", boxes)):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="resnet50", choices=localization.CAM_ARCHS)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = models.build_model(args.arch, 1000).eval().to(device)
    sweep = np.arange(0.0, 1.0, 0.01)
    with tempfile.TemporaryDirectory() as tmp:
        write_set(Path(tmp), args.images, seed=0)
        source = PickleSet(tmp)
        warm = CroppedSet(source, CROP, indices=range(min(args.batch_size, len(source))))
        localization.evaluate(model, warm, LocalizationScores(0.25, sweep), device,
                              localization.Throughput(args.batch_size))
        dataset = CroppedSet(source, CROP)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        summary = localization.evaluate(model, dataset, LocalizationScores(0.25, sweep), device,
                                        localization.Throughput(args.batch_size, args.workers))
        total = time.perf_counter() - started
        forward, boxes = 0.0, 0.0
        batches = [collate([dataset[k] for k in range(i, min(i + args.batch_size, len(dataset)))])
                   for i in range(0, len(dataset), args.batch_size)]
        with torch.inference_mode():
            for images, labels, _gt, _ in batches:
                t0 = time.perf_counter()
                logits, features = logits_and_features(model, localization._normalise(images, device))
                gray = to_gray(class_activation_maps(features, model.fc.weight, labels.to(device), (CROP, CROP)))
                gray = gray.cpu().numpy()
                t1 = time.perf_counter()
                for g in gray:
                    box_from_gray(g, 0.25)
                    boxes_from_gray(g, sweep)
                boxes += time.perf_counter() - t1
                forward += t1 - t0
    per_k = 1000.0 / summary["images"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"{args.arch} on {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}, {args.workers} workers, {summary['images']} images")
    print(f"evaluation: {total * per_k:.1f} s per 1,000 images ({summary['images'] / total:.1f} images/s)")
    print(f"  forward pass + CAM alone: {forward * per_k:.1f} s per 1,000 images")
    print(f"  boxes (th and the 100-threshold MaxBoxAcc sweep) alone: {boxes * per_k:.1f} s per 1,000 images")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
