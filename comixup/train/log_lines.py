"""The lines a run writes to its log: the published ``**Train**`` / ``**Test **`` / ``**Valid**`` lines,
the ``**Calib**`` line after each Test line, and the closing median of the last ten epochs."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from comixup.train.loop import EvalResult

__all__ = ["train_line", "eval_line", "calibration_line", "final_line"]


def train_line(stats: dict[str, float]) -> str:
    """``**Train** Prec@1 ... Prec@5 ... Error@1 ...`` of :func:`~comixup.train.loop.train_one_epoch`'s numbers."""
    return (f"**Train** Prec@1 {stats['top1']:.2f} Prec@5 {stats['top5']:.2f} "
            f"Error@1 {100 - stats['top1']:.2f}")


def eval_line(label: str, result: EvalResult) -> str:
    """``**Test ** Prec@1 ... Loss: ...`` (label 5 characters wide, "Test " or "Valid", as published;
    the trailing space too)."""
    return (f"**{label}** Prec@1 {result.top1:.2f} Prec@5 {result.top5:.2f} "
            f"Error@1 {100 - result.top1:.2f} Loss: {result.loss:.3f} ")


def calibration_line(result: EvalResult) -> str:
    """``**Calib** ECE ... NLL ... Conf ... (B bins)``."""
    return (f"**Calib** ECE {result.ece:.2f} NLL {result.nll:.4f} Conf {result.confidence:.2f} "
            f"({result.calibration.bins} bins)")


def final_line(test_acc: Sequence[float]) -> str:
    """The published closing line: the median test accuracy of the last ten epochs and its spread."""
    last = np.asarray(test_acc[-10:], dtype=np.float64)
    median = float(np.median(last))
    spread = max(last.max() - median, median - last.min())
    return f"\nfinal 10 epoch acc (median) : {median:.2f} (+- {spread:.2f})"
