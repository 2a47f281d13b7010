"""Read one experiment folder: the run's settings, its per-epoch test figures, and how it stands.

The source is the folder's ``log.txt``, whose lines are the same in this project's runs and in the
published Co-Mixup logs:

- a settings line, the run's arguments as a Python dict (``{'arch': 'preactresnet18', ...}``),
  printed when a run starts (again when it is resumed, with the same or a larger ``epochs``);
- per epoch ``==>>[2020-10-12 04:53:43] [Epoch=000/300] ...``, ``**Train** Prec@1 ...`` and
  ``**Test ** Prec@1 x Prec@5 y Error@1 z Loss: w``; this project's runs follow the Test line
  with ``**Calib** ECE e NLL l Conf c (15 bins)``, the test set's calibration (older runs and the
  published logs have no such line: their ``test_ece`` is None);
- at the end ``final 10 epoch acc (median) : m (+- s)``;
- this project's runs also write one ``error: ...`` line when they stop on a failure, e.g.
  ``error: the training loss became nan at epoch 12, ...``.

An ``--evaluate`` run's lines in the folder are skipped. A resumed run appends to the same log: an
epoch logged again replaces the earlier record (and the records after it, as when a run resumes
from an earlier checkpoint), and an epoch whose Test line never came (a kill in the middle of it) is
not counted.

A run's status is one of:

``finished``
    every epoch has a Test line, and the final line follows the last one.
``diverged``
    a test loss or accuracy is NaN or infinite, or the log's last word after its last epoch is
    ``error: the training loss became ...``.
``running``
    a live process holds the lock on the folder's ``.lock`` file that main.py takes for a run
    (checked with a non-blocking shared ``lockf``); or, in a folder without ``.lock`` (runs older
    than the lock), the log has no final or error line after its last epoch (or its last start)
    and was written within the last ``max(10 minutes, 2 epochs)``.
``unfinished``
    anything else: stopped by a signal or an I/O error, killed (a run removes its ``.lock`` when
    it ends, so a ``.lock`` nobody holds is a killed run's).
"""
from __future__ import annotations

import ast
import calendar
import errno
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Run", "RunLogError", "read_run", "lock_is_held", "RUN_LOG", "LOCK_FILE", "STATUSES"]

RUN_LOG = "log.txt"
LOCK_FILE = ".lock"
CHECKPOINT = "checkpoint.pth.tar"  # checkpoints.CHECKPOINT_NAME (checkpoints imports torch: not imported here)
STATUSES = ("finished", "running", "unfinished", "diverged")

DIVERGED_PREFIX = "error: the training loss became"
# Without a lock file, a log written this recently (or within two epochs) counts as a live run.
ACTIVE_WINDOW_S = 600.0

_EPOCH_RE = re.compile(r"^==>>\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] \[Epoch=(\d+)/(\d+)\]")
_TRAIN_RE = re.compile(r"^\*\*Train\*\* Prec@1 (\S+)")
_TEST_RE = re.compile(r"^\*\*Test \*\* Prec@1 (\S+) Prec@5 \S+ Error@1 \S+ Loss: (\S+)")
_CALIB_RE = re.compile(r"^\*\*Calib\*\* ECE (\S+)")
_FINAL_RE = re.compile(r"^final 10 epoch acc \(median\) : (\S+)")


class RunLogError(Exception):
    """An experiment folder whose log cannot be read; the message is one line for the user."""


@dataclass
class Run:
    """One experiment folder, as its log tells it.

    ``test_acc``, ``test_loss`` and ``train_acc`` hold one value per logged epoch, in epoch order
    (accuracies in percent; train_acc None where no Train line came); ``test_ece`` the test
    expected calibration error (percent) of each epoch, None where the log has none; ``settings``
    are the arguments of the log's last settings line; ``seconds_per_epoch`` is the mean time between
    consecutive epochs of the same session (None with fewer than two); ``reason`` says why a run
    is not finished.
    """

    folder: str
    settings: dict[str, Any]
    epochs_total: int
    test_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    train_acc: list[float | None] = field(default_factory=list)
    test_ece: list[float | None] = field(default_factory=list)
    seconds_per_epoch: float | None = None
    status: str = "unfinished"
    reason: str = ""

    @property
    def method(self) -> str:
        """The mixing method: ``method`` of this project's runs; the published runs only have
        ``comix`` (True: Co-Mixup, False: plain training)."""
        method = self.settings.get("method")
        if method:
            return str(method)
        return "comix" if _truthy(self.settings.get("comix", True)) else "vanilla"

    @property
    def epochs_done(self) -> int:
        return len(self.test_acc)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1")
    return bool(value)


