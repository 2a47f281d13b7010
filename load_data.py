"""Data sets and loaders for training, and the one-off Tiny-ImageNet validation re-layout.

Imported by ``main.py`` for :func:`get_datasets`, :func:`get_loaders` and, with
``--data_on_device``, :func:`get_device_loaders` (CIFAR kept on the training device, augmented
there in batches). Run as a script,
``python load_data.py --data_dir ./data/tiny-imagenet-200`` moves the raw Tiny-ImageNet-200
validation images into one folder per class so that ``ImageFolder`` can read them.
"""
from __future__ import annotations

import argparse
import copy
import os
import pickle
import random
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.datasets as tv_datasets
import torchvision.transforms as T
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, get_worker_info
from torchvision.datasets.utils import check_integrity
from torchvision.datasets.vision import StandardTransform

DATASETS = ("cifar10", "cifar100", "tiny-imagenet-200", "imagenet")
DEFAULT_TINY_DIR = "./data/tiny-imagenet-200"


class DataError(Exception):
    """A problem with the user's data or data options; the message is one line meant for the user.

    A DataError raised in a DataLoader worker process reaches the training process as a new
    DataError whose text is the worker's whole traceback; the constructor keeps only the
    original one-line message of such a text.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(_worker_message(str(message)))


def _worker_message(message: str) -> str:
    """The original message inside the text DataLoader gives an exception re-raised from a worker
    ("Caught DataError in DataLoader worker process 0. Original Traceback ... DataError: msg")."""
    if not message.startswith("Caught DataError in DataLoader worker"):
        return message
    marker = "DataError: "
    last = message.rstrip().splitlines()[-1]
    return last[last.index(marker) + len(marker):] if marker in last else last


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about one data set.

    ``num_classes`` is None where it is read from the folder (ImageNet); ``train_per_class`` is the
    number of training images of every class (None where classes differ in size or it is read from
    the folder: ImageNet), which bounds --labels_per_class; ``stride`` is the first
    convolution's stride the models use for this image size; ``crop_padding`` is the padding of the
    training RandomCrop (None: ImageNet-style resized crops); ``archive``/``archive_folder`` name the
    downloadable archive and the folder it extracts to (None for folder data sets).
    """

    title: str
    num_classes: int | None
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    stride: int
    crop_padding: int | None
    train_per_class: int | None = None
    archive: str | None = None
    archive_folder: str | None = None


_INFO = {
    "cifar10": DatasetInfo("CIFAR-10", 10, 32,
                           (125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255),
                           stride=1, crop_padding=2, train_per_class=5000,
                           archive="cifar-10-python.tar.gz", archive_folder="cifar-10-batches-py"),
    "cifar100": DatasetInfo("CIFAR-100", 100, 32,
                            (129.3 / 255, 124.1 / 255, 112.4 / 255), (68.2 / 255, 65.4 / 255, 70.4 / 255),
                            stride=1, crop_padding=2, train_per_class=500,
                            archive="cifar-100-python.tar.gz", archive_folder="cifar-100-python"),
    "tiny-imagenet-200": DatasetInfo("Tiny-ImageNet-200", 200, 64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                                     stride=2, crop_padding=4, train_per_class=500),
    "imagenet": DatasetInfo("ImageNet", None, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                            stride=1, crop_padding=None),
}
_CIFAR_CLASSES = {"cifar10": tv_datasets.CIFAR10, "cifar100": tv_datasets.CIFAR100}
# ImageNet evaluation resizes the short side to this before the centre crop.
_IMAGENET_RESIZE = 256
# What torchvision raises when a CIFAR download or extraction fails (URLError is an OSError).
_DOWNLOAD_ERRORS = (OSError, RuntimeError, tarfile.TarError, EOFError)
# What reading a damaged or foreign CIFAR batch file raises (an EOFError is a truncated pickle when
# the extracted folder exists, else a truncated archive).
_READ_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, IndexError, AttributeError)


def dataset_info(name: str) -> DatasetInfo:
    """Return the facts for data set ``name`` (one of DATASETS); DataError for any other name."""
    if name not in _INFO:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return _INFO[name]


