"""Evaluation numbers that would be wrong without anyone noticing (issue 28): each compared with an
independent computation written here, from the logits, the saved model or the files, never with
the code under test.

- the reliability diagram's bars against bin accuracies and confidences from the logits;
- the per-epoch ``test_ece`` of log.pkl against the ECE of the saved model on the test set, and
  one checkpoint's top-1 and ECE through every command that reports them;
- FGSM and CIFAR-C under torchrun against one process; CIFAR-100-C normalised with CIFAR-100's
  statistics; FGSM under ``--amp bf16`` attacking in float32;
- the CIFAR-C column and lines saying what they average, standard or as Puzzle Mix's
  ``test_robust.py``.
"""
from __future__ import annotations

import contextlib
import csv
import glob
import io
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comixup import models
from comixup.core.calibration import CalibrationMeter
from comixup.data import cifar_c
from comixup.data.synthetic import write_cifar
from comixup.evaluation import reliability, robustness
from comixup.evaluation import table as evaluation_table
from comixup.evaluation.report import corruption_column
from comixup.train import methods

import main
from tests.support.evaluation import (
    CALIB_RE,
    FGSM_RE,
    MEAN,
    STD,
    eval_args,
    normalise,
    reference_ece,
    reference_fgsm_error,
    unnormalised_split,
    write_release,
)
from tests.support.processes import reductions, torchrun
from tests.support.published import save_published_checkpoint
from tests.support.runs import TEST_RE, TRAIN_PER_CLASS, base_args, one_error_line, only_experiment, read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

# test_calibration's: a CIFAR-10 of 400 test images and a trained model in the published format

# CIFAR-100's statistics as the published code and Puzzle Mix's test_robust.py write them (x / 255)
CIFAR100_MEAN = (129.3 / 255, 124.1 / 255, 112.4 / 255)
CIFAR100_STD = (68.2 / 255, 65.4 / 255, 70.4 / 255)
SHORT_RUN_TEST_PER_CLASS = 10  # 100 test images


# --------------------------------------------------------------------------- independent computations

def reference_bins(logits: torch.Tensor, labels: torch.Tensor, bins: int) -> list[tuple[float, float, float]]:
    """(bin centre, accuracy, mean confidence) of every non-empty bin (lo, hi] of the top-1 softmax
    confidence, in float64 with numpy."""
    probs = torch.softmax(logits.double(), dim=1).numpy()
    confidence, right = probs.max(axis=1), probs.argmax(axis=1) == labels.numpy()
    edges = np.linspace(0.0, 1.0, bins + 1)
    found = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        members = (confidence > lo) & (confidence <= hi)
        if members.any():
            found.append(((lo + hi) / 2, right[members].mean(), confidence[members].mean()))
    return found


def logits_of(model: torch.nn.Module, images: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """The model's logits for [0, 1] images, normalised with ``mean`` and ``std``, in float32."""
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.eval()((images - mean_t) / std_t)


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(1) == labels).double().mean().item()


def puzzle_mix_accuracies(model: torch.nn.Module, folder: Path, mean=MEAN, std=STD) -> dict[str, float]:
    """What Puzzle Mix's test_robust.py computes per file: every .npy of the folder but labels.npy,
    the images of the 5 levels one after the other, the mean top-1 accuracy (percent) over them."""
    labels = torch.from_numpy(np.load(folder / "labels.npy").astype(np.int64))
    accuracies = {}
    for path in sorted(glob.glob(str(folder / "*.npy"))):
        name = os.path.basename(path)[:-len(".npy")]
        if name == "labels":
            continue
        levels = np.load(path).reshape(5, -1, 32, 32, 3)
        count = levels.shape[1]
        per_level = []
        for level in levels:
            images = torch.from_numpy(level / 255).float().permute(0, 3, 1, 2)
            per_level.append(top1(logits_of(model, images, mean, std), labels[:count]))
        accuracies[name] = float(np.mean(per_level))
    return accuracies


def two_per_class(labels: torch.Tensor) -> torch.Tensor:
    """Indices of the first two images of every class (a release needs every class)."""
    return torch.cat([torch.nonzero(labels == c).flatten()[:2] for c in range(10)])


