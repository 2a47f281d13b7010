"""Checkpoints (checkpoints.py): the published format (pickled logger.RecorderMeter, DataParallel
keys), refusal of other pickled objects, damaged files, checkpoints of another architecture or class
count, RNG states; saving them: model_best.pth.tar is a hard link, and a disk that fills up during
a save keeps the last complete checkpoint. Each refusal is one ``error:`` line and a non-zero exit
status, and leaves what is on disk as it was."""
from __future__ import annotations

import errno
import os
import pickle
import random
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comixup import models
from comixup.data.synthetic import write_cifar
from comixup.train import checkpoints

import main
from tests.support.published import (
    PUBLISHED_EPOCHS,
    RECORDED_TEST_ACC,
    cifar_split,
    save_published_checkpoint,
    trained_model,
)
from tests.support.runs import SAVED_FILES, base_args, one_error_line, only_experiment, read_checkpoint

TEST_RE = re.compile(r"^\*\*Test \*\* Prec@1 \d+\.\d\d Prec@5 \d+\.\d\d Error@1 \d+\.\d\d Loss: \d+\.\d{3} $")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def published_files(tmp_path_factory):
    """A small CIFAR-10, and a model trained on it and saved as the published main.py did: made once
    for the module (the tests only read them)."""
    root = tmp_path_factory.mktemp("published")
    data = write_cifar(root / "data", "cifar10", train_per_class=6, test_per_class=2)
    with pytest.MonkeyPatch.context() as patch:
        import torchvision.datasets.cifar as cifar

        patch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
        model, optimizer = trained_model(data)
    path = root / "published" / "checkpoint.pth.tar"
    path.parent.mkdir()
    save_published_checkpoint(path, model, optimizer)
    return data, path, model


@pytest.fixture
def data_dir(published_files, cifar_no_md5):
    return published_files[0]


def cifar_args(data_dir: Path, root: Path, *extra: str) -> list[str]:
    """runs.base_args without its --epochs 1: the checkpoint or the test sets the epochs."""
    return ["--dataset", "cifar10", "--data_dir", str(data_dir), "--root_dir", str(root),
            "--labels_per_class", "6", "--arch", "preactresnet18", "--initial_channels", "16",
            "--batch_size", "20", "--m_part", "10", "--ngpu", "0", "--workers", "0", *extra]


@pytest.fixture
def published(published_files):
    _, path, model = published_files
    return path, model


def expected_test_line(model: torch.nn.Module, data_dir: Path) -> str:
    images, labels = cifar_split(data_dir, train=False)
    model.eval()
    with torch.no_grad():
        logits = model(images)
    top1 = (logits.argmax(1) == labels).float().mean().item() * 100
    top5 = (logits.topk(5, dim=1).indices == labels[:, None]).any(1).float().mean().item() * 100
    loss = F.binary_cross_entropy(F.softmax(logits, 1), F.one_hot(labels, 10).float()).item()
    return f"**Test ** Prec@1 {top1:.2f} Prec@5 {top5:.2f} Error@1 {100 - top1:.2f} Loss: {loss:.3f} "


def test_published_checkpoint_needs_the_allowlist(published):
    path, _ = published
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_published_checkpoint_evaluates(published, data_dir, tmp_path, capsys):
    path, model = published
    root = tmp_path / "exp"
    rc = main.main(cifar_args(data_dir, root, "--evaluate", "--log_off", "--parallel", "False", "--resume", str(path)))
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert f"=> loaded checkpoint '{path}' (epoch {PUBLISHED_EPOCHS})" in out
    assert [line for line in out if TEST_RE.match(line)] == [expected_test_line(model, data_dir)]
    assert "logger" not in sys.modules
    assert not root.exists()


def test_load_checkpoint_normalises_the_published_format(published):
    path, model = published
    loaded = checkpoints.load_checkpoint(path)
    assert loaded["source"] == "published"
    assert loaded["epoch"] == PUBLISHED_EPOCHS and loaded["arch"] == "preactresnet18"
    assert loaded["state_dict"].keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["state_dict"][key], value)
    assert loaded["history"]["test_acc"] == pytest.approx(RECORDED_TEST_ACC)
    assert loaded["history"]["train_acc"] == pytest.approx([20.0, 30.0, 40.0])
    assert loaded["history"]["test_loss"] == pytest.approx([0.04, 0.035, 0.03])
    assert len(loaded["history"]["train_loss"]) == PUBLISHED_EPOCHS
    assert loaded["best_acc"] == pytest.approx(max(RECORDED_TEST_ACC))
    assert loaded["rng"] is None