def check_data_dir(dataset: str, data_dir: str) -> None:
    """The cheap checks of ``data_dir`` that need no image to be read, for before any heavy work:
    it must not be a file; a folder data set (Tiny-ImageNet, ImageNet) must have its train and
    validation folders, laid out for ImageFolder. A CIFAR folder may be absent (it is downloaded).
    DataError (one line) otherwise."""
    info = dataset_info(dataset)
    root = os.path.abspath(os.path.expanduser(data_dir))
    if os.path.exists(root) and not os.path.isdir(root):
        raise DataError(f"--data_dir {data_dir} is a file; give the folder that holds (or will hold) {info.title}")
    if dataset not in _CIFAR_CLASSES:
        try:
            _folder_split_dirs(dataset, root)
        except DataError as err:
            raise DataError(f"--data_dir {data_dir}: {err}") from None


# ---------------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------------

def get_datasets(dataset: str, data_dir: str, labels_per_class: int | None = None,
                 valid_labels_per_class: int = 0, seed: int = 0,
                 download: bool = True) -> tuple[Dataset, Dataset | None, Dataset, int]:
    """Build (train_set, valid_set or None, test_set, num_classes) for ``dataset`` under ``data_dir``.

    CIFAR is read (and downloaded when ``download``) by torchvision under ``data_dir``; Tiny-ImageNet
    reads ``data_dir/train`` and the re-laid-out ``data_dir/val/images``; ImageNet reads
    ``data_dir/train`` and ``data_dir/val``. ``labels_per_class`` (None: all) keeps a class-balanced
    training subset chosen from ``seed``; ``valid_labels_per_class`` holds out that many training
    images per class, disjoint from the subset, as a validation set with the test transform. For
    folder data sets num_classes is the number of class folders. Raises DataError for anything the
    user must fix.
    """
    info = dataset_info(dataset)
    _check_split_options(labels_per_class, valid_labels_per_class)
    root = os.path.abspath(os.path.expanduser(data_dir))
    train_transform, test_transform = dataset_transforms(info)
    if dataset in _CIFAR_CLASSES:
        train_full = _load_cifar(dataset, root, True, train_transform, download)
        test_set = _load_cifar(dataset, root, False, test_transform, download)
        num_classes = info.num_classes
    else:
        train_dir, test_dir = _folder_split_dirs(dataset, root)
        train_full = _load_image_folder(train_dir, train_transform)
        test_set = _load_image_folder(test_dir, test_transform)
        _check_same_classes(train_full, test_set, train_dir, test_dir)
        num_classes = len(train_full.classes)

    if labels_per_class is None and valid_labels_per_class == 0:
        return train_full, None, test_set, num_classes
    train_idx, valid_idx = class_balanced_split(train_full.targets, num_classes, labels_per_class,
                                                valid_labels_per_class, seed, getattr(train_full, "classes", None))
    train_set = Subset(train_full, train_idx)
    valid_set = Subset(_with_transform(train_full, test_transform), valid_idx) if valid_idx else None
    return train_set, valid_set, test_set, num_classes


def get_folder_test_set(dataset: str, data_dir: str) -> tv_datasets.ImageFolder:
    """The test split of a folder data set (ImageNet: ``data_dir/val``) with its test transform
    (ImageNet: Resize 256, CenterCrop 224), without reading the training folder. DataError when
    it is missing."""
    _, test_dir = _folder_split_dirs(dataset, os.path.abspath(os.path.expanduser(data_dir)))
    return _load_image_folder(test_dir, dataset_transforms(dataset_info(dataset))[1])


def get_resized_crop_train_set(dataset: str, data_dir: str, crop: int, min_scale: float, classes: Sequence[str],
                               labels_per_class: int | None = None, seed: int = 0) -> Dataset:
    """The training split of a folder data set (``data_dir/train``) with ``crop``-pixel
    RandomResizedCrops of at least ``min_scale`` of the area (aspect ratios 3/4 to 4/3) and
    flips: one phase of a multi-phase recipe. Its class folders must be ``classes`` (the test
    set's); ``labels_per_class`` keeps a class-balanced subset chosen from ``seed``, as
    :func:`get_datasets` does. DataError for anything the user must fix."""
    info = dataset_info(dataset)
    train_dir, _ = _folder_split_dirs(dataset, os.path.abspath(os.path.expanduser(data_dir)))
    transform = T.Compose([T.RandomResizedCrop(crop, scale=(min_scale, 1.0)), T.RandomHorizontalFlip(),
                           T.ToTensor(), T.Normalize(info.mean, info.std)])
    train_set = _load_image_folder(train_dir, transform)
    if train_set.classes != list(classes):
        raise DataError(f"the class folders of {train_dir} differ from the test set's ({len(train_set.classes)} "
                        f"and {len(classes)} classes); every phase needs the same classes")
    if labels_per_class is None:
        return train_set
    indices, _ = class_balanced_split(train_set.targets, len(classes), labels_per_class, 0, seed, train_set.classes)
    return Subset(train_set, indices)


