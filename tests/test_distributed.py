"""Training under torchrun (DistributedDataParallel, 2 CPU processes with gloo), the clean pass's
no_sync, rank-0-only output, resuming across world sizes, and the warm-up knob; SIGTERM to the
launcher ends every rank cleanly, and a NaN loss on one rank stops all of them at the same step."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from comixup import models
from comixup.core.calibration import CalibrationMeter
from comixup.mixing import comix
from comixup.train import checkpoints, distributed, methods
from comixup.train.methods import saliency as saliency_methods

import main
from tests.support.processes import (
    assert_files_intact,
    group_members,
    reductions,
    start_torchrun,
    torchrun,
    wait_for,
)
from tests.support.runs import (
    FINAL_RE,
    HEADER_RE,
    TEST_RE,
    TRAIN_RE,
    assert_one_error_line,
    base_args,
    only_experiment,
    read_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
PUBLISHED_FILES = {"log.txt", "log.pkl", "loss.png", "acc.png", "checkpoint.pth.tar", "model_best.pth.tar"}


def ddp_args(data_dir: Path, root: Path, *extra: str) -> list[str]:
    """base_args with 10 images per process and partitions of 5 (2 processes x 3 steps of 10, 10, 10)."""
    return base_args(data_dir, root, "--batch_size", "10", "--m_part", "5", *extra)


def matching(lines: list[str], pattern) -> list:
    return [m for m in map(pattern.match, lines) if m]


def _test_line(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if TEST_RE.match(line)]


# --------------------------------------------------------------------------- torchrun, 2 processes

@pytest.mark.slow  # torchrun
def test_a_single_process_checkpoint_resumes_under_ddp_where_two_processes_train_together(cifar10_dir, tmp_path,
                                                                                         capsys):
    """One epoch in this process, then torchrun resumes its checkpoint for two more: both ranks train
    and evaluate their own halves, only rank 0 prints and writes, the checkpoint keeps every rank's
    streams and evaluates in one process to the logged line. --clean_lam 0 takes only the input
    gradient in the clean pass: DDP must not wait for a reduction."""
    single = tmp_path / "single"
    assert main.main(ddp_args(cifar10_dir, single, "--clean_lam", "0")) == 0
    first = only_experiment(single) / "checkpoint.pth.tar"
    capsys.readouterr()
    root, record = tmp_path / "ddp", tmp_path / "reductions"
    result = torchrun(ddp_args(cifar10_dir, root, "--clean_lam", "0", "--epochs", "3", "--resume", str(first)),
                      tmp_path, record)
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout.splitlines()

    # every line once: rank 1 prints nothing
    assert f"=> loaded checkpoint '{first}' (epoch 1)" in out
    assert [m.group(1) for m in matching(out, HEADER_RE)] == ["001", "002"]
    assert len(matching(out, TRAIN_RE)) == len(matching(out, TEST_RE)) == 2
    assert len(matching(out, FINAL_RE)) == 1
    assert sum(line.startswith("save path : ") for line in out) == 1
    assert "=> distributed: 2 processes (gloo), 10 images per process and step, 20 in all" in out
    assert "Traceback" not in result.stderr

    # one experiment folder, written by rank 0, whose log is what was printed
    exp = only_experiment(root)
    assert {p.name for p in exp.iterdir() if not p.name.startswith("events.out.tfevents.")} == PUBLISHED_FILES
    logged = (exp / "log.txt").read_text().splitlines()
    assert [m.group(0) for m in matching(logged, TEST_RE)] == [m.group(0) for m in matching(out, TEST_RE)]

    # both ranks trained on their own half and evaluated their own half; the logs show the sums
    per_rank = [reductions(record, rank) for rank in (0, 1)]
    assert [len(calls) for calls in per_rank] == [4, 4]  # 2 epochs x (train, test)
    for index, (mine, theirs) in enumerate(zip(*per_rank, strict=True)):
        expected_count = 30 if index % 2 == 0 else 10
        assert mine["values"][3] == theirs["values"][3] == expected_count
        np.testing.assert_allclose(mine["sums"], np.add(mine["values"], theirs["values"]))
        assert mine["sums"] == theirs["sums"]
    for epoch, (train, test) in enumerate(zip(matching(out, TRAIN_RE), matching(out, TEST_RE), strict=True)):
        train_sums, test_sums = per_rank[0][2 * epoch]["sums"], per_rank[0][2 * epoch + 1]["sums"]
        assert train.group(1) == f"{train_sums[1] / train_sums[3]:.2f}"
        assert test.group(1) == f"{test_sums[1] / test_sums[3]:.2f}"
        assert test.group(4) == f"{test_sums[0] / test_sums[3]:.3f}"
        # the ECE line after it: the whole set's, from the bin counts and sums of both ranks
        whole = CalibrationMeter.from_sums(test_sums[4:])
        assert whole.count == test_sums[3] == 20
        assert out[out.index(test.group(0)) + 1].startswith(f"**Calib** ECE {whole.ece:.2f} NLL {whole.nll:.4f} ")

    # the checkpoint: plain keys, the single process's history continued, every rank's own random
    # streams (rank 0 continued the saved ones, rank 1 got fresh ones)
    checkpoint, before = read_checkpoint(exp / "checkpoint.pth.tar"), read_checkpoint(first)
    assert checkpoint["epoch"] == 3 and checkpoint["world_size"] == 2
    assert not any(key.startswith("module.") for key in checkpoint["state_dict"])
    assert checkpoint["history"]["test_acc"][:1] == before["history"]["test_acc"]
    assert not torch.equal(checkpoint["state_dict"]["linear.weight"], before["state_dict"]["linear.weight"])
    streams = checkpoint["rng_ranks"]
    assert len(streams) == 2 and streams[0]["numpy"] == checkpoint["rng"]["numpy"]
    assert streams[0]["numpy"]["key"] != streams[1]["numpy"]["key"]
    assert not torch.equal(streams[0]["torch"], streams[1]["torch"])

    # it evaluates in a single process to the logged test line (rank 0's BatchNorm statistics)
    assert main.main(ddp_args(cifar10_dir, tmp_path / "eval", "--evaluate", "--log_off",
                              "--resume", str(exp / "checkpoint.pth.tar"))) == 0
    assert _test_line(capsys) == [matching(out, TEST_RE)[-1].group(0)]


# --------------------------------------------------------------------------- torchrun, stopped

@pytest.fixture
def _no_stray_torchrun_env(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


def our_tracebacks(err: str) -> list[str]:
    """Traceback frames in the project's own files (torchrun prints its own on a signal)."""
    return re.findall(rf'File "{re.escape(str(REPO))}/[^"]+"', err)


