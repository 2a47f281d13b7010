"""Compare training runs: one table (and optionally one figure) from experiment folders.

    python compare.py experiments/ [more folders...] [--format text|markdown|csv] [--error]
        [--runs] [--split_by KEY ...] [--out FILE] [--plot curves.png]

Every folder holding a ``log.txt`` (this project's runs and the published Co-Mixup logs alike;
see :mod:`run_log`) is a run. Runs are grouped by dataset, architecture, method and epochs, seeds
pooled (``--split_by learning_rate`` also separates runs by that setting). Per group the table
gives the number of finished runs and, as mean ± sample standard deviation over them, the test
accuracy of the last epoch, the median over the last 10 epochs (the figure the published logs end
with), the best epoch, and the seconds per epoch; where runs logged their calibration (this
project's runs log the test set's expected calibration error after every Test line), a ``last
ECE`` column gives the last epoch's test ECE (percent; mean over the runs that have it). Runs
that are running, unfinished or diverged are counted in the ``left out`` column and listed under
the table, never pooled with the finished ones. ``--runs`` prints one row per run instead;
``--error`` prints top-1 error (100 - accuracy), as the paper's tables do.

Exit status: 0; 2 with one ``error: ...`` line on stderr for bad input (a path with no run, an
unreadable log, an output folder that does not exist); 1 when the table or figure cannot be
written. Nothing is written unless every log was read; files are written to a temporary name and
renamed, so a failure never leaves half a file.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from comixup.compare.run_log import RUN_LOG, Run, RunLogError, read_run
from comixup.core import lifecycle
from comixup.core.tables import TABLE_FORMATS, render_table

__all__ = ["Group", "Stat", "CompareError", "find_run_folders", "group_runs", "median_of_last",
           "format_table", "main", "GROUP_KEYS", "METHOD_ORDER"]

GROUP_KEYS = ("dataset", "arch", "method", "epochs")
METHOD_ORDER = ("vanilla", "mixup", "manifold", "cutmix", "puzzle", "comix", "saliencymix", "fmix", "resizemix",
                "guided_ap", "guided_sr")
"""The order of the methods in a table: main.py's --method choices (a run's ``method`` names it)."""
FORMATS = TABLE_FORMATS
LEFT_OUT = ("running", "unfinished", "diverged")  # the statuses of runs kept out of the numbers
PLOT_FORMATS = (".png", ".pdf", ".svg")
# Settings that say where or how a run was started, not what it trained: never a reason to split.
_NOT_SETTINGS = frozenset({"seed", "data_dir", "root_dir", "resume", "workers", "ngpu", "print_freq", "log_off",
                           "evaluate", "start_epoch", "use_cuda", "tag", "parallel", "comix", "data_on_device",
                           "fgsm", "corruption_dir", "corruption_average"})


class CompareError(Exception):
    """Bad input for the comparison; the message is one line for the user."""


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (None for a single value) of a figure over runs."""

    mean: float
    std: float | None

    @staticmethod
    def of(values: Sequence[float]) -> Stat | None:
        if not values:
            return None
        return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


@dataclass
class Group:
    """Runs with the same settings (``key``: the values of GROUP_KEYS and the --split_by keys):
    ``finished`` ones enter the figures, ``left_out`` ones (running, unfinished, diverged) do not."""

    key: tuple[Any, ...]
    finished: list[Run] = field(default_factory=list)
    left_out: list[Run] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str(self.key[GROUP_KEYS.index("method")])

    def label(self, key_names: Sequence[str]) -> str:
        """``comix preactresnet18 cifar100 300 ep`` and any split setting as ``name=value``."""
        parts = dict(zip(key_names, self.key, strict=False))
        extra = [f"{name}={parts[name]}" for name in key_names[len(GROUP_KEYS):]]
        return " ".join([str(parts["method"]), str(parts["arch"]), str(parts["dataset"]),
                         f"{parts['epochs']} ep", *extra])


def median_of_last(values: Sequence[float], count: int = 10) -> float:
    """The median of the last ``count`` values (all of them when there are fewer)."""
    if not values:
        raise ValueError("no values")
    return statistics.median(values[-count:])


