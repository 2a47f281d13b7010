"""The localization evaluation's reports: the published three tables (text and Markdown) and a figure.

Tables read the ``result.json`` files that ``localization.py`` writes (one per model and data set):
the published ``parse_result.py``'s three, titled as it prints them, ``** result localization **``
(``clean``), ``** result robust (image replacement dataset) **`` (``rep``, background replaced)
and ``** result robust (noise dataset) **`` (``noise``, background noise), each a row per model
with cls top-1, cls top-5 and loc top-1 (percent); then every metric of every result, with a note
saying what the published-formula column is.
"""
from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from comixup.core.files import atomic_write, atomic_write_bytes

__all__ = ["PUBLISHED_MODELS", "FORMULA_ONLY_NOTE", "read_results", "tables_text", "tables_markdown", "write_tables",
           "draw_figure"]

PUBLISHED_MODELS = ("vanilla", "inputmix", "manifold", "cutmix", "puzmix", "comix-blk4")
"""The published models' names (``pretrained/<name>.pt``), in the published tables' order."""

_SECTIONS = (("clean", "localization"), ("rep", "robust (image replacement dataset)"),
             ("noise", "robust (noise dataset)"))
"""(data set, title after "result "): the published parse_result.py's titles, word for word."""
_PUBLISHED_COLUMNS = (("cls-top1", "top1"), ("cls-top5", "top5"), ("loc-top1", "top1_loc"))
_FORMULA_ONLY = "loc-top1 (published IoU formula only)"
_ALL_COLUMNS = (("IoU", "iou"), ("cls-top1", "top1"), ("cls-top5", "top5"), ("loc-top1", "top1_loc"),
                (_FORMULA_ONLY, "top1_loc_published_iou"), ("GT-known loc", "gt_known_loc"),
                ("MaxBoxAcc", "max_box_acc"), ("images", "images"))
FORMULA_ONLY_NOTE = (f"{_FORMULA_ONLY}: the published IoU formula on the run's own GT boxes. In a run with "
                     f"IoU correct those are the corrected boxes, so it is not the published result; that is "
                     f"loc-top1 of a run with --iou published (the published formula and GT boxes).")
"""Printed under the all-metrics table, so nobody takes the column for a ``--iou published`` run."""


def read_results(root: str | os.PathLike) -> list[dict]:
    """Every ``<root>/*/result.json`` (unreadable ones are skipped), sorted by data set then model."""
    results = []
    for path in sorted(Path(root).glob("*/result.json")):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(result, dict) and "model" in result and "data" in result:
            results.append(result)
    return sorted(results, key=lambda r: (str(r["data"]), _model_order(str(r["model"]))))


def _model_order(name: str) -> tuple[int, str]:
    return (PUBLISHED_MODELS.index(name) if name in PUBLISHED_MODELS else len(PUBLISHED_MODELS), name)


def _sections(results: Sequence[dict]) -> list[tuple[str, list[dict]]]:
    """(title, rows) per data set: the published three first, any other data set after them."""
    by_data: dict[str, list[dict]] = {}
    for result in results:
        by_data.setdefault(str(result["data"]), []).append(result)
    sections = [(f"result {title}", by_data.pop(data)) for data, title in _SECTIONS if data in by_data]
    sections += [(f"result on {data}", rows) for data, rows in sorted(by_data.items())]
    return sections


def _cell(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def tables_text(results: Sequence[dict]) -> str:
    """The published tables (``** result localization **`` ...), then one with every metric."""
    lines = []
    for title, rows in _sections(results):
        lines.append(f"** {title} **")
        lines.append("{:12s}\t{:>8s}\t{:>8s}\t{:>8s}".format("model name", *(c for c, _ in _PUBLISHED_COLUMNS)))
        for row in rows:
            lines.append("{:12s}\t{:>8s}\t{:>8s}\t{:>8s}".format(
                str(row["model"]), *(_cell(row.get(key)) for _, key in _PUBLISHED_COLUMNS)))
        lines.append("")
    if results:
        lines.append("** all metrics (percent) **")
        header = ["model", "data", *(c for c, _ in _ALL_COLUMNS)]
        table = [header] + [[str(r["model"]), str(r["data"]), *(_cell(r.get(k)) for _, k in _ALL_COLUMNS)]
                            for r in results]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines += ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                            for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
                  for row in table]
        lines += [FORMULA_ONLY_NOTE, ""]
    return "\n".join(lines)


def tables_markdown(results: Sequence[dict]) -> str:
    """The same tables in Markdown."""
    lines = []
    for title, rows in _sections(results):
        lines += [f"**{title.removeprefix('result ').capitalize()}**", "",
                  "| model | cls top-1 | cls top-5 | loc top-1 |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {row['model']} | " + " | ".join(_cell(row.get(k)) for _, k in _PUBLISHED_COLUMNS) + " |"
                  for row in rows]
        lines.append("")
    if results:
        lines += ["**All metrics** (percent)", "",
                  "| model | data | " + " | ".join(c for c, _ in _ALL_COLUMNS) + " |",
                  "| --- | --- | --- |" + " ---: |" * (len(_ALL_COLUMNS) - 1)]
        lines += [f"| {r['model']} | {r['data']} | " + " | ".join(_cell(r.get(k)) for _, k in _ALL_COLUMNS) + " |"
                  for r in results]
        lines += ["", FORMULA_ONLY_NOTE, ""]
    return "\n".join(lines)


def write_tables(root: str | os.PathLike) -> str:
    """Write ``<root>/tables.txt`` and ``<root>/tables.md`` from the results under ``root``
    (atomically); returns the text tables."""
    results = read_results(root)
    text = tables_text(results)
    atomic_write_bytes(Path(root) / "tables.txt", text.encode("utf-8"))
    atomic_write_bytes(Path(root) / "tables.md", tables_markdown(results).encode("utf-8"))
    return text


def draw_figure(images: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray], methods: Sequence[str],
                panels: Sequence[Sequence[dict]], out: str | os.PathLike) -> None:
    """One row per image, one column per method: the image, its CAM (jet, half transparent), its
    GT boxes (green) and the predicted box (red, dashed), titled with the predicted class, whether
    it is right, and the box's IoU.

    ``panels[m][i]``: dict with ``cam`` (H x W in [0, 1]), ``box`` (x0, y0, x1, y1), ``pred``,
    ``correct`` and ``iou`` for method m and image i. Written atomically as PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    rows, cols = len(images), len(methods)
    figure = Figure(figsize=(2.4 * cols, 2.5 * rows))
    FigureCanvasAgg(figure)
    for i, image in enumerate(images):
        for m, method in enumerate(methods):
            axes = figure.add_subplot(rows, cols, i * cols + m + 1)
            panel = panels[m][i]
            axes.imshow(image)
            axes.imshow(panel["cam"], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            for x0, y0, x1, y1 in np.asarray(gt_boxes[i]).reshape(-1, 4):
                axes.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.5))
            x0, y0, x1, y1 = panel["box"]
            axes.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=1.5,
                                     linestyle="--"))
            mark = "right" if panel["correct"] else "wrong"
            axes.set_title(f"{method}\nclass {panel['pred']} ({mark}), IoU {panel['iou']:.2f}", fontsize=7)
            axes.set_xticks([])
            axes.set_yticks([])
    figure.tight_layout()
    atomic_write(out, functools.partial(figure.savefig, format="png", dpi=100))
