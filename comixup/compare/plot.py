"""The figure of ``compare.py``: test accuracy and test loss per epoch, one curve per group of runs.

Each curve is the mean over the group's runs (seeds) at every epoch, with a band from the lowest to
the highest run; a group's colour is its method's, and groups of the same method (other
architectures, data sets, epochs) differ by line style.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from comixup.compare.run_log import Run


class CurveGroup(Protocol):
    """What a curve needs of a group of runs (compare.Group has it): its method, its finished runs."""

    @property
    def method(self) -> str: ...

    @property
    def finished(self) -> Sequence[Run]: ...

__all__ = ["draw_curves", "figure_bytes", "METHOD_COLOURS"]

# One fixed colour per method (matplotlib's tab10, then tab20's light shades), so every figure shows a method alike.
METHOD_COLOURS = {"vanilla": "#7f7f7f", "mixup": "#1f77b4", "manifold": "#17becf", "cutmix": "#2ca02c",
                  "puzzle": "#ff7f0e", "comix": "#d62728", "saliencymix": "#9467bd", "fmix": "#8c564b",
                  "resizemix": "#e377c2", "guided_ap": "#bcbd22", "guided_sr": "#dbdb8d"}
_OTHER_COLOURS = ("#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5")
_LINE_STYLES = ("-", "--", ":", "-.")
PIXELS_PER_INCH = 100


def _colour(method: str, others: dict[str, str]) -> str:
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return others.setdefault(method, _OTHER_COLOURS[len(others) % len(_OTHER_COLOURS)])


def _curves(runs: Sequence, attribute: str) -> np.ndarray:
    """The runs' per-epoch values as (runs, epochs), cut to the shortest run."""
    values = [getattr(run, attribute) for run in runs]
    length = min(len(v) for v in values)
    return np.asarray([v[:length] for v in values], dtype=np.float64)


def draw_curves(groups: Sequence[CurveGroup], label_of: Callable[[CurveGroup], str],
                size: tuple[float, float] = (11.0, 4.0)) -> Figure:
    """A figure of two axes, test accuracy and test loss against the epoch (1-based), with one
    line per group (of its finished runs) labelled ``label_of(group)`` and the number of runs; a
    band spans the runs when there are several. Drawn on matplotlib's Agg canvas directly, so
    the caller's pyplot state is left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=size, dpi=PIXELS_PER_INCH)
    FigureCanvasAgg(figure)
    acc_axes, loss_axes = figure.subplots(1, 2)
    others: dict[str, str] = {}
    styles_used: dict[str, int] = {}
    for group in groups:
        colour = _colour(group.method, others)
        style = _LINE_STYLES[styles_used.get(group.method, 0) % len(_LINE_STYLES)]
        styles_used[group.method] = styles_used.get(group.method, 0) + 1
        label = f"{label_of(group)} (n={len(group.finished)})"
        for axes, attribute in ((acc_axes, "test_acc"), (loss_axes, "test_loss")):
            values = _curves(group.finished, attribute)
            epochs = np.arange(1, values.shape[1] + 1)
            axes.plot(epochs, values.mean(axis=0), color=colour, linestyle=style, label=label)
            if values.shape[0] > 1:
                axes.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.2,
                                  linewidth=0)
    acc_axes.set_ylabel("test accuracy (%)")
    loss_axes.set_ylabel("test loss")
    for axes in (acc_axes, loss_axes):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    if groups:
        acc_axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return figure


def figure_bytes(figure: Figure, fmt: str = "png") -> bytes:
    """The figure encoded as ``fmt`` (png, pdf or svg)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=PIXELS_PER_INCH)
    return buffer.getvalue()
