"""Helpers for tests that run main.py in child processes (tests/support/main_fake_cifar.py, alone or under
torchrun) and watch them from outside: start, wait, signal, and look for what outlived them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

CHILD = Path(__file__).resolve().parent / "main_fake_cifar.py"


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    # No warnings (a DataLoader's about a small machine, say): stderr must hold only the run's own report.
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore", **extra)
    return env


def start(argv: list[str], cwd: Path, **env: str) -> subprocess.Popen | ForkedRun:
    """The child in a session (and process group) of its own, so that its descendants can be found.

    In a pytest-xdist worker the child is forked from the worker (torch, numba's compiled solver and
    the package already loaded: seconds saved per run) and then runs as a fresh one would: its own
    session, cwd, environment, stdout/stderr, signal dispositions and exit status. Elsewhere (``-n 0``,
    where torch may have run OpenMP on several threads, which a forked child cannot use) it is
    ``python tests/support/main_fake_cifar.py ARGV``."""
    if forking():
        return ForkedRun([str(CHILD), *argv], _run_main_fake_cifar, cwd, child_env(**env))
    return subprocess.Popen([sys.executable, str(CHILD), *argv], cwd=cwd, env=child_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def forking() -> bool:
    """Whether children are forked from this process: in a pytest-xdist worker, which runs torch on
    one thread from the start (conftest.py)."""
    return bool(os.environ.get("PYTEST_XDIST_WORKER"))


def _run_main_fake_cifar(argv: list[str]) -> object:
    from tests.support import main_fake_cifar

    return main_fake_cifar.run(argv)


def _run_torchrun(argv: list[str]) -> object:
    from torch.distributed import run

    from tests.support import forked_ranks

    with forked_ranks.ranks_forked():
        return run.main(argv)


class ForkedChild:
    """The part of subprocess.Popen that the tests and torchrun use, for a child that was forked
    rather than started: pid, poll, wait, kill, returncode (negative for a signal)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.01)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


class ForkedRun(ForkedChild):
    """``program(argv[1:])`` in a forked child (the entry point of main_fake_cifar.py or torchrun,
    called as its command line would call it), with communicate() besides ForkedChild's part of
    Popen. stdout and stderr go to files, read when the child has ended, so that a chatty child never
    blocks on a full pipe."""

    def __init__(self, argv: list[str], program: Callable[[list[str]], object], cwd: Path,
                 env: dict[str, str]) -> None:
        self._outputs = [tempfile.mkstemp(prefix="forked-run-", suffix=f".{name}") for name in ("out", "err")]
        for fd, _ in self._outputs:
            os.close(fd)
        outputs = [path for _, path in self._outputs]
        super().__init__(fork_child(lambda: _forked_main(argv, program, cwd, env, outputs)))

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        texts = []
        for _, path in self._outputs:
            texts.append(Path(path).read_text(errors="replace"))
            os.unlink(path)
        return texts[0], texts[1]


def fork_child(child_main: Callable[[], int]) -> int:
    """fork(): the child runs ``child_main`` and exits with its status (1 if it raised), never
    returning into its parent's code; the parent gets the child's pid."""
    with warnings.catch_warnings():  # Python 3.12+ warns of fork() in a process with threads: the
        warnings.simplefilter("ignore", DeprecationWarning)  # child uses none of the worker's threads
        pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = child_main()
        finally:
            os._exit(status)
    return pid