def _check_split_options(labels_per_class: int | None, valid_labels_per_class: int) -> None:
    if labels_per_class is not None and labels_per_class < 1:
        raise DataError(f"labels_per_class must be a positive number of images per class (or all); "
                        f"got {labels_per_class}")
    if valid_labels_per_class < 0:
        raise DataError(f"valid_labels_per_class must be 0 or more; got {valid_labels_per_class}")


def dataset_transforms(info: DatasetInfo) -> tuple[Callable, Callable]:
    """(train transform, test transform) for a data set, as the published recipe has them."""
    normalise = [T.ToTensor(), T.Normalize(info.mean, info.std)]
    if info.crop_padding is None:
        train = [T.RandomResizedCrop(info.image_size), T.RandomHorizontalFlip()]
        test = [T.Resize(_IMAGENET_RESIZE), T.CenterCrop(info.image_size)]
    else:
        train = [T.RandomCrop(info.image_size, padding=info.crop_padding), T.RandomHorizontalFlip()]
        test = []
    return T.Compose(train + normalise), T.Compose(test + normalise)


def _with_transform(dataset: tv_datasets.VisionDataset, transform: Callable) -> tv_datasets.VisionDataset:
    """A shallow copy of ``dataset`` that applies ``transform``; the image data is shared, not copied."""
    clone = copy.copy(dataset)
    clone.transform = transform
    clone.transforms = StandardTransform(transform, dataset.target_transform)
    return clone


def class_balanced_split(targets: Sequence[int], num_classes: int, labels_per_class: int | None,
                         valid_labels_per_class: int, seed: int,
                         class_names: Sequence[str] | None = None) -> tuple[list[int], list[int]]:
    """Pick (train indices, validation indices) with the same count from every class.

    Per class, the indices are permuted with a generator seeded from ``seed``; the first
    ``valid_labels_per_class`` go to validation and the next ``labels_per_class`` (None: all the rest)
    to training. Raises DataError when a class has too few images (named by ``class_names``, e.g.
    the class folders, when given). Both lists come back sorted.
    """
    labels = np.asarray(targets)
    rng = np.random.default_rng(seed)
    train_idx: list[int] = []
    valid_idx: list[int] = []
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        needed = valid_labels_per_class + (labels_per_class if labels_per_class is not None else 1)
        if len(members) < needed:
            asked = "0 (all)" if labels_per_class is None else str(labels_per_class)
            name = f" ({class_names[c]})" if class_names is not None else ""
            raise DataError(f"class {c}{name} has {len(members)} training images, but --labels_per_class={asked} "
                            f"plus --valid_labels_per_class={valid_labels_per_class} needs {needed}")
        stop = None if labels_per_class is None else valid_labels_per_class + labels_per_class
        valid_idx += members[:valid_labels_per_class].tolist()
        train_idx += members[valid_labels_per_class:stop].tolist()
    return sorted(train_idx), sorted(valid_idx)


def _load_cifar(dataset: str, root: str, train: bool, transform: Callable,
                download: bool) -> tv_datasets.CIFAR10:
    """Open a CIFAR split through torchvision; a failed download or a damaged batch file becomes a
    DataError with the fix."""
    info = _INFO[dataset]
    archive = os.path.join(root, info.archive)
    folder = os.path.join(root, info.archive_folder)
    before = _file_state(archive)
    try:
        return _CIFAR_CLASSES[dataset](root, train=train, transform=transform, download=download)
    except _READ_ERRORS as err:
        if isinstance(err, EOFError) and not os.path.isdir(folder):
            raise _download_error(info, root, download, archive, before, _CIFAR_CLASSES[dataset].tgz_md5,
                                  err) from err
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"{info.title} in {folder} cannot be read ({type(err).__name__}: {reason}): a batch "
                        f"file is damaged or not a CIFAR file; delete {folder} (it is extracted again from "
                        f"{info.archive}, or downloaded) and run again") from err
    except _DOWNLOAD_ERRORS as err:
        raise _download_error(info, root, download, archive, before, _CIFAR_CLASSES[dataset].tgz_md5,
                              err) from err


