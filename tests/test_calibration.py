"""Calibration and robustness (issue 22): the ECE meter against its definition, ``main.py --evaluate``
with ``--fgsm`` and ``--corruption_dir`` on a checkpoint in the published format (every printed
number recomputed here from the model and the data), the per-epoch ``test_ece`` of training, the
CIFAR-C reader on files in the release format, and ``evaluate.py``'s table and reliability diagrams."""
from __future__ import annotations

import csv
import io
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from comixup import models
from comixup.core.calibration import CalibrationMeter
from comixup.data import cifar_c
from comixup.data.datasets import DataError
from comixup.evaluation import reliability
from comixup.evaluation import table as evaluation_table

import main
from tests.support.evaluation import (
    CALIB_RE,
    FGSM_RE,
    eval_args,
    normalise,
    reference_bins,
    reference_ece,
    reference_fgsm_error,
    unnormalised_split,
    write_release,
)
from tests.support.runs import TEST_RE, base_args, one_error_line, only_experiment

pytestmark = pytest.mark.usefixtures("one_thread")
PRE_MOVE = Path(__file__).resolve().parent / "data" / "pre_move_run" / "checkpoint.pth.tar"

# --------------------------------------------------------------------------- the ECE meter

def test_the_meter_is_guo_et_al_and_merges_raw_sums():
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(500, 10, generator=generator)
    labels = torch.randint(0, 10, (500,), generator=generator)
    whole = CalibrationMeter(15)
    whole.update(logits, labels)
    assert whole.ece == pytest.approx(reference_ece(logits, labels), abs=1e-5)
    assert whole.nll == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert whole.accuracy == pytest.approx(100 * (logits.argmax(1) == labels).float().mean().item())
    assert whole.count == 500 and sum(b.count for b in whole.reliability()) == 500

    # two shards (two ranks, or two batches): their raw sums add up to the whole set's ECE, which
    # the mean of the shards' ECEs is not
    first, second = CalibrationMeter(15), CalibrationMeter(15)
    first.update(logits[:100], labels[:100])
    second.update(logits[100:], labels[100:])
    summed = CalibrationMeter.from_sums(np.add(first.sums(), second.sums()))
    assert summed.ece == pytest.approx(whole.ece, abs=1e-5)
    assert first.merge(second).ece == pytest.approx(whole.ece, abs=1e-5)
    assert abs((first.ece + second.ece) / 2 - whole.ece) > 0.1


def test_bins_are_left_open_right_closed():
    meter = CalibrationMeter(10)
    confidence = torch.tensor([0.1, 0.1000001, 0.55, 1.0, 0.2], dtype=torch.float64)
    assert meter.bin_index(confidence).tolist() == [0, 1, 5, 9, 1]
    # a bin count of 3 on the published 15 bins' data: still Guo et al.'s definition
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 1.5]])
    labels = torch.tensor([0, 0, 1])
    three = CalibrationMeter(3)
    three.update(logits, labels)
    assert three.ece == pytest.approx(reference_ece(logits, labels, bins=3), abs=1e-5)
    with pytest.raises(ValueError):
        CalibrationMeter(0)


# --------------------------------------------------------------------------- main.py --evaluate

@pytest.mark.slow  # FGSM on 400 images; evaluate.py's test runs it in the fast tier
def test_evaluate_prints_ece_and_fgsm_equal_to_the_definitions(published_run, cifar_no_md5, capsys):
    """The issue's 'done when': a published-format CIFAR-10 checkpoint, --fgsm 8."""
    data_dir, checkpoint, model = published_run
    assert main.main(eval_args(data_dir, checkpoint, "--fgsm", "8")) == 0
    out = capsys.readouterr().out.splitlines()

    images, labels = unnormalised_split(data_dir, train=False)
    with torch.no_grad():
        logits = model(normalise(images))
    top1 = (logits.argmax(1) == labels).float().mean().item() * 100
    top5 = (logits.topk(5, dim=1).indices == labels[:, None]).any(1).float().mean().item() * 100
    loss = F.binary_cross_entropy(F.softmax(logits, 1), F.one_hot(labels, 10).float()).item()
    test_line = f"**Test ** Prec@1 {top1:.2f} Prec@5 {top5:.2f} Error@1 {100 - top1:.2f} Loss: {loss:.3f} "
    assert [line for line in out if TEST_RE.match(line)] == [test_line]  # unchanged

    at = out.index(test_line)
    calibration = CALIB_RE.match(out[at + 1])
    assert calibration, out[at + 1]
    assert float(calibration.group(1)) == pytest.approx(reference_ece(logits, labels), abs=0.05)
    assert float(calibration.group(2)) == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-3)
    assert calibration.group(4) == "15"

    fgsm = [m for m in map(FGSM_RE.match, out) if m]
    assert len(fgsm) == 1 and fgsm[0].group(1) == "8"
    expected = reference_fgsm_error(model, images, labels, 8)
    assert float(fgsm[0].group(3)) == pytest.approx(expected, abs=0.25)
    assert float(fgsm[0].group(3)) > 100 - top1  # the attack has teeth on this model
    assert float(fgsm[0].group(2)) == pytest.approx(100 - float(fgsm[0].group(3)), abs=0.011)