@pytest.mark.slow  # torchrun
@pytest.mark.usefixtures("_no_stray_torchrun_env")
def test_sigterm_to_torchrun_ends_every_rank(cifar10_dir, tmp_path):
    root = tmp_path / "exp"
    process = start_torchrun(ddp_args(cifar10_dir, root, "--epochs", "30"), tmp_path)
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


@pytest.mark.slow  # torchrun
@pytest.mark.usefixtures("_no_stray_torchrun_env")
def test_a_signal_to_one_rank_while_it_evaluates_stops_both_after_the_epochs_checkpoint(cifar10_dir, tmp_path):
    """The signal reaches rank 1 alone, outside the training steps: it is recorded, both ranks finish
    evaluating and saving the epoch (their collectives stay paired), then both stop there."""
    root = tmp_path / "exp"
    process = start_torchrun(ddp_args(cifar10_dir, root, "--epochs", "3", "--comix", "False"), tmp_path,
                             COMIX_TEST_SIGNAL_IN_EVAL="SIGTERM:1")
    out, err = process.communicate(timeout=120)
    assert process.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(ours) == 2, err[-4000:]
    assert any(line.startswith("error: [rank 1] stopped by SIGTERM in epoch 0") for line in ours)
    assert any(line.startswith("error: stopped by SIGTERM in epoch 0") for line in ours), ours
    assert our_tracebacks(err) == [] and "Connection closed by peer" not in err
    exp = only_experiment(root)
    saved = read_checkpoint(exp / "checkpoint.pth.tar")
    assert saved["epoch"] == 1 and not saved.get("step")  # the whole first epoch, evaluated and saved
    assert_files_intact(exp)


