"""Small helpers of the commands: meters, log lines, atomic files, curves and scalars.

Nothing here trains a model. ``main.py`` uses it to print and log the published lines and to
write ``log.txt``/``log.pkl``/curve plots without ever leaving a half-written file
(:func:`atomic_write_bytes`, which :mod:`checkpoints` also writes with).
"""
from __future__ import annotations

import errno
import functools
import glob
import io
import os
import pickle
import tempfile
import time
from typing import IO, Any, Callable, Sequence

import numpy as np
from torch import Tensor

# Compatibility: code written for the published repository does ``from utils import to_one_hot,
# distance``; both live in comix.
from comix import distance, to_one_hot  # noqa: F401

__all__ = [
    "AverageMeter", "accuracy", "time_string", "convert_secs2time", "LogPrinter",
    "atomic_write", "atomic_write_bytes", "atomic_pickle_dump", "remove_stale_temp_files",
    "plot_curves", "ScalarLog", "to_one_hot", "distance",
]

# ---------------------------------------------------------------------------------------------
# Meters and formatting
# ---------------------------------------------------------------------------------------------

class AverageMeter:
    """Running average of a value weighted by sample counts: ``update(val, n)``, then ``avg``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.val = 0.0
        self.sum = 0.0
        self.count = 0
        self.avg = 0.0

    def update(self, val: float, n: int = 1) -> None:
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count if self.count else 0.0


def accuracy(output: Tensor, target: Tensor, topk: Sequence[int] = (1,)) -> list[float]:
    """Precision@k in percent of logits ``output`` (B, K) for class indices ``target`` (B,).

    A k larger than the number of classes counts every prediction as correct (there are only
    K candidates), rather than failing on data sets with fewer than 5 classes.
    """
    batch = target.shape[0]
    if batch == 0:
        return [0.0 for _ in topk]
    maxk = min(max(topk), output.shape[1])
    predicted = output.topk(maxk, dim=1, largest=True, sorted=True).indices
    correct = predicted.eq(target.reshape(-1, 1))
    return [correct[:, :min(k, maxk)].any(dim=1).float().sum().item() * 100.0 / batch for k in topk]


def time_string() -> str:
    """The current UTC time as the published logs show it: ``[2020-10-12 04:53:43]``."""
    return time.strftime("[%Y-%m-%d %H:%M:%S]", time.gmtime())


def convert_secs2time(seconds: float) -> tuple[int, int, int]:
    """Seconds to (hours, minutes, seconds), each truncated."""
    seconds = max(0.0, seconds)
    hours = int(seconds // 3600)
    minutes = int((seconds - 3600 * hours) // 60)
    return hours, minutes, int(seconds - 3600 * hours - 60 * minutes)


class LogPrinter:
    """Prints lines to stdout and appends them to a log file (flushed per line) when one is open.

    ``LogPrinter(None)`` only prints (``--log_off``); ``LogPrinter(None, echo=False)`` does
    nothing at all (the ranks other than 0 of a distributed run). Use as a context manager or
    call close().
    """

    def __init__(self, path: str | os.PathLike | None, echo: bool = True) -> None:
        self.path = path
        self.echo = echo
        self._file: IO[str] | None = open(path, "a", encoding="utf-8") if path is not None else None
        self._held: list[str] | None = None

    def __call__(self, line: Any) -> None:
        text = str(line)
        if self.echo:
            print(text, flush=True)
        if self._held is not None:
            self._held.append(text)
        elif self._file is not None:
            self._file.write(text + "\n")
            self._file.flush()

    def hold(self) -> None:
        """From now on lines still print at once but reach the file only at :meth:`commit`, so
        that log.txt holds the lines of exactly the work a checkpoint holds: an epoch cut short
        (and done again after a restart) is not logged twice. Lines not yet committed are
        dropped by :meth:`close`."""
        self._held = [] if self._held is None else self._held

    def commit(self, keep_holding: bool = False) -> None:
        """Write the held lines to the file; stop holding unless ``keep_holding``."""
        held, self._held = self._held or [], ([] if keep_holding else None)
        if held and self._file is not None:
            self._file.write("".join(text + "\n" for text in held))
            self._file.flush()

    def record(self, line: Any) -> None:
        """Append ``line`` to the log file only (not printed); nothing without a file."""
        if self._file is not None:
            self._file.write(str(line) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._held = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> LogPrinter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Atomic files
# ---------------------------------------------------------------------------------------------

def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file so that ``path`` holds either its old content or the complete new one.

    ``write(f)`` fills an in-memory buffer, which :func:`atomic_write_bytes` then writes. On any
    error nothing on disk changes and the error propagates (see there).
    """
    buffer = io.BytesIO()
    write(buffer)
    # release the view even on error: a live export keeps the buffer from being freed or resized
    with buffer.getbuffer() as data:
        atomic_write_bytes(path, data)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically: into a temporary file in the same folder (named
    ``.<name>.<random>.tmp``), fsynced, then renamed over ``path`` with os.replace, so ``path``
    holds either its old content or the complete new one, even if the process is killed.

    On any error (a full disk, an interruption) the temporary file is removed and the error
    propagates; an OSError with an errno comes back as the same kind of OSError naming ``path``
    ("[Errno 28] No space left on device: '.../checkpoint.pth.tar'"). A process killed
    outright leaves its temporary file behind (:func:`remove_stale_temp_files`).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp_path = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    except OSError as err:
        raise _naming(err, path) from err
    try:
        try:
            # mkstemp creates the file 0600; give it the mode a plain open() would have.
            os.fchmod(fd, _new_file_mode())
            _write_fully(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_path, path)
    except BaseException as err:
        try:
            os.remove(tmp_path)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError):
            raise _naming(err, path) from err
        raise
    _fsync_folder(folder)


