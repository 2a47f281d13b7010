"""Reliability diagrams (Guo et al., ICML 2017; the Co-Mixup paper's calibration figure): per
confidence bin, the accuracy of the predictions in it against their confidence. A calibrated
model's bars follow the diagonal; bars below it are overconfident bins.

The bins come from the evaluation pass (:func:`comixup.train.loop.evaluate`, its ``calibration``
meter); :func:`draw_reliability` draws several models' diagrams side by side (one panel each:
accuracy bars, the gap to the bin's mean confidence, the diagonal, and below them the number of
predictions per bin on a log scale).
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from comixup.core.calibration import CalibrationMeter, ReliabilityBin

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ReliabilityPanel", "draw_reliability", "figure_png"]

PIXELS_PER_INCH = 100


@dataclass(frozen=True)
class ReliabilityPanel:
    """One model's diagram: its title (method and ECE) and its bins."""

    title: str
    bins: Sequence[ReliabilityBin]

    @classmethod
    def of(cls, name: str, meter: CalibrationMeter) -> ReliabilityPanel:
        return cls(f"{name}\nECE {meter.ece:.2f}%, accuracy {meter.accuracy:.2f}%", meter.reliability())


def draw_reliability(panels: Sequence[ReliabilityPanel], size: tuple[float, float] | None = None) -> Figure:
    """A figure of one column per panel: above, the accuracy of each bin's predictions (blue
    bars), the gap up or down to their mean confidence (red, hatched) and the diagonal of a
    calibrated model; below, the predictions per bin (log scale, each count written above its
    bar). ``size`` in inches, default 3.2 per panel by 4.6. Drawn on matplotlib's Agg canvas
    directly, so the caller's pyplot state is left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("a reliability figure needs at least one panel")
    figure = Figure(figsize=size or (3.2 * len(panels), 4.6), dpi=PIXELS_PER_INCH)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, len(panels), height_ratios=(3, 1), hspace=0.08)
    for column, panel in enumerate(panels):
        diagram = figure.add_subplot(grid[0, column])
        counts_axes = figure.add_subplot(grid[1, column], sharex=diagram)
        _draw_panel(diagram, counts_axes, panel, first=column == 0)
    width, height = figure.get_size_inches()
    # margins in inches, whatever the figure's size: room for the axis labels and the two-line titles
    figure.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, top=1 - 0.6 / height, bottom=0.55 / height,
                           wspace=0.3)
    return figure


def _draw_panel(diagram, counts_axes, panel: ReliabilityPanel, first: bool) -> None:
    width = panel.bins[0].hi - panel.bins[0].lo
    filled = [b for b in panel.bins if b.count]
    centres = [(b.lo + b.hi) / 2 for b in filled]
    accuracies = [b.accuracy for b in filled]
    gaps = [b.confidence - b.accuracy for b in filled]
    diagram.bar(centres, accuracies, width=width, color="#1f77b4", edgecolor="black", linewidth=0.5,
                label="accuracy")
    diagram.bar(centres, gaps, bottom=accuracies, width=width, color="#d62728", alpha=0.3, edgecolor="#d62728",
                hatch="//", linewidth=0.5, label="gap to confidence")
    diagram.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="calibrated")
    diagram.set_xlim(0, 1)
    diagram.set_ylim(0, 1)
    diagram.set_title(panel.title, fontsize="medium")
    diagram.tick_params(labelbottom=False)
    diagram.grid(alpha=0.3)
    if first:
        diagram.set_ylabel("accuracy")
        diagram.legend(loc="upper left", fontsize="x-small")

    counts = [b.count for b in panel.bins]
    all_centres = [(b.lo + b.hi) / 2 for b in panel.bins]
    counts_axes.bar(all_centres, counts, width=width, color="#7f7f7f", edgecolor="black", linewidth=0.5)
    counts_axes.set_yscale("log")
    top = max(max(counts), 1)
    counts_axes.set_ylim(0.8, top * 30)
    for centre, count in zip(all_centres, counts, strict=True):
        if count:
            counts_axes.text(centre, count * 1.3, str(count), ha="center", va="bottom", fontsize=5, rotation=90)
    counts_axes.set_xlabel("confidence")
    if first:
        counts_axes.set_ylabel("predictions")


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes (write them with comixup.core.files.atomic_write_bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PIXELS_PER_INCH)
    return buffer.getvalue()