@pytest.mark.slow  # torchrun
@pytest.mark.usefixtures("_no_stray_torchrun_env")
def test_a_nan_on_one_rank_stops_both_at_the_same_step(cifar10_dir, tmp_path):
    root = tmp_path / "exp"
    started = time.monotonic()
    process = start_torchrun(ddp_args(cifar10_dir, root, "--epochs", "3", "--comix", "False"), tmp_path,
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


# --------------------------------------------------------------------------- in one process

@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("clean_lam", [1.0, 0.0])
def test_the_clean_pass_reduces_nothing_itself(one_process_group, monkeypatch, clean_lam):
    """Each gradient bucket is all-reduced once per step (with the mixed backward), and the
    gradients are those of the plain model; without no_sync a clean_lam > 0 pass would reduce too."""
    torch.manual_seed(0)
    model = models.build_model("preactresnet18", 10, initial_channels=16)
    plain = models.build_model("preactresnet18", 10, initial_channels=16)
    plain.load_state_dict(model.state_dict())
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    reduced: list[int] = []

    def count(state, bucket):
        reduced.append(bucket.index())
        future = torch.futures.Future()
        future.set_result(bucket.buffer())
        return future

    ddp.register_comm_hook(None, count)
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))

    def step(net):
        method = methods.CoMixupMethod(10, comix.CoMixup(num_classes=10, m_part=4), clean_lam=clean_lam)
        np.random.seed(1)
        method(net, images, labels).loss.backward()
        grads = [p.grad.clone() for p in net.parameters()]
        net.zero_grad()
        return grads

    for _ in range(3):  # DDP rebuilds its buckets after the first step
        reduced.clear()
        ddp_grads = step(ddp)
        assert reduced and sorted(reduced) == sorted(set(reduced))
    for a, b in zip(ddp_grads, step(plain), strict=True):
        torch.testing.assert_close(a, b)

    if clean_lam > 0:  # the test has teeth
        monkeypatch.setattr(saliency_methods, "_local_gradients", lambda net: contextlib.nullcontext())
        reduced.clear()
        step(ddp)
        assert len(reduced) == 2 * len(set(reduced))


def test_other_ranks_print_no_argument_errors(cifar10_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    bad = ["--learning_rate", "-1"]
    monkeypatch.setenv("RANK", "1")
    assert main.main(base_args(cifar10_dir, tmp_path / "exp", *bad)) == 2
    assert main.main(base_args(cifar10_dir, tmp_path / "exp", "--arch", "resnet7")) == 2  # an argparse error
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    monkeypatch.setenv("RANK", "0")
    assert main.main(base_args(cifar10_dir, tmp_path / "exp", *bad)) == 2
    assert_one_error_line(capsys, "--learning_rate")


@pytest.mark.parametrize("env, extra, fragments", [
    ({"WORLD_SIZE": "two"}, [], ["WORLD_SIZE='two'", "torchrun"]),
    ({"WORLD_SIZE": "2", "RANK": "2"}, [], ["RANK=2", "0 <= RANK < WORLD_SIZE"]),
    ({"WORLD_SIZE": "2", "RANK": "0"}, ["--ngpu", "2"], ["--ngpu 2", "torchrun", "--nproc_per_node"]),
    ({}, ["--sync_bn"], ["--sync_bn needs CUDA"]),
], ids=["world-size", "rank", "ngpu", "sync-bn"])
def test_bad_launches_exit_2_with_one_line(cifar10_dir, tmp_path, capsys, monkeypatch, env, extra, fragments):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main.main(base_args(cifar10_dir, tmp_path / "exp", *extra)) == 2
    assert_one_error_line(capsys, *fragments)
    assert not (tmp_path / "exp").exists()


def test_rank_seeds_and_single_process_helpers():
    assert distributed.rank_seed(7, 0) == 7
    seeds = {distributed.rank_seed(7, rank) for rank in range(1, 9)} | {7}
    assert len(seeds) == 9 and all(0 <= s < 2 ** 32 for s in seeds)
    assert distributed.rank_seed(8, 1) != distributed.rank_seed(7, 1)
    single = distributed.DistInfo()
    assert not single.distributed and single.is_main
    assert distributed.sum_across_ranks([1, 2.5], single) == [1.0, 2.5]
    assert distributed.gather_objects({"a": 1}, single) == [{"a": 1}]
    with distributed.session(use_cuda=False) as info:  # no torchrun: no process group
        assert info == distributed.DistInfo() and not dist.is_initialized()
