"""What ``main.py --evaluate`` prints: the published Test line, the calibration line, then the FGSM
lines of ``--fgsm EPS ...`` and the CIFAR-C lines of ``--corruption_dir DIR``.

    **Test ** Prec@1 80.19 Prec@5 95.13 Error@1 19.81 Loss: 0.010
    **Calib** ECE 2.31 NLL 0.7412 Conf 78.40 (15 bins)
    **FGSM ** eps 8/255 Prec@1 41.20 Error@1 58.80
    **CIFAR-C** gaussian_noise Error@1 s1 12.31 s2 18.02 s3 25.40 s4 29.95 s5 35.12 mean 24.16
    **CIFAR-C** mean Error@1 21.07 over 15 corruptions x 5 severities (unnormalised)

With ``--corruption_average published`` (Puzzle Mix's ``test_robust.py``) the CIFAR-C lines give
accuracies, one per ``.npy`` file, and the mean says what it is:

    => CIFAR-C: --corruption_average published, as Puzzle Mix's test_robust.py: the mean accuracy
       over every .npy file of DIR, 19 files: the 15 standard corruptions and 4 extra (...)   [one line]
    **CIFAR-C** brightness Prec@1 s1 ... s5 ... mean ...
    **CIFAR-C** mean Prec@1 52.31 over 19 files x 5 severities (Puzzle Mix's "mCE": a mean accuracy, not an error)

The same basis names ``evaluate.py``'s CIFAR-C column (:func:`corruption_column`).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch.nn as nn

from comixup.core.calibration import DEFAULT_BINS
from comixup.core.precision import Precision
from comixup.data.cifar_c import (
    CORRUPTIONS,
    PUBLISHED_AVERAGE,
    SEVERITIES,
    STANDARD_AVERAGE,
    CorruptionRelease,
    open_release,
)
from comixup.data.datasets import dataset_info
from comixup.evaluation.robustness import (
    CorruptionAverage,
    CorruptionResult,
    Normalisation,
    corruption_errors,
    fgsm_accuracy,
)
from comixup.train import distributed
from comixup.train.log_lines import calibration_line, eval_line
from comixup.train.loop import evaluate

__all__ = ["RobustnessRequest", "report_evaluation", "report_robustness", "fgsm_line", "corruption_line",
           "corruption_mean_line", "missing_corruptions_line", "published_basis", "published_basis_line",
           "corruption_column", "format_eps"]

PUBLISHED_LABEL = "Puzzle Mix's \"mCE\""
"""How Puzzle Mix's test_robust.py labels its mean accuracy; quoted wherever that mean is shown."""


@dataclass(frozen=True)
class RobustnessRequest:
    """The evaluations asked for: the calibration bins, FGSM strengths (1/255 units), the CIFAR-C
    folder (None: none) and how its corruptions are averaged (one of
    :data:`~comixup.data.cifar_c.CORRUPTION_AVERAGES`), the data set (its normalisation and class
    count) and the batch size of the corruption pass."""

    dataset: str
    fgsm: tuple[float, ...] = ()
    corruption_dir: str | None = None
    batch_size: int = 100
    ece_bins: int = DEFAULT_BINS
    corruption_average: str = STANDARD_AVERAGE

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RobustnessRequest:
        """From main.py's validated arguments (--fgsm, --corruption_dir, --corruption_average,
        --dataset, --batch_size, --ece_bins)."""
        return cls(dataset=args.dataset, fgsm=tuple(args.fgsm or ()), corruption_dir=args.corruption_dir or None,
                   batch_size=args.batch_size, ece_bins=args.ece_bins,
                   corruption_average=getattr(args, "corruption_average", STANDARD_AVERAGE))

    @property
    def normalisation(self) -> Normalisation:
        info = dataset_info(self.dataset)
        return Normalisation(info.mean, info.std)


def format_eps(eps: float) -> str:
    """8 -> '8/255', 0.5 -> '0.5/255'."""
    return f"{eps:g}/255"


def fgsm_line(eps: float, accuracy: float) -> str:
    return f"**FGSM ** eps {format_eps(eps)} Prec@1 {accuracy:.2f} Error@1 {100 - accuracy:.2f}"


def corruption_line(result: CorruptionResult, average: str = STANDARD_AVERAGE) -> str:
    """One corruption's line: its error per severity and their mean, or with the published average
    its accuracies (the figures Puzzle Mix's script prints per file)."""
    if average == PUBLISHED_AVERAGE:
        measure, values, mean = "Prec@1", result.accuracies, result.mean_accuracy
    else:
        measure, values, mean = "Error@1", result.errors, result.mean
    severities = " ".join(f"s{level} {value:.2f}" for level, value in enumerate(values, start=1))
    return f"**CIFAR-C** {result.corruption} {measure} {severities} mean {mean:.2f}"


