"""compare.py / run_log.py / compare_plot.py: experiment folders written here in this project's
log format and in the published one, read back into groups, tables and a figure."""
from __future__ import annotations

import csv
import io
import math
import os
import pickle
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image

from comixup.compare import run_log
from comixup.compare import table as compare
from comixup.compare.plot import METHOD_COLOURS, draw_curves

from tests.support.runs import base_args, only_experiment

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 1, 5, 8, 0, 0, tzinfo=timezone.utc)


def our_settings(method: str = "comix", seed: int = 0, epochs: int = 5, **changes) -> dict:
    """The settings dict main.py prints (sorted keys), with the fields compare.py reads."""
    settings = {"arch": "preactresnet18", "batch_size": 100, "clean_lam": 1.0, "comix": method == "comix",
                "data_dir": "./data/cifar10", "dataset": "cifar10", "epochs": epochs, "evaluate": False,
                "gammas": [0.1, 0.1], "learning_rate": 0.1, "method": method, "mixup_alpha": 2.0, "ngpu": 0,
                "resume": "", "root_dir": "experiments", "schedule": [100, 200], "seed": seed, "start_epoch": 0,
                "use_cuda": False, "workers": 0}
    settings.update(changes)
    return dict(sorted(settings.items()))


def published_settings(comix: bool = True, seed: int = 0, epochs: int = 300) -> dict:
    """The published run's settings line: unsorted, no ``method``, ``comix`` says Co-Mixup or not."""
    return {"arch": "preactresnet18", "batch_size": 100, "clean_lam": 1.0, "comix": comix,
            "data_dir": "~/Datasets/cifar100", "dataset": "cifar100", "epochs": epochs, "learning_rate": 0.2,
            "m_part": 20, "seed": seed, "tag": "test", "use_cuda": True, "workers": 2}


def session_lines(settings: dict, epochs: list[tuple[int, float, float]], seconds: float = 60.0,
                  start: datetime = START) -> list[str]:
    """A session of log.txt as main.py writes it: the settings line, then per (epoch, test accuracy,
    test loss) the epoch header, the Train line and the Test line; epoch headers ``seconds`` apart."""
    lines = [f"save path : experiments/run_seed_{settings['seed']}", "", str(settings), "",
             f"Random Seed: {settings['seed']}", "torch  version : 2.14.1"]
    total = settings["epochs"]
    for k, (epoch, acc, loss) in enumerate(epochs):
        stamp = (start + timedelta(seconds=k * seconds)).strftime("[%Y-%m-%d %H:%M:%S]")
        lines += ["", f"==>>{stamp} [Epoch={epoch:03d}/{total:03d}] [Need: 00:01:00] [learning_rate=0.1000] "
                      f"[Best : Accuracy=0.00, Error=100.00]",
                  f"**Train** Prec@1 {acc + 5:.2f} Prec@5 99.00 Error@1 {95 - acc:.2f}",
                  f"**Test ** Prec@1 {acc:.2f} Prec@5 99.00 Error@1 {100 - acc:.2f} Loss: {loss:.3f} "]
    return lines


# compare.py recomputes the median from the epochs; the line only says that the run ended.
FINAL_LINES = ["", "final 10 epoch acc (median) : 0.00 (+- 0.00)"]