@dataclass
class _EpochRecord:
    test_acc: float
    test_loss: float
    train_acc: float | None
    test_ece: float | None = None


@dataclass
class _Parsed:
    """What one pass over log.txt found; positions are line numbers."""

    settings: dict[str, Any] | None = None
    header_total: int | None = None
    records: dict[int, _EpochRecord] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    settings_at: int = -1
    last_record_at: int = -1
    final_at: int = -1
    error_at: int = -1
    error_line: str = ""


def read_run(folder: str, now: float | None = None) -> Run:
    """Read ``folder``/log.txt into a :class:`Run` with its status (the module docstring gives
    the rules; ``now`` is the time they compare the log's age with, default the current time).

    Settings come from the log's last settings line, or from ``checkpoint.pth.tar``'s saved
    arguments when the log has none that parses. RunLogError when the log cannot be opened or
    decoded, or neither gives the settings.
    """
    path = os.path.join(folder, RUN_LOG)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        modified = os.stat(path).st_mtime
    except OSError as err:
        raise RunLogError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RunLogError(f"cannot read {path}: not a text log (byte {err.start} is not UTF-8)") from err
    parsed = _parse(text.splitlines())
    settings = parsed.settings if parsed.settings is not None else _checkpoint_settings(folder, path)
    epochs_total = _as_int(settings.get("epochs")) or parsed.header_total or 0
    epochs = sorted(parsed.records)
    run = Run(folder=folder, settings=settings, epochs_total=epochs_total,
              test_acc=[parsed.records[e].test_acc for e in epochs],
              test_loss=[parsed.records[e].test_loss for e in epochs],
              train_acc=[parsed.records[e].train_acc for e in epochs],
              test_ece=[parsed.records[e].test_ece for e in epochs],
              seconds_per_epoch=sum(parsed.durations) / len(parsed.durations) if parsed.durations else None)
    run.status, run.reason = _status(run, parsed, modified, time.time() if now is None else now)
    return run


def _parse(lines: list[str]) -> _Parsed:
    parsed = _Parsed()
    epoch: int | None = None  # the epoch whose lines are being read
    train_acc: float | None = None
    previous: tuple[int, float] | None = None  # (epoch, start time) of this session's last epoch
    tested: int | None = None  # the epoch whose Test line was the last line read (its Calib line follows)
    for at, line in enumerate(lines):
        after_test, tested = tested, None
        if after_test is not None and (calibration := _CALIB_RE.match(line)):
            parsed.records[after_test].test_ece = _number(calibration.group(1))
            continue
        if line.startswith("{") and line.rstrip().endswith("}"):
            settings = _settings(line)
            if settings is not None and _truthy(settings.get("evaluate", False)):
                epoch = None  # an --evaluate run in this folder: its Test line is no epoch
            elif settings is not None:  # a new session (a start or a resume)
                parsed.settings, parsed.settings_at, epoch, previous = settings, at, None, None
            continue
        if _FINAL_RE.match(line):
            parsed.final_at = at
            continue
        if line.startswith("error:"):
            parsed.error_at, parsed.error_line = at, line.strip()
            continue
        header = _EPOCH_RE.match(line)
        if header:
            epoch, started = int(header.group(2)), _timestamp(header.group(1))
            parsed.header_total = int(header.group(3))
            if previous is None:  # a session's first epoch: what was logged from here on is redone
                parsed.records = {e: r for e, r in parsed.records.items() if e < epoch}
            elif epoch == previous[0] + 1 and started is not None:
                parsed.durations.append(started - previous[1])
            previous = (epoch, started) if started is not None else None
            train_acc = None
            continue
        if epoch is None:
            continue
        train = _TRAIN_RE.match(line)
        if train:
            train_acc = _number(train.group(1))
            continue
        test = _TEST_RE.match(line)
        if test:
            acc, loss = _number(test.group(1)), _number(test.group(2))
            if acc is not None and loss is not None:
                parsed.records[epoch] = _EpochRecord(acc, loss, train_acc)
                parsed.last_record_at = at
                tested = epoch
            epoch = None  # a Test line ends an epoch; an evaluation's Test line has no header
    return parsed


