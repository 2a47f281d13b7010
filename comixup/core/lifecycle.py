"""How a command of this repository starts and ends: exit statuses, the one-line error, signals.

Every command (``main.py``, ``visualize.py``, the evaluation and preparation commands) reports a
failure as one ``error: ...`` line on stderr and an exit status from the table below; nothing
here knows about training.

====  ==========================================================================================
0     success (also: a resumed run that had nothing left to train)
1     an I/O failure during the run: a file could not be written or read (disk full, ...);
      what was already on disk is intact (every file is replaced atomically)
2     bad input, found before any work: arguments, data, checkpoint, an output folder that
      cannot be created or written, the torchrun environment
3     the training loss became NaN or infinite; nothing of that epoch was saved
130   stopped by SIGINT (Ctrl-C); 143 by SIGTERM; 138 by SIGUSR1 (128 + the signal's number). A
      signal during training steps lets the step finish and writes a mid-epoch checkpoint first
      (``--resume auto`` continues exactly there); one while an epoch is evaluated or saved lets
      that finish first; a second signal ends the process at once
====  ==========================================================================================
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

__all__ = ["EXIT_OK", "EXIT_IO", "EXIT_INPUT", "EXIT_DIVERGED", "RunError", "Interrupted", "ArgumentParser",
           "HelpFormatter", "str2bool", "flag_bool", "parse_args", "report", "error_line", "os_error_text",
           "SignalStops",
           "stop_on_signals", "graceful_stops", "stop_requested", "STOP_SIGNALS"]

EXIT_OK = 0
EXIT_IO = 1
"""An I/O failure during the run (a file could not be written or read)."""
EXIT_INPUT = 2
"""Bad arguments, data, checkpoint, output folder or torchrun environment, before any work."""
EXIT_DIVERGED = 3
"""The training loss became NaN or infinite."""


class RunError(Exception):
    """A run that cannot go on: ``str(err)`` is the one line for the user, ``exit_code`` the
    process's exit status (see the module docstring)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived (``signum``); raised in the main thread by
    :func:`stop_on_signals`' handler, a KeyboardInterrupt so that everything that cleans up after
    Ctrl-C does so for SIGTERM too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --------------------------------------------------------------------------- command lines

def str2bool(value: str | bool) -> bool:
    """Parse a command-line boolean: true/false, yes/no, t/f, y/n, 1/0 in any case."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("yes", "true", "t", "y", "1"):
        return True
    if lowered in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected (true/false, yes/no or 1/0), got {value!r}")


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one ``error: ...`` line on stderr (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_INPUT)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except unset ones (None or ''), whose help text says what they mean."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default in (None, "") else super()._get_help_string(action)


def flag_bool(group: argparse._ActionsContainer, name: str, help_text: str) -> None:
    """A boolean that works bare (``--log_off``) and with a value (``--log_off True``)."""
    group.add_argument(name, nargs="?", const=True, default=False, type=str2bool, metavar="BOOL", help=help_text)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
               parse: Callable[[argparse.ArgumentParser, Sequence[str] | None], argparse.Namespace] | None = None,
               ) -> argparse.Namespace | int:
    """``parser.parse_args(argv)`` (or ``parse(parser, argv)``, e.g. reading a config file
    first), or the exit status when parsing ended the command: 0 after --help, 2 after a usage
    error (its line already printed)."""
    try:
        return parse(parser, argv) if parse is not None else parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_INPUT


# --------------------------------------------------------------------------- error lines

def report(line: str) -> None:
    """Write one line to stderr in a single write, so that the lines of several ranks sharing a
    terminal or pipe (torchrun) do not interleave, even with PYTHONUNBUFFERED."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def error_line(err: BaseException | str, rank: int = 0) -> str:
    """``error: <err>``, with the rank on processes other than rank 0."""
    return f"error: {err}" if rank == 0 else f"error: [rank {rank}] {err}"


def os_error_text(err: OSError) -> str:
    """'No space left on device (ENOSPC): /path' from an OSError (its message when it has no errno)."""
    if err.errno is None:
        return " ".join(str(err).split()) or type(err).__name__
    text = f"{err.strerror or os.strerror(err.errno)} ({errno.errorcode.get(err.errno, err.errno)})"
    return f"{text}: {err.filename}" if err.filename else text


# --------------------------------------------------------------------------- signals

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
"""Signals that stop a run: Ctrl-C, a scheduler's pre-emption (SIGTERM), and SIGUSR1, the one to
ask SLURM for ahead of the time limit (``#SBATCH --signal=USR1@120``)."""

_active: SignalStops | None = None


class SignalStops:
    """The state of :func:`stop_on_signals`: the signals received, whether the next one still
    interrupts (until :meth:`defer`), and whether the run can stop gracefully right now
    (:func:`graceful_stops`: a signal is then only recorded, for the training loop to act on
    after its current step)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.deferred = False
        self.graceful = False

    def defer(self) -> None:
        """The run is over (done or failing, its report decided): a signal from now on is only
        recorded, so that it cannot replace that report while the process group is left."""
        self.deferred = True

    def handle(self, signum: int, frame: object) -> None:
        if self.received:  # a second signal: end at once, as without a handler
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received.append(signum)
        if not self.deferred and not self.graceful:
            raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[SignalStops]:
    """While the body runs, SIGINT, SIGTERM and SIGUSR1 raise :class:`Interrupted` in the main
    thread, so that every ``finally`` runs (threads and loader workers joined, process group left,
    logs closed) and the command exits 128 + the signal's number; inside :func:`graceful_stops`
    they are recorded for :func:`stop_requested`; after :meth:`SignalStops.defer` only recorded.
    A second signal of any of them ends the process at once, as without a handler. The previous
    handlers come back on exit. Outside the main thread (where handlers cannot be set) nothing
    changes."""
    global _active
    stops = SignalStops()
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return
    previous = {signum: signal.signal(signum, stops.handle) for signum in STOP_SIGNALS}
    _active = stops
    try:
        yield stops
    finally:
        _active = None
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def graceful_stops() -> Iterator[None]:
    """While the body runs, a stop signal is only recorded (see :func:`stop_requested`), so that
    the training loop can finish its step and save before it stops; a signal recorded earlier
    is acted on at once. Nothing changes outside :func:`stop_on_signals`."""
    stops = _active
    if stops is None:
        yield
        return
    stops.graceful = True
    try:
        yield
    finally:
        stops.graceful = False


def stop_requested() -> int:
    """The stop signal recorded inside :func:`graceful_stops` (its number), or 0."""
    stops = _active
    return stops.received[0] if stops is not None and stops.received and not stops.deferred else 0