def write_log(folder: Path, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def finished_run(folder: Path, settings: dict, accs: list[float], losses: list[float] | None = None,
                 seconds: float = 60.0) -> Path:
    losses = losses or [1.0 / (e + 1) for e in range(len(accs))]
    records = [(e, acc, loss) for e, (acc, loss) in enumerate(zip(accs, losses, strict=True))]
    return write_log(folder, session_lines(settings, records, seconds) + FINAL_LINES)


def age(folder: Path, seconds: float) -> None:
    """Make log.txt look last written ``seconds`` ago."""
    stamp = time.time() - seconds
    os.utime(folder / "log.txt", (stamp, stamp))


def run_compare(capsys, *argv: str) -> tuple[int, str, str]:
    code = compare.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def assert_one_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# Two seeds whose last 10 epochs are known: median 50.5 / 52.5, last 46 / 48, best 55 / 57.
SEED0 = [1.0, 2.0, 50.0, 52.0, 51.0, 49.0, 53.0, 48.0, 55.0, 47.0, 54.0, 46.0]
SEED1 = [a + 2.0 for a in SEED0]


# ---------------------------------------------------------------------------------------------
# Reading one run
# ---------------------------------------------------------------------------------------------

def test_median_of_last_ten_epochs():
    assert compare.median_of_last(SEED0) == 50.5
    assert compare.median_of_last([3.0, 1.0, 2.0]) == 2.0  # fewer than 10 epochs: all of them
    assert compare.median_of_last(SEED0, count=3) == 47.0


def test_reads_our_log_with_settings_curves_and_time_per_epoch(tmp_path):
    folder = finished_run(tmp_path / "a", our_settings("cutmix", seed=3, epochs=12), SEED0, seconds=42.0)
    run = run_log.read_run(str(folder))
    assert (run.method, run.settings["seed"], run.settings["dataset"], run.epochs_total) == ("cutmix", 3, "cifar10", 12)
    assert run.status == "finished" and run.reason == ""
    assert run.test_acc == SEED0
    assert run.test_loss == pytest.approx([round(1 / (e + 1), 3) for e in range(12)])
    assert run.train_acc == [a + 5 for a in SEED0]
    assert run.seconds_per_epoch == pytest.approx(42.0)


def test_published_log_resumed_after_a_kill(tmp_path):
    """A published-format log: no method (comix True), a kill during epoch 3 (header, no Test
    line), a resume 2 hours later that redoes epoch 3; the gap is not an epoch's time."""
    settings = published_settings(comix=True, epochs=5)
    first = session_lines(settings, [(0, 20.0, 0.04), (1, 30.0, 0.03), (2, 40.0, 0.02)], seconds=180)
    first += ["", "==>>[2026-01-05 08:09:00] [Epoch=003/005] [Need: 00:06:00] [learning_rate=0.2000] "
                  "[Best : Accuracy=40.00, Error=60.00]"]
    resumed = session_lines(settings, [(3, 45.0, 0.02), (4, 47.5, 0.019)], seconds=180,
                            start=START + timedelta(hours=2))
    folder = write_log(tmp_path / "published", first + resumed + FINAL_LINES)
    run = run_log.read_run(str(folder))
    assert run.method == "comix" and run.status == "finished"
    assert run.test_acc == [20.0, 30.0, 40.0, 45.0, 47.5]
    assert run.seconds_per_epoch == pytest.approx(180.0)

    vanilla = finished_run(tmp_path / "vanilla", published_settings(comix=False, epochs=2), [10.0, 11.0])
    assert run_log.read_run(str(vanilla)).method == "vanilla"


def test_resume_from_an_earlier_checkpoint_drops_the_redone_epochs(tmp_path):
    settings = our_settings(epochs=4)
    first = session_lines(settings, [(0, 10.0, 0.5), (1, 20.0, 0.4), (2, 30.0, 0.3)])
    again = session_lines(settings, [(1, 21.0, 0.4), (2, 31.0, 0.3), (3, 41.0, 0.2)])
    run = run_log.read_run(str(write_log(tmp_path / "r", first + again + FINAL_LINES)))
    assert run.test_acc == [10.0, 21.0, 31.0, 41.0] and run.status == "finished"


# ---------------------------------------------------------------------------------------------
# Markers
# ---------------------------------------------------------------------------------------------

def test_status_markers(tmp_path):
    settings = our_settings(epochs=5)
    three = [(0, 10.0, 0.5), (1, 20.0, 0.4), (2, 30.0, 0.3)]

    stopped = write_log(tmp_path / "unfinished", session_lines(settings, three))
    age(stopped, 3600)
    fresh = write_log(tmp_path / "fresh", session_lines(settings, three))
    lock_free = write_log(tmp_path / "lock_free", session_lines(settings, three))
    (lock_free / ".lock").write_text("")
    locked = write_log(tmp_path / "locked", session_lines(settings, three))
    age(locked, 3600)
    diverged = write_log(tmp_path / "diverged", session_lines(settings, three) + [
        "error: the training loss became nan at epoch 3, step 7 (0-based, as in the log); nothing of that "
        "epoch was saved; the last complete checkpoint is x/checkpoint.pth.tar (3 epochs done)"])
    nan_loss = write_log(tmp_path / "nan_loss", session_lines(published_settings(epochs=3),
                                                              [(0, 10.0, 0.5), (1, 1.0, math.nan), (2, 1.0, math.nan)])
                         + FINAL_LINES)
    signalled = write_log(tmp_path / "signalled", session_lines(settings, three) + [
        "error: stopped by SIGTERM in epoch 3 (0-based, as in the log); the last complete checkpoint is x"])
    resumed = write_log(tmp_path / "resumed_after_stop", session_lines(settings, three) + [
        "error: stopped by SIGTERM in epoch 3 (0-based, as in the log)"]
        + session_lines(settings, [(3, 40.0, 0.2), (4, 50.0, 0.1)]) + FINAL_LINES)

    (locked / ".lock").write_text("")
    holder = subprocess.Popen(  # a live run's lock, held by another process as main.py holds it
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
         "fcntl.lockf(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", str(locked / ".lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        statuses = {p.name: run_log.read_run(str(p)) for p in
                    (stopped, fresh, lock_free, locked, diverged, nan_loss, signalled, resumed)}
    finally:
        holder.communicate(timeout=30)
    assert {name: run.status for name, run in statuses.items()} == {
        "unfinished": "unfinished", "fresh": "running", "lock_free": "unfinished", "locked": "running",
        "diverged": "diverged", "nan_loss": "diverged", "signalled": "unfinished", "resumed_after_stop": "finished"}
    assert "3 of 5 epochs" in statuses["unfinished"].reason
    assert "training loss became nan" in statuses["diverged"].reason
    assert "SIGTERM" in statuses["signalled"].reason
    assert run_log.lock_is_held(str(locked)) is False  # released: the folder's run is over
    assert run_log.read_run(str(locked)).status == "unfinished"


def test_left_out_runs_are_marked_and_not_pooled(tmp_path, capsys):
    finished_run(tmp_path / "exp" / "ok", our_settings(seed=0, epochs=12), SEED0)
    unfinished = write_log(tmp_path / "exp" / "stopped", session_lines(our_settings(seed=1, epochs=12),
                                                                        [(0, 90.0, 0.1), (1, 95.0, 0.1)]))
    age(unfinished, 3600)
    write_log(tmp_path / "exp" / "live", session_lines(our_settings(seed=2, epochs=12), [(0, 99.0, 0.1)]))
    write_log(tmp_path / "exp" / "nan", session_lines(our_settings(seed=3, epochs=12), [(0, 5.0, math.inf)]))

    code, out, _ = run_compare(capsys, tmp_path / "exp", "--format", "csv")
    assert code == 0
    (row,) = csv_rows(out)
    assert row["runs"] == "1" and (row["running"], row["unfinished"], row["diverged"]) == ("1", "1", "1")
    assert float(row["last_acc_mean"]) == 46.0 and row["last_acc_std"] == ""  # the finished run alone
    assert float(row["best_acc_mean"]) == 55.0

    code, out, _ = run_compare(capsys, tmp_path / "exp")
    assert code == 0
    table, left_out = out.split("Left out")
    assert "1 running, 1 unfinished, 1 diverged" in table
    marked = {line.split()[0]: line for line in left_out.strip().splitlines()[3:]}
    assert set(marked) == {"exp/stopped", "exp/live", "exp/nan"}
    assert " unfinished " in marked["exp/stopped"] and " running " in marked["exp/live"]
    assert " diverged " in marked["exp/nan"]


# ---------------------------------------------------------------------------------------------
# Groups and tables
# ---------------------------------------------------------------------------------------------

def write_comparison(root: Path) -> Path:
    """vanilla and comix on preactresnet18 (seeds 0 and 1 each), comix on wrn28_2 (seed 0)."""
    for method in ("comix", "vanilla"):
        for seed, accs in ((0, SEED0), (1, SEED1)):
            shift = 10.0 if method == "comix" else 0.0
            finished_run(root / f"{method}_{seed}", our_settings(method, seed, epochs=12), [a + shift for a in accs],
                         seconds=30.0 + seed * 10)
    finished_run(root / "nested" / "wrn", our_settings("comix", 0, epochs=12, arch="wrn28_2"), SEED0)
    return root


def test_groups_pool_seeds(tmp_path):
    runs = [run_log.read_run(f) for f in compare.find_run_folders([str(write_comparison(tmp_path / "exp"))])]
    assert len(runs) == 5
    groups = compare.group_runs(runs)
    assert [g.key for g in groups] == [("cifar10", "preactresnet18", "vanilla", 12),
                                       ("cifar10", "preactresnet18", "comix", 12),
                                       ("cifar10", "wrn28_2", "comix", 12)]
    assert [len(g.finished) for g in groups] == [2, 2, 1]
    assert sorted(r.settings["seed"] for r in groups[1].finished) == [0, 1]


def test_csv_mean_and_std_over_seeds(tmp_path, capsys):
    code, out, err = run_compare(capsys, write_comparison(tmp_path / "exp"), "--format", "csv")
    assert code == 0 and err == ""
    rows = csv_rows(out)
    assert [(r["method"], r["arch"], r["runs"]) for r in rows] == [
        ("vanilla", "preactresnet18", "2"), ("comix", "preactresnet18", "2"), ("comix", "wrn28_2", "1")]
    vanilla, comix, wrn = rows
    # seeds: last 46 / 48, median of the last 10 50.5 / 52.5, best 55 / 57; comix 10 points higher
    assert float(vanilla["last_acc_mean"]) == pytest.approx(47.0)
    assert float(vanilla["median_acc_mean"]) == pytest.approx(51.5)
    assert float(vanilla["best_acc_mean"]) == pytest.approx(56.0)
    for name in ("last", "median", "best"):
        assert float(vanilla[f"{name}_acc_std"]) == pytest.approx(math.sqrt(2), abs=1e-4)  # sample std
    assert float(comix["median_acc_mean"]) == pytest.approx(61.5)
    assert float(vanilla["seconds_per_epoch"]) == pytest.approx(35.0)  # 30 s and 40 s per epoch
    assert float(wrn["last_acc_mean"]) == 46.0 and wrn["last_acc_std"] == ""
    assert (wrn["running"], wrn["unfinished"], wrn["diverged"]) == ("0", "0", "0")

    code, out, _ = run_compare(capsys, tmp_path / "exp", "--format", "csv", "--error")
    assert float(csv_rows(out)[0]["median_error_mean"]) == pytest.approx(48.5)
    assert float(csv_rows(out)[0]["best_error_mean"]) == pytest.approx(44.0)


def test_markdown_table(tmp_path, capsys):
    code, out, _ = run_compare(capsys, write_comparison(tmp_path / "exp"), "--format", "markdown")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("| dataset | arch | method | epochs | runs | last acc | median last 10 acc |")
    assert set(lines[1].replace(" ", "")) == {"|", "-"} and lines[1].count("|") == lines[0].count("|")
    assert len(lines) == 2 + 3
    assert "| cifar10 | preactresnet18 | vanilla | 12 | 2 | 47.00 ± 1.41 | 51.50 ± 1.41 | 56.00 ± 1.41 | 35.0 | - |" \
        == lines[2]
    assert "| cifar10 | wrn28_2 | comix | 12 | 1 | 46.00 | 50.50 | 55.00 | 60.0 | - |" == lines[4]


def test_per_run_csv_and_split_by(tmp_path, capsys):
    root = tmp_path / "exp"
    finished_run(root / "lr1", our_settings(seed=0, epochs=2, learning_rate=0.1), [10.0, 20.0])
    finished_run(root / "lr2", our_settings(seed=1, epochs=2, learning_rate=0.2), [30.0, 40.0])
    code, out, err = run_compare(capsys, root, "--format", "csv")
    assert len(csv_rows(out)) == 1
    assert err.startswith("note: ") and "learning_rate: 0.1, 0.2" in err and "--split_by learning_rate" in err

    code, out, err = run_compare(capsys, root, "--format", "csv", "--split_by", "learning_rate")
    assert code == 0 and err == ""
    assert [(r["learning_rate"], r["last_acc_mean"]) for r in csv_rows(out)] == [("0.1", "20.0000"), ("0.2", "40.0000")]

    code, out, _ = run_compare(capsys, root, "--format", "csv", "--runs")
    rows = csv_rows(out)
    assert [(r["folder"], r["seed"], r["status"], r["epochs_done"], r["best_acc"]) for r in rows] == [
        ("exp/lr1", "0", "finished", "2", "20.00"), ("exp/lr2", "1", "finished", "2", "40.00")]


def with_calibration(lines: list[str], eces: list[float]) -> list[str]:
    """``lines`` with the Calib line main.py writes after each Test line, of the given ECEs."""
    out, left = [], list(eces)
    for line in lines:
        out.append(line)
        if line.startswith("**Test **"):
            out.append(f"**Calib** ECE {left.pop(0):.2f} NLL 1.2345 Conf 80.00 (15 bins)")
    return out


def test_the_last_test_ece_beside_the_accuracies(tmp_path, capsys):
    root = tmp_path / "exp"
    for seed, eces in ((0, [9.0, 4.0]), (1, [8.0, 6.0])):
        lines = session_lines(our_settings("comix", seed=seed, epochs=2), [(0, 40.0, 0.5), (1, 50.0, 0.4)])
        write_log(root / f"comix_{seed}", with_calibration(lines, eces) + FINAL_LINES)
    # an --evaluate run appended to seed 0's log: its Calib line is no epoch's
    evaluation = [str(our_settings("comix", seed=0, epochs=2, evaluate=True)),
                  "**Test ** Prec@1 50.00 Prec@5 99.00 Error@1 50.00 Loss: 0.400 ",
                  "**Calib** ECE 77.00 NLL 1.0000 Conf 90.00 (15 bins)"]
    log = root / "comix_0" / "log.txt"
    log.write_text(log.read_text() + "\n".join(evaluation) + "\n")
    finished_run(root / "vanilla", published_settings(comix=False, epochs=2), [30.0, 35.0])  # no Calib lines

    assert run_log.read_run(str(root / "comix_0")).test_ece == [9.0, 4.0]
    assert run_log.read_run(str(root / "vanilla")).test_ece == [None, None]
    code, out, err = run_compare(capsys, root, "--format", "csv")
    assert code == 0 and err == ""
    rows = {row["method"]: row for row in csv_rows(out)}
    assert float(rows["comix"]["last_ece_mean"]) == pytest.approx(5.0)
    assert float(rows["comix"]["last_ece_std"]) == pytest.approx(math.sqrt(2), abs=1e-4)
    assert rows["vanilla"]["last_ece_mean"] == rows["vanilla"]["last_ece_std"] == ""

    code, out, _ = run_compare(capsys, root)
    header, *lines = out.splitlines()
    assert header.index("last ECE") > header.index("best acc")
    assert "5.00 ± 1.41" in next(line for line in lines if " comix " in line)
    code, out, _ = run_compare(capsys, root, "--runs", "--format", "csv")
    assert [(r["folder"], r["last_ECE"]) for r in csv_rows(out)] == [
        ("exp/comix_0", "4.00"), ("exp/comix_1", "6.00"), ("exp/vanilla", "")]  # cifar10 before cifar100

    # logs without Calib lines (the published ones, older runs): the table has no ECE column at all
    code, out, _ = run_compare(capsys, root / "vanilla")
    assert code == 0 and "ECE" not in out


def test_ascii_terminal_gets_plus_minus(tmp_path, monkeypatch):
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stream)
    assert compare.main([str(write_comparison(tmp_path / "exp"))]) == 0
    stream.flush()
    assert "47.00 +- 1.41" in stream.buffer.getvalue().decode("ascii")


def test_out_file_is_written_whole(tmp_path, capsys):
    out_file = tmp_path / "table.md"
    code, out, _ = run_compare(capsys, write_comparison(tmp_path / "exp"), "--format", "markdown", "--out", out_file)
    assert code == 0 and out == ""
    assert out_file.read_text().count("\n") == 5
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# ---------------------------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------------------------

def test_figure_file_and_one_curve_per_group(tmp_path, capsys):
    root = write_comparison(tmp_path / "exp")
    plot = tmp_path / "curves.png"
    code, _, _ = run_compare(capsys, root, "--plot", plot, "--plot_size", "6", "3")
    assert code == 0
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (600, 300)

    groups = compare.group_runs([run_log.read_run(f) for f in compare.find_run_folders([str(root)])])
    figure = draw_curves(groups, lambda g: g.label(compare.GROUP_KEYS))
    acc_axes, loss_axes = figure.axes
    for axes in (acc_axes, loss_axes):
        assert len(axes.lines) == len(groups) == 3
        assert [line.get_color() for line in axes.lines] == [METHOD_COLOURS["vanilla"], METHOD_COLOURS["comix"],
                                                             METHOD_COLOURS["comix"]]
        assert axes.lines[1].get_linestyle() != axes.lines[2].get_linestyle()  # same method, other arch
        assert len(axes.collections) == 2  # seed bands of the two groups with 2 runs
    vanilla = acc_axes.lines[0]
    assert list(vanilla.get_xdata()) == list(range(1, 13))
    assert list(vanilla.get_ydata()) == pytest.approx([a + 1 for a in SEED0])  # mean of the seeds
    assert [t.get_text() for t in acc_axes.get_legend().get_texts()][0] == "vanilla preactresnet18 cifar10 12 ep (n=2)"


def test_every_method_of_main_is_named_in_the_methods_order_with_its_own_colour(tmp_path, capsys):
    from comixup.train import methods

    assert compare.METHOD_ORDER == methods.METHODS  # main.py's --method choices, in the registry's order
    assert set(METHOD_COLOURS) == set(methods.METHODS) and len(set(METHOD_COLOURS.values())) == len(METHOD_COLOURS)
    root = tmp_path / "exp"
    for k, method in enumerate(reversed(methods.METHODS)):  # folders sorted against the method order
        settings = our_settings(method=method, epochs=2, mixup_alpha=None, fmix_spectrum="published")
        finished_run(root / f"run{k:02d}", settings, [10.0 + k, 20.0 + k])
    code, out, err = run_compare(capsys, root, "--format", "csv")
    assert code == 0 and err == ""
    assert [row["method"] for row in csv_rows(out)] == list(methods.METHODS)
    assert [float(row["median_acc_mean"]) for row in csv_rows(out)][-5:] == [19, 18, 17, 16, 15]  # each its own


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

def test_bad_input_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert_one_error(*run_compare(capsys, tmp_path / "missing"), "missing does not exist")
    assert_one_error(*run_compare(capsys, tmp_path / "empty"), "no run under", "log.txt")

    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "log.txt").write_bytes(b"\x80\x81\xff" * 10)
    assert_one_error(*run_compare(capsys, binary), "cannot read", "not a text log")

    no_settings = write_log(tmp_path / "no_settings", ["just some text", "**Test ** Prec@1 1.00"])
    assert_one_error(*run_compare(capsys, no_settings), "not a training log", "settings line")

    good = finished_run(tmp_path / "good", our_settings(epochs=2), [1.0, 2.0])
    assert_one_error(*run_compare(capsys, good, "--out", tmp_path / "nowhere" / "t.csv"), "does not exist")
    assert_one_error(*run_compare(capsys, good, "--plot", tmp_path / "curves.jpg"), ".png")
    assert_one_error(*run_compare(capsys, good, "--median_of", "0"), "--median_of")
    assert_one_error(*run_compare(capsys, good, "--split_by", "learning_rat"), "--split_by learning_rat")
    assert_one_error(*run_compare(capsys, good, "--format", "xml"), "--format")
    assert not (tmp_path / "curves.jpg").exists()


