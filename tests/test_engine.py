"""The training loop (engine.py's TrainingRun, learning-rate schedule and epoch seeding; main.py's
train_one_epoch): partial batches, the schedule, the epoch order; a NaN or infinite training loss
stops the run at once, naming epoch and step, with the last good checkpoint untouched; the loader
workers and the mixing threads are started once and reused every epoch, and none of them outlives
main.main; what is kept per epoch is numbers, not tensors."""
from __future__ import annotations

import math
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from comixup import models
from comixup.data.datasets import get_datasets
from comixup.data.loaders import get_loaders
from comixup.mixing import comix
from comixup.train import engine, methods

import main
from tests.support.runs import (
    SAVED_FILES,
    TRAIN_PER_CLASS,
    base_args,
    only_experiment,
    poisoned_builder,
    read_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS_PER_EPOCH = 3  # 60 generated images in batches of 20


# --------------------------------------------------------------------------- steps, schedule, epoch order

def test_train_one_epoch_partial_batches_and_small_partitions(cifar10_dir):
    """60 images in batches of 25 (25, 25, 10) with m_part 20: partitions of 20, 5 and 10."""
    train_set, _, test_set, num_classes = get_datasets("cifar10", str(cifar10_dir), labels_per_class=TRAIN_PER_CLASS)
    train_loader, _, _ = get_loaders(train_set, None, test_set, batch_size=25, workers=0, seed=0)
    torch.manual_seed(0)
    np.random.seed(0)
    model = models.build_model("preactresnet18", num_classes, initial_channels=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    mixer = comix.CoMixup(num_classes=num_classes, m_part=20)
    co_mixup = methods.CoMixupMethod(num_classes, mixer)
    stats = main.train_one_epoch(model, train_loader, optimizer, co_mixup, 0)
    assert stats["steps"] == 3
    assert stats["mix_time"] > 0
    assert np.isfinite(stats["loss"]) and stats["loss"] > 0
    assert 0 <= stats["top1"] <= stats["top5"] <= 100
    assert not torch.equal(before["linear.weight"], model.state_dict()["linear.weight"])

    vanilla = main.train_one_epoch(model, train_loader, optimizer, methods.VanillaMethod(num_classes), 1)
    assert vanilla["steps"] == 3 and vanilla["mix_time"] == 0


def test_learning_rate_schedule():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lrs = [engine.adjust_learning_rate(optimizer, epoch, 0.2, [100, 200], [0.1, 0.1])
           for epoch in (0, 99, 100, 199, 200)]
    assert lrs == pytest.approx([0.2, 0.2, 0.02, 0.02, 0.002])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.002)


def test_warmup_factor():
    factors = [engine.warmup_factor(step, 6) for step in range(8)]
    assert factors == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1, 1, 1])
    assert engine.warmup_factor(0, 4, 0.5) == pytest.approx(0.625) and engine.warmup_factor(3, 4, 0.5) == 1
    assert engine.warmup_factor(5, 0) == 1


def test_epoch_order_depends_on_seed_and_epoch_only(cifar10_dir):
    train_set, _, test_set, _ = get_datasets("cifar10", str(cifar10_dir), labels_per_class=TRAIN_PER_CLASS)

    def labels(loader, epoch):
        engine.set_train_epoch(loader, 0, epoch)
        return torch.cat([target for _, target in loader])

    def fresh():
        return get_loaders(train_set, None, test_set, batch_size=20, workers=0, seed=0)[0]

    used = fresh()
    for epoch in range(3):
        labels(used, epoch)
    assert torch.equal(labels(used, 5), labels(fresh(), 5))
    assert not torch.equal(labels(fresh(), 5), labels(fresh(), 6))


# --------------------------------------------------------------------------- a NaN or infinite loss

