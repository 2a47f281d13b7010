"""Signals: SIGINT and SIGTERM end a run cleanly (exit 130 / 143, one line, threads and loader
workers joined, files intact, no process left behind); SIGKILL at any moment, even during a
checkpoint write, loses at most the epoch in progress, and --resume then reaches exactly the
weights of an uninterrupted run.

Run as a script, ``python tests/test_reliability_signals.py ARGS`` is main.main(ARGS) on files
written by fakedata (as tests/main_fake_cifar.py), with test hooks chosen by environment variables:
COMIX_TEST_STALL_SAVE=N and COMIX_TEST_MARKER=PATH: the N-th checkpoint write (1-based) writes
half of its bytes, creates PATH and then waits to be killed; COMIX_TEST_POISON=CALL:RANK: the
training loss of step CALL (0-based, counted over the run) of rank RANK becomes NaN.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CHILD = Path(__file__).resolve()


# --------------------------------------------------------------------------- the child process

def _stall_checkpoint_write(save: int, marker: str) -> None:
    import utils

    write_fully = utils._write_fully
    seen: list[str] = []

    def stalling(fd, data):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(".checkpoint.pth.tar.") and name.endswith(".tmp"):
            if name not in seen:
                seen.append(name)
            if len(seen) == save:
                write_fully(fd, memoryview(data)[: len(data) // 2])
                os.fsync(fd)
                # written whole before it appears: the test reads it as soon as it exists
                Path(marker + ".part").write_text(name)
                os.replace(marker + ".part", marker)
                time.sleep(600)  # until killed
        return write_fully(fd, data)

    utils._write_fully = stalling


def _poison(call: int, rank: int) -> None:
    import methods
    from runs import poisoned_builder

    if int(os.environ.get("RANK", "0")) == rank:
        methods.build_method = poisoned_builder(methods.build_method, call, float("nan"))


def child(argv: list[str]) -> int:
    sys.path.insert(0, str(TESTS))
    sys.path.insert(0, str(TESTS.parent))
    if os.environ.get("COMIX_TEST_STALL_SAVE"):
        _stall_checkpoint_write(int(os.environ["COMIX_TEST_STALL_SAVE"]), os.environ["COMIX_TEST_MARKER"])
    if os.environ.get("COMIX_TEST_POISON"):
        call, rank = os.environ["COMIX_TEST_POISON"].split(":")
        _poison(int(call), int(rank))
    import main_fake_cifar

    return main_fake_cifar.run(argv)


# --------------------------------------------------------------------------- helpers for the tests

def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    # No warnings (a DataLoader's about a small machine, say): stderr must hold only the run's own report.
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore", **extra)
    return env


def start(argv: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    """The child in a session (and process group) of its own, so that its descendants can be found."""
    return subprocess.Popen([sys.executable, str(CHILD), *argv], cwd=cwd, env=child_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


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

    from checkpoints import load_checkpoint

    checkpoints = sorted(exp.glob("*.pth.tar"))
    assert checkpoints
    for path in checkpoints:
        load_checkpoint(path)
    with open(exp / "log.pkl", "rb") as f:
        pickle.load(f)
    assert not list(exp.glob(".*.tmp"))


def run_args(data: Path, root: Path, epochs: int, *extra: str) -> list[str]:
    from runs import base_args

    return base_args(data, root, "--epochs", str(epochs), "--workers", "2", *extra)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    from fakedata import write_cifar
    from runs import TEST_PER_CLASS, TRAIN_PER_CLASS

    return write_cifar(tmp_path / "data", "cifar10", train_per_class=TRAIN_PER_CLASS, test_per_class=TEST_PER_CLASS)


# --------------------------------------------------------------------------- SIGINT / SIGTERM

@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGINT-to-the-group"])
def test_sigint_and_sigterm_end_the_run_cleanly(data_dir, tmp_path, how):
    import torch

    import checkpoints

    signum = signal.SIGTERM if how == "SIGTERM" else signal.SIGINT
    root = tmp_path / "exp"
    process = start(run_args(data_dir, root, 40), tmp_path)
    wait_for(lambda: log_has(root, "[Epoch=001/040]"), 60, "epoch 1", process)
    time.sleep(random.Random(how).uniform(0.0, 0.6))  # somewhere in epoch 1: training, evaluating or saving
    if how.endswith("group"):
        os.killpg(process.pid, signum)  # as Ctrl-C in a terminal: the loader workers get it too
    else:
        os.kill(process.pid, signum)
    rc, out, err = finish(process, timeout=60)

    assert rc == 128 + signum, err[-3000:]
    assert group_members(process.pid) == []  # no loader worker (nor anything else) outlived the run
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    name = signal.Signals(signum).name
    assert lines[0].startswith(f"error: stopped by {name} in epoch "), lines[0]

    exp = next(root.iterdir())
    assert_files_intact(exp)
    checkpoint = checkpoints.load_checkpoint(exp / "checkpoint.pth.tar")
    assert f"the last complete checkpoint is {exp / 'checkpoint.pth.tar'} ({checkpoint['epoch']} epoch" in lines[0]
    assert lines[0].endswith(f"continue with --resume {exp / 'checkpoint.pth.tar'}")
    assert (exp / "log.txt").read_text().splitlines()[-1] == lines[0]  # logged, and flushed
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


# --------------------------------------------------------------------------- SIGKILL and --resume

def test_sigkill_at_any_moment_then_resume_equals_an_uninterrupted_run(data_dir, tmp_path):
    """One kill in the middle of epoch 1's checkpoint write (half its bytes on disk), one at a
    random moment of the resumed run, then a resume to the end: the final weights, momenta and
    history are bit-identical to an uninterrupted run's (Co-Mixup on, 2 loader workers)."""
    import torch

    import checkpoints

    epochs = 5
    reference_root, root = tmp_path / "reference", tmp_path / "exp"
    reference = start(run_args(data_dir, reference_root, epochs), tmp_path)
    killed_groups = []

    # 1. killed while the second checkpoint (after epoch 1) is half written
    marker = tmp_path / "stalled"
    first = start(run_args(data_dir, root, epochs), tmp_path, COMIX_TEST_STALL_SAVE="2", COMIX_TEST_MARKER=str(marker))
    wait_for(marker.exists, 90, "the stalled checkpoint write", first)
    os.kill(first.pid, signal.SIGKILL)
    assert finish(first)[0] == -signal.SIGKILL
    killed_groups.append(first.pid)
    exp = next(root.iterdir())
    checkpoint = exp / "checkpoint.pth.tar"
    assert (exp / marker.read_text()).exists()  # the half-written temporary file is there...
    assert checkpoints.load_checkpoint(checkpoint)["epoch"] == 1  # ...and the checkpoint is still epoch 0's, whole

    # 2. resumed, and killed again at a random moment (seeded)
    resumed_argv = run_args(data_dir, root, epochs, "--resume", str(checkpoint))
    second = start(resumed_argv, tmp_path)
    def resumed_training() -> bool:
        text = (exp / "log.txt").read_text()
        return "=> loaded checkpoint" in text and "[Epoch=001/005]" in text.split("=> loaded checkpoint")[-1]

    wait_for(resumed_training, 90, "the resumed epoch", second)
    time.sleep(random.Random(5).uniform(0.0, 1.0))
    os.kill(second.pid, signal.SIGKILL)
    _, second_out, _ = finish(second)
    killed_groups.append(second.pid)
    assert f"=> removed 1 temporary file(s) of an interrupted earlier run: {marker.read_text()}" in second_out
    assert not (exp / marker.read_text()).exists()
    for path in exp.glob("*.pth.tar"):
        checkpoints.load_checkpoint(path)  # whatever moment the kill hit, every checkpoint on disk loads

    # 3. resumed to the end
    third = start(resumed_argv, tmp_path)
    rc, out, err = finish(third)
    assert rc == 0, err[-3000:]
    rc, _, err = finish(reference)
    assert rc == 0, err[-3000:]

    assert_files_intact(exp)
    a = torch.load(next(reference_root.iterdir()) / "checkpoint.pth.tar", weights_only=True)
    b = torch.load(checkpoint, weights_only=True)
    assert a["epoch"] == b["epoch"] == epochs
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][index]["momentum_buffer"])
    assert a["history"] == b["history"]

    # the killed runs' loader workers noticed and left (torch's workers check their parent every few seconds)
    wait_for(lambda: all(group_members(pgid) == [] for pgid in killed_groups), 15, "the killed runs' workers to exit")


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
