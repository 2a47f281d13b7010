"""Tests of the data sets and loaders (comixup.data, and the published load_data.py face) on small data
written in the real on-disk formats (comixup.data.synthetic)."""
from __future__ import annotations

import errno
import hashlib
import io
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torchvision.datasets as tv_datasets
from torch.utils.data import TensorDataset

from comixup.data.datasets import CIFAR_CLASSES, DataError, dataset_info, get_datasets, read_image
from comixup.data.loaders import EpochSampler, get_loaders
from comixup.data.synthetic import CIFAR_FOLDERS, write_cifar, write_image_folder, write_tiny_imagenet_raw
from comixup.prepare.tiny_imagenet import relayout_tiny_imagenet_val

import load_data
import main
from tests.support.runs import assert_one_error_line, base_args, one_error_line, only_experiment, read_checkpoint

ROOT = Path(load_data.__file__).resolve().parent


def _annotations(tiny_dir: Path) -> dict[str, str]:
    lines = (tiny_dir / "val" / "val_annotations.txt").read_text().splitlines()
    return dict(line.split("\t")[:2] for line in lines)


def _per_class_counts(subset, num_classes: int) -> np.ndarray:
    targets = np.asarray(subset.dataset.targets)[subset.indices]
    return np.bincount(targets, minlength=num_classes)


# --- facts ---------------------------------------------------------------------------------------

