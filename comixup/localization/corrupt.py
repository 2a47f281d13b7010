"""Background-corrupted copies of a localization set, written in the published pickle layout.

The published ``noise`` and ``rep`` sets come without the code that made them; this is our
construction (the README says so):

- Every image is first resized so its shorter side is ``resize`` pixels (256: what the
  evaluation's 224 center crop expects; 0 keeps the size). Boxes are normalised, so they
  need no change.
- Foreground = the union of the image's GT boxes, each widened to whole pixels (floor of the
  start, ceil of the end); background = every other pixel. The foreground is copied bit for bit.
- ``noise``: background pixels plus Gaussian noise of standard deviation ``noise_std`` (in units
  of the 0-255 range), rounded and clipped to uint8.
- ``rep``: background pixels taken from another image of the set whose class differs, resized
  (bilinear) to this image's size; the donor is drawn uniformly among those images.
- ``clean``: the images as they are (after the resize), for a clean set in the same layout.

Image i draws its randomness from ``numpy.random.default_rng([seed, i])`` alone, so a set is
the same whatever the order or the number of workers. The folder is written as
``input.pkl`` (streamed, one image at a time: the set never sits in memory), ``label.pkl``
and ``bbox.pkl`` into a temporary folder that is renamed when complete.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from comixup.data.datasets import DataError
from comixup.localization.datasets import LocalizationSource, Sample, resize_shorter

__all__ = ["CORRUPTIONS", "Corruption", "PickledListWriter", "background_mask", "corrupt", "build_corrupted_set"]

CORRUPTIONS = ("clean", "noise", "rep")


class PickledListWriter:
    """Writes a pickle of a list one item at a time: ``pickle.load`` gives back the whole list.

    Each item is pickled on its own without memo (so the items' opcodes never refer to each other)
    and appended with APPEND; protocol 4, so large arrays land outside frames and the lazy reader
    of :mod:`wsol_data` leaves their bytes on disk."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.count = 0
        file.write(pickle.PROTO + bytes([4]) + pickle.EMPTY_LIST)

    def append(self, item: Any) -> None:
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=4)
        pickler.fast = True  # no memo: nothing of one item is referenced by another
        pickler.dump(item)
        data = buffer.getbuffer()
        with data[2:-1] as body:  # drop this item's PROTO header and STOP
            self.file.write(body)
        data.release()
        self.file.write(pickle.APPEND)
        self.count += 1

    def close(self) -> None:
        self.file.write(pickle.STOP)


def background_mask(height: int, width: int, boxes: np.ndarray) -> np.ndarray:
    """Boolean H x W mask, True outside the union of the normalised boxes (each widened to whole pixels)."""
    background = np.ones((height, width), dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        left, right = int(np.floor(min(x0, x1) * width)), int(np.ceil(max(x0, x1) * width))
        top, bottom = int(np.floor(min(y0, y1) * height)), int(np.ceil(max(y0, y1) * height))
        background[max(top, 0):max(bottom, 0), max(left, 0):max(right, 0)] = False
    return background


def _donor_index(rng: np.random.Generator, labels: np.ndarray, index: int) -> int:
    others = np.flatnonzero(labels != labels[index])
    if not len(others):
        raise DataError("rep needs images of at least two classes: every image of the set has the same label")
    return int(others[rng.integers(len(others))])


@dataclasses.dataclass(frozen=True)
class Corruption:
    """What :func:`build_corrupted_set` makes: ``kind`` (clean, noise, rep), the ``seed``, the
    noise's standard deviation in 0-255 pixel units, and the shorter side images are stored at
    (0: as they are)."""
    kind: str
    seed: int = 0
    noise_std: float = 50.0
    resize: int = 256

    def __post_init__(self) -> None:
        if self.kind not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {self.kind!r}; allowed: {', '.join(CORRUPTIONS)}")


def corrupt(corruption: Corruption, sample: Sample, index: int, donor: Callable[[int], np.ndarray],
            labels: np.ndarray) -> np.ndarray:
    """Image ``index`` (already resized) with its background corrupted; ``donor(j)`` gives image j
    resized like the source's images, ``labels`` every image's class."""
    image = sample.image
    if corruption.kind == "clean":
        return image
    rng = np.random.default_rng([corruption.seed, index])
    background = background_mask(image.shape[0], image.shape[1], sample.boxes)
    out = image.copy()
    if corruption.kind == "noise":
        noise = rng.normal(0.0, corruption.noise_std, size=(int(background.sum()), 3))
        out[background] = np.clip(np.rint(image[background].astype(np.float64) + noise), 0, 255).astype(np.uint8)
    else:  # rep
        other = donor(_donor_index(rng, labels, index))
        if other.shape[:2] != image.shape[:2]:
            other = np.asarray(Image.fromarray(other).resize((image.shape[1], image.shape[0]), Image.BILINEAR))
        out[background] = other[background]
    return out


def build_corrupted_set(source: LocalizationSource, corruption: Corruption, out_dir: str | os.PathLike,
                        progress: Callable[[Iterable[int]], Iterable[int]] = iter) -> Path:
    """Write ``corruption`` of ``source`` to ``out_dir`` (input.pkl, label.pkl, bbox.pkl); returns
    the folder. ``progress`` wraps the loop over image indices (a progress bar).

    The folder appears complete or not at all (written beside it, then renamed); an existing
    ``out_dir`` is refused (DataError), so nothing is overwritten.
    """
    out = Path(out_dir)
    if out.exists():
        raise DataError(f"{out} exists; give a new folder for the {corruption.kind} set (nothing is overwritten)")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))

    def load(index: int) -> Sample:
        sample = source.sample(index)
        if corruption.resize:
            sample.image = resize_shorter(sample.image, corruption.resize)
        return sample

    try:
        labels, boxes = [], []
        with open(temp / "input.pkl", "wb") as f:
            writer = PickledListWriter(f)
            for index in progress(range(len(source))):
                sample = load(index)
                writer.append(corrupt(corruption, sample, index, lambda j: load(j).image, source.labels))
                labels.append(int(sample.label))
                boxes.append(np.asarray(sample.boxes, dtype=np.float32).reshape(-1, 4))
            writer.close()
            f.flush()
            os.fsync(f.fileno())
        for name, obj in (("label.pkl", labels), ("bbox.pkl", boxes)):
            with open(temp / name, "wb") as f:
                pickle.dump(obj, f, protocol=4)
                f.flush()
                os.fsync(f.fileno())
        os.replace(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return out
