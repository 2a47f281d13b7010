"""Files that cannot be used: missing or unreadable data, damaged or foreign checkpoints, an
experiment folder that cannot be written, a disk that fills up during a save. Each gives one
``error:`` line, a non-zero exit status, and leaves what is on disk as it was."""
from __future__ import annotations

import errno
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision.datasets as tv_datasets

import checkpoints
import engine
import load_data
import main
import models
import utils
from fakedata import write_image_folder
from runs import base_args, only_experiment, read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and "Traceback" not in captured.err
    return lines[0]


# --------------------------------------------------------------------------- the experiment folder

@pytest.mark.parametrize("where", ["under-a-file", "under-proc"])
def test_an_experiment_folder_that_cannot_be_written_is_refused_before_the_data(cifar10_dir, tmp_path, capsys,
                                                                                 monkeypatch, where):
    if where == "under-a-file":
        blocker = tmp_path / "blocker"
        blocker.write_text("a regular file")
        root = blocker / "exp"
    else:
        root = Path("/proc") / f"comix-test-{os.getpid()}" / "exp"
    read = []
    monkeypatch.setattr(engine, "get_datasets", lambda *a, **k: read.append(a) or pytest.fail("data was read"))
    before = sorted(tmp_path.rglob("*"))
    assert main.main(base_args(cifar10_dir, root)) == 2
    line = one_error_line(capsys)
    assert "--root_dir" in line and str(root) in line
    assert read == [] and sorted(tmp_path.rglob("*")) == before and not root.exists()


def test_the_write_probe_leaves_nothing_behind(cifar10_dir, tmp_path):
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, "--comix", "False")) == 0
    assert not [p for p in only_experiment(root).iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- data

def test_cifar_that_cannot_be_downloaded(tmp_path, capsys, monkeypatch):
    def offline(self):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(tv_datasets.CIFAR10, "download", offline)
    root = tmp_path / "exp"
    assert main.main(base_args(tmp_path / "data", root, "--log_off")) == 2
    line = one_error_line(capsys)
    assert "could not be downloaded" in line and "cifar-10-python.tar.gz" in line


def test_a_damaged_cifar_batch_file(cifar10_dir, tmp_path, capsys):
    batch = cifar10_dir / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(os.urandom(4000))
    assert main.main(base_args(cifar10_dir, tmp_path / "exp", "--log_off")) == 2
    line = one_error_line(capsys)
    assert "cannot be read" in line and "cifar-10-batches-py" in line and "delete" in line


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_image_in_an_image_folder(tmp_path, capsys, workers):
    data = write_image_folder(tmp_path / "imagenet", num_classes=2, per_class=2, size=32)
    broken = data / "val" / "class1" / "0.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    args = ["--dataset", "imagenet", "--data_dir", str(data), "--root_dir", str(tmp_path / "exp"),
            "--labels_per_class", "0", "--arch", "preactresnet18", "--initial_channels", "16", "--batch_size", "2",
            "--ngpu", "0", "--workers", str(workers), "--method", "vanilla", "--evaluate", "--log_off"]
    assert main.main(args) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot read image {broken}") and "replace or remove" in line


def test_too_few_images_per_class_in_an_image_folder(tmp_path, capsys):
    """ImageNet's classes differ in size: --labels_per_class is checked once its folders are read."""
    data = write_image_folder(tmp_path / "imagenet", num_classes=2, per_class=2, size=32)
    args = ["--dataset", "imagenet", "--data_dir", str(data), "--root_dir", str(tmp_path / "exp"),
            "--labels_per_class", "3", "--arch", "preactresnet18", "--initial_channels", "16", "--batch_size", "2",
            "--ngpu", "0", "--method", "vanilla", "--log_off"]
    assert main.main(args) == 2
    line = one_error_line(capsys)
    assert "class 0 (class0) has 2 training images" in line and "--labels_per_class=3" in line