def test_published_checkpoint_with_numpy1_names_loads(published, tmp_path):
    """The real file was pickled under numpy 1, whose arrays name numpy.core.multiarray._reconstruct
    (numpy 2 moved it to numpy._core); rewrite our file's pickle to those names."""
    path, model = published
    old_names = tmp_path / "numpy1.pth.tar"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old_names, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("/data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(info, data)
    assert "numpy.core.multiarray._reconstruct" in torch.serialization.get_unsafe_globals_in_checkpoint(old_names)
    loaded = checkpoints.load_checkpoint(old_names)
    assert loaded["history"]["test_acc"] == pytest.approx(RECORDED_TEST_ACC)
    assert torch.equal(loaded["state_dict"]["linear.weight"], model.state_dict()["linear.weight"])


def test_published_checkpoint_resumes_training(published, data_dir, tmp_path, capsys):
    path, model = published
    root = tmp_path / "exp"
    rc = main.main(cifar_args(data_dir, root, "--epochs", str(PUBLISHED_EPOCHS + 1), "--comix", "False",
                             "--resume", str(path)))
    out = capsys.readouterr().out
    assert rc == 0
    best = max(RECORDED_TEST_ACC)
    assert "[Epoch=003/004]" in out and "[Epoch=002/004]" not in out
    assert f"[Best : Accuracy={best:.2f}, Error={100 - best:.2f}]" in out
    assert out.count("**Train**") == 1

    (exp,) = root.iterdir()
    checkpoint = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    assert checkpoint["epoch"] == PUBLISHED_EPOCHS + 1
    assert checkpoint["history"]["test_acc"][:3] == pytest.approx(RECORDED_TEST_ACC)
    assert len(checkpoint["history"]["test_acc"]) == PUBLISHED_EPOCHS + 1
    assert not torch.equal(checkpoint["state_dict"]["linear.weight"], model.state_dict()["linear.weight"])
    # the published momentum buffers were loaded and carried on
    assert len(checkpoint["optimizer"]["state"]) == len(list(model.parameters()))


def test_other_pickled_objects_are_refused(tmp_path, data_dir, capsys):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    model = models.build_model("preactresnet18", 10, initial_channels=16)
    path = tmp_path / "evil.pth.tar"
    torch.save({"epoch": 1, "arch": "preactresnet18", "state_dict": model.state_dict(), "extra": Payload()}, path)
    with pytest.raises(checkpoints.CheckpointError, match="refusing"):
        checkpoints.load_checkpoint(path)
    rc = main.main(cifar_args(data_dir, tmp_path / "exp", "--evaluate", "--log_off", "--resume", str(path)))
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "system" in err[0]
    assert not marker.exists()


def test_state_dict_of_another_model_exits_2(tmp_path, data_dir, capsys):
    other = models.build_model("preactresnet18", 100, initial_channels=16)  # CIFAR-100 head
    path = tmp_path / "c100.pth.tar"
    torch.save({"epoch": 2, "arch": "preactresnet18", "state_dict": other.state_dict(), "dataset": "cifar100"}, path)
    rc = main.main(cifar_args(data_dir, tmp_path / "exp", "--evaluate", "--log_off", "--resume", str(path)))
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "trained for 100 classes (cifar100) but --dataset cifar10 has 10" in err[0]


def test_corrupt_checkpoint_exits_2(tmp_path, data_dir, capsys):
    model = models.build_model("preactresnet18", 10, initial_channels=16)
    path = tmp_path / "broken.pth.tar"
    torch.save({"epoch": 1, "state_dict": model.state_dict()}, path)
    path.write_bytes(path.read_bytes()[:5000])
    rc = main.main(cifar_args(data_dir, tmp_path / "exp", "--evaluate", "--log_off", "--resume", str(path)))
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot read checkpoint {path}")


def test_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "numbers.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(checkpoints.CheckpointError, match="not a training checkpoint"):
        checkpoints.load_checkpoint(path)


def test_save_checkpoint_writes_best_only_when_asked(tmp_path):
    checkpoints.save_checkpoint({"epoch": 1, "x": torch.ones(2)}, True, tmp_path)
    checkpoints.save_checkpoint({"epoch": 2, "x": torch.zeros(2)}, False, tmp_path)
    assert torch.load(tmp_path / "checkpoint.pth.tar", weights_only=True)["epoch"] == 2
    assert torch.load(tmp_path / "model_best.pth.tar", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth.tar", "model_best.pth.tar"]


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    path = tmp_path / "rng.pt"
    torch.save(checkpoints.capture_rng_state(), path)
    draws = (random.random(), np.random.rand(3).tolist(), np.random.normal(), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    checkpoints.restore_rng_state(torch.load(path, weights_only=True))
    again = (random.random(), np.random.rand(3).tolist(), np.random.normal(), torch.rand(3))
    assert draws[:3] == again[:3]
    assert torch.equal(draws[3], again[3])


# --------------------------------------------------------------------------- damaged and foreign checkpoints

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
        path.write_bytes(np.random.default_rng(4).bytes(5000))
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


# --------------------------------------------------------------------------- saving, and a disk that fills up

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
