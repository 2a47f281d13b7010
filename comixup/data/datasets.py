"""The training data sets: CIFAR-10/100 (downloaded or read from the official archive), Tiny-ImageNet-200
and ImageNet as ImageFolders, their facts (:func:`dataset_info`), class-balanced subsets and the
published transforms. Problems with the user's data are :class:`DataError`, one line."""
from __future__ import annotations

import copy
import os
import pickle
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torchvision.datasets as tv_datasets
import torchvision.datasets.cifar as tv_cifar
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import Dataset, Subset
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


CIFAR_CLASSES = {"cifar10": tv_datasets.CIFAR10, "cifar100": tv_datasets.CIFAR100}


# ImageNet evaluation resizes the short side to this before the centre crop.
_IMAGENET_RESIZE = 256


# What torchvision raises when a CIFAR download or extraction fails (URLError is an OSError).
_DOWNLOAD_ERRORS = (OSError, RuntimeError, tarfile.TarError, EOFError)


# What reading a damaged or foreign CIFAR batch file raises (an EOFError is a truncated pickle when
# the extracted folder exists, else a truncated archive; a MemoryError a damaged length field that
# asks pickle for more bytes than the machine has).
_READ_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, IndexError, AttributeError,
                MemoryError)


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
    if dataset not in CIFAR_CLASSES:
        try:
            _folder_split_dirs(dataset, root)
        except DataError as err:
            raise DataError(f"--data_dir {data_dir}: {err}") from None


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
    if dataset in CIFAR_CLASSES:
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
        return CIFAR_CLASSES[dataset](root, train=train, transform=transform, download=download)
    except _READ_ERRORS as err:
        if isinstance(err, EOFError) and not os.path.isdir(folder):
            raise _download_error(dataset, root, download, before, err) from err
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"{info.title} in {folder} cannot be read ({type(err).__name__}: {reason}): a batch "
                        f"file is damaged or not a CIFAR file; delete {folder} (it is extracted again from "
                        f"{info.archive}, or downloaded) and run again") from err
    except _DOWNLOAD_ERRORS as err:
        raise _download_error(dataset, root, download, before, err) from err


def _download_error(dataset: str, root: str, download: bool, before: tuple[int, int] | None,
                    err: BaseException) -> DataError:
    """The DataError for a CIFAR split torchvision could neither read nor download: what is damaged
    in ``root`` when something there fails its published checksum, else what is missing.
    ``before`` is the archive's state before torchvision ran (:func:`_file_state`)."""
    info = _INFO[dataset]
    _remove_partial_archive(os.path.join(root, info.archive), before, CIFAR_CLASSES[dataset].tgz_md5)
    reason = " ".join(str(err).split()) or type(err).__name__
    damaged = _damaged_cifar_files(dataset, root)
    if damaged:
        # torchvision's RuntimeErrors are its own checks failing (e.g. of batches.meta, which it
        # checks after deciding nothing needs downloading), not a failed download.
        failure = None if isinstance(err, RuntimeError) else reason
        return _damaged_error(info, root, download, damaged, failure)
    how = "could not be downloaded" if download else "is missing and download is off"
    return DataError(f"{info.title} in {root} {how} ({reason}); place {info.archive} in {root} "
                     f"(extracting it there gives {os.path.join(root, info.archive_folder)}) "
                     f"and run again")


def _damaged_cifar_files(dataset: str, root: str) -> list[str]:
    """The CIFAR files in ``root`` that are there but fail torchvision's check against the published
    md5 sums: the extracted batch and meta files, in torchvision's order, then the archive.

    Only called once torchvision has failed (the sums of some 170 MB take a second or so, and a
    damaged archive next to good extracted files stops nothing). torchvision's own check
    (``torchvision.datasets.cifar.check_integrity``) is called, so exactly the files it refused
    are named."""
    info, cifar_class = _INFO[dataset], CIFAR_CLASSES[dataset]
    folder = os.path.join(root, info.archive_folder)
    published = [*cifar_class.train_list, *cifar_class.test_list, [cifar_class.meta["filename"],
                                                                   cifar_class.meta["md5"]]]
    files = [(os.path.join(folder, name), md5) for name, md5 in published]
    files.append((os.path.join(root, info.archive), cifar_class.tgz_md5))
    return [path for path, md5 in files if os.path.isfile(path) and not tv_cifar.check_integrity(path, md5)]


def _damaged_error(info: DatasetInfo, root: str, download: bool, damaged: list[str],
                   download_failure: str | None) -> DataError:
    """One line naming the ``damaged`` files (paths under ``root``) and what to remove so that the
    next run replaces them: the extracted folder (extracted again from a sound archive, or
    downloaded) and the archive (downloaded again). ``download_failure``: why the download that
    would have replaced them failed, None when none was tried."""
    archive = os.path.join(root, info.archive)
    folder = os.path.join(root, info.archive_folder)
    extracted = [os.path.basename(path) for path in damaged if path != archive]
    named, to_remove = [], []
    if extracted:
        named.append(f"the extracted file{'s' if len(extracted) > 1 else ''} {', '.join(extracted)} in {folder}")
        to_remove.append(folder)
    if archive in damaged:
        named.append(f"the archive {archive}")
        to_remove.append(archive)
    checksum = "their md5 checksums are not the published ones" if len(damaged) > 1 else \
        "its md5 checksum is not the published one"
    what = f"{' and '.join(named)} {'are' if len(damaged) > 1 else 'is'} damaged ({checksum})"
    remove = " and ".join(to_remove)
    if not download:
        return DataError(f"{info.title}: {what} and download is off; remove {remove}, then extract the official "
                         f"{info.archive} in {root} (giving {folder}) or run with download on")
    if archive in damaged or not os.path.isfile(archive):
        then = f"the next run downloads {info.archive} and extracts it"
    else:  # a sound archive whose extraction failed: torchvision extracts it again
        then = f"the next run extracts {info.archive_folder} again from {archive}"
    if download_failure is not None:
        what += f", and a download to replace {'them' if len(damaged) > 1 else 'it'} failed ({download_failure})"
    return DataError(f"{info.title}: {what}; remove {remove}: {then}")


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
        hint = nested_tiny_hint(base) if dataset == "tiny-imagenet-200" else ""
        raise DataError(f"{_INFO[dataset].title} folder {base} lacks {' and '.join(missing)}{hint}")
    if dataset == "tiny-imagenet-200":
        flat = flat_images(test_dir)
        if flat:
            raise DataError(f"{test_dir} still holds {len(flat)} images directly (the raw Tiny-ImageNet "
                            f"layout); run `python load_data.py --data_dir {base}` first")
    return train_dir, test_dir


def nested_tiny_hint(base: Path) -> str:
    nested = base / "tiny-imagenet-200"
    return f" (did you mean --data_dir {nested}?)" if nested.is_dir() else ""


def flat_images(folder: Path) -> list[Path]:
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
