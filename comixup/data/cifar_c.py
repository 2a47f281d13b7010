"""CIFAR-10-C and CIFAR-100-C (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019): the CIFAR test set under common corruptions.

The release (Zenodo records 2535967 for CIFAR-10-C, 3555552 for CIFAR-100-C; a separate download,
not fetched here) is one folder of NumPy files:

- ``<corruption>.npy``: uint8 images (5 x n, 32, 32, 3), height-width-channel, severities 1 to 5
  one after the other, n images each (the n = 10,000 test images in the release);
- ``labels.npy``: the 5 x n labels, the test labels repeated for every severity (CIFAR-10-C: the
  CIFAR-10 test labels, classes 0 to 9; CIFAR-100-C: the CIFAR-100 ones, classes 0 to 99).

:func:`open_release` checks a folder before any heavy work (file headers and labels only; the
images are memory-mapped, never read whole), checks that the release's classes are the data set's
and names the standard corruptions it lacks; :meth:`CorruptionRelease.severity` gives one
corruption at one severity.

Two averages can be taken over a release. The standard one (Hendrycks & Dietterich) covers the 15
corruptions of CORRUPTIONS: :attr:`CorruptionRelease.found`. Puzzle Mix's ``test_robust.py``
averages every ``.npy`` file of the folder but ``labels.npy`` (``glob('<folder>/*.npy')``): the
15, the four EXTRA_CORRUPTIONS of the release and any other ``.npy`` file there:
:attr:`CorruptionRelease.every_file`, checked up front by ``open_release(...,
check_every_file=True)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from comixup.data.datasets import DataError

__all__ = ["CORRUPTIONS", "EXTRA_CORRUPTIONS", "SEVERITIES", "LABELS_FILE", "CORRUPTION_AVERAGES", "STANDARD_AVERAGE",
           "PUBLISHED_AVERAGE", "CorruptionRelease", "open_release"]

CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
"""The 15 standard corruptions (noise, blur, weather, digital), in the paper's order."""

EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The release's four held-out corruptions, meant for validation: not part of the standard mean."""

STANDARD_AVERAGE = "standard"
PUBLISHED_AVERAGE = "published"
CORRUPTION_AVERAGES = (STANDARD_AVERAGE, PUBLISHED_AVERAGE)
"""The choices of ``--corruption_average``: ``standard``, the mean top-1 *error* over the 15
standard corruptions (those found); ``published``, Puzzle Mix's ``test_robust.py``, the mean
top-1 *accuracy* over every ``.npy`` file of the folder (:attr:`CorruptionRelease.every_file`)."""

SEVERITIES = 5
LABELS_FILE = "labels.npy"
IMAGE_SHAPE = (32, 32, 3)
_RELEASE_HINT = ("the CIFAR-10-C / CIFAR-100-C release (zenodo.org/record/2535967 and zenodo.org/record/3555552), "
                 "unpacked: <corruption>.npy files and labels.npy")


# The releases by class count, for messages that name what a folder holds and what a data set needs.
_RELEASES = {10: "CIFAR-10-C", 100: "CIFAR-100-C"}


@dataclass
class CorruptionRelease:
    """An opened release folder: the standard corruptions ``found`` there (in CORRUPTIONS order),
    those ``missing``, the labels (5 x n) and n, the images per severity.

    Also listed, for Puzzle Mix's average over every file (:attr:`every_file`): ``extra_found``,
    the release's extra corruptions there (in EXTRA_CORRUPTIONS order), and ``other_found``, the
    names of any other ``.npy`` file there but labels.npy (sorted). Those are only checked when the
    folder was opened with ``check_every_file=True``; :meth:`severity` checks any file it opens.
    """

    folder: str
    labels: np.ndarray
    found: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra_found: list[str] = field(default_factory=list)
    other_found: list[str] = field(default_factory=list)

    @property
    def per_severity(self) -> int:
        return len(self.labels) // SEVERITIES

    @property
    def every_file(self) -> list[str]:
        """The name (file name without ``.npy``) of every ``.npy`` file in the folder but labels.npy,
        sorted by file name: the corruptions Puzzle Mix's ``test_robust.py`` averages, 19 in the
        full release. That script takes them in ``glob`` order, which is the file system's
        (``os.listdir``), unspecified and not the same on every machine; its mean does not depend
        on the order, so this one is sorted to print the same everywhere. As ``glob('*.npy')``,
        it skips hidden files (e.g. the ``._<name>.npy`` that macOS's tar adds)."""
        return sorted([*self.found, *self.extra_found, *self.other_found])

    def averaged(self, average: str) -> list[str]:
        """The corruptions whose mean ``average`` (one of CORRUPTION_AVERAGES) takes: the standard
        ones found (in CORRUPTIONS order), or every file (:attr:`every_file`)."""
        if average == STANDARD_AVERAGE:
            return list(self.found)
        if average == PUBLISHED_AVERAGE:
            return self.every_file
        raise ValueError(f"average must be one of {', '.join(CORRUPTION_AVERAGES)}, got {average!r}")

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


