"""The CIFAR-10-C / CIFAR-100-C reader (comixup.data.cifar_c) on folders written in the release's
format: the pairing of a release with the data set's classes, checked both ways, and the files
beyond the 15 standard corruptions that Puzzle Mix's test_robust.py averages."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytest

from comixup.data import cifar_c
from comixup.data.datasets import DataError

import main
from tests.support.runs import one_error_line

PAIRING_HINT = "CIFAR-10-C goes with --dataset cifar10, CIFAR-100-C with cifar100"


def write_release(folder: Path, test_labels: np.ndarray, corruptions: tuple[str, ...]) -> Path:
    """A folder in the release's format: labels.npy (uint8, as released), the test labels once per
    severity, and per corruption 5 x n uint8 images whose pixels are the image's index plus 50 x
    the corruption's position, so that reading the wrong file or severity shows."""
    folder.mkdir(parents=True)
    np.save(folder / "labels.npy", np.tile(test_labels.astype(np.uint8), cifar_c.SEVERITIES))
    count = cifar_c.SEVERITIES * len(test_labels)
    for position, name in enumerate(corruptions):
        pixels = (np.arange(count) + 50 * position) % 256
        images = np.broadcast_to(pixels[:, None, None, None], (count, *cifar_c.IMAGE_SHAPE)).astype(np.uint8)
        np.save(folder / f"{name}.npy", images)
    return folder


def shuffled_classes(num_classes: int, seed: int = 0) -> np.ndarray:
    """Every class once, in a random order: a test set's labels in miniature."""
    return np.random.default_rng(seed).permutation(num_classes)


# --------------------------------------------------------------------------- the pairing, both ways

@pytest.mark.parametrize("release_classes, dataset_classes, held, needed", [
    (10, 100, "the labels of CIFAR-10-C (classes 0 to 9)", "those of CIFAR-100-C (every class 0 to 99)"),
    (100, 10, "the labels of CIFAR-100-C (classes 0 to 99)", "those of CIFAR-10-C (every class 0 to 9)"),
])
def test_a_release_for_the_other_cifar_is_refused_with_one_line(tmp_path, release_classes, dataset_classes, held,
                                                                 needed):
    folder = write_release(tmp_path / "release", shuffled_classes(release_classes), ("fog", "snow"))
    with pytest.raises(DataError) as caught:
        cifar_c.open_release(str(folder), dataset_classes)
    assert str(caught.value) == (f"{folder / 'labels.npy'} holds {held}, but the data set has {dataset_classes} "
                                 f"classes and needs {needed}: {PAIRING_HINT}")


@pytest.mark.parametrize("num_classes", [10, 100])
def test_the_well_formed_pairs_pass(tmp_path, num_classes):
    folder = write_release(tmp_path / "release", shuffled_classes(num_classes), ("snow", "fog"))
    release = cifar_c.open_release(str(folder), num_classes)
    assert release.found == ["snow", "fog"] and release.per_severity == num_classes
    assert len(release.missing) == 13
    images, labels = release.severity("fog", 2)
    assert labels.tolist() == shuffled_classes(num_classes).tolist()
    assert images[:, 0, 0, 0].tolist() == [(num_classes + i + 50) % 256 for i in range(num_classes)]


@pytest.mark.parametrize("labels, held", [
    (np.delete(np.arange(100), 42), "labels of 99 distinct classes from 0 to 99"),  # class 42 absent
    (np.arange(-1, 99), "labels of 100 distinct classes from -1 to 98"),
    (np.arange(101), "labels of the classes 0 to 100"),
    (np.full(100, 7), "labels of the one class 7"),
])
def test_classes_other_than_the_data_sets_are_refused(tmp_path, labels, held):
    folder = tmp_path / "release"
    write_release(folder, np.zeros(len(labels)), ("fog",))
    np.save(folder / "labels.npy", np.tile(labels, cifar_c.SEVERITIES))  # int64: -1 fits
    with pytest.raises(DataError) as caught:
        cifar_c.open_release(str(folder), 100)
    assert str(caught.value) == (f"{folder / 'labels.npy'} holds {held}, but the data set has 100 classes and "
                                 f"needs those of CIFAR-100-C (every class 0 to 99): {PAIRING_HINT}")