def _download_error(info: DatasetInfo, root: str, download: bool, archive: str, before: tuple[int, int] | None,
                    md5: str, err: BaseException) -> DataError:
    _remove_partial_archive(archive, before, md5)
    reason = " ".join(str(err).split()) or type(err).__name__
    how = "could not be downloaded" if download else "is missing and download is off"
    return DataError(f"{info.title} in {root} {how} ({reason}); place {info.archive} in {root} "
                     f"(extracting it there gives {os.path.join(root, info.archive_folder)}) "
                     f"and run again")


def _file_state(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _remove_partial_archive(archive: str, before: tuple[int, int] | None, md5: str) -> None:
    """Remove ``archive`` if this call wrote it and it is not the complete official file."""
    if not os.path.isfile(archive) or _file_state(archive) == before:
        return  # absent, or the user's own file that the failed attempt did not touch
    if not check_integrity(archive, md5):
        os.remove(archive)


def _folder_split_dirs(dataset: str, root: str) -> tuple[Path, Path]:
    """(train folder, test folder) of a folder data set, checked to exist and be laid out."""
    base = Path(root)
    if dataset == "tiny-imagenet-200":
        train_dir, test_dir = base / "train", base / "val" / "images"
    else:
        train_dir, test_dir = base / "train", base / "val"
    missing = [str(d) for d in (train_dir, test_dir) if not d.is_dir()]
    if missing:
        hint = _nested_tiny_hint(base) if dataset == "tiny-imagenet-200" else ""
        raise DataError(f"{_INFO[dataset].title} folder {base} lacks {' and '.join(missing)}{hint}")
    if dataset == "tiny-imagenet-200":
        flat = _flat_images(test_dir)
        if flat:
            raise DataError(f"{test_dir} still holds {len(flat)} images directly (the raw Tiny-ImageNet "
                            f"layout); run `python load_data.py --data_dir {base}` first")
    return train_dir, test_dir


def _nested_tiny_hint(base: Path) -> str:
    nested = base / "tiny-imagenet-200"
    return f" (did you mean --data_dir {nested}?)" if nested.is_dir() else ""


def _flat_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (not in a class sub-folder)."""
    extensions = tv_datasets.folder.IMG_EXTENSIONS
    return [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions]


def read_image(path: str) -> Image.Image:
    """ImageFolder's default loader (an RGB PIL image), but a file PIL cannot read is a DataError
    naming it (in a loader worker too), not a traceback from deep inside PIL."""
    try:
        return tv_datasets.folder.default_loader(path)
    except (OSError, ValueError, SyntaxError) as err:  # PIL's UnidentifiedImageError is an OSError
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"cannot read image {path} ({reason}); replace or remove the file") from err


def _load_image_folder(folder: Path, transform: Callable) -> tv_datasets.ImageFolder:
    try:
        return tv_datasets.ImageFolder(str(folder), transform=transform, loader=read_image)
    except (FileNotFoundError, OSError) as err:
        raise DataError(f"cannot read images from {folder}: {' '.join(str(err).split())}") from err


def _check_same_classes(train_set: tv_datasets.ImageFolder, test_set: tv_datasets.ImageFolder,
                        train_dir: Path, test_dir: Path) -> None:
    """Labels are folder positions, so both splits must have the same class folders."""
    if train_set.classes != test_set.classes:
        only_train = sorted(set(train_set.classes) - set(test_set.classes))
        only_test = sorted(set(test_set.classes) - set(train_set.classes))
        raise DataError(f"class folders differ between {train_dir} and {test_dir}: "
                        f"only in train {only_train[:5]}, only in test {only_test[:5]} "
                        f"({len(only_train)} and {len(only_test)} in all)")


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------

def get_loaders(train_set: Dataset, valid_set: Dataset | None, test_set: Dataset, batch_size: int,
                workers: int, seed: int = 0, distributed: bool = False,
                pin_memory: bool = False) -> tuple[DataLoader, DataLoader | None, DataLoader]:
    """Build (train_loader, valid_loader or None, test_loader).

    The training loader's sampler is an :class:`EpochSampler`: call its ``set_epoch`` before each
    epoch; the order is then a function of (``seed``, epoch) alone, and, when ``distributed``, this
    rank's share of it (rank and world size from the process group), as DistributedSampler
    pads and splits it. Random transforms run with ``workers == 0`` draw from the global torch
    generator, which the caller seeds (and saves in checkpoints); in worker processes each image's
    transforms draw from a seed of (``seed``, epoch, image index), so what a worker produces does
    not depend on which worker it is or on what it produced before: a resumed run gets the
    images an uninterrupted one would. Every image is used: the last batch may be partial.
    Validation and test loaders keep the data set order; when ``distributed`` each rank gets every
    world_size-th image from its rank on (the ranks together see each image exactly once, so
    their sums add up to the whole set's; the training order instead is padded so that every
    rank takes the same number of steps). ``batch_size`` is per process. Worker processes
    (``workers > 0``) are started once and kept alive across epochs; :func:`shutdown_workers`
    ends them.
    """
    train_loader = get_train_loader(train_set, batch_size, workers, seed, distributed, pin_memory)
    valid_loader = (get_test_loader(valid_set, batch_size, workers, distributed, pin_memory)
                    if valid_set is not None else None)
    test_loader = get_test_loader(test_set, batch_size, workers, distributed, pin_memory)
    return train_loader, valid_loader, test_loader


def get_train_loader(train_set: Dataset, batch_size: int, workers: int, seed: int = 0, distributed: bool = False,
                     pin_memory: bool = False) -> DataLoader:
    """The training loader of :func:`get_loaders` alone (a phase of a multi-phase run builds one
    per phase): an :class:`EpochSampler` over ``train_set``, ``batch_size`` images per process."""
    common = _loader_options(batch_size, workers, pin_memory)
    generator = torch.Generator()
    generator.manual_seed(seed)
    rank, world_size = 0, 1
    if distributed:
        rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    sampler = EpochSampler(len(train_set), seed=seed, rank=rank, world_size=world_size)
    return DataLoader(_SeededItems(train_set), sampler=sampler, generator=generator, **common)


def get_test_loader(test_set: Dataset, batch_size: int, workers: int, distributed: bool = False,
                    pin_memory: bool = False) -> DataLoader:
    """An evaluation loader as :func:`get_loaders` builds them: ``test_set`` in order (under
    ``distributed``, this rank's shard of it)."""
    if distributed:
        test_set = _eval_shard(test_set, torch.distributed.get_rank(), torch.distributed.get_world_size())
    return DataLoader(test_set, shuffle=False, **_loader_options(batch_size, workers, pin_memory))


def _loader_options(batch_size: int, workers: int, pin_memory: bool) -> dict:
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1; got {batch_size}")
    if workers < 0:
        raise DataError(f"workers must be 0 or more; got {workers}")
    return dict(batch_size=batch_size, num_workers=workers, pin_memory=pin_memory,
                persistent_workers=workers > 0, worker_init_fn=_seed_worker, drop_last=False)


def shutdown_workers(*loaders: DataLoader | DeviceLoader | None) -> None:
    """End the kept-alive worker processes of these loaders now (joined; a worker that does not
    stop in time is terminated) instead of whenever the loader is garbage collected. A loader
    used again afterwards starts new workers. Anything else (None, a DeviceLoader) is skipped."""
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None) if isinstance(loader, DataLoader) else None
        if iterator is None:
            continue
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        loader._iterator = None


def _epoch_order(size: int, seed: int, epoch: int, rank: int, world_size: int) -> Tensor:
    """This rank's training order of an epoch: a permutation of range(size) drawn from (seed, epoch)
    alone, the same on every rank, padded by repeating its head to a multiple of world_size (as
    DistributedSampler does, so every rank takes as many steps), then every world_size-th item
    from ``rank`` on."""
    order = torch.randperm(size, generator=_epoch_generator(seed, epoch))
    padded = -(-size // world_size) * world_size
    if padded > size:
        order = torch.cat([order, order.repeat(-(-(padded - size) // size))[:padded - size]])
    return order[rank::world_size]


def _mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 values (wrapping arithmetic): a cheap bijective scramble."""
    values = values + np.uint64(0x9E3779B97F4A7C15)
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


class EpochSampler(Sampler):
    """The training sampler of :func:`get_loaders`: yields (image index, image seed) pairs.

    :meth:`set_epoch` picks the epoch; the order is :func:`_epoch_order` of (seed, epoch, rank,
    world_size), the image seed a 63-bit function of (seed, epoch, index), so both depend on
    nothing that happened in earlier epochs (nor on how many processes ran them, for the seeds).
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if size < 1:
            raise DataError("the training set is empty")
        if not 0 <= rank < world_size:
            raise DataError(f"rank must lie in [0, world_size) = [0, {world_size}); got {rank}")
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Use epoch ``epoch``'s order and image seeds from the next iteration on, leaving out its
        first ``skip`` items (already trained on before a mid-epoch checkpoint)."""
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return -(-self.size // self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        base = np.random.SeedSequence([self.seed, self.epoch, 0xA0A]).generate_state(1, dtype=np.uint64)[0]
        order = _epoch_order(self.size, self.seed, self.epoch, self.rank, self.world_size).numpy()
        seeds = _mix64(order.astype(np.uint64) ^ base) >> np.uint64(1)
        yield from zip(order.tolist()[self.skip:], seeds.tolist()[self.skip:])


class _SeededItems(Dataset):
    """``dataset[index]`` for the (index, seed) keys of an :class:`EpochSampler`. In a loader worker
    the global torch, numpy and random generators are first seeded with the image's seed; in the
    training process (no workers) the key's seed is unused and the transforms draw from the
    process's own (seeded, checkpointed) generators."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> object:
        index, seed = key
        if get_worker_info() is not None:
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
        return self.dataset[index]


def _eval_shard(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    """Every world_size-th item of ``dataset`` from ``rank`` on (the whole set for one process)."""
    if world_size == 1:
        return dataset
    return Subset(dataset, range(rank, len(dataset), world_size))


# ---------------------------------------------------------------------------------------------
# CIFAR held on the training device (--data_on_device)
# ---------------------------------------------------------------------------------------------

def _epoch_generator(*entropy: int) -> torch.Generator:
    """A CPU generator seeded from the given integers (seed, epoch[, rank]) and nothing else."""
    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0]))
    return generator


def draw_crops_and_flips(count: int, padding: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Random-crop offsets and flips for ``count`` images, as RandomCrop(size, padding) +
    RandomHorizontalFlip draw them: (top, left) each uniform in 0..2*padding (offsets in the
    padded image; ``padding`` is no shift) and flip True with probability 1/2. CPU int64 / bool."""
    top = torch.randint(0, 2 * padding + 1, (count,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (count,), generator=generator)
    flip = torch.rand(count, generator=generator) < 0.5
    return top, left, flip


def crop_flip_normalise(images: Tensor, top: Tensor, left: Tensor, flip: Tensor, padding: int,
                        mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Augment and normalise a uint8 batch (B, H, W, C) on its own device, in one gather.

    Each image is zero-padded by ``padding`` on every side, cropped back to H x W at (top[i],
    left[i]) in the padded image, mirrored left-right where flip[i], then turned into float32
    (B, C, H, W) as ToTensor + Normalize(mean, std) do (x / 255, minus mean, over std). With
    top = left = padding and no flip the result equals the test transform exactly, and any
    offsets/flips equal torchvision's RandomCrop(padding=padding) + hflip with those parameters.
    """
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"images must be a uint8 batch (B, H, W, C), got {images.dtype} {tuple(images.shape)}")
    batch, height, width, _ = images.shape
    device = images.device
    top, left, flip = top.to(device), left.to(device), flip.to(device)
    if padding > 0:
        images = F.pad(images, (0, 0, padding, padding, padding, padding))
    rows = top.view(-1, 1) + torch.arange(height, device=device)
    columns = torch.arange(width, device=device)
    columns = torch.where(flip.view(-1, 1), width - 1 - columns, columns) + left.view(-1, 1)
    picked = images[torch.arange(batch, device=device).view(-1, 1, 1), rows.view(batch, height, 1),
                    columns.view(batch, 1, width)]
    # The same float32 operations, in the same order, as ToTensor and Normalize.
    x = picked.permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return x.sub(mean_t).div(std_t)


class DeviceLoader:
    """Batches of a CIFAR split made on ``device`` from uint8 images held there (--data_on_device).

    The split (B, H, W, C uint8, 3 KB per image) is copied to the device once. Each epoch
    (:meth:`set_epoch`) a training loader draws a permutation from (seed, epoch) alone, the same
    on every rank, and takes this rank's share as DistributedSampler does (padded to a multiple
    of world_size, then every world_size-th item from its rank); its crops and flips
    (:func:`draw_crops_and_flips`) come from (seed, epoch, rank). An evaluation loader
    (``train=False``) keeps the data set order, does not augment, and takes every
    world_size-th image from its rank on (no padding). Iterating yields (images float32 (B, C,
    H, W) normalised, labels int64 (B,)) on the device; the last batch may be partial, as with
    :func:`get_loaders`.
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], device: torch.device | str, train: bool, padding: int = 0,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise DataError(f"DeviceLoader needs uint8 images (N, H, W, C), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise DataError(f"DeviceLoader got {labels.shape[0] if labels.dim() else 0} labels for "
                            f"{images.shape[0]} images")
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1; got {batch_size}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank must lie in [0, world_size) = [0, {world_size}); got {rank}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.train = train
        self.padding = padding if train else 0
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.skip_batches = 0

    def __repr__(self) -> str:
        return (f"DeviceLoader({len(self.images)} images on {self.device}, batch_size={self.batch_size}, "
                f"train={self.train}, rank={self.rank}/{self.world_size})")

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Use epoch ``epoch``'s order and augmentation from the next iteration on, leaving out its
        first ``skip_batches`` batches (already trained on before a mid-epoch checkpoint)."""
        self.epoch, self.skip_batches = epoch, skip_batches

    def _local_indices(self) -> Tensor:
        size = len(self.images)
        if not self.train:
            return torch.arange(self.rank, size, self.world_size)
        return _epoch_order(size, self.seed, self.epoch, self.rank, self.world_size)

    def __len__(self) -> int:
        if self.train:
            local = -(-len(self.images) // self.world_size)
        else:
            local = len(range(self.rank, len(self.images), self.world_size))
        return -(-local // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        indices = self._local_indices()
        if self.train:
            top, left, flip = draw_crops_and_flips(len(indices), self.padding,
                                                   _epoch_generator(self.seed, self.epoch, self.rank))
        else:
            top = left = torch.zeros(len(indices), dtype=torch.int64)
            flip = torch.zeros(len(indices), dtype=torch.bool)
        indices, top, left, flip = (t.to(self.device) for t in (indices, top, left, flip))
        for start in range(self.skip_batches * self.batch_size if self.train else 0, len(indices), self.batch_size):
            part = slice(start, start + self.batch_size)
            batch = indices[part]
            images = crop_flip_normalise(self.images[batch], top[part], left[part], flip[part], self.padding,
                                         self.mean, self.std)
            yield images, self.labels[batch]


def _uint8_split(dataset: Dataset, what: str) -> tuple[Tensor, Tensor]:
    """(images N x H x W x C uint8, labels) of a torchvision CIFAR split or a Subset of one."""
    indices = None
    base = dataset
    if isinstance(base, Subset):
        indices = list(base.indices)
        base = base.dataset
    data = getattr(base, "data", None)
    targets = getattr(base, "targets", None)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 4 or targets is None:
        raise DataError(f"--data_on_device needs CIFAR-style data held in memory as uint8 (N, H, W, C); the "
                        f"{what} set is {type(base).__name__} (use cifar10 or cifar100)")
    images = torch.from_numpy(data)
    labels = torch.as_tensor(targets, dtype=torch.int64)
    if indices is not None:
        chosen = torch.as_tensor(indices, dtype=torch.int64)
        images, labels = images[chosen], labels[chosen]
    return images, labels


def get_device_loaders(dataset: str, train_set: Dataset, valid_set: Dataset | None, test_set: Dataset,
                       batch_size: int, device: torch.device | str, seed: int = 0, rank: int = 0,
                       world_size: int = 1) -> tuple[DeviceLoader, DeviceLoader | None, DeviceLoader]:
    """(train, valid or None, test) :class:`DeviceLoader` s for the CIFAR sets of
    :func:`get_datasets` (labels_per_class subsets included): the data set's RandomCrop padding,
    flips and mean/std for training, normalisation only for validation and test. ``rank`` /
    ``world_size`` shard them as :func:`get_loaders` does under DDP. DataError for other data sets."""
    info = dataset_info(dataset)
    if dataset not in _CIFAR_CLASSES:
        raise DataError(f"--data_on_device supports {', '.join(_CIFAR_CLASSES)} (held in memory as uint8), "
                        f"not {dataset}")
    common = dict(batch_size=batch_size, mean=info.mean, std=info.std, device=device, seed=seed, rank=rank,
                  world_size=world_size)
    train = DeviceLoader(*_uint8_split(train_set, "training"), train=True, padding=info.crop_padding, **common)
    valid = DeviceLoader(*_uint8_split(valid_set, "validation"), train=False, **common) if valid_set is not None \
        else None
    test = DeviceLoader(*_uint8_split(test_set, "test"), train=False, **common)
    return train, valid, test


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a worker from its torch seed, which the loader derives from its generator."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet validation re-layout (the `python load_data.py` step)
# ---------------------------------------------------------------------------------------------

def relayout_tiny_imagenet_val(data_dir: str) -> int:
    """Move ``val/images/<file>`` to ``val/images/<wnid>/<file>`` as ``val/val_annotations.txt`` says.

    Returns how many files were moved (0 when already laid out). Every annotated file is checked
    before anything moves; files move one by one with os.replace, so an interrupted run loses
    nothing and running again finishes the job. Raises DataError when the folder is not a raw (or
    partly / fully re-laid-out) Tiny-ImageNet-200 folder, or when a move fails.
    """
    base = Path(os.path.expanduser(data_dir))
    moves = _plan_relayout(base)
    for count, (source, target) in enumerate(moves):
        try:
            target.parent.mkdir(exist_ok=True)
            os.replace(source, target)
        except OSError as err:
            raise DataError(f"could not move {source} to {target} ({err.strerror or err}); "
                            f"{count} images were moved, run again to finish") from err
    return len(moves)


def _plan_relayout(base: Path) -> list[tuple[Path, Path]]:
    """(source, target) of each file still to move; DataError if the folder is not as expected."""
    annotations = base / "val" / "val_annotations.txt"
    images_dir = base / "val" / "images"
    if not annotations.is_file() or not images_dir.is_dir():
        lacks = annotations if not annotations.is_file() else images_dir
        raise DataError(f"{base} is not an unzipped Tiny-ImageNet-200 folder: {lacks} is missing"
                        f"{_nested_tiny_hint(base)}")
    moves = []
    for line_no, (name, wnid) in enumerate(_read_annotations(annotations), start=1):
        flat, placed = images_dir / name, images_dir / wnid / name
        if placed.is_file() and flat.exists():
            raise DataError(f"{name} is both in {images_dir} and in {placed.parent}; remove one copy")
        if placed.is_file():
            continue
        if not flat.is_file():
            raise DataError(f"{name} (line {line_no} of {annotations}) is neither in {images_dir} "
                            f"nor in {placed.parent}")
        moves.append((flat, placed))
    return moves


def _read_annotations(path: Path) -> list[tuple[str, str]]:
    """(file name, wnid) per line of val_annotations.txt (tab-separated: file, wnid, box)."""
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not _plain_name(fields[0]) or not _plain_name(fields[1]):
            raise DataError(f"line {line_no} of {path} is not 'file<TAB>wnid<TAB>box': {line[:80]!r}")
        rows.append((fields[0], fields[1]))
    if not rows:
        raise DataError(f"{path} lists no images")
    return rows


def _plain_name(name: str) -> bool:
    """A bare file or folder name, so an annotation can never move a file outside val/images."""
    return bool(name) and name not in (".", "..") and "/" not in name and os.sep not in name


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: re-lay out a Tiny-ImageNet-200 validation folder; 0 on success, 2 on bad data."""
    parser = argparse.ArgumentParser(
        description="Move the Tiny-ImageNet-200 validation images into one folder per class "
                    "(run once after unzipping tiny-imagenet-200.zip).")
    parser.add_argument("--data_dir", default=DEFAULT_TINY_DIR,
                        help=f"the unzipped tiny-imagenet-200 folder (default {DEFAULT_TINY_DIR})")
    args = parser.parse_args(argv)
    try:
        moved = relayout_tiny_imagenet_val(args.data_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    images_dir = Path(os.path.expanduser(args.data_dir)) / "val" / "images"
    class_dirs = [d for d in images_dir.iterdir() if d.is_dir()]
    if moved:
        print(f"moved {moved} validation images into {len(class_dirs)} class folders under {images_dir}")
    else:
        images = sum(len(_flat_images(d)) for d in class_dirs)
        print(f"already laid out: {images_dir} holds {images} images in {len(class_dirs)} class folders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
