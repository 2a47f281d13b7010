"""Several checkpoints on one data set, side by side: a paper-style table (top-1 error, expected
calibration error, NLL, FGSM error, CIFAR-C mean error) and the reliability diagrams.

    python evaluate.py vanilla.pth.tar mixup.pth.tar ... comix.pth.tar --dataset cifar100 \\
        --data_dir DIR [--fgsm 8] [--corruption_dir CIFAR-100-C [--corruption_average published]] \\
        [--diagram calibration.png] [--format text|markdown|csv] [--out FILE]

The CIFAR-C column says what it averages: "CIFAR-C error (15)" (the mean error over the 15
standard corruptions), "CIFAR-C error (3 of 15)" for a folder that lacks some (also a ``note:``
on stderr), or with ``--corruption_average published`` Puzzle Mix's figure, "CIFAR-C accuracy (19
files, Puzzle Mix's "mCE")"; in CSV a second column gives the count (``cifar_c_corruptions`` /
``cifar_c_files``).

Each checkpoint (ours, the published format, or a bare state dict) is checked against the data
set before any image is read: its architecture, width and class count come from the checkpoint
(``--arch`` and ``--initial_channels`` fill in what a bare state dict does not record, and are
refused with one line when they disagree with what it does). The numbers are those of
``main.py --evaluate``: ECE as :mod:`comixup.core.calibration` defines it, FGSM and the corruption
error as :mod:`comixup.evaluation.robustness` does. One process, on a GPU when one is there
(``--ngpu 0``: the CPU). The table goes to stdout (or ``--out``), a line per checkpoint to stderr
as it is done.

Exit status: 0; 2 with one ``error: ...`` line for bad input (arguments, a checkpoint that does not
fit, a missing or malformed data or CIFAR-C folder, an output folder that does not exist), found
before any evaluation; 1 when an output file cannot be written (files are replaced atomically);
130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from comixup import models
from comixup.core import lifecycle
from comixup.core.calibration import DEFAULT_BINS, CalibrationMeter
from comixup.core.files import atomic_write_bytes
from comixup.core.precision import AMP_MODES, Precision
from comixup.core.tables import TABLE_FORMATS, render_table
from comixup.data.cifar_c import (
    CORRUPTION_AVERAGES,
    PUBLISHED_AVERAGE,
    STANDARD_AVERAGE,
    CorruptionRelease,
    open_release,
)
from comixup.data.datasets import (
    CIFAR_CLASSES,
    DATASETS,
    DataError,
    check_data_dir,
    dataset_info,
    get_datasets,
    get_folder_test_set,
)
from comixup.data.loaders import get_test_loader
from comixup.evaluation.reliability import ReliabilityPanel, draw_reliability, figure_png
from comixup.evaluation.report import corruption_column, format_eps, published_basis
from comixup.evaluation.robustness import CorruptionAverage, Normalisation, corruption_errors, fgsm_accuracy
from comixup.train import checkpoints, distributed
from comixup.train.checkpoints import CheckpointError
from comixup.train.classifier import ClassifierSpec, classifier_spec
from comixup.train.loop import EvalResult, evaluate

__all__ = ["main", "get_args_parser", "CheckpointSpec", "CheckpointResult", "results_table", "EvaluationError"]

class EvaluationError(Exception):
    """Bad input for the evaluation; one line for the user (exit 2)."""


CSV_CORRUPTION_COLUMNS = {STANDARD_AVERAGE: ["cifar_c_error", "cifar_c_corruptions"],
                          PUBLISHED_AVERAGE: ["cifar_c_accuracy_published", "cifar_c_files"]}
"""The CSV columns of the CIFAR-C mean and of how many corruptions (files) it averages, per
--corruption_average: the names say which measure it is, an error or Puzzle Mix's accuracy."""


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointSpec:
    """A checkpoint to evaluate: path, name (table row and diagram title) and the classifier it holds."""

    path: str
    name: str
    classifier: ClassifierSpec

    @property
    def arch(self) -> str:
        return self.classifier.arch


def _saved_method(checkpoint: dict) -> str | None:
    """The method a checkpoint of ours was trained with (published checkpoints do not say)."""
    saved = checkpoint.get("args") or {}
    if saved.get("method"):
        return str(saved["method"])
    if "comix" in saved:
        return "comix" if lifecycle.str2bool(saved["comix"]) else "vanilla"
    return None