def _forked_main(argv: list[str], program: Callable[[list[str]], object], cwd: Path | str, env: dict[str, str],
                 outputs: Sequence[str | None]) -> int:
    """In the forked child: become what ``python ARGV`` would be (stdout and stderr: the files
    ``outputs`` names, or the inherited ones where None), run, and give the exit status a Python
    process would end with. Never returns into the worker's pytest."""
    import atexit
    import io
    import logging
    import multiprocessing.util
    import threading

    code = 1
    try:
        os.setsid()
        os.chdir(cwd)
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.close(stdin)
        for fd, path in zip((1, 2), outputs, strict=True):
            if path is not None:
                opened = os.open(path, os.O_WRONLY | os.O_TRUNC)
                os.dup2(opened, fd)
                os.close(opened)
        # unbuffered text streams on the new descriptors (PYTHONUNBUFFERED in child_env)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True, line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True, line_buffering=True)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        os.environ.clear()
        os.environ.update(env)
        sys.argv = list(argv)
        # a fresh interpreter's state: the worker's exit functions, log handlers, warning filters and
        # signal handlers are pytest's, not the run's
        atexit._clear()
        atexit.register(multiprocessing.util._exit_function)
        logging.root.handlers.clear()
        warnings.resetwarnings()
        if env.get("PYTHONWARNINGS") == "ignore":  # as child_env asks
            warnings.simplefilter("ignore")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
            signal.signal(signum, signal.SIG_DFL)
        import torch

        torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
        code = _exit_status(program(argv[1:]))
    except SystemExit as stop:
        code = _exit_status(stop.code)
    except KeyboardInterrupt as uncaught:
        _print_uncaught(uncaught, program)
        code = -signal.SIGINT  # an uncaught KeyboardInterrupt ends Python by SIGINT itself
    except BaseException as uncaught:  # noqa: BLE001 - what the interpreter would print, then exit 1
        _print_uncaught(uncaught, program)
        code = 1
    try:
        threading._shutdown()  # non-daemon threads are joined at exit, as in any Python process
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - the run's status stands
        pass
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code & 0xFF


def _print_uncaught(uncaught: BaseException, program: Callable) -> None:
    """The traceback the interpreter would print: from the program's frames on, not those of the
    code that started it (this file, the entry point's, runpy's)."""
    import runpy
    import traceback

    launcher_files = {__file__, runpy.__file__, getattr(getattr(program, "__code__", None), "co_filename", __file__)}
    frames = uncaught.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename in launcher_files:
        frames = frames.tb_next
    traceback.print_exception(type(uncaught), uncaught, frames)


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


STANDALONE_PAIR = ("--standalone", "--nproc_per_node", "2")


def start_torchrun(argv: list[str], cwd: Path, launcher: Sequence[str] = STANDALONE_PAIR,
                   **env: str) -> subprocess.Popen | ForkedRun:
    """``torchrun LAUNCHER`` (default: 2 processes, standalone) of the child, in a session of its own
    as in start()."""
    return _launch_torchrun([*launcher, str(CHILD), *argv], cwd, child_env(**env))


def _launch_torchrun(arguments: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen | ForkedRun:
    """``torchrun ARGUMENTS`` in a session of its own; in a pytest-xdist worker the launcher is forked
    (as start() forks its child), and so are its ranks (tests/support/forked_ranks.py)."""
    if forking():
        return ForkedRun(["torchrun", *arguments], _run_torchrun, cwd, env)
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *arguments], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, state) of every live process in process group ``pgid`` (from /proc; zombies count too)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:
            members.append((int(entry), fields[0]))
    return members


def wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended (rc {process.returncode}) before {what}:\n{out[-2000:]}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def log_has(exp_root: Path, text: str) -> bool:
    return any(text in log.read_text() for log in exp_root.glob("*/log.txt"))


def finish(process: subprocess.Popen, timeout: float = 90) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def assert_files_intact(exp: Path) -> None:
    """Every checkpoint on disk loads; log.pkl unpickles; no temporary file is left."""
    import pickle

    from comixup.train.checkpoints import load_checkpoint

    checkpoints = sorted(exp.glob("*.pth.tar"))
    assert checkpoints
    for path in checkpoints:
        load_checkpoint(path)
    with open(exp / "log.pkl", "rb") as f:
        pickle.load(f)
    assert not list(exp.glob(".*.tmp"))


def run_args(data: Path, root: Path, epochs: int, *extra: str) -> list[str]:
    from tests.support.runs import base_args

    return base_args(data, root, "--epochs", str(epochs), "--workers", "2", *extra)


def torchrun(argv: list[str], cwd: Path, record: Path | None = None,
             script: Path = CHILD) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 SCRIPT ARGV`` on the CPU, to its end (SCRIPT:
    tests/support/main_fake_cifar.py, or main.py)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    if record is not None:
        record.mkdir()
        env["COMIX_TEST_REDUCTIONS"] = str(record)
    arguments = [*STANDALONE_PAIR, str(script), *argv]
    process = _launch_torchrun(arguments, cwd, env)
    out, err = process.communicate(timeout=240)
    return subprocess.CompletedProcess(["torchrun", *arguments], process.returncode, out, err)


def reductions(record: Path, rank: int) -> list[dict]:
    with open(record / f"rank{rank}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]