def test_read_image_names_the_file(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(load_data.DataError, match=f"cannot read image {path}"):
        load_data.read_image(str(path))


def test_a_data_error_from_a_loader_worker_keeps_its_own_message():
    text = ("Caught DataError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 3, in f\n    raise DataError(...)\n'
            "load_data.DataError: cannot read image a.png (bad)\n")
    assert str(load_data.DataError(text)) == "cannot read image a.png (bad)"
    assert str(load_data.DataError("plain message")) == "plain message"


# --------------------------------------------------------------------------- checkpoints

def _our_checkpoint(path: Path, arch: str = "preactresnet18", classes: int = 10, dataset: str = "cifar10") -> Path:
    model = models.build_model(arch, classes, initial_channels=16) if arch.startswith("preact") else \
        models.build_model(arch, classes)
    torch.save({"format": checkpoints.CHECKPOINT_FORMAT, "epoch": 1, "arch": arch, "state_dict": model.state_dict(),
                "optimizer": None, "best_acc": 10.0, "history": {}, "rng": None, "num_classes": classes,
                "dataset": dataset}, path)
    return path


def _damage_a_tensor(source: Path, target: Path) -> None:
    """Flip bytes inside the largest tensor of a torch.save zip (its CRC-32 no longer matches)."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        member = max(archive.infolist(), key=lambda info: info.file_size)
    start = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra) + member.file_size // 2
    data[start:start + 16] = bytes(255 - b for b in data[start:start + 16])
    target.write_bytes(bytes(data))


@pytest.fixture
def good_checkpoint(tmp_path) -> Path:
    return _our_checkpoint(tmp_path / "good.pth.tar")


@pytest.mark.parametrize("damage", ["random-bytes", "empty", "cut-3", "cut-100", "cut-half", "cut-last-byte",
                                    "damaged-tensor"])
def test_damaged_checkpoints_exit_2_and_create_nothing(cifar10_dir, tmp_path, capsys, good_checkpoint, damage):
    path = tmp_path / "damaged.pth.tar"
    data = good_checkpoint.read_bytes()
    if damage == "random-bytes":
        path.write_bytes(os.urandom(5000))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "damaged-tensor":
        _damage_a_tensor(good_checkpoint, path)
    else:
        cut = {"cut-3": 3, "cut-100": 100, "cut-half": len(data) // 2, "cut-last-byte": len(data) - 1}[damage]
        path.write_bytes(data[:cut])
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, "--resume", str(path))) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot read checkpoint {path}")
    if damage == "damaged-tensor":
        assert "CRC-32" in line
    assert not root.exists()


def test_the_undamaged_checkpoint_is_accepted(good_checkpoint):
    assert checkpoints.load_checkpoint(good_checkpoint)["epoch"] == 1


def test_a_checkpoint_of_another_architecture(cifar10_dir, tmp_path, capsys):
    path = _our_checkpoint(tmp_path / "wrn.pth.tar", arch="wrn16_8")
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, "--resume", str(path))) == 2
    line = one_error_line(capsys)
    assert "holds a wrn16_8 model" in line and "--arch preactresnet18" in line
    assert not root.exists()


def test_a_state_dict_of_another_architecture(cifar10_dir, tmp_path, capsys):
    """A bare state dict records no architecture: its keys give it away once the model is built."""
    path = tmp_path / "bare.pth"
    torch.save(models.build_model("preactresnet34", 10, initial_channels=16).state_dict(), path)
    assert main.main(base_args(cifar10_dir, tmp_path / "exp", "--evaluate", "--log_off", "--resume", str(path))) == 2
    line = one_error_line(capsys)
    assert f"checkpoint {path}" in line and "does not fit preactresnet18" in line and "unexpected keys" in line


def test_a_checkpoint_of_another_class_count(cifar10_dir, tmp_path, capsys):
    path = _our_checkpoint(tmp_path / "c100.pth.tar", classes=100, dataset="cifar100")
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, "--resume", str(path))) == 2
    line = one_error_line(capsys)
    assert "trained for 100 classes (cifar100)" in line and "--dataset cifar10 has 10" in line
    assert not root.exists()


# --------------------------------------------------------------------------- a disk that fills up

SAVED_FILES = ("checkpoint.pth.tar", "model_best.pth.tar", "log.pkl", "loss.png", "acc.png")


def test_a_full_disk_during_the_second_checkpoint_keeps_the_first(cifar10_dir, tmp_path, capsys, monkeypatch):
    """os.write, which utils.atomic_write_bytes uses, fails with ENOSPC half-way through epoch 1's
    checkpoint: the run stops with exit 1 and every file is still epoch 0's, with no temporary file."""
    root = tmp_path / "exp"
    real_write = os.write
    checkpoint_temps: list[str] = []
    snapshot: dict[str, bytes] = {}

    def filling_write(fd, data):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(".checkpoint.pth.tar.") and name.endswith(".tmp"):
            if name not in checkpoint_temps:
                checkpoint_temps.append(name)
            if len(checkpoint_temps) == 2:
                exp = only_experiment(root)
                snapshot.update({saved: (exp / saved).read_bytes() for saved in SAVED_FILES})
                real_write(fd, bytes(memoryview(data)[: len(data) // 2]))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", filling_write)
    rc = main.main(base_args(cifar10_dir, root, "--epochs", "3", "--comix", "False"))
    monkeypatch.undo()
    assert rc == main.EXIT_IO == 1
    exp = only_experiment(root)
    checkpoint = exp / "checkpoint.pth.tar"
    line = one_error_line(capsys)
    assert line == (f"error: I/O failure in epoch 1 (0-based, as in the log): No space left on device (ENOSPC): "
                    f"{checkpoint}; the last complete checkpoint is {checkpoint} (1 epoch done): continue with "
                    f"--resume {checkpoint}")
    assert snapshot and {name: (exp / name).read_bytes() for name in SAVED_FILES} == snapshot
    assert read_checkpoint(checkpoint)["epoch"] == read_checkpoint(exp / "model_best.pth.tar")["epoch"] == 1
    with open(exp / "log.pkl", "rb") as f:
        assert len(pickle.load(f)["test_acc"]) == 1
    assert not list(exp.glob(".*"))
    assert (exp / "log.txt").read_text().splitlines()[-1] == line


def test_a_full_disk_during_the_best_copy_names_the_checkpoint_just_saved(cifar10_dir, tmp_path, capsys, monkeypatch):
    """The checkpoint of epoch 0 is complete when writing model_best.pth.tar fails (no hard links
    here, and the copy hits a full disk): the line names that checkpoint as the one to resume."""
    root = tmp_path / "exp"
    real_write = os.write

    def no_link(source, target):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    def filling_write(fd, data):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".model_best.pth.tar."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(os, "write", filling_write)
    rc = main.main(base_args(cifar10_dir, root, "--epochs", "2", "--comix", "False"))
    monkeypatch.undo()
    assert rc == main.EXIT_IO
    exp = only_experiment(root)
    checkpoint = exp / "checkpoint.pth.tar"
    line = one_error_line(capsys)
    assert line == (f"error: I/O failure in epoch 0 (0-based, as in the log): No space left on device (ENOSPC): "
                    f"{exp / 'model_best.pth.tar'}; the last complete checkpoint is {checkpoint} (1 epoch done): "
                    f"continue with --resume {checkpoint}")
    assert read_checkpoint(checkpoint)["epoch"] == 1
    assert not (exp / "model_best.pth.tar").exists() and not list(exp.glob(".*"))


def test_the_best_checkpoint_is_the_same_file_not_a_second_write(tmp_path):
    """model_best.pth.tar is a hard link to the checkpoint it was made from: byte-identical, no
    second copy on disk; the next checkpoint (a new file renamed into place) leaves it alone."""
    checkpoints.save_checkpoint({"epoch": 1, "x": torch.ones(2)}, True, tmp_path)
    best, latest = tmp_path / "model_best.pth.tar", tmp_path / "checkpoint.pth.tar"
    assert os.stat(best).st_ino == os.stat(latest).st_ino and os.stat(best).st_nlink == 2
    checkpoints.save_checkpoint({"epoch": 2, "x": torch.zeros(2)}, False, tmp_path)
    assert os.stat(best).st_nlink == 1 and torch.load(best, weights_only=True)["epoch"] == 1
    assert torch.load(latest, weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth.tar", "model_best.pth.tar"]


def test_atomic_write_names_the_file_of_an_os_error(tmp_path, monkeypatch):
    target = tmp_path / "log.pkl"
    utils.atomic_pickle_dump([1], target)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as raised:
        utils.atomic_pickle_dump([2], target)
    monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert pickle.loads(target.read_bytes()) == [1] and [p.name for p in tmp_path.iterdir()] == ["log.pkl"]


def test_short_writes_are_continued_until_every_byte_is_written(tmp_path, monkeypatch):
    # os.write may take only part of a buffer (signals, pipes, some file systems)
    real_write = os.write
    calls = []

    def short(fd, data):
        calls.append(len(data))
        return real_write(fd, bytes(memoryview(data)[:7]))

    payload = list(range(200))
    monkeypatch.setattr(os, "write", short)
    utils.atomic_pickle_dump(payload, tmp_path / "log.pkl")
    monkeypatch.undo()
    assert pickle.loads((tmp_path / "log.pkl").read_bytes()) == payload
    assert len(calls) > 10 and calls == sorted(calls, reverse=True)


def test_stale_temp_files_are_found_and_removed(tmp_path):
    (tmp_path / "checkpoint.pth.tar").write_bytes(b"kept")
    (tmp_path / ".checkpoint.pth.tar.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".log.pkl.x.tmp").write_bytes(b"half")
    removed = utils.remove_stale_temp_files(tmp_path)
    assert sorted(Path(p).name for p in removed) == [".checkpoint.pth.tar.abc123.tmp", ".log.pkl.x.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth.tar"]
