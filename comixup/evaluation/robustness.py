"""Robustness of a classifier: one-step FGSM (Goodfellow et al., ICLR 2015) and the common
corruptions of CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich, ICLR 2019).

FGSM at EPS (in 1/255 units of the [0, 1] image): with x the test image in [0, 1] (before the
normalisation), y its label and f the model in eval mode,

    x_adv = clamp(x + EPS / 255 * sign(grad_x CE(f(normalise(x)), y)), 0, 1),

and the error is the top-1 error of f on the x_adv. The loaders yield normalised images of uint8
pixels / 255, so undoing the normalisation and rounding to 1/255 gives x back exactly. The
gradient is that of the summed (not averaged) cross-entropy, the same sign. Each EPS takes its
own pass, a single step from the clean image.

The attack is always computed in float32, also under ``--amp`` (see :class:`FGSM`); only the
classification of the adversarial images runs under the run's autocast.

The mean over a release's corruptions (:class:`CorruptionAverage`) is taken one of two ways
(``--corruption_average``, :data:`comixup.data.cifar_c.CORRUPTION_AVERAGES`): the standard mean
top-1 error over the 15 standard corruptions, or Puzzle Mix's mean top-1 accuracy over every
``.npy`` file of the folder.

Both go through the one evaluation pass, :func:`comixup.train.loop.evaluate`: FGSM as a
perturbation of each test batch (:class:`FGSM`), each corruption at each severity as other data
(:class:`CorruptedImages`). Under torchrun each process attacks (or classifies) its shard of the
images and the pass sums the counts over the processes, so every rank gets the whole set's numbers.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from comixup.core.precision import FLOAT32, Precision
from comixup.data.cifar_c import CORRUPTION_AVERAGES, PUBLISHED_AVERAGE, SEVERITIES, CorruptionRelease
from comixup.train import distributed
from comixup.train.loop import evaluate

__all__ = ["Normalisation", "FGSM", "fgsm_accuracy", "CorruptedImages", "corruption_errors", "CorruptionResult",
           "CorruptionAverage"]


@dataclass(frozen=True)
class Normalisation:
    """The loaders' per-channel normalisation, (x - mean) / std of x in [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.tensor(self.mean, dtype=torch.float32, device=like.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=like.device).view(1, -1, 1, 1)
        return mean, std

    def apply(self, images: Tensor) -> Tensor:
        """Normalise images in [0, 1], (N, C, H, W)."""
        mean, std = self._stats(images)
        return (images - mean) / std

    def undo(self, images: Tensor) -> Tensor:
        """The [0, 1] images (multiples of 1/255) that normalised to ``images``."""
        mean, std = self._stats(images)
        return (torch.round((images.float() * std + mean) * 255) / 255).clamp(0, 1)


@dataclass(frozen=True)
class FGSM:
    """The FGSM images of a batch at ``eps`` (1/255 units), as a perturbation for
    :func:`comixup.train.loop.evaluate`: ``FGSM(8, normalisation)(model, images, target)``.

    The gradient is that of the summed cross-entropy, taken with respect to the [0, 1] image, of a
    forward **in float32 always**: autocast is switched off for it, also inside a caller's autocast
    (``--amp``). Why: the input gradient gets no loss scaling (a GradScaler scales the parameters'
    gradients of training steps only), so under float16 its small components underflow to 0 and
    sign(0) = 0 leaves those pixels unmoved (a weaker attack, a lower FGSM error), and under
    bfloat16 (8 significant bits) the sign of small components flips. So the FGSM images under
    ``--amp`` are those of a float32 evaluation, bit for bit, and the FGSM error of an ``--amp``
    evaluation differs from a float32 one only as its clean accuracy does: by classifying the
    images under autocast. On GPUs, float32 convolutions may use TF32 as PyTorch allows by default
    (``torch.backends.cudnn.allow_tf32``), as every float32 forward of this project does; TF32
    keeps float32's exponent range, so nothing underflows."""

    eps: float
    normalisation: Normalisation

    def __call__(self, model: nn.Module, images: Tensor, target: Tensor) -> Tensor:
        clean = self.normalisation.undo(images)
        attacked = clean.clone().requires_grad_(True)
        # float32 (see the docstring), the backward too: under a caller's autocast it would not run
        # the float32 kernels of a float32 evaluation (gradients differ in the last bits, some signs)
        with torch.autocast(device_type=images.device.type, enabled=False):
            logits = model(self.normalisation.apply(attacked))
            loss = F.cross_entropy(logits.float(), target, reduction="sum")
            (gradient,) = torch.autograd.grad(loss, attacked)
        adversarial = (clean + (self.eps / 255.0) * gradient.sign()).clamp(0, 1)
        return self.normalisation.apply(adversarial).detach()