def poison_step(monkeypatch, at_call: int, value: float, on_poison=None) -> None:
    """Poison the training loss of one step of the method main builds (see runs.poisoned_builder)."""
    monkeypatch.setattr(methods, "build_method", poisoned_builder(methods.build_method, at_call, value, on_poison))


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(cifar10_dir, tmp_path, capsys,
                                                                        monkeypatch, value):
    root = tmp_path / "exp"
    snapshot: dict[str, bytes] = {}

    def take_snapshot():
        exp = only_experiment(root)
        snapshot.update({name: (exp / name).read_bytes() for name in SAVED_FILES})

    poison_step(monkeypatch, at_call=STEPS_PER_EPOCH + 1, value=value, on_poison=take_snapshot)  # epoch 1, step 1
    rc = main.main(base_args(cifar10_dir, root, "--epochs", "3", "--comix", "False"))
    captured = capsys.readouterr()
    assert rc == main.EXIT_DIVERGED == 3

    exp = only_experiment(root)
    checkpoint = exp / "checkpoint.pth.tar"
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    expected = "nan" if math.isnan(value) else "inf"
    assert lines[0] == (f"error: the training loss became {expected} at epoch 1, step 1 (0-based, as in the log); "
                        f"nothing of that epoch was saved; the last complete checkpoint is {checkpoint} "
                        f"(1 epoch done)")
    # nothing of epoch 1 reached the disk; epoch 2 never started
    assert {name: (exp / name).read_bytes() for name in SAVED_FILES} == snapshot
    assert read_checkpoint(checkpoint)["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in read_checkpoint(checkpoint)["state_dict"].values()
               if v.is_floating_point())
    with open(exp / "log.pkl", "rb") as f:
        assert len(pickle.load(f)["train_loss"]) == 1
    assert "[Epoch=002/003]" not in captured.out
    assert not list(exp.glob(".*.tmp"))
    assert (exp / "log.txt").read_text().splitlines()[-1] == lines[0]


def test_a_non_finite_loss_in_the_first_epoch_says_nothing_was_saved(cifar10_dir, tmp_path, capsys, monkeypatch):
    poison_step(monkeypatch, at_call=2, value=math.nan)
    assert main.main(base_args(cifar10_dir, tmp_path / "exp", "--epochs", "2", "--comix", "False")) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the training loss became nan at epoch 0, step 2 ")
    assert err.endswith("no checkpoint was saved yet")
    assert {p.name for p in only_experiment(tmp_path / "exp").iterdir()} <= {"log.txt"} | {
        p.name for p in only_experiment(tmp_path / "exp").glob("events.out.tfevents.*")}


def test_train_one_epoch_raises_on_the_bad_step(cifar10_dir):
    from comixup.data.datasets import get_datasets
    from comixup.data.loaders import get_loaders

    train_set, _, test_set, classes = get_datasets("cifar10", str(cifar10_dir), labels_per_class=6)
    loader, _, _ = get_loaders(train_set, None, test_set, batch_size=20, workers=0)
    engine.set_train_epoch(loader, 0, 4)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        model[1].bias[3] = math.inf
    with pytest.raises(main.TrainingDiverged) as raised:
        main.train_one_epoch(model, loader, optimizer, methods.VanillaMethod(classes), 4)
    assert (raised.value.epoch, raised.value.step) == (4, 0) and math.isnan(raised.value.value)


# --------------------------------------------------------------------------- loader workers and mixing threads

def child_pids() -> list[int]:
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids += [int(pid) for pid in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(pids)


def mixing_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("comix-partition"))


@pytest.mark.slow  # loader worker processes over several epochs
def test_workers_and_threads_are_reused_and_joined(cifar10_dir, tmp_path, monkeypatch):
    seen = []
    save_epoch = engine.TrainingRun.save

    def record(run, *args, **kwargs):
        save_epoch(run, *args, **kwargs)
        history = run.history
        seen.append({"children": child_pids(), "threads": mixing_threads(), "history_types":
                     {type(v) for values in history.values() for v in values}})

    monkeypatch.setattr(engine.TrainingRun, "save", record)
    before = child_pids()
    assert main.main(base_args(cifar10_dir, tmp_path / "exp", "--epochs", "3", "--workers", "2")) == 0
    assert len(seen) == 3
    assert len(seen[0]["children"]) == 4  # 2 training + 2 test workers, started in epoch 0...
    assert all(epoch["children"] == seen[0]["children"] for epoch in seen)  # ...and the same ones after
    assert len(seen[0]["threads"]) == 2 and all(epoch["threads"] == seen[0]["threads"] for epoch in seen)
    assert all(epoch["history_types"] == {float} for epoch in seen)  # no tensors kept per epoch
    assert child_pids() == before and mixing_threads() == []  # joined before main returned


def test_workers_are_joined_when_the_run_fails(cifar10_dir, tmp_path, monkeypatch):
    """A failure in the middle of the run (here a checkpoint that cannot be saved) joins them too."""
    def failing_save(*args, **kwargs):
        raise OSError(28, "No space left on device", "checkpoint.pth.tar")

    monkeypatch.setattr(engine.TrainingRun, "save", failing_save)
    before = child_pids()
    assert main.main(base_args(cifar10_dir, tmp_path / "exp", "--epochs", "3", "--workers", "2")) == 1
    assert child_pids() == before and mixing_threads() == []
