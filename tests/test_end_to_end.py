"""main.py end to end, on a tiny CIFAR-10 written in the real format: whole runs of main.main (the
files and log lines they write, resume, evaluation, --log_off, TensorBoard) and, in child
processes, a run killed with SIGKILL at any moment and resumed."""
from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import signal
import time

import numpy as np
import pytest
import torch

import main
from tests.support.processes import assert_files_intact, finish, group_members, run_args, start, wait_for
from tests.support.runs import (
    FINAL_RE,
    HEADER_RE,
    TEST_PER_CLASS,
    TEST_RE,
    TRAIN_RE,
    VALID_RE,
    base_args,
    only_experiment,
    read_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CALIB_RE = re.compile(r"^\*\*Calib\*\* ECE (\d+\.\d\d) NLL \d+\.\d{4} Conf \d+\.\d\d \((\d+) bins\)$")


@pytest.mark.parametrize("comix_on", [False, True], ids=["vanilla", "comix"])
def test_one_epoch_writes_the_published_files(cifar10_dir, tmp_path, capsys, comix_on):
    root = tmp_path / "exp"
    rc = main.main(base_args(cifar10_dir, root, "--comix", str(comix_on), "--tag", "t"))
    out = capsys.readouterr().out
    assert rc == 0

    exp = only_experiment(root)
    expected_name = "cifar10_per_6_arch_preactresnet18_eph_1_lr_0.2"
    if comix_on:
        expected_name += ("_mblock_4_mbeta_0.32_mgamma_1.0_mthres_hard0.83_meta_0.05_m_alpha_2.0"
                          "_mpart_10_niter_4_omega_0.001_set")
    assert exp.name == expected_name + "_clean_1.0_seed_0_t"
    # (plus TensorBoard's event file when tensorboard is installed)
    names = {p.name for p in exp.iterdir() if not p.name.startswith("events.out.tfevents.")}
    assert names == {"log.txt", "log.pkl", "loss.png", "acc.png", "checkpoint.pth.tar", "model_best.pth.tar"}
    assert (exp / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (exp / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    lines = (exp / "log.txt").read_text().splitlines()
    assert lines[0] == f"save path : {exp}"
    assert lines[1].startswith("{'arch': 'preactresnet18', 'batch_size': 20,")
    assert "Random Seed: 0" in lines
    assert any(line.startswith("python version : ") for line in lines)
    assert any(line.startswith("torch  version : ") for line in lines)
    assert any(line.startswith("cudnn  version : ") for line in lines)
    assert "=> creating model 'preactresnet18'" in lines
    assert "=> do not use any checkpoint for preactresnet18 model" in lines
    headers = [m for m in map(HEADER_RE.match, lines) if m]
    trains = [m for m in map(TRAIN_RE.match, lines) if m]
    tests = [m for m in map(TEST_RE.match, lines) if m]
    finals = [m for m in map(FINAL_RE.match, lines) if m]
    assert len(headers) == len(trains) == len(tests) == len(finals) == 1
    assert headers[0].groups() == ("000", "001", "0.2000", "0.00", "100.00")
    assert lines[lines.index(headers[0].group(0)) - 1] == ""  # the published blank line before each epoch
    # every log line was printed too
    for line in lines[2:]:
        assert line in out.splitlines()

    with open(exp / "log.pkl", "rb") as f:
        log = pickle.load(f)
    assert set(log) == {"train_loss", "train_acc", "test_loss", "test_acc", "test_ece"}
    assert all(len(v) == 1 for v in log.values())
    # the test set's calibration right after the Test line, as log.pkl has it
    calibration = CALIB_RE.match(lines[lines.index(tests[0].group(0)) + 1])
    assert calibration and calibration.group(1) == f"{log['test_ece'][0]:.2f}" and calibration.group(2) == "15"
    train_top1, _, train_err = map(float, trains[0].groups())
    test_top1, _, test_err, _ = map(float, tests[0].groups())
    assert f"{log['train_acc'][0]:.2f}" == trains[0].group(1)
    assert f"{log['test_acc'][0]:.2f}" == tests[0].group(1)
    assert f"{log['test_loss'][0]:.3f}" == tests[0].group(4)
    assert train_err == pytest.approx(100 - train_top1, abs=0.011)
    assert test_err == pytest.approx(100 - test_top1, abs=0.011)
    assert np.isfinite(log["train_loss"][0]) and log["train_loss"][0] > 0
    assert FINAL_RE.match(lines[-1]).groups() == (tests[0].group(1), "0.00")

    checkpoint = read_checkpoint(exp / "checkpoint.pth.tar")  # weights_only=True
    assert checkpoint["epoch"] == 1
    assert checkpoint["arch"] == "preactresnet18"
    assert checkpoint["num_classes"] == 10 and checkpoint["dataset"] == "cifar10"
    assert checkpoint["history"] == log
    assert checkpoint["best_acc"] == log["test_acc"][0]
    assert checkpoint["args"]["comix"] is comix_on and checkpoint["args"]["epochs"] == 1
    assert not any(key.startswith("module.") for key in checkpoint["state_dict"])
    assert "linear.weight" in checkpoint["state_dict"]
    assert set(checkpoint["rng"]) >= {"python", "numpy", "torch"}
    # the first epoch is the best so far, whatever its accuracy
    assert (exp / "model_best.pth.tar").read_bytes() == (exp / "checkpoint.pth.tar").read_bytes()


def test_valid_set_is_evaluated_and_logged(cifar10_dir, tmp_path):
    root = tmp_path / "exp"
    rc = main.main(base_args(cifar10_dir, root, "--comix", "False", "--labels_per_class", "4",
                             "--valid_labels_per_class", "2"))
    assert rc == 0
    exp = only_experiment(root)
    lines = (exp / "log.txt").read_text().splitlines()
    valid = [m for m in map(VALID_RE.match, lines) if m]
    assert len(valid) == 1
    with open(exp / "log.pkl", "rb") as f:
        log = pickle.load(f)
    assert f"{log['valid_acc'][0]:.2f}" == valid[0].group(1)
    assert f"{log['valid_loss'][0]:.3f}" == valid[0].group(4)


@pytest.mark.parametrize("batch,m_part", [(25, 20), (8, 20)], ids=["partial-last-batch", "batch-below-m_part"])
def test_any_batch_size_through_main(cifar10_dir, tmp_path, capsys, batch, m_part):
    root = tmp_path / "exp"
    rc = main.main(base_args(cifar10_dir, root, "--batch_size", str(batch), "--m_part", str(m_part), "--log_off"))
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert sum(bool(TRAIN_RE.match(line)) for line in out) == 1
    assert sum(bool(TEST_RE.match(line)) for line in out) == 1


@pytest.mark.slow  # three runs, six epochs
def test_resume_is_bit_identical_and_the_warmup_is_linear_per_step(cifar10_dir, tmp_path, capsys):
    """3 epochs in one go == 1 epoch, then --resume to 3 (Co-Mixup on, so numpy's state matters;
    augmentation draws from torch's; the lr drop at epoch 2 is applied after the resume too). A
    2-epoch warm-up: 60 images in batches of 20 are 3 steps per epoch, so it lasts 6 steps, and the
    resumed run continues it."""
    schedule = ["--schedule", "2", "--gammas", "0.5", "--warmup_epochs", "2"]
    straight, first, resumed = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    assert main.main(base_args(cifar10_dir, straight, "--epochs", "3", *schedule)) == 0
    headers = [m for m in map(HEADER_RE.match, capsys.readouterr().out.splitlines()) if m]
    # the header shows each epoch's first step: steps 0 and 3 of the warm-up, then the schedule's drop
    assert [m.group(3) for m in headers] == [f"{0.2 / 6:.4f}", f"{0.2 * 4 / 6:.4f}", "0.1000"]
    assert only_experiment(straight).name.endswith("_warmup_2_seed_0")
    assert main.main(base_args(cifar10_dir, first, "--epochs", "1", *schedule)) == 0
    first_ckpt = only_experiment(first) / "checkpoint.pth.tar"
    # the rate was raised every step: the last step of epoch 0 is step 2 of 6
    assert read_checkpoint(first_ckpt)["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.2 * 3 / 6)
    assert main.main(base_args(cifar10_dir, resumed, "--epochs", "3", "--resume", str(first_ckpt), *schedule)) == 0

    a = read_checkpoint(only_experiment(straight) / "checkpoint.pth.tar")
    b = read_checkpoint(only_experiment(resumed) / "checkpoint.pth.tar")
    assert a["epoch"] == b["epoch"] == 3
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    momenta_a = a["optimizer"]["state"]
    momenta_b = b["optimizer"]["state"]
    assert momenta_a.keys() == momenta_b.keys()
    for index in momenta_a:
        assert torch.equal(momenta_a[index]["momentum_buffer"], momenta_b[index]["momentum_buffer"])
    assert a["history"] == b["history"]
    assert len(a["history"]["test_acc"]) == 3
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"] == 0.1
    # the first run's weights really changed over the two resumed epochs
    c = read_checkpoint(first_ckpt)
    assert not torch.equal(c["state_dict"]["linear.weight"], b["state_dict"]["linear.weight"])

    resumed_log = (only_experiment(resumed) / "log.txt").read_text()
    assert f"=> loaded checkpoint '{first_ckpt}' (epoch 1)" in resumed_log
    assert "[Epoch=001/003]" in resumed_log and "[Epoch=000/003]" not in resumed_log


def test_evaluate_prints_the_test_line_of_the_checkpoint(cifar10_dir, tmp_path, capsys):
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root)) == 0
    trained = capsys.readouterr().out.splitlines()
    test_line = next(line for line in trained if TEST_RE.match(line))
    ckpt = only_experiment(root) / "checkpoint.pth.tar"

    eval_root = tmp_path / "eval"
    rc = main.main(base_args(cifar10_dir, eval_root, "--evaluate", "--log_off", "--parallel", "False",
                             "--resume", str(ckpt)))
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert [line for line in out if TEST_RE.match(line)] == [test_line]
    assert not any(TRAIN_RE.match(line) for line in out)
    assert not eval_root.exists()


def test_evaluate_runs_on_a_copy_with_fewer_training_images_than_labels_per_class(cifar10_dir, tmp_path, capsys):
    """Evaluation reads only the test split: a reduced copy (2 training images per class, fewer
    than the default --labels_per_class 500) evaluates as the full set does."""
    from comixup.data.synthetic import write_cifar

    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root)) == 0
    test_line = next(line for line in capsys.readouterr().out.splitlines() if TEST_RE.match(line))
    ckpt = only_experiment(root) / "checkpoint.pth.tar"
    reduced = write_cifar(tmp_path / "reduced", "cifar10", train_per_class=2, test_per_class=TEST_PER_CLASS)
    shutil.copyfile(cifar10_dir / "cifar-10-batches-py" / "test_batch", reduced / "cifar-10-batches-py" / "test_batch")
    argv = ["--dataset", "cifar10", "--data_dir", str(reduced), "--arch", "preactresnet18", "--initial_channels",
            "16", "--ngpu", "0", "--evaluate", "--log_off", "--resume", str(ckpt)]
    assert main.main(argv) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if TEST_RE.match(line)] == [test_line]