def inspect_checkpoint(path: str, name: str | None, args: argparse.Namespace, num_classes: int) -> CheckpointSpec:
    """Read ``path`` and check that its model fits ``args.dataset`` (architecture, width, classes,
    weights; :func:`comixup.train.classifier.classifier_spec`), without keeping the weights;
    CheckpointError (one line) otherwise."""
    checkpoint = checkpoints.load_checkpoint(path)
    spec = classifier_spec(checkpoint, path, arch=args.arch, num_classes=num_classes,
                           initial_channels=args.initial_channels, dataset=args.dataset, same_dataset=True)
    checkpoints.load_weights(spec.build(), checkpoint, path, f"{spec.describe()} for {args.dataset}")
    label = name or _saved_method(checkpoint) or os.path.basename(os.path.dirname(os.path.abspath(path)))
    return CheckpointSpec(path=path, name=label, classifier=spec)


def load_model(spec: CheckpointSpec, device: torch.device) -> nn.Module:
    """The checkpoint's model on ``device``, in eval mode."""
    model = spec.classifier.build()
    checkpoints.load_weights(model, checkpoints.load_checkpoint(spec.path), spec.path, spec.classifier.describe())
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

@dataclass
class CheckpointResult:
    """One checkpoint's numbers: the evaluation pass on the clean test set (accuracy, ECE, NLL, the
    calibration bins), the FGSM error (percent) per EPS, the CIFAR-C mean as --corruption_average
    takes it (None without --corruption_dir)."""

    spec: CheckpointSpec
    clean: EvalResult
    fgsm_error: dict[float, float] = field(default_factory=dict)
    corruption: CorruptionAverage | None = None

    @property
    def calibration(self) -> CalibrationMeter:
        return self.clean.calibration

    @property
    def top1_error(self) -> float:
        return self.clean.error


def evaluate_checkpoint(model: nn.Module, spec: CheckpointSpec, loader, args: argparse.Namespace,
                        release: CorruptionRelease | None, precision: Precision,
                        device: torch.device) -> CheckpointResult:
    """Every requested number of one model, each through the one evaluation pass."""
    dist_info = distributed.DistInfo(device=device)
    info = dataset_info(args.dataset)
    normalisation = Normalisation(info.mean, info.std)
    classes = spec.classifier.num_classes
    result = CheckpointResult(spec, evaluate(model, loader, classes, precision, dist_info, ece_bins=args.ece_bins))
    if args.fgsm:
        accuracies = fgsm_accuracy(model, loader, args.fgsm, normalisation, precision, dist_info, classes)
        result.fgsm_error = {eps: 100.0 - acc for eps, acc in zip(args.fgsm, accuracies, strict=True)}
    if release is not None:
        average = args.corruption_average
        results = list(corruption_errors(model, release, normalisation, args.batch_size, precision, dist_info,
                                         classes, corruptions=release.averaged(average)))
        result.corruption = CorruptionAverage.of(results, average)
    return result


