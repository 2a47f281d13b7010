"""``python tests/main_fake_cifar.py ARGS``: main.main(ARGS) on CIFAR files written by fakedata.write_cifar,
for tests that start main.py in other processes (torchrun), where the cifar_no_md5 fixture cannot reach.

It lifts torchvision's md5 check as that fixture does. When the environment variable
COMIX_TEST_REDUCTIONS names a folder, it also records every distributed.sum_across_ranks call
of this process in ``<folder>/rank<RANK>.jsonl`` (one line per call: this rank's values and the
sums it got back), so a test can check what each rank contributed.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _lift_md5_check() -> None:
    import torchvision.datasets.cifar as cifar

    cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)


def _record_reductions(folder: str) -> None:
    import distributed

    reduce = distributed.sum_across_ranks
    path = Path(folder) / f"rank{os.environ.get('RANK', '0')}.jsonl"

    def recording(values, info):
        sums = reduce(values, info)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"rank": info.rank, "world_size": info.world_size, "values": [float(v) for v in values],
                                "sums": sums}) + "\n")
        return sums

    distributed.sum_across_ranks = recording


def run(argv: list[str]) -> int:
    """main.main(argv) with the md5 check lifted (and reductions recorded, see the module docstring)."""
    _lift_md5_check()
    folder = os.environ.get("COMIX_TEST_REDUCTIONS")
    if folder:
        _record_reductions(folder)
    import main

    return main.main(argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
