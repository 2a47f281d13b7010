"""How a run ends on a signal (lifecycle.py): SIGINT and SIGTERM end a run cleanly (exit 130 / 143,
one line, threads and loader workers joined, files intact, no process left behind). The run is
main.py in a child process (tests/support/main_fake_cifar.py); SIGKILL and --resume are in
test_end_to_end.py, SIGTERM under torchrun in test_distributed.py."""
from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.support.processes import assert_files_intact, finish, group_members, log_has, run_args, start, wait_for

pytestmark = pytest.mark.slow  # the run is a child process

# --------------------------------------------------------------------------- SIGINT / SIGTERM

@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGINT-to-the-group"])
def test_sigint_and_sigterm_end_the_run_cleanly(cifar10_dir, tmp_path, how):
    import torch

    from comixup.train import checkpoints

    signum = signal.SIGTERM if how == "SIGTERM" else signal.SIGINT
    root = tmp_path / "exp"
    process = start(run_args(cifar10_dir, root, 40), tmp_path)
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