def results_table(results: Sequence[CheckpointResult], fgsm: Sequence[float], fmt: str) -> str:
    """The paper-style table: one row per checkpoint (name, checkpoint, arch, top-1 error, ECE,
    NLL, FGSM error per EPS, and where the results have one the CIFAR-C mean), errors, accuracy
    and ECE in percent. The CIFAR-C column's header names its basis (:func:`corruption_column`);
    CSV, whose column names stay fixed for programs, adds a column with the count instead."""
    csv = fmt == "csv"
    header = ["method", "checkpoint", "arch", "top1_error" if csv else "top-1 error", "ece" if csv else "ECE",
              "nll" if csv else "NLL"]
    header += [f"fgsm_{eps:g}_error" if csv else f"FGSM {format_eps(eps)} error" for eps in fgsm]
    corruption = next((r.corruption for r in results if r.corruption is not None), None)
    if corruption is not None:
        if csv:
            header += CSV_CORRUPTION_COLUMNS[corruption.average]
        else:
            header.append(corruption_column(corruption))
    digits = 4 if csv else 2
    rows = []
    for result in results:
        meter = result.calibration
        row = [result.spec.name, result.spec.path, result.spec.arch, f"{result.top1_error:.{digits}f}",
               f"{meter.ece:.{digits}f}", f"{meter.nll:.4f}"]
        row += [f"{result.fgsm_error[eps]:.{digits}f}" for eps in fgsm]
        if result.corruption is not None:
            row.append(f"{result.corruption.value:.{digits}f}")
            if csv:
                row.append(str(result.corruption.corruptions))
        rows.append(row)
    return render_table(header, rows, fmt)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def get_args_parser() -> argparse.ArgumentParser:
    parser = lifecycle.ArgumentParser(
        description="Evaluate several checkpoints on one data set: top-1 error, calibration (ECE, NLL, reliability "
                    "diagrams), FGSM and CIFAR-C error, as one table.", formatter_class=lifecycle.HelpFormatter)
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="checkpoints of main.py (or the published format, or bare state dicts)")
    parser.add_argument("--names", nargs="+", default=None, metavar="NAME",
                        help="one name per checkpoint for the table and the diagrams; default: the method saved "
                             "in the checkpoint, else its folder's name")
    parser.add_argument("--dataset", default="cifar100", choices=DATASETS, help="data set of the test images")
    parser.add_argument("--data_dir", default=None, help="data set folder; default ./data/<dataset>")
    parser.add_argument("--arch", default=None, choices=models.model_names(), metavar="ARCH",
                        help="architecture of checkpoints that do not record it (bare state dicts)")
    parser.add_argument("--initial_channels", type=int, default=None, choices=(16, 64),
                        help="preactresnet width of checkpoints that do not record it (default 64, the published "
                             "code's)")
    parser.add_argument("--ece_bins", type=int, default=DEFAULT_BINS, metavar="B",
                        help="equal-width confidence bins of the ECE and the diagrams")
    parser.add_argument("--fgsm", type=float, nargs="+", default=None, metavar="EPS",
                        help="FGSM strengths in 1/255 units of the [0, 1] image (one column each)")
    parser.add_argument("--corruption_dir", default="", metavar="DIR",
                        help="CIFAR-10-C / CIFAR-100-C folder (<corruption>.npy and labels.npy): adds the mean "
                             "corruption error, its header saying over how many corruptions")
    parser.add_argument("--corruption_average", default=STANDARD_AVERAGE, choices=CORRUPTION_AVERAGES,
                        help="standard: the mean top-1 error over the 15 standard corruptions; published: Puzzle "
                             "Mix's test_robust.py, the mean top-1 accuracy over every .npy file of --corruption_dir "
                             "(19 in the release), which it labels 'mCE'")
    parser.add_argument("--diagram", default="", metavar="FILE.png",
                        help="write the reliability diagrams, one panel per checkpoint, to this PNG")
    parser.add_argument("--diagram_size", type=float, nargs=2, default=None, metavar=("WIDTH", "HEIGHT"),
                        help="figure size in inches (100 pixels per inch); default 3.2 per panel by 4.6")
    parser.add_argument("--format", choices=TABLE_FORMATS, default="text", help="table format")
    parser.add_argument("--out", default="", help="write the table to this file instead of stdout")
    parser.add_argument("--batch_size", type=int, default=100, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--ngpu", type=int, default=1, help="0: the CPU; otherwise one GPU when CUDA is available")
    parser.add_argument("--amp", default="off", choices=AMP_MODES,
                        help="forwards under autocast: bf16, or fp16 (CUDA only)")
    return parser


def _check_output(path: str, what: str, suffix: str | None = None) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise EvaluationError(f"cannot write {what} {path}: the folder {folder} does not exist")
    if suffix and not path.lower().endswith(suffix):
        raise EvaluationError(f"cannot write {what} {path}: the name must end in {suffix}")


def validate(args: argparse.Namespace) -> None:
    """Every check of the arguments that reads no file; EvaluationError with the problems."""
    args.fgsm = list(args.fgsm or [])
    problems = []
    if args.names is not None and len(args.names) != len(args.checkpoints):
        problems.append(f"--names gives {len(args.names)} names for {len(args.checkpoints)} checkpoints; give one "
                        f"per checkpoint")
    if args.ece_bins < 1:
        problems.append(f"--ece_bins must be 1 or more, got {args.ece_bins}")
    bad = [eps for eps in args.fgsm if not (math.isfinite(eps) and 0 <= eps <= 255)]
    if bad:
        problems.append(f"--fgsm takes strengths in 1/255 units from 0 to 255, got {' '.join(f'{e:g}' for e in bad)}")
    if args.corruption_average == PUBLISHED_AVERAGE and not args.corruption_dir:
        problems.append("--corruption_average published averages the files of a CIFAR-C folder: give "
                        "--corruption_dir DIR")
    if args.corruption_dir and args.dataset not in CIFAR_CLASSES:
        problems.append(f"--corruption_dir reads CIFAR-10-C / CIFAR-100-C: use --dataset cifar10 or cifar100, "
                        f"not {args.dataset}")
    if args.batch_size < 1:
        problems.append(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        problems.append(f"--workers must be 0 or more, got {args.workers}")
    if args.ngpu < 0:
        problems.append(f"--ngpu must be 0 (CPU) or more, got {args.ngpu}")
    if args.diagram_size is not None and any(not math.isfinite(v) or v <= 0 or v > 100 for v in args.diagram_size):
        problems.append(f"--diagram_size must be two sizes in inches in (0, 100], got {args.diagram_size}")
    for path in args.checkpoints:
        if not os.path.isfile(path):
            problems.append(f"{path}: no such checkpoint file")
    if problems:
        raise EvaluationError("; ".join(problems))
    if args.out:
        _check_output(args.out, "the table")
    if args.diagram:
        _check_output(args.diagram, "the diagram", ".png")


def _test_set(args: argparse.Namespace):
    if args.dataset in CIFAR_CLASSES:
        return get_datasets(args.dataset, args.data_dir)[2]
    return get_folder_test_set(args.dataset, args.data_dir)


def run(args: argparse.Namespace) -> str:
    """Check everything, evaluate every checkpoint, write the diagram when asked; returns the table."""
    validate(args)
    device = torch.device("cuda") if args.ngpu > 0 and torch.cuda.is_available() else torch.device("cpu")
    try:
        precision = Precision.from_flag(args.amp, device)
    except ValueError as err:
        raise EvaluationError(f"--amp {args.amp}: {err}") from None
    info = dataset_info(args.dataset)
    check_data_dir(args.dataset, args.data_dir)
    num_classes = info.num_classes
    published = args.corruption_average == PUBLISHED_AVERAGE
    release = open_release(args.corruption_dir, num_classes, check_every_file=published) \
        if args.corruption_dir else None
    if release is not None and published:
        print(f"note: {published_basis(release)}", file=sys.stderr)
    elif release is not None and release.missing:
        print(f"note: {args.corruption_dir} lacks {len(release.missing)} of the 15 standard corruptions "
              f"({', '.join(release.missing)}); the CIFAR-C error is the mean over the {len(release.found)} found",
              file=sys.stderr)
    test_set = _test_set(args)
    num_classes = num_classes or len(test_set.classes)
    names = args.names or [None] * len(args.checkpoints)
    specs = [inspect_checkpoint(path, name, args, num_classes) for path, name in
             zip(args.checkpoints, names, strict=True)]
    loader = get_test_loader(test_set, args.batch_size, args.workers, pin_memory=device.type == "cuda")
    results = []
    for spec in specs:
        model = load_model(spec, device)
        result = evaluate_checkpoint(model, spec, loader, args, release, precision, device)
        del model
        print(f"=> {spec.name} ({spec.path}): top-1 error {result.top1_error:.2f}, ECE {result.calibration.ece:.2f}",
              file=sys.stderr)
        results.append(result)
    if args.diagram:
        figure = draw_reliability([ReliabilityPanel.of(r.spec.name, r.calibration) for r in results],
                                  tuple(args.diagram_size) if args.diagram_size else None)
        atomic_write_bytes(args.diagram, figure_png(figure))
    return results_table(results, args.fgsm, args.format)


def main(argv: Sequence[str] | None = None) -> int:
    """The command; the exit status of the module docstring, every failure one ``error:`` line."""
    args = lifecycle.parse_args(get_args_parser(), argv)
    if isinstance(args, int):
        return args
    if args.data_dir is None:
        args.data_dir = f"./data/{args.dataset}"
    try:
        table = run(args)
        if args.out:
            atomic_write_bytes(args.out, table.encode("utf-8"))
        else:
            sys.stdout.write(table)
    except (EvaluationError, CheckpointError, DataError) as err:
        lifecycle.report(lifecycle.error_line(err))
        return lifecycle.EXIT_INPUT
    except OSError as err:  # the output folders were checked first: a full disk, an unreadable file
        lifecycle.report(lifecycle.error_line(f"I/O failure: {lifecycle.os_error_text(err)}"))
        return lifecycle.EXIT_IO
    except KeyboardInterrupt:
        lifecycle.report(lifecycle.error_line("stopped by SIGINT"))
        return 128 + 2
    return lifecycle.EXIT_OK
