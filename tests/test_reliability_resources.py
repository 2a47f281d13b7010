"""Resources over a run: the loader workers and the mixing threads are started once and reused
every epoch, and none of them outlives main.main; what is kept per epoch is numbers, not tensors."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import engine
import main
from runs import base_args

pytestmark = pytest.mark.usefixtures("one_thread")


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
