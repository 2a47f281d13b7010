"""Helpers for tests that run main.py in child processes (tests/support/main_fake_cifar.py, alone or under
torchrun) and watch them from outside: start, wait, signal, and look for what outlived them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

CHILD = Path(__file__).resolve().parent / "main_fake_cifar.py"


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    # No warnings (a DataLoader's about a small machine, say): stderr must hold only the run's own report.
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore", **extra)
    return env


def start(argv: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    """The child in a session (and process group) of its own, so that its descendants can be found."""
    return subprocess.Popen([sys.executable, str(CHILD), *argv], cwd=cwd, env=child_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


STANDALONE_PAIR = ("--standalone", "--nproc_per_node", "2")


def start_torchrun(argv: list[str], cwd: Path, launcher: Sequence[str] = STANDALONE_PAIR,
                   **env: str) -> subprocess.Popen:
    """``torchrun LAUNCHER`` (default: 2 processes, standalone) of the child, in a session of its own
    as in start()."""
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, str(CHILD), *argv]
    return subprocess.Popen(command, cwd=cwd, env=child_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, state) of every live process in process group ``pgid`` (from /proc; zombies count too)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:
            members.append((int(entry), fields[0]))
    return members


def wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended (rc {process.returncode}) before {what}:\n{out[-2000:]}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def log_has(exp_root: Path, text: str) -> bool:
    return any(text in log.read_text() for log in exp_root.glob("*/log.txt"))


def finish(process: subprocess.Popen, timeout: float = 90) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def assert_files_intact(exp: Path) -> None:
    """Every checkpoint on disk loads; log.pkl unpickles; no temporary file is left."""
    import pickle

    from comixup.train.checkpoints import load_checkpoint

    checkpoints = sorted(exp.glob("*.pth.tar"))
    assert checkpoints
    for path in checkpoints:
        load_checkpoint(path)
    with open(exp / "log.pkl", "rb") as f:
        pickle.load(f)
    assert not list(exp.glob(".*.tmp"))


def run_args(data: Path, root: Path, epochs: int, *extra: str) -> list[str]:
    from tests.support.runs import base_args

    return base_args(data, root, "--epochs", str(epochs), "--workers", "2", *extra)


def torchrun(argv: list[str], cwd: Path, record: Path | None = None) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 tests/support/main_fake_cifar.py ARGV`` on the CPU."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    if record is not None:
        record.mkdir()
        env["COMIX_TEST_REDUCTIONS"] = str(record)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(CHILD), *argv]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False)


def reductions(record: Path, rank: int) -> list[dict]:
    with open(record / f"rank{rank}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]