def as_pixels(images: torch.Tensor) -> np.ndarray:
    """[0, 1] images (N, 3, 32, 32) as the release stores them: uint8, (N, 32, 32, 3)."""
    return (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()


# --------------------------------------------------------------------------- the reliability diagram

def test_reliability_bars_are_the_bins_accuracy_and_confidence():
    """Every blue bar stands over its bin as high as the bin's accuracy; its red bar goes from there
    to the bin's mean confidence; empty bins have none."""
    generator = torch.Generator().manual_seed(3)
    # unsure but mostly right (bars above their confidence), and sure but often wrong (below it)
    unsure = 0.4 * torch.randn(300, 10, generator=generator)
    sure = 6.0 * torch.randn(300, 10, generator=generator)
    logits = torch.cat([unsure, sure])
    labels = logits.argmax(1)
    wrong = torch.rand(600, generator=generator) < torch.cat([torch.full((300,), 0.1), torch.full((300,), 0.5)])
    labels[wrong] = torch.randint(0, 10, (int(wrong.sum()),), generator=generator)
    bins = 15
    meter = CalibrationMeter(bins)
    meter.update(logits, labels)

    figure = reliability.draw_reliability([reliability.ReliabilityPanel.of("comix", meter)])
    accuracy_bars, gap_bars = figure.axes[0].containers[:2]
    expected = reference_bins(logits, labels, bins)
    assert len(accuracy_bars.patches) == len(gap_bars.patches) == len(expected) >= 5
    for bar, gap, (centre, accuracy, confidence) in zip(accuracy_bars.patches, gap_bars.patches, expected,
                                                        strict=True):
        assert bar.get_x() + bar.get_width() / 2 == pytest.approx(centre, abs=1e-9)
        assert bar.get_width() == pytest.approx(1 / bins)
        assert (bar.get_y(), bar.get_height()) == pytest.approx((0.0, accuracy), abs=1e-6)
        assert gap.get_x() == pytest.approx(bar.get_x()) and gap.get_width() == pytest.approx(bar.get_width())
        assert gap.get_y() == pytest.approx(accuracy, abs=1e-6)
        assert gap.get_y() + gap.get_height() == pytest.approx(confidence, abs=1e-6)
    gaps = [gap.get_height() for gap in gap_bars.patches]
    assert min(gaps) < -0.05 and max(gaps) > 0.05  # both directions drawn: the test has teeth
    # the bar heights' weighted gaps are the ECE of the title
    counts = [b.count for b in meter.reliability() if b.count]
    ece = 100 * sum(n * abs(g) for n, g in zip(counts, gaps, strict=True)) / sum(counts)
    assert f"ECE {ece:.2f}%" in figure.axes[0].get_title()


# --------------------------------------------------------------------------- one short run, its numbers

@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """Two epochs of vanilla training on a CIFAR-10 of 60 training and 100 test images: the data
    folder, the experiment folder and the log.txt lines."""
    root = tmp_path_factory.mktemp("short_run")
    data_dir = write_cifar(root / "data", "cifar10", train_per_class=TRAIN_PER_CLASS,
                           test_per_class=SHORT_RUN_TEST_PER_CLASS)
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
        import torchvision.datasets.cifar as cifar

        patch.setattr(cifar, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file())
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert main.main(base_args(data_dir, root / "exp", "--comix", "False", "--epochs", "2")) == 0
        finally:
            torch.set_num_threads(threads)
    exp = only_experiment(root / "exp")
    return data_dir, exp, (exp / "log.txt").read_text().splitlines()


def saved_model(path: Path) -> torch.nn.Module:
    """The checkpoint's weights in a model built here, in eval mode."""
    model = models.build_model("preactresnet18", 10, initial_channels=16)
    model.load_state_dict(read_checkpoint(path)["state_dict"])
    return model.eval()


def test_per_epoch_test_ece_is_the_ece_of_the_saved_model(short_run, cifar_no_md5):
    data_dir, exp, _ = short_run
    with open(exp / "log.pkl", "rb") as f:
        history = pickle.load(f)
    assert len(history["test_ece"]) == 2
    images, labels = unnormalised_split(data_dir, train=False)
    assert len(labels) == 100

    # the last epoch's value: the final checkpoint's model on the test set
    logits = logits_of(saved_model(exp / "checkpoint.pth.tar"), images)
    assert history["test_ece"][-1] == pytest.approx(reference_ece(logits, labels), abs=1e-3)
    assert history["test_acc"][-1] == pytest.approx(top1(logits, labels), abs=1e-6)

    # the best epoch's value: model_best's model (the epoch it records)
    best = read_checkpoint(exp / "model_best.pth.tar")
    epoch = best["epoch"] - 1
    best_logits = logits_of(saved_model(exp / "model_best.pth.tar"), images)
    assert history["test_ece"][epoch] == pytest.approx(reference_ece(best_logits, labels), abs=1e-3)
    assert history["test_acc"][epoch] == pytest.approx(top1(best_logits, labels), abs=1e-6)
    assert history["test_ece"][0] != history["test_ece"][1]  # two epochs, two models


def test_one_checkpoint_reports_the_same_top1_and_ece_everywhere(short_run, cifar_no_md5, tmp_path, capsys,
                                                                 monkeypatch):
    """The last epoch's Test and Calib lines of log.txt, main.py --evaluate of its checkpoint,
    evaluate.py's table and its reliability diagram's panel title: one top-1 and one ECE."""
    data_dir, exp, logged = short_run
    checkpoint = exp / "checkpoint.pth.tar"
    at = max(i for i, line in enumerate(logged) if TEST_RE.match(line))
    test_line, calib_line = logged[at], logged[at + 1]
    logged_test, logged_calib = TEST_RE.match(test_line), CALIB_RE.match(calib_line)
    assert logged_calib, calib_line
    prec1, error1, ece = logged_test.group(1), logged_test.group(3), logged_calib.group(1)

    # main.py --evaluate of the checkpoint: the same two lines
    argv = base_args(data_dir, tmp_path / "eval", "--comix", "False", "--evaluate", "--log_off",
                     "--resume", str(checkpoint))
    assert main.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if TEST_RE.match(line)] == [test_line]
    assert out[out.index(test_line) + 1] == calib_line

    # evaluate.py: its table row and the diagram's panel title
    drawn = []

    def keep_figure(*args, **kwargs):
        drawn.append(reliability.draw_reliability(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(evaluation_table, "draw_reliability", keep_figure)
    assert evaluation_table.main([str(checkpoint), "--dataset", "cifar10", "--data_dir", str(data_dir), "--ngpu", "0",
                                  "--batch_size", "20", "--format", "markdown",
                                  "--diagram", str(tmp_path / "diagram.png")]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("| method | checkpoint | arch | top-1 error | ECE | NLL |")
    assert rows[2].startswith(f"| vanilla | {checkpoint} | preactresnet18 | {error1} | {ece} | ")
    title = drawn[0].axes[0].get_title()
    assert title == f"vanilla\nECE {ece}%, accuracy {prec1}%"

    # and they are the numbers of the saved model, computed here
    images, labels = unnormalised_split(data_dir, train=False)
    logits = logits_of(saved_model(checkpoint), images)
    assert float(prec1) == pytest.approx(top1(logits, labels), abs=0.005)
    assert float(ece) == pytest.approx(reference_ece(logits, labels), abs=0.006)


# --------------------------------------------------------------------------- torchrun

@pytest.mark.slow
def test_fgsm_and_cifar_c_under_torchrun_are_the_whole_sets(published_run, cifar_no_md5, tmp_path):
    """One torchrun of 2 CPU processes, --evaluate --fgsm 8 --corruption_dir: every number that of the
    whole set, as one process computes it here; each rank classified its half."""
    data_dir, checkpoint, model = published_run
    images, labels = unnormalised_split(data_dir, train=False)
    # a release of 20 images, two of each class (a CIFAR-10-C release holds every class)
    chosen = torch.cat([torch.nonzero(labels == c)[:2, 0] for c in range(10)])
    pixels, chosen_labels = as_pixels(images[chosen]), labels[chosen]
    shifts = {"fog": 12, "jpeg_compression": 30}
    release = write_release(tmp_path / "CIFAR-10-C", pixels, chosen_labels.numpy(), shifts)
    record = tmp_path / "reductions"
    result = torchrun(eval_args(data_dir, checkpoint, "--fgsm", "8", "--corruption_dir", str(release),
                                "--batch_size", "50"), tmp_path, record)
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout.splitlines()

    fgsm = [m for m in map(FGSM_RE.match, out) if m]
    assert len(fgsm) == 1
    assert float(fgsm[0].group(3)) == pytest.approx(reference_fgsm_error(model, images, labels, 8), abs=0.25)
    missing = [line for line in out if line.startswith("=> CIFAR-C:")]
    assert len(missing) == 1 and "13 of the 15 standard corruptions are missing" in missing[0]
    assert "gaussian_noise" in missing[0] and "fog" not in missing[0].split("missing:")[1]
    lines = {line.split()[1]: line for line in out if line.startswith("**CIFAR-C** ")}
    assert list(lines) == ["fog", "jpeg_compression", "mean"]  # the standard order, then the mean
    means = []
    for name, shift in shifts.items():
        errors = []
        for severity in range(1, 6):
            darker = np.clip(pixels.astype(np.int16) - shift * severity, 0, 255).astype(np.float32) / 255
            logits = logits_of(model, torch.from_numpy(darker).permute(0, 3, 1, 2))
            errors.append(100 - top1(logits, chosen_labels))
        assert [float(e) for e in re.findall(r"s\d (\d+\.\d\d)", lines[name])] == pytest.approx(errors, abs=0.011)
        means.append(np.mean(errors))
    assert f"Error@1 {np.mean(means):.2f} over 2 corruptions x 5 severities (unnormalised)" in lines["mean"]

    # each pass: every rank its half, the sums the whole set (test, FGSM, then 2 x 5 severities)
    calls = [reductions(record, rank) for rank in (0, 1)]
    assert [c["sums"][3] for c in calls[0]] == [400, 400] + [20] * 10
    assert [c["values"][3] for c in calls[0]] == [c["values"][3] for c in calls[1]] == [200, 200] + [10] * 10


# --------------------------------------------------------------------------- CIFAR-100-C

def test_cifar100_c_is_normalised_with_cifar100_statistics(tmp_path, cifar_no_md5, capsys, monkeypatch):
    """What reaches the model from a CIFAR-100-C file, through main.py and evaluate.py: the pixels
    normalised with CIFAR-100's mean and std (not CIFAR-10's)."""
    data_dir = write_cifar(tmp_path / "data", "cifar100", train_per_class=1, test_per_class=1)
    torch.manual_seed(0)
    model = models.build_model("preactresnet18", 100, initial_channels=16)
    checkpoint = tmp_path / "published" / "checkpoint.pth.tar"
    checkpoint.parent.mkdir()
    save_published_checkpoint(checkpoint, model, torch.optim.SGD(model.parameters(), lr=0.1))
    pixels = np.random.default_rng(0).integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    release = write_release(tmp_path / "CIFAR-100-C", pixels, np.arange(100), {"snow": 20})

    seen: list[tuple[int, torch.Tensor]] = []
    evaluate = robustness.evaluate

    def spying(net, loader, *args, **kwargs):
        if isinstance(loader, robustness.CorruptedImages):
            seen.append((loader.severity, torch.cat([images for images, _ in loader])))
        return evaluate(net, loader, *args, **kwargs)

    monkeypatch.setattr(robustness, "evaluate", spying)
    common = ["--dataset", "cifar100", "--data_dir", str(data_dir), "--ngpu", "0", "--corruption_dir", str(release)]
    assert main.main(["--evaluate", "--log_off", "--resume", str(checkpoint), "--arch", "preactresnet18",
                      "--initial_channels", "16", *common]) == 0
    assert evaluation_table.main([str(checkpoint), "--initial_channels", "16", *common]) == 0
    capsys.readouterr()

    assert [severity for severity, _ in seen] == [1, 2, 3, 4, 5] * 2  # main.py, then evaluate.py
    mean, std = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    for severity, images in seen:
        level = np.clip(pixels.astype(np.int16) - 20 * severity, 0, 255).astype(np.float32) / 255
        expected = (torch.from_numpy(level).permute(0, 3, 1, 2) - mean) / std
        torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
        cifar10 = (torch.from_numpy(level).permute(0, 3, 1, 2) - torch.tensor(MEAN).view(1, 3, 1, 1)) / \
            torch.tensor(STD).view(1, 3, 1, 1)
        assert (images - cifar10).abs().max() > 0.05  # the two normalisations differ: the test has teeth


# --------------------------------------------------------------------------- FGSM under --amp

@pytest.mark.slow  # FGSM twice over the test set: a long run
def test_fgsm_under_bf16_attacks_in_float32(published_run, cifar_no_md5):
    """The decision of robustness.FGSM: the attack (its gradient's forward) runs in float32 also under
    autocast, so its images are those of a float32 run exactly; only their classification runs in
    bfloat16."""
    data_dir, _, model = published_run
    images, labels = unnormalised_split(data_dir, train=False)
    images, labels = images[:20], labels[:20]  # bfloat16 on the CPU is slow
    normalisation = robustness.Normalisation(MEAN, STD)

    # FGSM in float32, written out: the summed cross-entropy's gradient over the [0, 1] image
    x = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(model(normalise(x)), labels, reduction="sum"), x)
    expected = normalise((images + 8 / 255 * gradient.sign()).clamp(0, 1))

    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast does not reach the attack
        attacked = robustness.FGSM(8, normalisation)(model, normalise(images), labels)
    assert attacked.dtype == torch.float32
    torch.testing.assert_close(attacked, expected, atol=1e-5, rtol=0)

    bf16 = methods.Precision.from_flag("bf16", torch.device("cpu"))
    clean, accuracy = robustness.fgsm_accuracy(model, [(normalise(images), labels)], [0, 8], normalisation, bf16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert accuracy == pytest.approx(top1(model(expected).float(), labels), abs=1e-9)
        assert clean == pytest.approx(top1(model(normalise(images)).float(), labels), abs=1e-9)  # eps 0: clean
    assert accuracy < clean
    assert model.training is False

    # why: the bfloat16 gradient's signs differ from float32's for some pixels
    x = images.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(normalise(x))
    (low_precision,) = torch.autograd.grad(F.cross_entropy(logits.float(), labels, reduction="sum"), x)
    assert (low_precision.sign() != gradient.sign()).any()


# --------------------------------------------------------------------------- what the CIFAR-C mean averages

@pytest.fixture
def mixed_release(published_run, tmp_path):
    """A release folder of 20 test images (two per class) with two standard corruptions, one of the
    release's extra ones and a file of the user's: Puzzle Mix averages all four, the standard
    mean the first two."""
    data_dir, _, _ = published_run
    images, labels = unnormalised_split(data_dir, train=False)
    chosen = two_per_class(labels)
    folder = write_release(tmp_path / "CIFAR-10-C", as_pixels(images[chosen]), labels[chosen].numpy(),
                           {"fog": 12, "jpeg_compression": 30, "spatter": 45, "my_own": 60})
    return folder


@pytest.mark.slow  # a corruption release through the evaluate command: a long run
def test_evaluate_py_column_says_what_it_averages(published_run, cifar_no_md5, mixed_release, capsys):
    data_dir, checkpoint, model = published_run
    accuracies = puzzle_mix_accuracies(model, mixed_release)
    assert sorted(accuracies) == ["fog", "jpeg_compression", "my_own", "spatter"]
    standard_error = np.mean([100 - accuracies[name] for name in ("fog", "jpeg_compression")])
    published_accuracy = np.mean(list(accuracies.values()))
    assert abs((100 - standard_error) - published_accuracy) > 1  # the two averages differ here
    common = [str(checkpoint), "--dataset", "cifar10", "--data_dir", str(data_dir), "--ngpu", "0",
              "--initial_channels", "16", "--corruption_dir", str(mixed_release)]

    assert evaluation_table.main([*common, "--format", "csv"]) == 0
    captured = capsys.readouterr()
    row = next(csv.DictReader(io.StringIO(captured.out)))
    assert float(row["cifar_c_error"]) == pytest.approx(standard_error, abs=1e-3)
    assert row["cifar_c_corruptions"] == "2" and "cifar_c_accuracy_published" not in row
    assert "lacks 13 of the 15 standard corruptions" in captured.err

    assert evaluation_table.main([*common, "--corruption_average", "published", "--format", "markdown"]) == 0
    captured = capsys.readouterr()
    header, _, row = captured.out.splitlines()
    assert header.endswith('| CIFAR-C accuracy (4 files, Puzzle Mix\'s "mCE") |')
    assert row.endswith(f"| {published_accuracy:.2f} |")
    assert ("note: --corruption_average published, as Puzzle Mix's test_robust.py: the mean accuracy over every "
            f".npy file of {mixed_release}, 4 files: 2 of the 15 standard corruptions (missing: gaussian_noise, ") \
        in captured.err
    assert "1 extra (spatter) and 1 other file (my_own)" in captured.err

    assert evaluation_table.main([*common, "--format", "markdown"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("| CIFAR-C error (2 of 15) |")
    full = robustness.CorruptionAverage("standard", 12.5, len(cifar_c.CORRUPTIONS))
    assert corruption_column(full) == "CIFAR-C error (15)"


def test_main_published_average_prints_accuracies_labelled_as_such(published_run, cifar_no_md5, mixed_release,
                                                                     capsys):
    data_dir, checkpoint, model = published_run
    accuracies = puzzle_mix_accuracies(model, mixed_release)
    assert main.main(eval_args(data_dir, checkpoint, "--corruption_dir", str(mixed_release),
                               "--corruption_average", "published")) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"=> CIFAR-C: --corruption_average published, as Puzzle Mix's test_robust.py: the mean accuracy over " \
           f"every .npy file of {mixed_release}, 4 files: " in "\n".join(out)
    assert not [line for line in out if line.startswith("=> CIFAR-C: 13 of the 15")]  # no standard note
    lines = {line.split()[1]: line for line in out if line.startswith("**CIFAR-C** ")}
    assert list(lines) == ["fog", "jpeg_compression", "my_own", "spatter", "mean"]  # every file, by name
    for name, accuracy in accuracies.items():
        assert lines[name].startswith(f"**CIFAR-C** {name} Prec@1 s1 ")
        assert lines[name].endswith(f" mean {accuracy:.2f}")
    mean = np.mean(list(accuracies.values()))
    assert lines["mean"] == (f"**CIFAR-C** mean Prec@1 {mean:.2f} over 4 files x 5 severities (Puzzle Mix's "
                             f"\"mCE\": a mean accuracy, not an error)")


def test_published_average_checks_every_file_and_needs_a_folder(published_run, cifar_no_md5, mixed_release,
                                                                 capsys):
    data_dir, checkpoint, _ = published_run
    np.save(mixed_release / "my_own.npy", np.zeros((100, 32, 32), np.uint8))  # lost its channel axis
    argv = eval_args(data_dir, checkpoint, "--corruption_dir", str(mixed_release), "--corruption_average",
                     "published")
    assert main.main(argv) == 2
    assert f"{mixed_release / 'my_own.npy'} holds uint8 images of shape (100, 32, 32)" in one_error_line(capsys)
    common = ["--dataset", "cifar10", "--data_dir", str(data_dir), "--ngpu", "0", "--initial_channels", "16"]
    assert evaluation_table.main([str(checkpoint), *common, "--corruption_dir", str(mixed_release),
                                  "--corruption_average", "published"]) == 2
    assert "my_own.npy holds uint8 images" in one_error_line(capsys)

    assert main.main(eval_args(data_dir, checkpoint, "--corruption_average", "published")) == 2
    assert "--corruption_average published averages the files of a CIFAR-C folder: give --corruption_dir" in \
        one_error_line(capsys)
    assert evaluation_table.main([str(checkpoint), *common, "--corruption_average", "published"]) == 2
    assert "--corruption_average published averages the files of a CIFAR-C folder" in one_error_line(capsys)