def corruption_mean_line(results: Sequence[CorruptionResult], average: str = STANDARD_AVERAGE) -> str:
    """The mean over the corruptions, saying what it averages and, for the published average, that
    it is an accuracy."""
    mean = CorruptionAverage.of(results, average)
    if mean.is_accuracy:
        return (f"**CIFAR-C** mean Prec@1 {mean.value:.2f} over {_count(mean.corruptions, 'file')} x {SEVERITIES} "
                f"severities ({PUBLISHED_LABEL}: a mean accuracy, not an error)")
    return (f"**CIFAR-C** mean Error@1 {mean.value:.2f} over {_count(mean.corruptions, 'corruption')} "
            f"x {SEVERITIES} severities (unnormalised)")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def missing_corruptions_line(missing: Sequence[str]) -> str:
    """The standard corruptions a folder lacks, for the standard average."""
    return (f"=> CIFAR-C: {len(missing)} of the {len(CORRUPTIONS)} standard corruptions are missing: "
            f"{', '.join(missing)}; the mean covers the {len(CORRUPTIONS) - len(missing)} found")


def published_basis(release: CorruptionRelease) -> str:
    """What the published average covers in this folder: every file, named by kind (the standard
    corruptions, the release's extra ones, any other .npy file), and the standard ones missing."""
    parts = [f"the {len(release.found)} standard corruptions" if not release.missing else
             f"{len(release.found)} of the {len(CORRUPTIONS)} standard corruptions (missing: "
             f"{', '.join(release.missing)})"]
    if release.extra_found:
        parts.append(f"{len(release.extra_found)} extra ({', '.join(release.extra_found)})")
    if release.other_found:
        parts.append(f"{_count(len(release.other_found), 'other file')} ({', '.join(release.other_found)})")
    listed = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    return (f"--corruption_average published, as Puzzle Mix's test_robust.py: the mean accuracy over every .npy "
            f"file of {release.folder}, {_count(len(release.every_file), 'file')}: {listed}")


def published_basis_line(release: CorruptionRelease) -> str:
    """main.py's line of :func:`published_basis`."""
    return f"=> CIFAR-C: {published_basis(release)}"


def corruption_column(mean: CorruptionAverage) -> str:
    """The header of evaluate.py's CIFAR-C column in text and Markdown, naming what it averages:
    'CIFAR-C error (15)', 'CIFAR-C error (3 of 15)' (a partial folder), or for the published
    average 'CIFAR-C accuracy (19 files, Puzzle Mix's "mCE")'."""
    if mean.is_accuracy:
        return f"CIFAR-C accuracy ({_count(mean.corruptions, 'file')}, {PUBLISHED_LABEL})"
    if mean.corruptions == len(CORRUPTIONS):
        return f"CIFAR-C error ({mean.corruptions})"
    return f"CIFAR-C error ({mean.corruptions} of {len(CORRUPTIONS)})"


def report_evaluation(model: nn.Module, test_loader: Iterable, num_classes: int, request: RobustnessRequest, *,
                      precision: Precision | None = None, dist_info: distributed.DistInfo | None = None,
                      log: Callable[[str], None] = print) -> None:
    """``main.py --evaluate``: the evaluation pass over ``test_loader`` (its Test and calibration
    lines), then the robustness lines of :func:`report_robustness`."""
    result = evaluate(model, test_loader, num_classes, precision, dist_info, ece_bins=request.ece_bins)
    log(eval_line("Test ", result))
    log(calibration_line(result))
    report_robustness(model, test_loader, request, precision=precision, dist_info=dist_info, log=log,
                      num_classes=num_classes)


def report_robustness(model: nn.Module, test_loader: Iterable, request: RobustnessRequest, *,
                      precision: Precision | None = None, dist_info: distributed.DistInfo | None = None,
                      log: Callable[[str], None] = print, num_classes: int | None = None) -> None:
    """Run the requested evaluations of ``model`` and ``log`` their lines: FGSM on
    ``test_loader``'s images, then each corruption as it is done, then the mean corruption
    error. Nothing when nothing is requested. DataError for an unusable CIFAR-C folder (checked
    again here: main.py checks it before any heavy work)."""
    normalisation = request.normalisation
    if request.fgsm:
        accuracies = fgsm_accuracy(model, test_loader, request.fgsm, normalisation, precision, dist_info, num_classes)
        for eps, accuracy in zip(request.fgsm, accuracies, strict=True):
            log(fgsm_line(eps, accuracy))
    if request.corruption_dir:
        average = request.corruption_average
        release = open_release(request.corruption_dir, dataset_info(request.dataset).num_classes,
                               check_every_file=average == PUBLISHED_AVERAGE)
        if average == PUBLISHED_AVERAGE:
            log(published_basis_line(release))
        elif release.missing:
            log(missing_corruptions_line(release.missing))
        results = []
        for result in corruption_errors(model, release, normalisation, request.batch_size, precision, dist_info,
                                        num_classes, corruptions=release.averaged(average)):
            results.append(result)
            log(corruption_line(result, average))
        log(corruption_mean_line(results, average))
