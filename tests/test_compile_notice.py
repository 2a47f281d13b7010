"""The first call of a compiled solver says, in one line on stderr, that it is compiling and where the
compiled code goes; a warm cache (also one that NUMBA_CACHE_DIR points to) prints nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from comixup.mixing import comix, comix_solver, compile_notice

ROOT = Path(__file__).resolve().parents[1]
TINY_SOLVER = '''
from numba import njit


@njit(cache=True)
def twice(x):
    return 2.0 * x
'''


def run_probe(module_dir: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    probe = (f"import sys; sys.path.insert(0, {str(module_dir)!r}); import tiny; "
             "from comixup.mixing.compile_notice import announce_compilation; "
             "announce_compilation(tiny.twice, (3.0,), 'the tiny solver'); "
             "announce_compilation(tiny.twice, (3.0,), 'the tiny solver'); print(tiny.twice(3.0))")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)


@pytest.mark.slow  # child interpreters
def test_one_line_when_compiling_into_an_empty_cache_and_none_when_it_is_warm(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tiny.py").write_text(TINY_SOLVER)
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    cold = run_probe(tmp_path / "src", cache)
    assert cold.stdout.strip() == "6.0"
    lines = cold.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("comixup: compiling the tiny solver for this machine (once, up to "
                                                   "a minute); cached in ")
    assert str(cache) in lines[0]
    warm = run_probe(tmp_path / "src", cache)
    assert warm.stdout.strip() == "6.0" and warm.stderr == ""


@pytest.mark.slow  # child interpreters
def test_the_co_mixup_solver_announces_itself_before_it_runs(monkeypatch):
    seen = []
    monkeypatch.setattr(comix_solver, "announce_compilation", lambda dispatcher, args, what: seen.append(
        (dispatcher, what, compile_notice.will_compile(dispatcher, args))))
    sal = torch.rand(4, 8, 8)
    comix.CoMixup(num_classes=2, m_part=4, m_block_num=2, rng=np.random.default_rng(0))(
        torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]), sal)
    assert seen and seen[0][0] is comix_solver.solve_partition and seen[0][1] == "the Co-Mixup solver"
    # once called in this process, it is compiled (and its cache written): nothing more to announce,
    # here or in the next process
    args = (np.zeros((4, 4)), np.eye(4), np.zeros((4, 4), dtype=np.int64), 2, 0.1, 0.1, 0.1, True, True, 2)
    assert not compile_notice.will_compile(comix_solver.solve_partition, args)
    probe = ("import numpy as np, torch; from comixup import CoMixup; "
             "CoMixup(num_classes=2, m_part=4, m_block_num=2)(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]), "
             "torch.rand(4, 8, 8))")
    # the same environment, so the same cache folder as this process's
    warm = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert warm.stderr == ""