def test_main_refuses_a_cifar_10_c_release_for_cifar100_before_any_work(tmp_path, capsys):
    folder = write_release(tmp_path / "CIFAR-10-C", shuffled_classes(10), ("fog",))
    checkpoint = tmp_path / "checkpoint.pth.tar"
    checkpoint.write_bytes(b"never read: the folder is refused first")
    args = ["--evaluate", "--log_off", "--resume", str(checkpoint), "--dataset", "cifar100", "--data_dir",
            str(tmp_path / "cifar100"), "--ngpu", "0", "--corruption_dir", str(folder)]
    assert main.main(args) == 2
    line = one_error_line(capsys)
    assert line == (f"error: {folder / 'labels.npy'} holds the labels of CIFAR-10-C (classes 0 to 9), but the data "
                    f"set has 100 classes and needs those of CIFAR-100-C (every class 0 to 99): {PAIRING_HINT}")
    assert not (tmp_path / "cifar100").exists()  # nothing downloaded or built


# --------------------------------------------------------------------------- every file, as Puzzle Mix

def puzzle_mix_names(folder: Path) -> list[str]:
    """The corruptions test_robust.py averages, as it finds them: glob('*.npy') but 'labels'
    (glob's order is the file system's; sorted here, as the mean does not depend on it)."""
    names = [os.path.basename(path)[:-len(".npy")] for path in glob.glob(os.path.join(folder, "*.npy"))]
    return sorted(name for name in names if name != "labels")


def test_every_file_is_what_puzzle_mix_averages_and_the_default_is_unchanged(tmp_path):
    every = (*cifar_c.CORRUPTIONS, *cifar_c.EXTRA_CORRUPTIONS)
    folder = write_release(tmp_path / "release", shuffled_classes(10), (*reversed(every), "my_own"))
    (folder / "._fog.npy").write_bytes(b"macOS metadata")  # hidden: glob('*.npy') skips it
    (folder / "notes.txt").write_text("not a corruption")

    release = cifar_c.open_release(str(folder), 10)
    assert release.found == list(cifar_c.CORRUPTIONS) and release.missing == []
    assert release.extra_found == list(cifar_c.EXTRA_CORRUPTIONS)
    assert release.other_found == ["my_own"]
    assert release.every_file == puzzle_mix_names(folder)
    assert len(release.every_file) == 20 and release.every_file[:3] == ["brightness", "contrast", "defocus_blur"]

    checked = cifar_c.open_release(str(folder), 10, check_every_file=True)
    assert checked.every_file == release.every_file and checked.found == release.found
    images, labels = checked.severity("spatter", 5)  # an extra corruption reads as a standard one does
    position = list(reversed(every)).index("spatter")
    assert images[:, 0, 0, 0].tolist() == [(40 + i + 50 * position) % 256 for i in range(10)]
    assert labels.tolist() == shuffled_classes(10).tolist()


def test_a_bad_extra_file_is_refused_only_when_every_file_is_asked_for(tmp_path):
    folder = write_release(tmp_path / "release", shuffled_classes(10), ("fog", "saturate"))
    np.save(folder / "speckle_noise.npy", np.zeros((50, 32, 32), np.uint8))  # lost its channel axis

    release = cifar_c.open_release(str(folder), 10)
    assert release.found == ["fog"] and release.extra_found == ["speckle_noise", "saturate"]
    assert release.every_file == ["fog", "saturate", "speckle_noise"]
    with pytest.raises(DataError) as caught:
        cifar_c.open_release(str(folder), 10, check_every_file=True)
    assert str(caught.value).startswith(f"{folder / 'speckle_noise.npy'} holds uint8 images of shape (50, 32, 32), "
                                        f"expected uint8 (50, 32, 32, 3)")
    assert "\n" not in str(caught.value)


def test_a_folder_of_extras_only_is_no_standard_release(tmp_path):
    folder = write_release(tmp_path / "release", shuffled_classes(10), cifar_c.EXTRA_CORRUPTIONS)
    for check_every_file in (False, True):
        with pytest.raises(DataError, match="holds none of the 15 standard corruption files"):
            cifar_c.open_release(str(folder), 10, check_every_file=check_every_file)
