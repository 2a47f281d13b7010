"""``python tests/cluster_child.py ARGS``: main.main(ARGS) on generated CIFAR files (see
main_fake_cifar.py), for the cluster tests. ``COMIX_TEST_SIGNAL_AT=SIGNAL:STEP[:RANK]`` makes the
process send itself SIGNAL (a name: SIGTERM, SIGKILL, ...) during its training step STEP (0-based,
counted over the run) on rank RANK (default 0), on torchrun's first attempt only, as a scheduler's
pre-emption or a crash would hit it."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _signal_at(spec: str) -> None:
    import methods

    name, step, *rank = spec.split(":")
    if int(os.environ.get("RANK", "0")) != int(rank[0] if rank else 0):
        return
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    build = methods.build_method
    calls = {"n": 0}

    def build_signalling(*args, **kwargs):
        method = build(*args, **kwargs)
        step_fn = type(method).__call__

        class Signalling(type(method)):
            def __call__(self, model, images, labels):
                if calls["n"] == int(step):
                    os.kill(os.getpid(), getattr(signal, name))
                calls["n"] += 1
                return step_fn(self, model, images, labels)

        method.__class__ = Signalling
        return method

    methods.build_method = build_signalling


if __name__ == "__main__":
    if os.environ.get("COMIX_TEST_SIGNAL_AT"):
        _signal_at(os.environ["COMIX_TEST_SIGNAL_AT"])
    import main_fake_cifar

    sys.exit(main_fake_cifar.run(sys.argv[1:]))