def find_run_folders(paths: Sequence[str]) -> list[str]:
    """The experiment folders (folders holding log.txt) at or under each path, sorted per path,
    each once. A path may also name a log.txt itself. CompareError for a path that does not exist
    or holds no run."""
    found: dict[str, None] = {}
    for path in paths:
        if os.path.isfile(path) and os.path.basename(path) == RUN_LOG:
            found[os.path.dirname(path) or "."] = None
            continue
        if not os.path.isdir(path):
            what = "is not a folder" if os.path.exists(path) else "does not exist"
            raise CompareError(f"{path} {what}: give experiment folders (each holds a {RUN_LOG}) or folders "
                               f"that contain them")
        before = len(found)
        for folder, subfolders, files in os.walk(path):
            subfolders.sort()
            if RUN_LOG in files:
                found[folder] = None
                subfolders.clear()  # a run's folder holds no other runs
        if len(found) == before:
            raise CompareError(f"no run under {path}: no folder there holds a {RUN_LOG} (an experiment folder "
                               f"of main.py or a published log)")
    return list(found)


def _setting(run: Run, name: str) -> Any:
    if name == "method":
        return run.method
    if name == "epochs":
        return run.epochs_total
    value = run.settings.get(name, "?")
    return tuple(value) if isinstance(value, list) else value


def _sort_key(key: tuple[Any, ...]) -> tuple:
    dataset, arch, method, epochs, *rest = key
    order = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (str(dataset), str(arch), int(epochs) if isinstance(epochs, int) else 0, order, str(method),
            tuple(str(v) for v in rest))


def group_runs(runs: Sequence[Run], split_by: Sequence[str] = ()) -> list[Group]:
    """Group runs by GROUP_KEYS plus ``split_by`` (seeds pooled), sorted by dataset,
    architecture, epochs and method (in METHOD_ORDER)."""
    names = (*GROUP_KEYS, *split_by)
    groups: dict[tuple[Any, ...], Group] = {}
    for run in runs:
        key = tuple(_setting(run, name) for name in names)
        group = groups.setdefault(key, Group(key))
        (group.finished if run.status == "finished" else group.left_out).append(run)
    return [groups[key] for key in sorted(groups, key=_sort_key)]


def pooled_differences(group: Group, split_by: Sequence[str] = ()) -> dict[str, list[str]]:
    """The settings (other than the grouping keys, seeds and where-and-how ones) whose values
    differ between the group's runs, with the values; settings some runs lack are not compared
    (the published logs predate this project's flags)."""
    runs = group.finished + group.left_out
    skip = _NOT_SETTINGS | set(GROUP_KEYS) | set(split_by)
    common = set.intersection(*(set(run.settings) for run in runs)) - skip
    differing = {}
    for name in sorted(common):
        values = sorted({repr(run.settings[name]) for run in runs})
        if len(values) > 1:
            differing[name] = values
    return differing


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TableOptions:
    """How to print: ``fmt`` in FORMATS; ``error``: top-1 error instead of accuracy; ``median_of``:
    how many last epochs the median covers; ``split_by``: extra grouping settings; ``plus_minus``:
    the sign between a mean and its standard deviation."""

    fmt: str = "text"
    error: bool = False
    median_of: int = 10
    split_by: tuple[str, ...] = ()
    plus_minus: str = "±"  # "+-" for a terminal whose encoding lacks ±


def _figures(run: Run, options: TableOptions) -> dict[str, float]:
    """A run's last, median-of-last and best figures (accuracy, or error with options.error)."""
    acc = run.test_acc
    last, median, best = acc[-1], median_of_last(acc, options.median_of), max(acc)
    if options.error:
        return {"last": 100 - last, "median": 100 - median, "best": 100 - best}
    return {"last": last, "median": median, "best": best}


def _stat_text(stat: Stat | None, plus_minus: str) -> str:
    if stat is None:
        return "-"
    if stat.std is None:
        return f"{stat.mean:.2f}"
    return f"{stat.mean:.2f} {plus_minus} {stat.std:.2f}"


def _left_out_text(runs: Sequence[Run]) -> str:
    counts = {status: sum(run.status == status for run in runs) for status in LEFT_OUT}
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "-"


def last_ece(run: Run) -> float | None:
    """The run's last logged test ECE (percent), None when its last epoch logged none."""
    return run.test_ece[-1] if run.test_ece and run.test_ece[-1] is not None else None


def _any_ece(groups: Sequence[Group]) -> bool:
    return any(last_ece(run) is not None for group in groups for run in group.finished + group.left_out)