def _held_classes(classes: np.ndarray) -> str:
    """What labels with these distinct ``classes`` (sorted) are, for a message."""
    count = len(classes)
    from_zero = np.array_equal(classes, np.arange(count))
    if from_zero and count in _RELEASES:
        return f"the labels of {_RELEASES[count]} (classes 0 to {count - 1})"
    if count == 1:
        return f"labels of the one class {classes[0]}"
    if from_zero:
        return f"labels of the classes 0 to {count - 1}"
    return f"labels of {count} distinct classes from {classes[0]} to {classes[-1]}"


def _needed_classes(num_classes: int) -> str:
    """What a ``num_classes``-class data set needs of labels.npy, for a message."""
    every = f"every class 0 to {num_classes - 1}"
    return f"those of {_RELEASES[num_classes]} ({every})" if num_classes in _RELEASES else every


def _check_classes(labels_path: str, labels: np.ndarray, num_classes: int) -> None:
    """The release's classes must be the data set's, every one of 0..num_classes-1 present: a
    label out of range would be a wrong class, and CIFAR-10-C's labels (0 to 9) are in range for
    a 100-class data set but say nothing of 90 of its classes, so only the exact set tells the two
    releases apart. np.unique of the 5 x 10,000 labels takes milliseconds."""
    classes = np.unique(labels)
    if np.array_equal(classes, np.arange(num_classes)):
        return
    raise DataError(f"{labels_path} holds {_held_classes(classes)}, but the data set has {num_classes} classes "
                    f"and needs {_needed_classes(num_classes)}: CIFAR-10-C goes with --dataset cifar10, "
                    f"CIFAR-100-C with cifar100")


def _other_npy_files(folder: str) -> list[str]:
    """Names (without ``.npy``) of the ``.npy`` files in ``folder`` that are neither labels.npy nor a
    standard or extra corruption, sorted; hidden files are skipped, as ``glob('*.npy')`` does."""
    known = {LABELS_FILE, *(f"{name}.npy" for name in (*CORRUPTIONS, *EXTRA_CORRUPTIONS))}
    try:
        entries = list(os.scandir(folder))
    except OSError as err:  # e.g. a folder whose files can be opened but not listed
        raise _read_error(folder, err) from err
    return sorted(entry.name[:-len(".npy")] for entry in entries
                  if entry.name.endswith(".npy") and not entry.name.startswith(".") and entry.name not in known
                  and entry.is_file())


def open_release(folder: str, num_classes: int, check_every_file: bool = False) -> CorruptionRelease:
    """Check a CIFAR-C folder without reading its images, in this order: labels.npy present,
    one-dimensional, a multiple of 5 long; at least one of the 15 standard corruptions there;
    every standard corruption's file there of uint8 images of shape (len(labels), 32, 32, 3), and
    with ``check_every_file`` every other ``.npy`` file too (Puzzle Mix's average,
    :attr:`CorruptionRelease.every_file`); the labels' classes exactly 0..``num_classes``-1, each
    present and none other, so that CIFAR-10-C is refused for a 100-class data set and CIFAR-100-C
    for a 10-class one. DataError (one line, naming the file, what it holds and what was expected)
    otherwise. The default checks and returns the same standard corruptions whatever else the
    folder holds; the other files are listed, not read."""
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
    found = [name for name in CORRUPTIONS if os.path.isfile(os.path.join(folder, f"{name}.npy"))]
    if not found:
        raise DataError(f"--corruption_dir {folder} holds none of the 15 standard corruption files "
                        f"({CORRUPTIONS[0]}.npy, ..., {CORRUPTIONS[-1]}.npy): give the folder of {_RELEASE_HINT}")
    release = CorruptionRelease(
        folder=folder, labels=labels, found=found, missing=[name for name in CORRUPTIONS if name not in found],
        extra_found=[name for name in EXTRA_CORRUPTIONS if os.path.isfile(os.path.join(folder, f"{name}.npy"))],
        other_found=_other_npy_files(folder))
    for name in release.every_file if check_every_file else release.found:
        _open_images(os.path.join(folder, f"{name}.npy"), len(labels))
    # Last: a folder that is no release at all (or a damaged one) is named as such, not as the
    # wrong release.
    _check_classes(labels_path, labels, num_classes)
    return release