@pytest.mark.slow  # child processes
def test_command_line(tmp_path):
    good = finished_run(tmp_path / "good", our_settings(epochs=2), [1.0, 2.0])
    done = subprocess.run([sys.executable, str(ROOT / "compare.py"), str(good), "--format", "csv"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and csv_rows(done.stdout)[0]["last_acc_mean"] == "2.0000"
    failed = subprocess.run([sys.executable, str(ROOT / "compare.py"), str(tmp_path / "nothing")],
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("error: ")


# ---------------------------------------------------------------------------------------------
# A real run of main.py
# ---------------------------------------------------------------------------------------------

def test_reads_a_run_of_main(tmp_path, cifar10_dir, one_thread, capsys):
    import main

    assert main.main(base_args(cifar10_dir, tmp_path / "exp", "--method", "vanilla", "--epochs", "2")) == 0
    folder = only_experiment(tmp_path / "exp")
    checkpoint = folder / "checkpoint.pth.tar"
    checkpoint.rename(tmp_path / "set_aside.pth.tar")  # the settings must come from the log's line
    run = run_log.read_run(str(folder))
    (tmp_path / "set_aside.pth.tar").rename(checkpoint)
    with open(folder / "log.pkl", "rb") as f:
        history = pickle.load(f)
    assert run.status == "finished" and (run.method, run.epochs_total) == ("vanilla", 2)
    assert run.test_acc == [round(a, 2) for a in history["test_acc"]]
    assert run.test_loss == pytest.approx(history["test_loss"], abs=5e-4)

    # A log whose settings line is gone: the checkpoint's saved arguments stand in.
    log = folder / "log.txt"
    log.write_text("\n".join(line for line in log.read_text().splitlines() if not line.startswith("{")) + "\n")
    assert run_log.read_run(str(folder)).settings["method"] == "vanilla"
