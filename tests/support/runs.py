"""Helpers for tests that run main.main on a tiny generated CIFAR-10 (see the cifar10_dir fixture)."""
from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

TRAIN_PER_CLASS = 6
TEST_PER_CLASS = 2

HEADER_RE = re.compile(r"^==>>\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] \[Epoch=(\d{3})/(\d{3})\] \[Need: \d\d:\d\d:\d\d\] "
                       r"\[learning_rate=(\d\.\d{4})\] \[Best : Accuracy=(\d+\.\d\d), Error=(\d+\.\d\d)\]$")
TRAIN_RE = re.compile(r"^\*\*Train\*\* Prec@1 (\d+\.\d\d) Prec@5 (\d+\.\d\d) Error@1 (\d+\.\d\d)$")
TEST_RE = re.compile(r"^\*\*Test \*\* Prec@1 (\d+\.\d\d) Prec@5 (\d+\.\d\d) Error@1 (\d+\.\d\d) Loss: (\d+\.\d{3}) $")
VALID_RE = re.compile(r"^\*\*Valid\*\* Prec@1 (\d+\.\d\d) Prec@5 (\d+\.\d\d) Error@1 (\d+\.\d\d) Loss: (\d+\.\d{3}) $")
FINAL_RE = re.compile(r"^final 10 epoch acc \(median\) : (\d+\.\d\d) \(\+- (\d+\.\d\d)\)$")

# what a run saves after each epoch
SAVED_FILES = ("checkpoint.pth.tar", "model_best.pth.tar", "log.pkl", "loss.png", "acc.png")


def base_args(data_dir: Path, root: Path, *extra: str) -> list[str]:
    """A 1-epoch CPU run of a narrow preactresnet18 on the generated set, partitions of 10."""
    return ["--dataset", "cifar10", "--data_dir", str(data_dir), "--root_dir", str(root),
            "--labels_per_class", str(TRAIN_PER_CLASS), "--arch", "preactresnet18", "--initial_channels", "16",
            "--batch_size", "20", "--m_part", "10", "--ngpu", "0", "--workers", "0", "--epochs", "1", *extra]


def only_experiment(root: Path) -> Path:
    folders = list(root.iterdir())
    assert len(folders) == 1, folders
    return folders[0]


def read_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def keep_first_checkpoint(monkeypatch, copy_to: Path) -> None:
    """Also copy the next run's first checkpoint (the end of its first epoch) to ``copy_to``: what a
    run stopped after one epoch leaves, so that one run of 2 epochs and a resume of this copy to 2
    compare an uninterrupted run with a resumed one."""
    from comixup.train import checkpoints

    save = checkpoints.save_checkpoint

    def save_and_keep(state, is_best, exp_dir, saved=None):
        save(state, is_best, exp_dir, saved)
        if not copy_to.exists():
            shutil.copyfile(Path(exp_dir) / checkpoints.CHECKPOINT_NAME, copy_to)

    monkeypatch.setattr(checkpoints, "save_checkpoint", save_and_keep)


def one_error_line(capsys) -> str:
    """stderr holds exactly one line, 'error: ...', and no traceback: that line."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and "Traceback" not in captured.err
    return lines[0]


def assert_one_error_line(capsys, *fragments: str) -> None:
    """stderr holds exactly one line, 'error: ...', containing every fragment, and no traceback."""
    line = one_error_line(capsys)
    for fragment in fragments:
        assert fragment in line


def poisoned_builder(build: Callable, at_call: int, value: float, on_poison: Callable[[], None] | None = None):
    """A methods.build_method whose Method multiplies the training loss of its at_call-th step
    (0-based, counted over the run) by ``value`` (nan, inf); ``on_poison()`` runs just before."""
    calls = {"n": 0}

    def build_poisoned(*args, **kwargs):
        method = build(*args, **kwargs)
        step = type(method).__call__

        class Poisoned(type(method)):
            def __call__(self, model, images, labels):
                result = step(self, model, images, labels)
                calls["n"] += 1
                if calls["n"] - 1 == at_call:
                    if on_poison is not None:
                        on_poison()
                    return dataclasses.replace(result, loss=result.loss * value)
                return result

        method.__class__ = Poisoned
        return method

    return build_poisoned
