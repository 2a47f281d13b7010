"""torchrun's ranks forked instead of started, in the tests: each begins with torch, torchvision,
numba and the package already loaded (about 6 s of CPU saved per rank) and then runs as
``python -u SCRIPT ARGS`` would (processes._forked_main: its own session, working folder,
environment, output files, signal dispositions and exit status).

torchrun itself is unchanged: its agent starts each rank through SubprocessHandler._popen, and
ranks_forked() replaces only that call. The ranks are forked by a zygote, a copy of the launcher made
before torchrun starts any thread (a process forked from one with threads may inherit a lock held by
a thread it does not have). A rank must be the launcher's own child, as with Popen, for torchrun to
wait for it: the zygote forks a short-lived middle process, which forks the rank and exits; the
launcher, a child subreaper (Linux's PR_SET_CHILD_SUBREAPER), adopts the orphaned rank. Elsewhere
than on Linux the ranks are started as usual.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import runpy
import signal
import sys
from collections.abc import Iterator
from typing import IO

from tests.support.processes import ForkedChild, _forked_main, fork_child

_PR_SET_CHILD_SUBREAPER = 36


@contextlib.contextmanager
def ranks_forked() -> Iterator[None]:
    """In the torchrun launcher (a forked copy of the pytest worker), around torch.distributed.run's
    main: its ranks are forked. The zygote ends, and is waited for, when the block does."""
    if not sys.platform.startswith("linux") or ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        yield
        return
    from torch.distributed.elastic.multiprocessing.subprocess_handler import subprocess_handler

    handler_class = subprocess_handler.SubprocessHandler
    started_as_usual = getattr(handler_class, "_popen", None)
    if started_as_usual is None:  # another torch: its ranks start as it starts them
        yield
        return
    zygote = _Zygote()

    def popen(handler, args: tuple, env: dict[str, str]):
        streams = getattr(handler, "_stdout", None), getattr(handler, "_stderr", None)
        return zygote.fork_rank(args, env, *streams) or started_as_usual(handler, args, env)

    handler_class._popen = popen
    try:
        yield
    finally:
        handler_class._popen = started_as_usual
        zygote.close()


class _Zygote:
    """A process that forks ranks on request (over a pipe) from the state the launcher had when it
    made it."""

    def __init__(self) -> None:
        requests_in, requests_out = os.pipe()
        replies_in, replies_out = os.pipe()

        def zygote_main() -> int:
            os.close(requests_out)
            os.close(replies_in)
            _serve(requests_in, replies_out)
            return 0

        pid = fork_child(zygote_main)
        os.close(requests_in)
        os.close(replies_out)
        self.pid = pid
        self._requests = os.fdopen(requests_out, "wb")
        self._replies = os.fdopen(replies_in, "rb")

    def fork_rank(self, args: tuple, env: dict[str, str], stdout: IO | None, stderr: IO | None) -> ForkedChild | None:
        """The rank ``args`` (torchrun's command line: python -u SCRIPT ARGS) with environment ``env``
        and stdout/stderr (files torchrun opened, or None: the launcher's), forked; None for a command
        line of another form, or if the fork failed: the caller starts it as usual."""
        if len(args) < 3 or list(args[1:2]) != ["-u"] or args[2].startswith("-"):
            return None
        outputs = [None if stream is None else stream.name for stream in (stdout, stderr)]
        pickle.dump((list(args[2:]), dict(env), os.getcwd(), outputs), self._requests)
        self._requests.flush()
        pid = pickle.load(self._replies)
        return None if pid is None else ForkedChild(pid)

    def close(self) -> None:
        self._requests.close()  # the zygote reads the end of its requests, and exits
        self._replies.close()
        os.waitpid(self.pid, 0)


def _serve(requests_in: int, replies_out: int) -> None:
    """The zygote's loop: for each request, a rank, and its pid once it is the launcher's child."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # it ends when the launcher does
        signal.signal(signum, signal.SIG_IGN)
    with os.fdopen(requests_in, "rb") as requests, os.fdopen(replies_out, "wb") as replies:
        while True:
            try:
                request = pickle.load(requests)
            except EOFError:
                return
            pickle.dump(_start_orphan(request, (requests.fileno(), replies.fileno())), replies)
            replies.flush()


def _start_orphan(request: tuple, inherited: tuple[int, ...]) -> int | None:
    """The rank that ``request`` (argv, env, cwd, outputs) asks for, forked by a middle process that
    exits at once: the rank is orphaned, and the launcher adopts it. Its pid once that has happened;
    None if it could not be forked. ``inherited``: the zygote's descriptors, closed in the rank."""
    argv, env, cwd, outputs = request
    pid_in, pid_out = os.pipe()

    def rank_main() -> int:
        for descriptor in (*inherited, pid_in, pid_out):
            os.close(descriptor)
        return _forked_main(argv, _run_script, cwd, env, outputs)

    def middle_main() -> int:
        os.write(pid_out, fork_child(rank_main).to_bytes(8, "little"))
        return 0

    middle = fork_child(middle_main)
    os.close(pid_out)
    os.waitpid(middle, 0)
    with os.fdopen(pid_in, "rb") as pid_reader:
        written = pid_reader.read(8)
    return int.from_bytes(written, "little") if len(written) == 8 else None


def _run_script(args: list[str]) -> None:
    """``python SCRIPT ARGS`` (sys.argv is [SCRIPT, *ARGS]): the script's folder first on sys.path,
    the script run as __main__."""
    script = sys.argv[0]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