def test_log_off_writes_nothing(cifar10_dir, tmp_path, capsys):
    root = tmp_path / "exp"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main.main(base_args(cifar10_dir, root, "--log_off")) == 0
    out = capsys.readouterr().out.splitlines()
    assert not root.exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert any(TRAIN_RE.match(line) for line in out) and any(TEST_RE.match(line) for line in out)
    assert not any(line.startswith("save path") for line in out)


def test_tensorboard_scalars_next_to_the_log(cifar10_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, "--epochs", "2")) == 0
    exp = only_experiment(root)
    events = list(exp.glob("events.out.tfevents.*"))
    assert len(events) == 1 and (exp / "log.txt").exists()
    accumulator = EventAccumulator(str(exp))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/top1", "test/loss", "test/top1", "test/ece", "learning_rate",
            "mix_seconds_per_step"} <= tags
    test_acc = [event.value for event in accumulator.Scalars("test/top1")]
    history = pickle.load(open(exp / "log.pkl", "rb"))
    assert [event.step for event in accumulator.Scalars("test/top1")] == [0, 1]
    assert test_acc == pytest.approx(history["test_acc"])
    assert all(event.value > 0 for event in accumulator.Scalars("mix_seconds_per_step"))


# --------------------------------------------------------------------------- SIGKILL and --resume

