"""The experiment folder (experiment.py): one that cannot be written is refused before the data is
read, with one ``error:`` line, exit 2 and nothing created; the write probe leaves nothing behind."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from comixup.train import engine

import main
from tests.support.runs import base_args, one_error_line, only_experiment

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("where", ["under-a-file", "under-proc"])
def test_an_experiment_folder_that_cannot_be_written_is_refused_before_the_data(cifar10_dir, tmp_path, capsys,
                                                                                 monkeypatch, where):
    if where == "under-a-file":
        blocker = tmp_path / "blocker"
        blocker.write_text("a regular file")
        root = blocker / "exp"
    else:
        root = Path("/proc") / f"comix-test-{os.getpid()}" / "exp"
    read = []
    monkeypatch.setattr(engine, "get_datasets", lambda *a, **k: read.append(a) or pytest.fail("data was read"))
    before = sorted(tmp_path.rglob("*"))
    assert main.main(base_args(cifar10_dir, root)) == 2
    line = one_error_line(capsys)
    assert "--root_dir" in line and str(root) in line
    assert read == [] and sorted(tmp_path.rglob("*")) == before and not root.exists()


def test_the_write_probe_leaves_nothing_behind(cifar10_dir, tmp_path):
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, "--comix", "False")) == 0
    assert not [p for p in only_experiment(root).iterdir() if p.name.startswith(".")]
