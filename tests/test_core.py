"""comixup.core: top-k accuracy, the published helpers utils.py re-exports, and the atomic files every
save goes through (a failed write keeps the old file and names the file; short writes are continued;
temporary files of a killed run are found and removed)."""
from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest
import torch

from comixup.core import files, metrics


def test_accuracy_counts_topk_with_few_classes():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    target = torch.tensor([1, 2, 0])
    top1, top2, top5 = metrics.accuracy(logits, target, topk=(1, 2, 5))
    assert top1 == pytest.approx(100 / 3)
    assert top2 == pytest.approx(200 / 3)
    assert top5 == pytest.approx(100.0)


def test_utils_reexports_the_published_helpers():
    from utils import distance, to_one_hot

    assert torch.equal(to_one_hot(torch.tensor([2, 0]), 3), torch.tensor([[0.0, 0, 1], [1, 0, 0]]))
    assert torch.equal(distance(torch.tensor([[0.0, 0], [3, 4]]), "l1"), torch.tensor([[0.0, 7], [7, 0]]))


# --------------------------------------------------------------------------- atomic files

def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "log.pkl"
    files.atomic_pickle_dump({"a": [1]}, target)

    def fail_midway(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(target, fail_midway)
    with open(target, "rb") as f:
        assert pickle.load(f) == {"a": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["log.pkl"]  # no temporary file left


def test_atomic_write_names_the_file_of_an_os_error(tmp_path, monkeypatch):
    target = tmp_path / "log.pkl"
    files.atomic_pickle_dump([1], target)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as raised:
        files.atomic_pickle_dump([2], target)
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
    files.atomic_pickle_dump(payload, tmp_path / "log.pkl")
    monkeypatch.undo()
    assert pickle.loads((tmp_path / "log.pkl").read_bytes()) == payload
    assert len(calls) > 10 and calls == sorted(calls, reverse=True)


def test_stale_temp_files_are_found_and_removed(tmp_path):
    (tmp_path / "checkpoint.pth.tar").write_bytes(b"kept")
    (tmp_path / ".checkpoint.pth.tar.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".log.pkl.x.tmp").write_bytes(b"half")
    removed = files.remove_stale_temp_files(tmp_path)
    assert sorted(Path(p).name for p in removed) == [".checkpoint.pth.tar.abc123.tmp", ".log.pkl.x.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth.tar"]


@pytest.mark.slow  # child interpreters
def test_helpers_the_loops_and_every_evaluation_module_load_no_mixing_code():
    """``utils`` (the published helpers), the checkpoint code, the loops and every module of
    ``comixup.evaluation`` load neither the mixing algorithm nor its compiled solver: tools that only
    evaluate, write files or read checkpoints stay light."""
    import subprocess
    import sys

    evaluation = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "comixup" / "evaluation").glob("*.py")
                        if p.stem != "__init__")
    assert {"report", "robustness", "reliability", "table"} <= set(evaluation)
    modules = ["utils", "comixup.train.checkpoints", "comixup.train.loop", "comixup.train.classifier",
               "comixup.localization.report", *(f"comixup.evaluation.{name}" for name in evaluation)]
    probe = (f"import sys, {', '.join(modules)}; "
             "print(sorted(m for m in sys.modules if m.startswith('comixup.mixing') or m == 'numba'))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