@pytest.mark.slow  # child processes
def test_sigkill_at_any_moment_then_resume_equals_an_uninterrupted_run(cifar10_dir, tmp_path):
    """One kill in the middle of epoch 1's checkpoint write (half its bytes on disk), one at a
    random moment of the resumed run, then a resume to the end: the final weights, momenta and
    history are bit-identical to an uninterrupted run's (Co-Mixup on, 2 loader workers)."""
    import torch

    from comixup.train import checkpoints

    epochs = 3  # a kill in epoch 1's checkpoint write, one in the resumed run, then the rest
    reference_root, root = tmp_path / "reference", tmp_path / "exp"
    reference = start(run_args(cifar10_dir, reference_root, epochs), tmp_path)
    killed_groups = []

    # 1. killed while the second checkpoint (after epoch 1) is half written
    marker = tmp_path / "stalled"
    first = start(run_args(cifar10_dir, root, epochs), tmp_path, COMIX_TEST_STALL_SAVE="2",
                  COMIX_TEST_MARKER=str(marker))
    wait_for(marker.exists, 90, "the stalled checkpoint write", first)
    os.kill(first.pid, signal.SIGKILL)
    assert finish(first)[0] == -signal.SIGKILL
    killed_groups.append(first.pid)
    exp = next(root.iterdir())
    checkpoint = exp / "checkpoint.pth.tar"
    assert (exp / marker.read_text()).exists()  # the half-written temporary file is there...
    assert checkpoints.load_checkpoint(checkpoint)["epoch"] == 1  # ...and the checkpoint is still epoch 0's, whole

    # 2. resumed, and killed again at a random moment (seeded)
    resumed_argv = run_args(cifar10_dir, root, epochs, "--resume", str(checkpoint))
    second = start(resumed_argv, tmp_path)
    def resumed_training() -> bool:
        text = (exp / "log.txt").read_text()
        return "=> loaded checkpoint" in text and f"[Epoch=001/{epochs:03d}]" in text.split("=> loaded checkpoint")[-1]

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


def test_a_signal_while_the_epoch_is_evaluated_stops_after_its_checkpoint(cifar10_dir, tmp_path, monkeypatch, capsys):
    """A stop signal outside the training steps is recorded; the epoch is evaluated and saved whole,
    then the run stops (exit 128 + SIGTERM) and names the checkpoint to continue from."""
    from comixup.train import fit

    evaluate, sent = fit.evaluate, []

    def signalled(*args, **kwargs):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(fit, "evaluate", signalled)
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, "--epochs", "3", "--comix", "False")) == 128 + signal.SIGTERM
    exp = only_experiment(root)
    saved = read_checkpoint(exp / "checkpoint.pth.tar")
    assert saved["epoch"] == 1 and not saved.get("step")
    lines = (exp / "log.txt").read_text().splitlines()
    assert lines[-1].startswith("error: stopped by SIGTERM in epoch 0") and "--resume" in lines[-1]
    assert len([line for line in lines if TEST_RE.match(line)]) == 1  # epoch 0 evaluated, epoch 1 not begun