def _write_fully(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written (a write may take only part of it).

    Every view is released on the way out, error or not: a traceback that kept one alive would
    keep the caller's buffer exported, and an io.BytesIO cannot be freed cleanly then.
    """
    with memoryview(data) as raw, raw.cast("B") as view:
        offset = 0
        while offset < len(view):
            with view[offset:] as rest:
                written = os.write(fd, rest)
            if written <= 0:
                raise OSError(errno.EIO, "the write made no progress")
            offset += written


def _naming(err: OSError, path: str) -> OSError:
    """``err`` as an OSError of the same kind that names ``path`` (unchanged without an errno)."""
    if err.errno is None:
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), path)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files that :func:`atomic_write_bytes` leaves in ``folder`` when a
    process is killed mid-write (``.<name>.<random>.tmp``); returns their paths. Call it only
    when no other process writes into ``folder``."""
    removed = []
    for path in sorted(glob.glob(os.path.join(glob.escape(os.fspath(folder)), ".*.tmp"))):
        if os.path.isfile(path):
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


@functools.cache
def _new_file_mode() -> int:
    """0o666 less the process umask (read once; os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable where the platform allows opening a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_pickle_dump(obj: Any, path: str | os.PathLike) -> None:
    """Pickle ``obj`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: pickle.dump(obj, f))


class ScalarLog:
    """Per-epoch TensorBoard scalars in ``folder`` (next to log.txt) when the optional tensorboard
    package is installed; without it, or with no folder (--log_off), every call does nothing."""

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.writer = None
        if folder is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self.writer = SummaryWriter(log_dir=str(folder))

    def add(self, epoch: int, scalars: dict[str, float]) -> None:
        if self.writer is None:
            return
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> "ScalarLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plot_curves(history: dict[str, list[float]], exp_dir: str | os.PathLike) -> None:
    """Write exp_dir/loss.png (train and test loss per epoch) and exp_dir/acc.png (train and
    test accuracy), as the published ``plotting`` did, atomically. Uses matplotlib's Agg canvas
    directly, so the caller's pyplot state and backend are left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for metric, filename in (("loss", "loss.png"), ("acc", "acc.png")):
        figure = Figure()
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        for split in ("train", "valid", "test"):
            values = history.get(f"{split}_{metric}")
            if values:
                axes.plot(np.asarray(values, dtype=float), label=f"{split}_{metric}")
        axes.set_xlabel("evaluation step")
        axes.set_ylabel("metrics")
        axes.legend(loc="upper right")
        figure.tight_layout()
        atomic_write(os.path.join(exp_dir, filename), functools.partial(figure.savefig, format="png"))