def _group_rows(groups: Sequence[Group], options: TableOptions) -> tuple[list[str], list[list[str]]]:
    """The group table: header and rows, numbers formatted (csv: plain numbers, separate stds).
    When some run logged its calibration, a column of the last test ECE follows the accuracies
    (mean over the finished runs that have one)."""
    show_ece = _any_ece(groups)
    what = "error" if options.error else "acc"
    median = f"median last {options.median_of}"
    keys = [*GROUP_KEYS, *options.split_by]
    if options.fmt == "csv":
        header = [*keys, "runs"]
        for name in ("last", "median", "best"):
            header += [f"{name}_{what}_mean", f"{name}_{what}_std"]
        header += ["last_ece_mean", "last_ece_std"] if show_ece else []
        header += ["seconds_per_epoch", *LEFT_OUT]
    else:
        header = [*keys, "runs", f"last {what}", f"{median} {what}", f"best {what}",
                  *(["last ECE"] if show_ece else []), "s/epoch", "left out"]
    rows = []
    for group in groups:
        figures = [_figures(run, options) for run in group.finished]
        stats = {name: Stat.of([f[name] for f in figures]) for name in ("last", "median", "best")}
        seconds = Stat.of([run.seconds_per_epoch for run in group.finished if run.seconds_per_epoch is not None])
        ece = Stat.of([value for value in map(last_ece, group.finished) if value is not None])
        row = [str(v) for v in group.key] + [str(len(group.finished))]
        if options.fmt == "csv":
            for stat in [stats["last"], stats["median"], stats["best"], *([ece] if show_ece else [])]:
                row += ["" if stat is None else f"{stat.mean:.4f}",
                        "" if stat is None or stat.std is None else f"{stat.std:.4f}"]
            row.append("" if seconds is None else f"{seconds.mean:.1f}")
            row += [str(sum(run.status == status for run in group.left_out)) for status in LEFT_OUT]
        else:
            row += [_stat_text(stats[name], options.plus_minus) for name in ("last", "median", "best")]
            row += [_stat_text(ece, options.plus_minus)] if show_ece else []
            row += ["-" if seconds is None else f"{seconds.mean:.1f}", _left_out_text(group.left_out)]
        rows.append(row)
    return header, rows


def _run_rows(groups: Sequence[Group], options: TableOptions, left_out_only: bool) -> tuple[list[str], list[list[str]]]:
    """One row per run (every run, or only the left-out ones): its folder, status and figures
    (and its last test ECE when one of the listed runs logged its calibration)."""
    what = "error" if options.error else "acc"
    listed = [(group, run) for group in groups for run in ([] if left_out_only else group.finished) + group.left_out]
    show_ece = any(last_ece(run) is not None for _, run in listed)
    header = ["folder", *GROUP_KEYS, *options.split_by, "seed", "status", "epochs done", f"last {what}",
              f"median last {options.median_of} {what}", f"best {what}", *(["last ECE"] if show_ece else []),
              "s/epoch", "note"]
    if options.fmt == "csv":
        header = [name.replace(" ", "_").replace("/", "_per_") for name in header]
    rows = []
    folders = [run.folder for group in groups for run in group.finished + group.left_out]
    # Folders as paths from the parent of the folder they all share (e.g. experiments/<run>).
    base = os.path.dirname(os.path.commonpath([os.path.abspath(f) for f in folders])) if folders else ""
    missing = "" if options.fmt == "csv" else "-"
    for group, run in listed:
        figures = _figures(run, options) if run.test_acc else {}
        numbers = [f"{figures[name]:.2f}" if name in figures else missing for name in ("last", "median", "best")]
        if show_ece:
            ece = last_ece(run)
            numbers.append(missing if ece is None else f"{ece:.2f}")
        seconds = "" if run.seconds_per_epoch is None else f"{run.seconds_per_epoch:.1f}"
        rows.append([os.path.relpath(os.path.abspath(run.folder), base), *(str(v) for v in group.key),
                     str(run.settings.get("seed", "?")), run.status, str(run.epochs_done), *numbers,
                     seconds or ("" if options.fmt == "csv" else "-"), run.reason])
    return header, rows


def format_table(groups: Sequence[Group], options: TableOptions, per_run: bool = False) -> str:
    """The comparison as text, Markdown or CSV (options.fmt): one row per group, or per run with
    ``per_run``. The text and Markdown group tables are followed by the list of left-out runs."""
    if per_run:
        return render_table(*_run_rows(groups, options, left_out_only=False), options.fmt)
    table = render_table(*_group_rows(groups, options), options.fmt)
    if options.fmt == "csv" or not any(group.left_out for group in groups):
        return table
    title = "Left out (not in the numbers above):"
    return f"{table}\n{title}\n\n{render_table(*_run_rows(groups, options, left_out_only=True), options.fmt)}"


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def get_args_parser() -> argparse.ArgumentParser:
    parser = lifecycle.ArgumentParser(description="Compare training runs: a table (and a figure) from experiment "
                                      "folders.", formatter_class=lifecycle.HelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="experiment folders, or folders holding them (searched recursively)")
    parser.add_argument("--format", choices=FORMATS, default="text", help="table format")
    parser.add_argument("--error", action="store_true", help="top-1 error (100 - accuracy) instead of accuracy")
    parser.add_argument("--runs", action="store_true", help="one row per run instead of one per group")
    parser.add_argument("--split_by", nargs="+", default=[], metavar="KEY",
                        help="also group by these settings (names as in the log's settings line, e.g. learning_rate)")
    parser.add_argument("--median_of", type=int, default=10, help="the median covers this many last epochs")
    parser.add_argument("--out", default="", help="write the table to this file instead of stdout")
    parser.add_argument("--plot", default="", help="write the curves figure to this file (.png, .pdf or .svg)")
    parser.add_argument("--plot_size", type=float, nargs=2, default=(11.0, 4.0), metavar=("WIDTH", "HEIGHT"),
                        help="figure size in inches (100 pixels per inch in a PNG)")
    return parser