def _settings(line: str) -> dict[str, Any] | None:
    """The run's arguments from a settings line, or None when the line is not one."""
    try:
        value = ast.literal_eval(line.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, dict) and "arch" in value and "dataset" in value:
        return value
    return None


def _checkpoint_settings(folder: str, log_path: str) -> dict[str, Any]:
    """The arguments a checkpoint of this project saved (read with the project's safe loader)."""
    checkpoint = os.path.join(folder, CHECKPOINT)
    missing = RunLogError(f"{log_path} is not a training log: it has no settings line (the run's arguments, "
                          f"{{'arch': ..., 'dataset': ...}}) and the folder has no {CHECKPOINT} with them")
    if not os.path.isfile(checkpoint):
        raise missing
    from comixup.train.checkpoints import CheckpointError, load_checkpoint  # torch: only for this rare case

    try:
        args = load_checkpoint(checkpoint)["args"]
    except CheckpointError as err:
        raise RunLogError(f"{log_path} has no settings line and {err}") from err
    if not isinstance(args, dict) or "arch" not in args or "dataset" not in args:
        raise missing
    return args


def _timestamp(text: str) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))
    except ValueError:
        return None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def lock_is_held(folder: str) -> bool | None:
    """Whether a live run holds ``folder``/.lock (main.py's POSIX ``lockf`` lock): True or False,
    or None when there is no such file (or locks cannot be checked here). The probe takes a
    shared lock without waiting and lets it go at once, so it never blocks a run; it is the
    counterpart of ``experiment.FolderLock``, without importing torch."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return None
    try:
        fd = os.open(os.path.join(folder, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        return True if err.errno in (errno.EACCES, errno.EAGAIN) else None
    else:
        return False
    finally:
        os.close(fd)  # closing drops the probe's lock


def _status(run: Run, parsed: _Parsed, modified: float, now: float) -> tuple[str, str]:
    """(status, reason) of a parsed run (rules in the module docstring)."""
    for epoch, (acc, loss) in enumerate(zip(run.test_acc, run.test_loss, strict=False)):
        if not (math.isfinite(acc) and math.isfinite(loss)):
            return "diverged", f"test loss {loss}, accuracy {acc} at its epoch {epoch + 1}"
    activity = max(parsed.settings_at, parsed.last_record_at)
    error_last = parsed.error_at > max(activity, parsed.final_at)
    if error_last and parsed.error_line.startswith(DIVERGED_PREFIX):
        return "diverged", parsed.error_line[len("error: "):]
    ended = parsed.final_at > activity
    reached = max(parsed.records) + 1 if parsed.records else 0
    if ended and parsed.records and reached >= run.epochs_total:
        return "finished", ""
    done = f"{run.epochs_done} of {run.epochs_total} epochs"
    if error_last:
        return "unfinished", f"{done}; {parsed.error_line[len('error: '):]}"
    held = lock_is_held(run.folder)
    if held:
        return "running", f"{done}; {LOCK_FILE} held by a live process"
    if held is False:
        return "unfinished", f"{done}; {LOCK_FILE} held by no process"
    window = max(ACTIVE_WINDOW_S, 2 * (run.seconds_per_epoch or 0.0))
    if not ended and now - modified <= window:
        return "running", f"{done}; log written {max(0.0, now - modified):.0f} s ago"
    return "unfinished", f"{done}; no final line"
