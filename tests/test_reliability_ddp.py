"""Under torchrun (2 CPU processes, gloo): SIGTERM to the launcher ends every rank cleanly, and a NaN
loss on one rank stops all of them at the same step."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_reliability_signals import CHILD, assert_files_intact, child_env, group_members, wait_for

import checkpoints
from runs import base_args, only_experiment

REPO = Path(__file__).resolve().parents[1]


def torchrun(argv: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(CHILD),
               *argv]
    return subprocess.Popen(command, cwd=cwd, env=child_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def ddp_args(data_dir: Path, root: Path, *extra: str) -> list[str]:
    """10 images per process and step: 3 steps per epoch."""
    return base_args(data_dir, root, "--batch_size", "10", "--m_part", "5", *extra)


def our_tracebacks(err: str) -> list[str]:
    """Traceback frames in the project's own files (torchrun prints its own on a signal)."""
    return re.findall(rf'File "{re.escape(str(REPO))}/[^"]+"', err)


def test_sigterm_to_torchrun_ends_every_rank(cifar10_dir, tmp_path):
    root = tmp_path / "exp"
    process = torchrun(ddp_args(cifar10_dir, root, "--epochs", "30"), tmp_path)
    wait_for(lambda: any("[Epoch=001/030]" in log.read_text() for log in root.glob("*/log.txt")), 90,
             "epoch 1", process)
    os.kill(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=90)

    assert process.returncode != 0
    assert group_members(process.pid) == []  # the launcher and both ranks are gone
    exp = only_experiment(root)
    checkpoint = exp / "checkpoint.pth.tar"
    ours = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(ours) == 2, err[-4000:]
    rank0 = next(line for line in ours if "[rank 1]" not in line)
    rank1 = next(line for line in ours if "[rank 1]" in line)
    assert rank0.startswith("error: stopped by SIGTERM in epoch ") and f"continue with --resume {checkpoint}" in rank0
    assert rank1.startswith("error: [rank 1] stopped by SIGTERM in epoch ")
    assert our_tracebacks(err) == []
    assert_files_intact(exp)
    assert (exp / "log.txt").read_text().splitlines()[-1] == rank0


def test_a_nan_on_one_rank_stops_both_at_the_same_step(cifar10_dir, tmp_path):
    root = tmp_path / "exp"
    started = time.monotonic()
    process = torchrun(ddp_args(cifar10_dir, root, "--epochs", "3", "--comix", "False"), tmp_path,
                       COMIX_TEST_POISON="4:1")  # rank 1's step 1 of epoch 1
    out, err = process.communicate(timeout=120)
    assert time.monotonic() - started < 100  # no rank waited for the other in a collective
    assert process.returncode != 0
    assert re.search(r"exitcode\s*:\s*3\b", err), err[-4000:]  # torchrun's summary: a rank exited 3
    exp = only_experiment(root)
    checkpoint = exp / "checkpoint.pth.tar"
    ours = [line for line in err.splitlines() if line.startswith("error: ")]
    assert ours == [f"error: the training loss became NaN or infinite on another process at epoch 1, step 1 "
                    f"(0-based, as in the log); nothing of that epoch was saved; the last complete checkpoint is "
                    f"{checkpoint} (1 epoch done)"], err[-4000:]
    assert our_tracebacks(err) == []
    assert checkpoints.load_checkpoint(checkpoint)["epoch"] == 1
    assert "[Epoch=002/003]" not in out
    assert group_members(process.pid) == []


@pytest.fixture(autouse=True)
def _no_stray_torchrun_env(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
