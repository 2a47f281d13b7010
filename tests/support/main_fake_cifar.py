"""``python tests/support/main_fake_cifar.py ARGS``: main.main(ARGS) on CIFAR files written by synthetic.write_cifar,
for tests that start main.py in other processes (alone or under torchrun), where the cifar_no_md5
fixture cannot reach.

It lifts torchvision's md5 check as that fixture does. Test hooks, chosen by environment variables:

- COMIX_TEST_REDUCTIONS=FOLDER records every distributed.sum_across_ranks call of this process
  in ``<folder>/rank<RANK>.jsonl`` (one line per call: this rank's values and the sums it got
  back), so a test can check what each rank contributed;
- COMIX_TEST_STALL_SAVE=N and COMIX_TEST_MARKER=PATH: the N-th checkpoint write (1-based) writes
  half of its bytes, creates PATH and then waits to be killed;
- COMIX_TEST_POISON=CALL:RANK: the training loss of step CALL (0-based, counted over the run) of
  rank RANK becomes NaN;
- COMIX_TEST_SIGNAL_AT=SIGNAL:CALL[:RANK]: the process sends itself SIGNAL (a name: SIGTERM,
  SIGKILL, SIGSTOP, ...; SIGTERM+SIGTERM sends two) during step CALL of rank RANK (default 0), on
  torchrun's first attempt only, as a scheduler's pre-emption or a crash would hit it;
- COMIX_TEST_SIGNAL_IN_EVAL=SIGNAL:RANK: rank RANK sends itself SIGNAL while it evaluates its first
  epoch (the other ranks get none), on torchrun's first attempt only.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: main, tests.support


def _lift_md5_check() -> None:
    import torchvision.datasets.cifar as cifar

    cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)


def _record_reductions(folder: str) -> None:
    from comixup.train import distributed

    reduce = distributed.sum_across_ranks
    path = Path(folder) / f"rank{os.environ.get('RANK', '0')}.jsonl"

    def recording(values, info):
        sums = reduce(values, info)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"rank": info.rank, "world_size": info.world_size, "values": [float(v) for v in values],
                                "sums": sums}) + "\n")
        return sums

    distributed.sum_across_ranks = recording


def _stall_checkpoint_write(save: int, marker: str) -> None:
    from comixup.core import files

    write_fully = files._write_fully
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

    files._write_fully = stalling


def _poison(call: int, rank: int) -> None:
    from comixup.train import methods

    from tests.support.runs import poisoned_builder

    if int(os.environ.get("RANK", "0")) == rank:
        methods.build_method = poisoned_builder(methods.build_method, call, float("nan"))


def _signal_at(name: str, call: int, rank: int) -> None:
    import signal

    from comixup.train import methods

    from tests.support.runs import poisoned_builder

    if int(os.environ.get("RANK", "0")) == rank and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        def send() -> None:
            for each in name.split("+"):  # SIGTERM+SIGTERM: a second signal right after the first
                os.kill(os.getpid(), getattr(signal, each))

        methods.build_method = poisoned_builder(methods.build_method, call, 1.0, on_poison=send)


def _signal_in_eval(name: str, rank: int) -> None:
    import signal

    from comixup.train import fit

    if int(os.environ.get("RANK", "0")) != rank or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    evaluate, sent = fit.evaluate, []

    def signalled(*args, **kwargs):
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), getattr(signal, name))
        return evaluate(*args, **kwargs)

    fit.evaluate = signalled


def run(argv: list[str]) -> int:
    """main.main(argv) with the md5 check lifted and the test hooks of the module docstring applied."""
    if os.environ.get("COMIX_TEST_STALL_SAVE"):
        _stall_checkpoint_write(int(os.environ["COMIX_TEST_STALL_SAVE"]), os.environ["COMIX_TEST_MARKER"])
    if os.environ.get("COMIX_TEST_POISON"):
        call, rank = os.environ["COMIX_TEST_POISON"].split(":")
        _poison(int(call), int(rank))
    if os.environ.get("COMIX_TEST_SIGNAL_AT"):
        name, call, *rank = os.environ["COMIX_TEST_SIGNAL_AT"].split(":")
        _signal_at(name, int(call), int(rank[0]) if rank else 0)
    if os.environ.get("COMIX_TEST_SIGNAL_IN_EVAL"):
        name, rank = os.environ["COMIX_TEST_SIGNAL_IN_EVAL"].split(":")
        _signal_in_eval(name, int(rank))
    _lift_md5_check()
    folder = os.environ.get("COMIX_TEST_REDUCTIONS")
    if folder:
        _record_reductions(folder)
    import main

    return main.main(argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