def test_a_malformed_release_is_refused_with_one_line_before_any_work(published_run, cifar_no_md5, tmp_path,
                                                                       capsys):
    data_dir, checkpoint, _ = published_run
    labels = np.arange(10).repeat(2)
    release = write_release(tmp_path / "c10c", np.zeros((20, 32, 32, 3), np.uint8), labels, {"snow": 5})
    np.save(release / "frost.npy", np.zeros((100, 32, 32), np.uint8))  # lost its channel axis
    assert main.main(eval_args(data_dir, checkpoint, "--corruption_dir", str(release))) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing was built or read
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert "frost.npy holds uint8 images of shape (100, 32, 32), expected uint8 (100, 32, 32, 3)" in lines[0]

    (release / "frost.npy").unlink()
    (release / "labels.npy").unlink()
    assert main.main(eval_args(data_dir, checkpoint, "--corruption_dir", str(release))) == 2
    assert "has no labels.npy" in one_error_line(capsys)
    assert main.main(eval_args(data_dir, checkpoint, "--corruption_dir", str(tmp_path / "absent"))) == 2
    assert "does not exist" in one_error_line(capsys)


def test_the_release_reader(tmp_path):
    labels = np.arange(10).repeat(3)  # 30 test images
    images = np.random.default_rng(0).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    folder = write_release(tmp_path / "release", images, labels, {"brightness": 0, "contrast": 7})
    release = cifar_c.open_release(str(folder), num_classes=10)
    assert release.found == ["brightness", "contrast"] and release.per_severity == 30
    assert release.missing == [name for name in cifar_c.CORRUPTIONS if name not in ("brightness", "contrast")]
    level_3, level_3_labels = release.severity("contrast", 3)
    assert np.array_equal(level_3, np.clip(images.astype(np.int16) - 21, 0, 255)) and level_3_labels.tolist() == \
        labels.tolist()

    with pytest.raises(DataError, match=r"holds the labels of CIFAR-10-C \(classes 0 to 9\), but the data set has 5 "
                                        r"classes and needs every class 0 to 4"):
        cifar_c.open_release(str(folder), num_classes=5)
    np.save(folder / "labels.npy", np.arange(31))
    with pytest.raises(DataError, match=r"shape \(5 x n,\)"):
        cifar_c.open_release(str(folder), num_classes=100)
    empty = tmp_path / "empty"
    empty.mkdir()
    np.save(empty / "labels.npy", np.zeros(10, np.int64))
    with pytest.raises(DataError, match="none of the 15 standard corruption files"):
        cifar_c.open_release(str(empty), num_classes=10)
    (empty / "fog.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="cannot read .*fog.npy"):
        cifar_c.open_release(str(empty), num_classes=10)


@pytest.mark.parametrize("extra,fragment", [
    (("--fgsm", "8"), "--fgsm measures a trained model: use it with --evaluate"),
    (("--evaluate", "--fgsm", "-1"), "--fgsm takes strengths in 1/255 units"),
    (("--evaluate", "--ece_bins", "0"), "--ece_bins must be 1 or more"),
    (("--evaluate", "--corruption_dir", "x", "--dataset", "tiny-imagenet-200"), "use it with --dataset cifar10"),
])
def test_bad_evaluation_flags_exit_2(cifar10_dir, tmp_path, capsys, extra, fragment):
    argv = base_args(cifar10_dir, tmp_path / "exp", *extra)  # a second --dataset overrides the first
    assert main.main(argv) == 2
    assert fragment in one_error_line(capsys)


# --------------------------------------------------------------------------- training

def test_two_epochs_leave_two_ece_entries_in_log_pkl_and_log_txt(cifar10_dir, tmp_path, capsys):
    from comixup.compare import table as compare

    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, "--comix", "False", "--epochs", "2", "--ece_bins", "10")) == 0
    exp = only_experiment(root)
    with open(exp / "log.pkl", "rb") as f:
        history = pickle.load(f)
    assert len(history["test_ece"]) == len(history["test_acc"]) == 2
    assert all(0 <= value <= 100 for value in history["test_ece"])
    lines = (exp / "log.txt").read_text().splitlines()
    tests = [at for at, line in enumerate(lines) if TEST_RE.match(line)]
    calibration = [CALIB_RE.match(lines[at + 1]) for at in tests]
    assert all(calibration) and [m.group(4) for m in calibration] == ["10", "10"]
    assert [m.group(1) for m in calibration] == [f"{v:.2f}" for v in history["test_ece"]]
    capsys.readouterr()

    # compare.py shows the last one beside the accuracies
    assert compare.main([str(root), "--format", "csv"]) == 0
    row = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert float(row["last_ece_mean"]) == pytest.approx(round(history["test_ece"][-1], 2))


