"""A checkpoint written before the code moved into the ``comixup`` package still evaluates to the same
figures and resumes. Checkpoints hold no module paths (only tensors, numbers, strings and dicts), so
moving modules must not break them; this pins it with a real one.

tests/data/pre_move_run/ holds ``checkpoint.pth.tar`` and ``log.txt`` of a 1-epoch run made with
the flat-module code (commit 6d23635): a width-16 preactresnet18 trained by ``main.main(base_args(data,
root, "--seed", "3"))`` on the generated CIFAR-10 of the ``cifar10_dir`` fixture.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import main
from tests.support.runs import TEST_RE, base_args, only_experiment, read_checkpoint

FIXTURE = Path(__file__).resolve().parent / "data" / "pre_move_run"

pytestmark = pytest.mark.usefixtures("one_thread")


def _logged_test_line() -> str:
    lines = [line for line in (FIXTURE / "log.txt").read_text().splitlines() if TEST_RE.match(line)]
    assert len(lines) == 1
    return lines[0]


def test_pre_move_checkpoint_holds_no_module_paths():
    # every global its pickle names is one torch loads under weights_only=True: no class of ours
    assert torch.serialization.get_unsafe_globals_in_checkpoint(FIXTURE / "checkpoint.pth.tar") == []


def test_pre_move_checkpoint_evaluates_to_its_logged_test_line(cifar10_dir, tmp_path, capsys):
    rc = main.main(base_args(cifar10_dir, tmp_path / "exp", "--seed", "3", "--evaluate", "--log_off",
                             "--resume", str(FIXTURE / "checkpoint.pth.tar")))
    assert rc == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if TEST_RE.match(line)]
    assert printed == [_logged_test_line()]


def test_pre_move_checkpoint_resumes(cifar10_dir, tmp_path, capsys):
    resume_from = tmp_path / "checkpoint.pth.tar"
    shutil.copyfile(FIXTURE / "checkpoint.pth.tar", resume_from)
    root = tmp_path / "exp"
    rc = main.main(base_args(cifar10_dir, root, "--seed", "3", "--resume", str(resume_from)) + ["--epochs", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "[Epoch=000/002]" not in out and "[Epoch=001/002]" in out
    saved = read_checkpoint(only_experiment(root) / "checkpoint.pth.tar")
    assert saved["epoch"] == 2
    # the history of the first epoch comes from the old checkpoint, the second is new
    logged_acc = float(TEST_RE.match(_logged_test_line()).group(1))
    assert saved["history"]["test_acc"][0] == pytest.approx(logged_acc, abs=0.005)
    assert len(saved["history"]["test_acc"]) == 2
