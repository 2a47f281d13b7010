"""Long runs on shared clusters: one run per experiment folder, --resume auto, checkpoints inside an
epoch, pre-emption by SIGTERM, torchrun's elastic restarts and a two-node rendezvous
(which trains manifold mixup on data held on the device, in bf16).

Every run here is a child process (tests/support/main_fake_cifar.py: main.main on generated CIFAR files),
3 steps per epoch; the runs that are stopped and resumed must end with the weights, momenta and
history of an uninterrupted run, bit for bit.
"""
from __future__ import annotations

import os
import random
import re
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from comixup.compare import run_log
from comixup.data.synthetic import write_cifar

from tests.support.processes import STANDALONE_PAIR, finish, reductions, start, start_torchrun, wait_for
from tests.support.runs import TEST_PER_CLASS, TRAIN_PER_CLASS, base_args

pytestmark = pytest.mark.slow  # every run here is a child process

EPOCHS = 3
STEPS_PER_EPOCH = 3  # 60 images, batches of 20


def stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


def run_argv(data: Path, root: Path, workers: int, *extra: str) -> list[str]:
    return base_args(data, root, "--epochs", str(EPOCHS), "--workers", str(workers), "--method", "comix", *extra)


def only_folder(root: Path) -> Path:
    (folder,) = list(root.iterdir())
    return folder


def assert_same_training(reference: Path, resumed: Path) -> None:
    """Final checkpoints equal: weights, SGD momenta, finished epochs and per-epoch history."""
    a = torch.load(reference / "checkpoint.pth.tar", weights_only=True)
    b = torch.load(resumed / "checkpoint.pth.tar", weights_only=True)
    assert a["epoch"] == b["epoch"] == EPOCHS and "step" not in b
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][index]["momentum_buffer"])
    assert a["history"] == b["history"]


def epoch_counts(log: str) -> tuple[list[int], int]:
    """(how often each epoch's header line appears, how many **Test ** lines) in a log.txt."""
    headers = [int(m) for m in re.findall(r"\[Epoch=(\d{3})/\d{3}\]", log)]
    return [headers.count(epoch) for epoch in range(EPOCHS)], log.count("**Test ** Prec@1")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("data"), "cifar10", train_per_class=TRAIN_PER_CLASS,
                       test_per_class=TEST_PER_CLASS)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted runs (0 and 2 loader workers): both start with the module's first test that
    needs one, beside that test's own runs, and are waited for when asked for."""
    started = {}
    for workers in (0, 2):
        root = tmp_path_factory.mktemp(f"reference{workers}")
        started[workers] = root, start(run_argv(data, root, workers), root)
    made: dict[int, Path] = {}

    def folder(workers: int) -> Path:
        if workers not in made:
            root, process = started[workers]
            rc, _, err = finish(process, timeout=240)
            assert rc == 0, err[-3000:]
            made[workers] = only_folder(root)
        return made[workers]

    yield folder
    for _, process in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


# --------------------------------------------------------------------------- one run per folder

def test_a_held_folder_stops_a_second_run_and_a_killed_run_resumes_from_its_mid_epoch_checkpoint(data, reference,
                                                                                                    tmp_path):
    """--checkpoint_steps 2: checkpoints after steps 2, 4, ... of the run (mid-epoch ones included).
    The run, frozen in step 5 after step 4's checkpoint (epoch 1, step 1), holds its folder: the same
    command started again stops with one line and leaves no trace. SIGKILL: the lock dies with the
    process, and the same command with --resume auto continues from step 4 to the uninterrupted
    run's weights."""
    root = tmp_path / "exp"
    argv = run_argv(data, root, 0, "--checkpoint_steps", "2", "--resume", "auto")
    first = start(argv, tmp_path, COMIX_TEST_SIGNAL_AT="SIGSTOP:5")  # frozen in step 5, after step 4's checkpoint
    wait_for(lambda: first.poll() is None and stopped(first.pid), 60, "the run to reach step 5", first)
    folder = only_folder(root)
    assert run_log.lock_is_held(str(folder)) is True
    saved = torch.load(folder / "checkpoint.pth.tar", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 1)  # 4 steps: epoch 0 whole, then 1 step of epoch 1

    rc, _, err = finish(start(argv, tmp_path))
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert lines[0] == (f"error: the experiment folder {folder} is in use by another run (host "
                        f"{socket.gethostname()}, pid {first.pid}); wait for it to end, or give this run another "
                        f"--root_dir or --tag")
    assert torch.load(folder / "checkpoint.pth.tar", weights_only=True)["step"] == 1  # untouched

    os.kill(first.pid, signal.SIGKILL)
    assert finish(first)[0] == -signal.SIGKILL
    assert run_log.lock_is_held(str(folder)) is False  # the file is left, the lock died with the process

    rc, out, err = finish(start(argv, tmp_path))
    assert rc == 0, err[-3000:]
    assert f"=> --resume auto: continuing from {folder / 'checkpoint.pth.tar'}" in out
    assert f"=> continuing epoch 001/{EPOCHS:03d} at step 1 of {STEPS_PER_EPOCH} (a mid-epoch checkpoint)" in out
    assert_same_training(reference(0), folder)
    log = (folder / "log.txt").read_text()
    assert epoch_counts(log) == ([1] * EPOCHS, EPOCHS) and "in use by another run" not in log
    assert not (folder / ".lock").exists()  # released when the run ended


# --------------------------------------------------------------------------- pre-emption