def fgsm_accuracy(model: nn.Module, loader: Iterable, epsilons: Sequence[float], normalisation: Normalisation,
                  precision: Precision | None = None, dist_info: distributed.DistInfo | None = None,
                  num_classes: int | None = None) -> list[float]:
    """Top-1 accuracy (percent) of ``model`` on the FGSM images of every EPS in ``epsilons`` (1/255
    units), over ``loader``'s (normalised) images: one evaluation pass per EPS, the attack in
    float32 (:class:`FGSM`), the classification under ``precision``. Under DDP, ``model``
    is the plain model and ``loader`` this rank's shard: every rank returns the whole set's
    accuracies. ``num_classes``: of the pass's loss (default: the model's output width)."""
    precision = precision or FLOAT32
    accuracies = []
    for eps in epsilons:
        attack = FGSM(eps, normalisation)
        accuracies.append(evaluate(model, loader, num_classes, precision, dist_info, perturb=attack).top1)
    return accuracies


@dataclass(frozen=True)
class CorruptedImages:
    """One corruption of a release at one severity, as batches of (normalised images, labels) for
    the evaluation pass; under DDP (``rank``, ``world_size``) every world_size-th image from
    ``rank`` on. The images are read from the memory-mapped file ``batch_size`` at a time."""

    release: CorruptionRelease
    corruption: str
    severity: int
    normalisation: Normalisation
    batch_size: int = 100
    rank: int = 0
    world_size: int = 1

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        images, labels = self.release.severity(self.corruption, self.severity)
        images, labels = images[self.rank::self.world_size], labels[self.rank::self.world_size]
        for start in range(0, len(labels), self.batch_size):
            # np.array copies: the memory-mapped file is read-only, torch wants writable memory
            batch = torch.from_numpy(np.array(images[start:start + self.batch_size]))
            target = torch.from_numpy(np.array(labels[start:start + self.batch_size]))
            yield self.normalisation.apply(batch.permute(0, 3, 1, 2).float() / 255.0), target


@dataclass(frozen=True)
class CorruptionResult:
    """One corruption's top-1 error (percent) at severities 1 to 5."""

    corruption: str
    errors: tuple[float, ...]

    @property
    def mean(self) -> float:
        """The mean error over the severities, percent."""
        return float(np.mean(self.errors))

    @property
    def accuracies(self) -> tuple[float, ...]:
        """Top-1 accuracy (percent) at severities 1 to 5."""
        return tuple(100.0 - error for error in self.errors)

    @property
    def mean_accuracy(self) -> float:
        """The mean accuracy over the severities, percent (Puzzle Mix's per-corruption figure)."""
        return float(np.mean(self.accuracies))


@dataclass(frozen=True)
class CorruptionAverage:
    """The mean over a release's corruptions as ``average`` (one of
    :data:`~comixup.data.cifar_c.CORRUPTION_AVERAGES`) takes it, in percent: ``standard``, the
    mean top-1 **error** over the standard corruptions found; ``published``, Puzzle Mix's
    ``test_robust.py``, the mean top-1 **accuracy** over every ``.npy`` file (which that script
    prints as "mCE"). Either way each corruption counts once and each of its severities equally.
    ``corruptions``: how many were averaged."""

    average: str
    value: float
    corruptions: int

    @classmethod
    def of(cls, results: Sequence[CorruptionResult], average: str) -> CorruptionAverage:
        if average not in CORRUPTION_AVERAGES:
            raise ValueError(f"average must be one of {', '.join(CORRUPTION_AVERAGES)}, got {average!r}")
        if not results:
            raise ValueError("no corruption to average")
        published = average == PUBLISHED_AVERAGE
        values = [r.mean_accuracy if published else r.mean for r in results]
        return cls(average, float(np.mean(values)), len(results))

    @property
    def is_accuracy(self) -> bool:
        """True for Puzzle Mix's average (an accuracy), False for the standard one (an error)."""
        return self.average == PUBLISHED_AVERAGE


def corruption_errors(model: nn.Module, release: CorruptionRelease, normalisation: Normalisation, batch_size: int,
                      precision: Precision | None = None, dist_info: distributed.DistInfo | None = None,
                      num_classes: int | None = None, corruptions: Sequence[str] | None = None
                      ) -> Iterator[CorruptionResult]:
    """Top-1 error of ``model`` on every standard corruption ``release`` has (in CORRUPTIONS order),
    or on ``corruptions`` in their order (e.g. ``release.averaged(average)``), one
    :class:`CorruptionResult` as each corruption is done: one evaluation pass per severity.
    ``num_classes``: of the pass's loss (default: the model's output width)."""
    dist_info = dist_info or distributed.DistInfo(device=next(model.parameters()).device)
    for name in (release.found if corruptions is None else corruptions):
        errors = []
        for severity in range(1, SEVERITIES + 1):
            data = CorruptedImages(release, name, severity, normalisation, batch_size, dist_info.rank,
                                   dist_info.world_size)
            errors.append(evaluate(model, data, num_classes, precision, dist_info).error)
        yield CorruptionResult(name, tuple(errors))