def _check_output(path: str, what: str, suffixes: Sequence[str] = ()) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CompareError(f"cannot write {what} {path}: the folder {folder} does not exist")
    if suffixes and os.path.splitext(path)[1].lower() not in suffixes:
        raise CompareError(f"cannot write {what} {path}: the name must end in {', '.join(suffixes)}")


def _write_file(path: str, data: bytes) -> None:
    """Write ``path`` atomically (temporary file, fsync, rename), as the training script does."""
    from comixup.core.files import atomic_write_bytes  # imports torch: only when a file is written

    atomic_write_bytes(path, data)


def _validate(args: argparse.Namespace) -> None:
    if args.median_of < 1:
        raise CompareError(f"--median_of must be 1 or more, got {args.median_of}")
    if any(not math.isfinite(v) or v <= 0 or v > 100 for v in args.plot_size):
        raise CompareError(f"--plot_size must be two sizes in inches in (0, 100], got {args.plot_size}")
    if args.out:
        _check_output(args.out, "the table")
    if args.plot:
        _check_output(args.plot, "the figure", PLOT_FORMATS)


def _notes(groups: Sequence[Group], split_by: Sequence[str]) -> list[str]:
    names = (*GROUP_KEYS, *split_by)
    notes = []
    for group in groups:
        differing = pooled_differences(group, split_by)
        if differing:
            what = "; ".join(f"{name}: {', '.join(values)}" for name, values in differing.items())
            notes.append(f"note: {group.label(names)} pools runs with different settings ({what}); "
                         f"--split_by {' '.join(differing)} separates them")
    return notes


def compare(args: argparse.Namespace) -> str:
    """Read the runs, write the figure when asked, and return the table (CompareError, RunLogError
    for bad input)."""
    _validate(args)
    runs = [read_run(folder) for folder in find_run_folders(args.paths)]
    options = TableOptions(fmt=args.format, error=args.error, median_of=args.median_of,
                           split_by=tuple(args.split_by), plus_minus="±" if args.out or _can_show("±") else "+-")
    for name in options.split_by:
        if not any(name in run.settings for run in runs):
            raise CompareError(f"--split_by {name}: no run has a setting of that name (the settings are the keys "
                               f"of a log's settings line, e.g. learning_rate)")
    groups = group_runs(runs, options.split_by)
    table = format_table(groups, options, per_run=args.runs)
    for note in _notes(groups, options.split_by):
        print(note, file=sys.stderr)
    if args.plot:
        from comixup.compare.plot import draw_curves, figure_bytes

        names = (*GROUP_KEYS, *options.split_by)
        for group in groups:
            if not group.finished:
                print(f"note: {group.label(names)} has no finished run: it is not in the figure", file=sys.stderr)
        figure = draw_curves([g for g in groups if g.finished], lambda g: g.label(names), tuple(args.plot_size))
        _write_file(args.plot, figure_bytes(figure, os.path.splitext(args.plot)[1][1:].lower()))
    return table


def _can_show(text: str) -> bool:
    """Whether stdout's encoding has these characters (an ASCII terminal has no ±)."""
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; the exit status of the module docstring, every failure with one
    ``error:`` line on stderr."""
    args = lifecycle.parse_args(get_args_parser(), argv)
    if isinstance(args, int):  # --help, or a usage error already reported
        return args
    try:
        table = compare(args)
        if args.out:
            _write_file(args.out, table.encode("utf-8"))
        else:
            sys.stdout.write(table if _can_show(table) else table.encode("ascii", "replace").decode("ascii"))
    except (CompareError, RunLogError) as err:
        lifecycle.report(lifecycle.error_line(err))
        return lifecycle.EXIT_INPUT
    except OSError as err:  # the output folder was checked first: a full disk, a permission
        lifecycle.report(lifecycle.error_line(f"cannot write the output: {lifecycle.os_error_text(err)}"))
        return lifecycle.EXIT_IO
    return lifecycle.EXIT_OK

