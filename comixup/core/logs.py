"""What a run prints and records: the published log lines' time stamps and ETA, ``log.txt``
(:class:`LogPrinter`), TensorBoard scalars (:class:`ScalarLog`) and the ``loss.png``/``acc.png``
curves, each written atomically."""
from __future__ import annotations

import functools
import os
import time
from typing import IO, Any

import numpy as np

from comixup.core.files import atomic_write

__all__ = ["time_string", "convert_secs2time", "LogPrinter", "ScalarLog", "plot_curves"]


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

    def __enter__(self) -> ScalarLog:
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