def test_dataset_info_facts_and_unknown_name():
    assert set(load_data.DATASETS) == {"cifar10", "cifar100", "tiny-imagenet-200", "imagenet"}
    cifar100 = dataset_info("cifar100")
    assert (cifar100.num_classes, cifar100.image_size, cifar100.stride) == (100, 32, 1)
    assert cifar100.mean == pytest.approx((129.3 / 255, 124.1 / 255, 112.4 / 255))
    tiny = dataset_info("tiny-imagenet-200")
    assert (tiny.num_classes, tiny.image_size, tiny.stride, tiny.mean, tiny.std) == \
        (200, 64, 2, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert dataset_info("imagenet").num_classes is None
    with pytest.raises(DataError, match="cifar10"):
        dataset_info("mnist")


# --- CIFAR ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_loads_normalised_tensors(tmp_path, cifar_no_md5, name, classes):
    write_cifar(tmp_path, name, train_per_class=3, test_per_class=2)
    train, valid, test, num_classes = get_datasets(name, str(tmp_path))
    assert (len(train), len(test), num_classes, valid) == (3 * classes, 2 * classes, classes, None)
    image, label = test[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert label == test.targets[0]
    info = dataset_info(name)
    expected = (test.data[0].reshape(-1, 3).mean(0) / 255 - np.array(info.mean)) / np.array(info.std)
    assert image.mean(dim=(1, 2)).numpy() == pytest.approx(expected, abs=1e-4)
    assert train[0][0].shape == (3, 32, 32)


def test_labels_per_class_subset_and_validation(tmp_path, cifar_no_md5):
    write_cifar(tmp_path, "cifar10", train_per_class=10, test_per_class=1)
    train, valid, test, _ = get_datasets("cifar10", str(tmp_path), labels_per_class=4,
                                         valid_labels_per_class=3, seed=0)
    assert list(_per_class_counts(train, 10)) == [4] * 10
    assert list(_per_class_counts(valid, 10)) == [3] * 10
    assert not set(train.indices) & set(valid.indices)
    assert len(test) == 10

    again, valid_again, _, _ = get_datasets("cifar10", str(tmp_path), labels_per_class=4,
                                            valid_labels_per_class=3, seed=0)
    assert again.indices == train.indices and valid_again.indices == valid.indices
    other, _, _, _ = get_datasets("cifar10", str(tmp_path), labels_per_class=4,
                                  valid_labels_per_class=3, seed=1)
    assert other.indices != train.indices

    # The validation set uses the test transform (deterministic), the training subset the random one.
    raw = _pil(valid.dataset.data[valid.indices[0]])
    assert torch.equal(valid[0][0], test.transform(raw))
    torch.manual_seed(0)
    first_draw = train[0][0]
    torch.manual_seed(1)
    assert not torch.equal(train[0][0], first_draw)


def _pil(array):
    from PIL import Image
    return Image.fromarray(array)


def test_labels_per_class_none_with_validation_keeps_the_rest(tmp_path, cifar_no_md5):
    write_cifar(tmp_path, "cifar10", train_per_class=5, test_per_class=1)
    train, valid, _, _ = get_datasets("cifar10", str(tmp_path), valid_labels_per_class=2)
    assert list(_per_class_counts(train, 10)) == [3] * 10
    assert list(_per_class_counts(valid, 10)) == [2] * 10


def test_asking_more_than_a_class_has_is_an_error(tmp_path, cifar_no_md5):
    write_cifar(tmp_path, "cifar10", train_per_class=5, test_per_class=1)
    with pytest.raises(DataError, match=r"has 5 training images.*labels_per_class=4.*"
                                        r"valid_labels_per_class=2 needs 6"):
        get_datasets("cifar10", str(tmp_path), labels_per_class=4, valid_labels_per_class=2)
    with pytest.raises(DataError, match="labels_per_class must be a positive"):
        get_datasets("cifar10", str(tmp_path), labels_per_class=0)


@pytest.mark.parametrize("name, archive, folder",
                         [("cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py"),
                          ("cifar100", "cifar-100-python.tar.gz", "cifar-100-python")])
def test_download_failure_names_folder_and_archive(tmp_path, monkeypatch, name, archive, folder):
    import torchvision.datasets.cifar as cifar

    def offline_download(url, download_root, filename=None, md5=None, **kwargs):
        Path(download_root).mkdir(parents=True, exist_ok=True)  # as torchvision's download_url does
        Path(download_root, filename).write_bytes(b"partial")  # what an interrupted download leaves
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline_download)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as caught:
        get_datasets(name, str(data_dir))
    message = str(caught.value)
    assert "\n" not in message
    assert str(data_dir) in message and archive in message and folder in message
    assert "name resolution" in message
    assert not (data_dir / archive).exists()


def test_download_failure_keeps_an_archive_the_user_placed(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    def offline_download(url, download_root, filename=None, md5=None, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline_download)
    placed = tmp_path / "cifar-10-python.tar.gz"
    placed.write_bytes(b"the user's own copy")
    with pytest.raises(DataError, match="offline"):
        get_datasets("cifar10", str(tmp_path))
    assert placed.read_bytes() == b"the user's own copy"


def test_missing_cifar_without_download_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        get_datasets("cifar10", str(tmp_path), download=False)


# --- CIFAR in place but damaged: torchvision's real md5 check, offline (no cifar_no_md5 here) -----

OFFLINE_REASON = "<urlopen error [Errno -3] Temporary failure in name resolution>"


@pytest.fixture
def offline(monkeypatch):
    """No network: every URL torchvision opens fails as it does without a connection."""
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


def _truncated_archive(tmp_path: Path, data_dir: Path, name: str) -> Path:
    """The archive's layout (the extracted folder, as a gzipped tar) cut off half-way, as an
    interrupted copy leaves it, placed in ``data_dir``."""
    source = write_cifar(tmp_path / "source", name, train_per_class=1, test_per_class=1)
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as tar:
        tar.add(source / CIFAR_FOLDERS[name], arcname=CIFAR_FOLDERS[name])
    data_dir.mkdir(parents=True)
    archive = data_dir / dataset_info(name).archive
    archive.write_bytes(packed.getvalue()[:len(packed.getvalue()) // 2])
    return archive


def _publish_the_sums_of(monkeypatch, name: str, folder: Path) -> None:
    """Make the files just written in ``folder`` the published ones: torchvision's lists get their
    md5 sums, so its real check (hashing each file) passes them until they change."""
    cifar_class = CIFAR_CLASSES[name]

    def md5(file_name: str) -> str:
        return hashlib.md5((folder / file_name).read_bytes()).hexdigest()

    monkeypatch.setattr(cifar_class, "train_list", [[f, md5(f)] for f, _ in cifar_class.train_list])
    monkeypatch.setattr(cifar_class, "test_list", [[f, md5(f)] for f, _ in cifar_class.test_list])
    monkeypatch.setattr(cifar_class, "meta", {**cifar_class.meta, "md5": md5(cifar_class.meta["filename"])})


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_a_damaged_archive_in_place_is_named_with_the_fix(tmp_path, offline, name):
    info = dataset_info(name)
    data_dir = tmp_path / "data"
    archive = _truncated_archive(tmp_path, data_dir, name)
    placed = archive.read_bytes()
    with pytest.raises(DataError) as caught:
        get_datasets(name, str(data_dir))
    assert str(caught.value) == (f"{info.title}: the archive {archive} is damaged (its md5 checksum is not the "
                                 f"published one), and a download to replace it failed ({OFFLINE_REASON}); remove "
                                 f"{archive}: the next run downloads {info.archive} and extracts it")
    assert archive.read_bytes() == placed  # the user's file: named, not removed

    with pytest.raises(DataError) as caught:
        get_datasets(name, str(data_dir), download=False)
    assert str(caught.value) == (f"{info.title}: the archive {archive} is damaged (its md5 checksum is not the "
                                 f"published one) and download is off; remove {archive}, then extract the "
                                 f"official {info.archive} in {data_dir} (giving {data_dir / info.archive_folder}) "
                                 f"or run with download on")


@pytest.mark.parametrize("name, damaged", [("cifar10", "data_batch_3"), ("cifar100", "train")])
def test_an_extracted_file_that_fails_its_check_is_named_alone(tmp_path, monkeypatch, offline, name, damaged):
    info = dataset_info(name)
    data_dir = write_cifar(tmp_path / "data", name, train_per_class=2, test_per_class=1)
    folder = data_dir / info.archive_folder
    _publish_the_sums_of(monkeypatch, name, folder)
    assert len(get_datasets(name, str(data_dir))[0]) == 2 * info.num_classes  # sound files need no network

    batch = folder / damaged
    batch.write_bytes(batch.read_bytes()[:-100])  # truncated, as by a full disk
    with pytest.raises(DataError) as caught:
        get_datasets(name, str(data_dir))
    assert str(caught.value) == (f"{info.title}: the extracted file {damaged} in {folder} is damaged (its md5 "
                                 f"checksum is not the published one), and a download to replace it failed "
                                 f"({OFFLINE_REASON}); remove {folder}: the next run downloads {info.archive} "
                                 f"and extracts it")


def test_a_damaged_meta_file_is_named_without_a_download_to_blame(tmp_path, monkeypatch, offline):
    """torchvision checks batches.meta only after deciding that nothing needs downloading."""
    data_dir = write_cifar(tmp_path / "data", "cifar10", train_per_class=1, test_per_class=1)
    folder = data_dir / "cifar-10-batches-py"
    _publish_the_sums_of(monkeypatch, "cifar10", folder)
    (folder / "batches.meta").write_bytes(b"\x80\x02}q\x00.")  # an empty dict: a readable pickle, the wrong one
    with pytest.raises(DataError) as caught:
        get_datasets("cifar10", str(data_dir))
    assert str(caught.value) == (f"CIFAR-10: the extracted file batches.meta in {folder} is damaged (its md5 "
                                 f"checksum is not the published one); remove {folder}: the next run downloads "
                                 f"cifar-10-python.tar.gz and extracts it")


def test_files_that_all_fail_their_check_and_a_damaged_archive_are_all_named(tmp_path, offline):
    data_dir = tmp_path / "data"
    archive = _truncated_archive(tmp_path, data_dir, "cifar100")
    write_cifar(data_dir, "cifar100", train_per_class=1, test_per_class=1)  # not the published files
    folder = data_dir / "cifar-100-python"
    with pytest.raises(DataError) as caught:
        get_datasets("cifar100", str(data_dir))
    assert str(caught.value) == (f"CIFAR-100: the extracted files train, test, meta in {folder} and the archive "
                                 f"{archive} are damaged (their md5 checksums are not the published ones), and a "
                                 f"download to replace them failed ({OFFLINE_REASON}); remove {folder} and "
                                 f"{archive}: the next run downloads cifar-100-python.tar.gz and extracts it")


# --- Tiny-ImageNet -------------------------------------------------------------------------------

def test_tiny_relayout_then_load(tmp_path):
    tiny = write_tiny_imagenet_raw(tmp_path, num_classes=3, train_per_class=4, val_per_class=2)
    with pytest.raises(DataError, match=r"run `python load_data.py --data_dir .*tiny-imagenet-200`"):
        get_datasets("tiny-imagenet-200", str(tiny))

    assert relayout_tiny_imagenet_val(str(tiny)) == 6
    annotations = _annotations(tiny)
    for name, wnid in annotations.items():
        assert (tiny / "val" / "images" / wnid / name).is_file()
    assert not list((tiny / "val" / "images").glob("*.JPEG"))
    assert relayout_tiny_imagenet_val(str(tiny)) == 0

    train, valid, test, num_classes = get_datasets("tiny-imagenet-200", str(tiny))
    assert (len(train), len(test), num_classes, valid) == (12, 6, 3, None)
    assert test.classes == train.classes == sorted(set(annotations.values()))
    for path, target in test.samples:
        assert train.classes[target] == annotations[Path(path).name]
    assert train[0][0].shape == test[0][0].shape == (3, 64, 64)
    assert test[0][0].min() >= -1 and test[0][0].max() <= 1

    sub, held_out, _, _ = get_datasets("tiny-imagenet-200", str(tiny), labels_per_class=2,
                                       valid_labels_per_class=1, seed=3)
    assert list(_per_class_counts(sub, 3)) == [2, 2, 2] and len(held_out) == 3


def test_tiny_relayout_finishes_after_interruption(tmp_path):
    tiny = write_tiny_imagenet_raw(tmp_path, num_classes=2, val_per_class=3)
    name, wnid = next(iter(_annotations(tiny).items()))
    (tiny / "val" / "images" / wnid).mkdir()
    (tiny / "val" / "images" / name).replace(tiny / "val" / "images" / wnid / name)
    assert relayout_tiny_imagenet_val(str(tiny)) == 5
    assert len(list((tiny / "val" / "images").glob("*/*.JPEG"))) == 6


def test_tiny_relayout_rejects_folders_that_are_not_raw(tmp_path):
    tiny = write_tiny_imagenet_raw(tmp_path)
    with pytest.raises(DataError, match="did you mean --data_dir"):
        relayout_tiny_imagenet_val(str(tmp_path))
    (tiny / "val" / "images" / "val_0.JPEG").unlink()
    with pytest.raises(DataError, match="val_0.JPEG .*neither in"):
        relayout_tiny_imagenet_val(str(tiny))
    assert len(list((tiny / "val" / "images").glob("*.JPEG"))) == 5  # nothing moved
    (tiny / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DataError, match="val_annotations.txt is missing"):
        relayout_tiny_imagenet_val(str(tiny))


def test_tiny_missing_folders_are_named(tmp_path):
    with pytest.raises(DataError, match=r"lacks .*train"):
        get_datasets("tiny-imagenet-200", str(tmp_path / "nowhere"))


@pytest.mark.slow  # child processes
def test_relayout_command_line(tmp_path):
    """`python load_data.py` as a command: a bad folder exits 2 with one line (the relayout itself is
    the next test's, in this process)."""
    bad = subprocess.run([sys.executable, "load_data.py", "--data_dir", str(tmp_path / "empty")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    assert "val_annotations.txt" in bad.stderr


def test_relayout_main_moves_the_images_once(tmp_path, capsys):
    tiny = write_tiny_imagenet_raw(tmp_path, num_classes=2, val_per_class=2)
    assert load_data.main(["--data_dir", str(tiny)]) == 0
    assert "moved 4 validation images into 2 class folders" in capsys.readouterr().out
    assert load_data.main(["--data_dir", str(tiny)]) == 0
    assert "already laid out" in capsys.readouterr().out.splitlines()[-1]


# --- ImageNet-style folders ----------------------------------------------------------------------

def test_imagenet_folder(tmp_path):
    write_image_folder(tmp_path, num_classes=2, per_class=2, size=32)
    train, valid, test, num_classes = get_datasets("imagenet", str(tmp_path))
    assert (len(train), len(test), num_classes, valid) == (4, 4, 2, None)
    assert train[0][0].shape == test[0][0].shape == (3, 224, 224)
    assert [t for _, t in test.samples] == [0, 0, 1, 1]


def test_imagenet_class_mismatch_is_an_error(tmp_path):
    write_image_folder(tmp_path, num_classes=2, per_class=1, splits=("train",))
    write_image_folder(tmp_path, num_classes=1, per_class=1, splits=("val",))
    with pytest.raises(DataError, match="class folders differ"):
        get_datasets("imagenet", str(tmp_path))


# --- loaders -------------------------------------------------------------------------------------

def _first_epoch(loader) -> list[int]:
    return torch.cat([batch[0] for batch in loader]).tolist()


def test_loaders_keep_partial_batches_and_seeded_order():
    data = TensorDataset(torch.arange(23))
    train, valid, test = get_loaders(data, data, data, batch_size=10, workers=0, seed=5)
    order = _first_epoch(train)
    assert sorted(order) == list(range(23)) and order != list(range(23))
    assert [len(b[0]) for b in train] == [10, 10, 3]
    assert [len(b[0]) for b in test] == [10, 10, 3]
    assert _first_epoch(test) == _first_epoch(valid) == list(range(23))
    assert _first_epoch(get_loaders(data, None, data, 10, 0, seed=5)[0]) == order
    assert _first_epoch(get_loaders(data, None, data, 10, 0, seed=6)[0]) != order
    assert get_loaders(data, None, data, 10, 0)[1] is None
    with pytest.raises(DataError, match="batch_size"):
        get_loaders(data, None, data, 0, 0)


def test_worker_augmentation_is_reproducible(tmp_path, cifar_no_md5):
    write_cifar(tmp_path, "cifar10", train_per_class=2, test_per_class=1)
    train_set, _, test_set, _ = get_datasets("cifar10", str(tmp_path))
    batches = []
    for _ in range(2):
        train_loader, _, _ = get_loaders(train_set, None, test_set, batch_size=20, workers=1, seed=0)
        assert train_loader.persistent_workers
        batches.append(next(iter(train_loader)))
        del train_loader
    assert torch.equal(batches[0][1], batches[1][1])
    assert torch.equal(batches[0][0], batches[1][0])  # same random crops and flips


def test_distributed_loader_uses_seeded_sampler(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        data = TensorDataset(torch.arange(7))
        train, _, _ = get_loaders(data, None, data, batch_size=3, workers=0, seed=4, distributed=True)
        assert isinstance(train.sampler, EpochSampler) and train.sampler.seed == 4
        order = _first_epoch(train)
        assert sorted(order) == list(range(7)) and [len(b[0]) for b in train] == [3, 3, 1]
        train.sampler.set_epoch(1)
        assert _first_epoch(train) != order
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- data main.main cannot use

@pytest.mark.usefixtures("one_thread")
def test_cifar_that_cannot_be_downloaded(tmp_path, capsys, monkeypatch):
    def offline(self):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(tv_datasets.CIFAR10, "download", offline)
    root = tmp_path / "exp"
    assert main.main(base_args(tmp_path / "data", root, "--log_off")) == 2
    line = one_error_line(capsys)
    assert "could not be downloaded" in line and "cifar-10-python.tar.gz" in line


@pytest.mark.usefixtures("one_thread")
def test_a_damaged_cifar_archive_in_place_exits_2_with_one_line(tmp_path, capsys, offline):
    data_dir = tmp_path / "data"
    archive = _truncated_archive(tmp_path, data_dir, "cifar10")
    assert main.main(base_args(data_dir, tmp_path / "exp", "--log_off")) == 2
    assert one_error_line(capsys) == (f"error: CIFAR-10: the archive {archive} is damaged (its md5 checksum is not "
                                      f"the published one), and a download to replace it failed ({OFFLINE_REASON}); "
                                      f"remove {archive}: the next run downloads cifar-10-python.tar.gz and "
                                      f"extracts it")


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("damage", ["noise", "huge-length"])
def test_a_damaged_cifar_batch_file(cifar10_dir, tmp_path, capsys, damage):
    batch = cifar10_dir / "cifar-10-batches-py" / "data_batch_3"
    if damage == "noise":
        batch.write_bytes(np.random.default_rng(3).bytes(4000))
    else:  # a pickle whose first object claims 2**40 bytes: pickle's allocation fails (MemoryError)
        batch.write_bytes(b"\x80\x04\x8e" + (2**40).to_bytes(8, "little"))
    assert main.main(base_args(cifar10_dir, tmp_path / "exp", "--log_off")) == 2
    line = one_error_line(capsys)
    assert "cannot be read" in line and "cifar-10-batches-py" in line and "delete" in line


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_image_in_an_image_folder(tmp_path, capsys, workers):
    data = write_image_folder(tmp_path / "imagenet", num_classes=2, per_class=2, size=32)
    broken = data / "val" / "class1" / "0.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(5).bytes(200))
    args = ["--dataset", "imagenet", "--data_dir", str(data), "--root_dir", str(tmp_path / "exp"),
            "--labels_per_class", "0", "--arch", "preactresnet18", "--initial_channels", "16", "--batch_size", "2",
            "--ngpu", "0", "--workers", str(workers), "--method", "vanilla", "--evaluate", "--log_off"]
    assert main.main(args) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot read image {broken}") and "replace or remove" in line


@pytest.mark.usefixtures("one_thread")
def test_too_few_images_per_class_in_an_image_folder(tmp_path, capsys):
    """ImageNet's classes differ in size: --labels_per_class is checked once its folders are read."""
    data = write_image_folder(tmp_path / "imagenet", num_classes=2, per_class=2, size=32)
    args = ["--dataset", "imagenet", "--data_dir", str(data), "--root_dir", str(tmp_path / "exp"),
            "--labels_per_class", "3", "--arch", "preactresnet18", "--initial_channels", "16", "--batch_size", "2",
            "--ngpu", "0", "--method", "vanilla", "--log_off"]
    assert main.main(args) == 2
    line = one_error_line(capsys)
    assert "class 0 (class0) has 2 training images" in line and "--labels_per_class=3" in line


@pytest.mark.usefixtures("one_thread")
def test_read_image_names_the_file(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(DataError, match=f"cannot read image {path}"):
        read_image(str(path))


@pytest.mark.usefixtures("one_thread")
def test_a_data_error_from_a_loader_worker_keeps_its_own_message():
    text = ("Caught DataError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 3, in f\n    raise DataError(...)\n'
            "load_data.DataError: cannot read image a.png (bad)\n")
    assert str(load_data.DataError(text)) == "cannot read image a.png (bad)"
    assert str(load_data.DataError("plain message")) == "plain message"


@pytest.mark.usefixtures("one_thread")
def test_data_error_exits_2_with_one_line(cifar10_dir, tmp_path, capsys):
    # the published default of 500 images per class is more than this data set holds
    args = base_args(cifar10_dir, tmp_path / "exp", "--log_off")
    args[args.index("--labels_per_class") + 1] = "500"
    assert main.main(args) == 2
    assert_one_error_line(capsys, "labels_per_class=500")


@pytest.mark.usefixtures("one_thread")
def test_labels_per_class_0_keeps_every_image(cifar10_dir, tmp_path):
    """The generated set has 6 images per class: 0 (every image) trains exactly as 6 does."""
    every, six = tmp_path / "every", tmp_path / "six"
    args = ["--comix", "False"]
    assert main.main(base_args(cifar10_dir, every, "--labels_per_class", "0", *args)) == 0
    assert main.main(base_args(cifar10_dir, six, *args)) == 0
    a = read_checkpoint(only_experiment(every) / "checkpoint.pth.tar")
    b = read_checkpoint(only_experiment(six) / "checkpoint.pth.tar")
    assert only_experiment(every).name.startswith("cifar10_per_0_")
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
