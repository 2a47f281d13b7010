"""Benchmark: images per second of prepare_imagenet.py on ImageNet-sized JPEGs.

    python bench/prepare_speed.py                      # 200 images, --workers 1 and every core
    python bench/prepare_speed.py --images 1000 --workers 1 4 8

Writes --images smooth JPEGs of ImageNet's typical shapes (500x375, 375x500, 500x333, 500x500,
quality 90, as ImageNet's own files) into a temporary SRC/{train,val}/<class>/ tree, then runs
the preparation with --sizes 160 352 for each worker count into a fresh DST and prints the wall
time, images per second (each image decoded once, written at both sizes) and the hours the
1,331,167 images of ImageNet (train and val) would take at that rate. A second run over the
finished DST shows the cost of a resume that has nothing left to do.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from comixup.prepare import imagenet as prepare_imagenet

IMAGENET_IMAGES = 1_281_167 + 50_000
SHAPES = [(500, 375), (375, 500), (500, 333), (500, 500)]


def write_source(src: Path, count: int) -> None:
    """Smooth colour gradients with a little noise: JPEG sizes and decode times close to photos'."""
    rng = np.random.default_rng(0)
    for k in range(count):
        w, h = SHAPES[k % len(SHAPES)]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = rng.uniform(0, 6.28, 3)
        pixels = np.stack([127 + 100 * np.sin(xs / (20 + 10 * c) + ys / 37 + phase[c]) for c in range(3)], -1)
        pixels += rng.normal(0, 8, pixels.shape)
        folder = src / ("train" if k % 10 else "val") / f"n{k % 5:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"img_{k}.JPEG", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        write_source(src, args.images)
        print(f"{args.images} JPEGs of {', '.join(f'{w}x{h}' for w, h in SHAPES)}; sizes 160 and 352; "
              f"{os.cpu_count()} cores")
        for workers in args.workers:
            job = prepare_imagenet.Job(src=src, dst=Path(tmp) / f"dst{workers}", sizes=(160, 352),
                                       quality=prepare_imagenet.DEFAULT_QUALITY)
            start = time.perf_counter()
            summary = prepare_imagenet.prepare(job, workers, progress=False)
            seconds = time.perf_counter() - start
            assert summary.done == args.images and not summary.unreadable
            start = time.perf_counter()
            prepare_imagenet.prepare(job, workers, progress=False)
            resume = time.perf_counter() - start
            rate = args.images / seconds
            print(f"--workers {workers}: {seconds:.2f} s, {rate:.1f} images/s "
                  f"(ImageNet: {IMAGENET_IMAGES / rate / 3600:.1f} h); nothing-to-do rerun {resume:.2f} s")


if __name__ == "__main__":
    main()
