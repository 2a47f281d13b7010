"""What ``main.py --evaluate`` prints: the published Test line, the calibration line, then the FGSM
lines of ``--fgsm EPS ...`` and the CIFAR-C lines of ``--corruption_dir DIR``.

    **Test ** Prec@1 80.19 Prec@5 95.13 Error@1 19.81 Loss: 0.010
    **Calib** ECE 2.31 NLL 0.7412 Conf 78.40 (15 bins)
    **FGSM ** eps 8/255 Prec@1 41.20 Error@1 58.80
    **CIFAR-C** gaussian_noise Error@1 s1 12.31 s2 18.02 s3 25.40 s4 29.95 s5 35.12 mean 24.16
    **CIFAR-C** mean Error@1 21.07 over 15 corruptions x 5 severities (unnormalised)
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch.nn as nn

from comixup.data.cifar_c import CORRUPTIONS, SEVERITIES, open_release
from comixup.data.datasets import dataset_info
from comixup.core.calibration import DEFAULT_BINS
from comixup.core.precision import Precision
from comixup.evaluation.robustness import CorruptionResult, Normalisation, corruption_errors, fgsm_accuracy
from comixup.train import distributed
from comixup.train.log_lines import calibration_line, eval_line
from comixup.train.loop import evaluate

__all__ = ["RobustnessRequest", "report_evaluation", "report_robustness", "fgsm_line", "corruption_line",
           "corruption_mean_line", "missing_corruptions_line", "format_eps"]


@dataclass(frozen=True)
class RobustnessRequest:
    """The evaluations asked for: the calibration bins, FGSM strengths (1/255 units), the CIFAR-C
    folder (None: none), the data set (its normalisation and class count) and the batch size of the
    corruption pass."""

    dataset: str
    fgsm: tuple[float, ...] = ()
    corruption_dir: str | None = None
    batch_size: int = 100
    ece_bins: int = DEFAULT_BINS

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RobustnessRequest:
        """From main.py's validated arguments (--fgsm, --corruption_dir, --dataset, --batch_size,
        --ece_bins)."""
        return cls(dataset=args.dataset, fgsm=tuple(args.fgsm or ()), corruption_dir=args.corruption_dir or None,
                   batch_size=args.batch_size, ece_bins=args.ece_bins)

    @property
    def normalisation(self) -> Normalisation:
        info = dataset_info(self.dataset)
        return Normalisation(info.mean, info.std)


def format_eps(eps: float) -> str:
    """8 -> '8/255', 0.5 -> '0.5/255'."""
    return f"{eps:g}/255"


def fgsm_line(eps: float, accuracy: float) -> str:
    return f"**FGSM ** eps {format_eps(eps)} Prec@1 {accuracy:.2f} Error@1 {100 - accuracy:.2f}"


def corruption_line(result: CorruptionResult) -> str:
    severities = " ".join(f"s{level} {error:.2f}" for level, error in enumerate(result.errors, start=1))
    return f"**CIFAR-C** {result.corruption} Error@1 {severities} mean {result.mean:.2f}"


def corruption_mean_line(results: Sequence[CorruptionResult]) -> str:
    mean = sum(r.mean for r in results) / len(results)
    return (f"**CIFAR-C** mean Error@1 {mean:.2f} over {len(results)} corruption{'' if len(results) == 1 else 's'} "
            f"x {SEVERITIES} severities (unnormalised)")


def missing_corruptions_line(missing: Sequence[str]) -> str:
    return (f"=> CIFAR-C: {len(missing)} of the {len(CORRUPTIONS)} standard corruptions are missing: "
            f"{', '.join(missing)}; the mean covers the {len(CORRUPTIONS) - len(missing)} found")


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
        release = open_release(request.corruption_dir, dataset_info(request.dataset).num_classes)
        if release.missing:
            log(missing_corruptions_line(release.missing))
        results = []
        for result in corruption_errors(model, release, normalisation, request.batch_size, precision, dist_info,
                                        num_classes):
            results.append(result)
            log(corruption_line(result))
        log(corruption_mean_line(results))