@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_mid_epoch_then_resume_auto_equals_an_uninterrupted_run(data, reference, tmp_path, workers):
    root = tmp_path / "exp"
    argv = run_argv(data, root, workers, "--resume", "auto")
    mid_epoch = [s for s in range(EPOCHS * STEPS_PER_EPOCH) if (s + 1) % STEPS_PER_EPOCH]
    step = random.Random(workers).choice(mid_epoch)  # SIGTERM arrives during this step (0-based)
    rc, out, err = finish(start(argv, tmp_path, COMIX_TEST_SIGNAL_AT=f"SIGTERM:{step}"))
    folder = only_folder(root)
    checkpoint = folder / "checkpoint.pth.tar"
    epoch, steps = divmod(step + 1, STEPS_PER_EPOCH)  # the step finishes, then the run saves and stops
    assert rc == 128 + signal.SIGTERM, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    done = f"{epoch} epoch{'' if epoch == 1 else 's'} and {steps} step{'' if steps == 1 else 's'} done"
    assert lines[0] == (f"error: stopped by SIGTERM in epoch {epoch} (0-based, as in the log); the last complete "
                        f"checkpoint is {checkpoint} ({done}): continue with --resume {checkpoint}")
    saved = torch.load(checkpoint, weights_only=True)
    assert (saved["epoch"], saved["step"]) == (epoch, steps)
    assert not (folder / ".lock").exists()

    rc, out, err = finish(start(argv, tmp_path))
    assert rc == 0, err[-3000:]
    assert_same_training(reference(workers), folder)
    log = (folder / "log.txt").read_text()
    assert epoch_counts(log) == ([1] * EPOCHS, EPOCHS)
    assert log.count("error: stopped by SIGTERM") == 1 and log.rstrip().splitlines()[-1].startswith("final 10 epoch")


def test_a_second_signal_ends_the_run_at_once(data, tmp_path):
    """Two SIGTERMs in epoch 1's first step: the second one ends the process by the signal itself,
    before the step ends; the checkpoint on disk is still epoch 0's, complete."""
    root = tmp_path / "exp"
    rc, out, err = finish(start(run_argv(data, root, 0), tmp_path,
                                COMIX_TEST_SIGNAL_AT=f"SIGTERM+SIGTERM:{STEPS_PER_EPOCH}"))
    assert rc == -signal.SIGTERM, err[-3000:]
    saved = torch.load(only_folder(root) / "checkpoint.pth.tar", weights_only=True)
    assert saved["epoch"] == 1 and "step" not in saved


# --------------------------------------------------------------------------- torchrun

def ddp_argv(data: Path, root: Path) -> list[str]:
    """10 images per process and step: 3 steps per epoch, as in a single process."""
    return base_args(data, root, "--epochs", str(EPOCHS), "--batch_size", "10", "--m_part", "5", "--method", "comix",
                     "--resume", "auto")


def test_torchrun_restarts_the_group_after_a_worker_dies_and_logs_each_epoch_once(data, tmp_path):
    root = tmp_path / "exp"
    process = start_torchrun(ddp_argv(data, root), tmp_path, (*STANDALONE_PAIR, "--max-restarts", "1"),
                             COMIX_TEST_SIGNAL_AT="SIGKILL:4:1")  # rank 1 dies in its step 4 (epoch 1)
    rc, out, err = finish(process, timeout=240)
    assert rc == 0, err[-4000:]
    folder = only_folder(root)
    log = (folder / "log.txt").read_text()
    assert log.count("=> --resume auto: no checkpoint in") == 1  # the first attempt
    assert log.count(f"=> --resume auto: continuing from {folder / 'checkpoint.pth.tar'}") == 1  # the restart
    assert epoch_counts(log) == ([1] * EPOCHS, EPOCHS)
    assert torch.load(folder / "checkpoint.pth.tar", weights_only=True)["epoch"] == EPOCHS


def test_two_launchers_rendezvous_on_loopback_and_train_manifold_mixup_on_device_in_bf16(data, tmp_path):
    """Two torchrun launchers of one process each meet by c10d rendezvous and train together; the
    model's extra forward arguments (mix_layer, mix_fn) pass through DDP, the on-device loader shards
    the data by global rank, and autocast runs in every process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root, record = tmp_path / "exp", tmp_path / "reductions"
    record.mkdir()
    argv = base_args(data, root, "--epochs", "1", "--batch_size", "10", "--m_part", "5", "--method", "manifold",
                     "--data_on_device", "--amp", "bf16")
    launcher = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint",
                f"127.0.0.1:{port}", "--rdzv_id", "two-nodes"]
    nodes = [start_torchrun(argv, tmp_path, launcher, COMIX_TEST_REDUCTIONS=str(record)) for _ in range(2)]
    results = [finish(node, timeout=180) for node in nodes]
    assert [rc for rc, _, _ in results] == [0, 0], [err[-3000:] for _, _, err in results]
    folder = only_folder(root)
    log = (folder / "log.txt").read_text()
    assert "=> distributed: 2 processes (gloo), 10 images per process and step, 20 in all" in log
    assert log.count("**Test ** Prec@1") == 1
    assert torch.load(folder / "checkpoint.pth.tar", weights_only=True)["epoch"] == 1
    train_images, test_images = 10 * TRAIN_PER_CLASS, 10 * TEST_PER_CLASS
    for rank in (0, 1):  # each rank its half of each set, the sums the whole sets'
        train, test = reductions(record, rank)
        assert (train["values"][3], train["sums"][3]) == (train_images // 2, train_images)
        assert (test["values"][3], test["sums"][3]) == (test_images // 2, test_images)
        assert np.isfinite(train["sums"][0])
