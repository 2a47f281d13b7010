"""CIFAR-10-C and CIFAR-100-C (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019): the CIFAR test set under common corruptions.

The release (Zenodo records 2535967 for CIFAR-10-C, 3555552 for CIFAR-100-C; a separate download,
not fetched here) is one folder of NumPy files:

- ``<corruption>.npy``: uint8 images (5 x n, 32, 32, 3), height-width-channel, severities 1 to 5
  one after the other, n images each (the n = 10,000 test images in the release);
- ``labels.npy``: the 5 x n labels, the test labels repeated for every severity.

:func:`open_release` checks a folder before any heavy work (file headers and labels only; the
images are memory-mapped, never read whole) and names the standard corruptions it lacks;
:meth:`CorruptionRelease.severity` gives one corruption at one severity.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from comixup.data.datasets import DataError

__all__ = ["CORRUPTIONS", "EXTRA_CORRUPTIONS", "SEVERITIES", "LABELS_FILE", "CorruptionRelease", "open_release"]

CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
"""The 15 standard corruptions (noise, blur, weather, digital), in the paper's order."""

EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The release's four held-out corruptions, meant for validation: not part of the standard mean."""

SEVERITIES = 5
LABELS_FILE = "labels.npy"
IMAGE_SHAPE = (32, 32, 3)
_RELEASE_HINT = ("the CIFAR-10-C / CIFAR-100-C release (zenodo.org/record/2535967 and zenodo.org/record/3555552), "
                 "unpacked: <corruption>.npy files and labels.npy")


@dataclass
class CorruptionRelease:
    """An opened release folder: the standard corruptions ``found`` there (in CORRUPTIONS order),
    those ``missing``, the labels (5 x n) and n, the images per severity."""

    folder: str
    labels: np.ndarray
    found: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def per_severity(self) -> int:
        return len(self.labels) // SEVERITIES

    def severity(self, corruption: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
        """(images (n, 32, 32, 3) uint8, memory-mapped; labels (n,) int64) of ``corruption`` at
        ``severity`` (1 to 5). DataError when the file cannot be read."""
        if not 1 <= severity <= SEVERITIES:
            raise ValueError(f"severity must lie in 1..{SEVERITIES}, got {severity}")
        images = _open_images(os.path.join(self.folder, f"{corruption}.npy"), len(self.labels))
        part = slice((severity - 1) * self.per_severity, severity * self.per_severity)
        return images[part], self.labels[part].astype(np.int64)


def _read_error(path: str, err: BaseException) -> DataError:
    reason = " ".join(str(err).split()) or type(err).__name__
    return DataError(f"cannot read {path} ({reason}): expected {_RELEASE_HINT}")


def _open_images(path: str, count: int) -> np.ndarray:
    """A corruption's images, memory-mapped, after checking dtype and shape against ``count``."""
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise _read_error(path, err) from err
    expected = (count, *IMAGE_SHAPE)
    if images.dtype != np.uint8 or images.shape != expected:
        raise DataError(f"{path} holds {images.dtype} images of shape {images.shape}, expected uint8 {expected} "
                        f"(5 severities x {count // SEVERITIES} images of 32x32x3, as labels.npy says); "
                        f"is it a file of {_RELEASE_HINT}?")
    return images


def open_release(folder: str, num_classes: int) -> CorruptionRelease:
    """Check a CIFAR-C folder without reading its images: labels.npy present, one-dimensional,
    a multiple of 5 long, its classes below ``num_classes``; every standard corruption's file
    there of uint8 images of shape (len(labels), 32, 32, 3). DataError (one line, naming the
    file and what was expected) otherwise, and when none of the 15 standard corruptions is there."""
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise DataError(f"--corruption_dir {folder} {what}: give the folder of {_RELEASE_HINT}")
    labels_path = os.path.join(folder, LABELS_FILE)
    if not os.path.isfile(labels_path):
        raise DataError(f"--corruption_dir {folder} has no {LABELS_FILE}: give the folder of {_RELEASE_HINT}")
    try:
        labels = np.load(labels_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise _read_error(labels_path, err) from err
    if (labels.ndim != 1 or not len(labels) or len(labels) % SEVERITIES
            or not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"{labels_path} holds {labels.dtype} labels of shape {labels.shape}, expected integers of "
                        f"shape ({SEVERITIES} x n,): one label per image of the 5 severities")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"{labels_path} has labels from {labels.min()} to {labels.max()}, but the data set has "
                        f"{num_classes} classes: CIFAR-10-C goes with --dataset cifar10, CIFAR-100-C with cifar100")
    found = [name for name in CORRUPTIONS if os.path.isfile(os.path.join(folder, f"{name}.npy"))]
    if not found:
        raise DataError(f"--corruption_dir {folder} holds none of the 15 standard corruption files "
                        f"({CORRUPTIONS[0]}.npy, ..., {CORRUPTIONS[-1]}.npy): give the folder of {_RELEASE_HINT}")
    for name in found:
        _open_images(os.path.join(folder, f"{name}.npy"), len(labels))
    return CorruptionRelease(folder=folder, labels=labels, found=found,
                             missing=[name for name in CORRUPTIONS if name not in found])