def test_a_checkpoint_without_test_ece_resumes_with_nan_for_its_epochs(cifar10_dir, tmp_path):
    resume_from = tmp_path / "checkpoint.pth.tar"
    shutil.copyfile(PRE_MOVE, resume_from)
    root = tmp_path / "exp"
    argv = base_args(cifar10_dir, root, "--seed", "3", "--resume", str(resume_from)) + ["--epochs", "2"]
    assert main.main(argv) == 0
    exp = only_experiment(root)
    with open(exp / "log.pkl", "rb") as f:
        history = pickle.load(f)
    assert len(history["test_acc"]) == len(history["test_ece"]) == 2
    assert math.isnan(history["test_ece"][0]) and 0 <= history["test_ece"][1] <= 100


# --------------------------------------------------------------------------- evaluate.py

@pytest.mark.slow  # two checkpoints through the evaluate command, FGSM and the diagram: a long run
def test_evaluate_command_table_and_reliability_diagrams(published_run, cifar_no_md5, tmp_path, capsys, monkeypatch):
    data_dir, checkpoint, model = published_run
    drawn = []

    def drawing(panels, size=None):
        drawn.append(reliability.draw_reliability(panels, size))
        return drawn[-1]

    monkeypatch.setattr(evaluation_table, "draw_reliability", drawing)
    torch.manual_seed(5)
    untrained = models.build_model("preactresnet18", 10, initial_channels=16)
    bare = tmp_path / "untrained.pt"
    torch.save(untrained.state_dict(), bare)  # a bare state dict: --arch says what it is
    diagram, table = tmp_path / "calibration.png", tmp_path / "table.csv"
    argv = [str(checkpoint), str(bare), "--names", "comix", "vanilla", "--dataset", "cifar10", "--data_dir",
            str(data_dir), "--arch", "preactresnet18", "--initial_channels", "16", "--ngpu", "0", "--fgsm", "8",
            "--diagram", str(diagram), "--format", "csv", "--out", str(table)]
    assert evaluation_table.main(argv) == 0
    assert capsys.readouterr().out == ""

    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert [row["method"] for row in rows] == ["comix", "vanilla"]
    images, labels = unnormalised_split(data_dir, train=False)
    (figure,) = drawn
    assert len(figure.axes) == 4  # per checkpoint, a diagram above its counts
    for row, net, diagram_axes, counts_axes in zip(rows, (model, untrained.eval()), figure.axes[0::2],
                                                   figure.axes[1::2], strict=True):
        with torch.no_grad():
            logits = net(normalise(images))
        assert float(row["top1_error"]) == pytest.approx(100 * (logits.argmax(1) != labels).float().mean().item(),
                                                         abs=1e-3)
        assert float(row["ece"]) == pytest.approx(reference_ece(logits, labels), abs=0.05)
        # the panel: the method and its ECE in the title, the bins' accuracies as bars, every bin's count below
        title = diagram_axes.get_title()
        assert title.startswith(row["method"] + "\n") and f"ECE {float(row['ece']):.2f}%" in title
        expected = reference_bins(logits, labels)
        accuracy_bars = diagram_axes.containers[0]
        assert [bar.get_height() for bar in accuracy_bars] == pytest.approx([a for n, a in expected if n], abs=1e-6)
        assert [bar.get_height() for bar in counts_axes.containers[0]] == [n for n, _ in expected]
    assert float(rows[0]["fgsm_8_error"]) == pytest.approx(reference_fgsm_error(model, images, labels, 8), abs=0.25)
    # the file is that figure: a PNG of two panels of 3.2 x 4.6 inches at 100 pixels per inch (to the pixel
    # matplotlib's rounding of 4.6 x 100 decides, which changed between its versions)
    with Image.open(diagram) as png:
        assert png.format == "PNG" and abs(png.width - 640) <= 1 and abs(png.height - 460) <= 1

    # as Markdown on stdout, without FGSM: no FGSM column; the method saved in our checkpoints (none
    # in the published format: its folder's name)
    assert evaluation_table.main([str(checkpoint), *argv[argv.index("--dataset"):argv.index("--fgsm")],
                                  "--format", "markdown"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| method | checkpoint | arch | top-1 error | ECE | NLL |"
    top1_error = float(rows[0]["top1_error"])
    assert len(out) == 3 and out[2].startswith(f"| published | {checkpoint} | preactresnet18 | {top1_error:.2f} |")


def test_evaluate_command_refuses_bad_input_with_one_line(published_run, cifar_no_md5, tmp_path, capsys):
    data_dir, checkpoint, _ = published_run
    common = ["--dataset", "cifar10", "--data_dir", str(data_dir), "--ngpu", "0"]
    cases = [
        ([str(checkpoint), "--names", "a", "b", *common], "--names gives 2 names for 1 checkpoints"),
        ([str(checkpoint), *common, "--initial_channels", "64"],
         "holds a preactresnet18 of width 16 but this run asks for --initial_channels 64"),
        ([str(checkpoint), *common, "--initial_channels", "16", "--diagram", str(tmp_path / "no" / "d.png")],
         "the folder"),
        ([str(checkpoint), *common, "--initial_channels", "16", "--diagram", str(tmp_path / "d.pdf")],
         "must end in .png"),
        ([str(tmp_path / "missing.pth.tar"), *common], "no such checkpoint file"),
    ]
    for argv, fragment in cases:
        assert evaluation_table.main(argv) == 2, argv
        assert fragment in one_error_line(capsys)
    assert not (tmp_path / "d.pdf").exists()


def test_reliability_panels_show_method_ece_diagonal_and_counts():
    generator = torch.Generator().manual_seed(1)
    meters = []
    for scale in (1.0, 6.0):
        meter = CalibrationMeter(15)
        meter.update(scale * torch.randn(300, 10, generator=generator), torch.randint(0, 10, (300,),
                                                                                       generator=generator))
        meters.append(meter)
    panels = [reliability.ReliabilityPanel.of(name, meter)
              for name, meter in zip(("mixup", "comix"), meters, strict=True)]
    figure = reliability.draw_reliability(panels)
    diagrams, counts = figure.axes[0::2], figure.axes[1::2]
    assert len(figure.axes) == 4
    for axes, name, meter in zip(diagrams, ("mixup", "comix"), meters, strict=True):
        assert axes.get_title().startswith(name) and f"ECE {meter.ece:.2f}%" in axes.get_title()
        assert any(list(line.get_xdata()) == [0, 1] and list(line.get_ydata()) == [0, 1] for line in axes.lines)
    for axes, meter in zip(counts, meters, strict=True):
        written = sorted(int(text.get_text()) for text in axes.texts)
        assert written == sorted(b.count for b in meter.reliability() if b.count)
    assert reliability.figure_png(figure)[:8] == b"\x89PNG\r\n\x1a\n"
