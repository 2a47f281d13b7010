"""Robustness of a classifier: one-step FGSM (Goodfellow et al., ICLR 2015) and the common
corruptions of CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich, ICLR 2019).

FGSM at EPS (in 1/255 units of the [0, 1] image): with x the test image in [0, 1] (before the
normalisation), y its label and f the model in eval mode,

    x_adv = clamp(x + EPS / 255 * sign(grad_x CE(f(normalise(x)), y)), 0, 1),

and the error is the top-1 error of f on the x_adv. The loaders yield normalised images of uint8
pixels / 255, so undoing the normalisation and rounding to 1/255 gives x back exactly. The
gradient is that of the summed (not averaged) cross-entropy: the same sign, less underflow under
float16 autocast. Each EPS reuses the batch's one gradient (a single step from the clean image).

Under torchrun each process attacks (or classifies) its shard of the images, and the counts of
right predictions are summed over the processes (:func:`comixup.train.distributed.sum_across_ranks`),
so every rank gets the whole set's numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from comixup.data.cifar_c import SEVERITIES, CorruptionRelease
from comixup.train import distributed, methods

__all__ = ["Normalisation", "fgsm_accuracy", "corruption_errors", "CorruptionResult"]


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


def _batches(loader: Iterable, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    for images, target in loader:
        yield images.to(device, non_blocking=True), target.to(device, non_blocking=True).long()


def fgsm_accuracy(model: nn.Module, loader: Iterable, epsilons: Sequence[float], normalisation: Normalisation,
                  precision: methods.Precision | None = None,
                  dist_info: distributed.DistInfo | None = None) -> list[float]:
    """Top-1 accuracy (percent) of ``model`` in eval mode on the FGSM images of every EPS in
    ``epsilons`` (1/255 units), over ``loader``'s (normalised) images; the model's mode is
    restored. Forwards run under ``precision``'s autocast, the loss in float32. Under DDP,
    ``model`` is the plain model and ``loader`` this rank's shard: every rank returns the whole
    set's accuracies."""
    precision = precision or methods.FLOAT32
    dist_info = dist_info or distributed.DistInfo(device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    correct = [0.0] * len(epsilons)
    count = 0
    try:
        for images, target in _batches(loader, dist_info.device):
            clean = normalisation.undo(images)
            with torch.enable_grad():
                attacked = clean.clone().requires_grad_(True)
                with precision.autocast():
                    logits = model(normalisation.apply(attacked))
                loss = F.cross_entropy(logits.float(), target, reduction="sum")
                (gradient,) = torch.autograd.grad(loss, attacked)
            direction = gradient.sign()
            with torch.no_grad():
                for index, eps in enumerate(epsilons):
                    adversarial = (clean + (eps / 255.0) * direction).clamp(0, 1)
                    with precision.autocast():
                        predicted = model(normalisation.apply(adversarial)).argmax(dim=1)
                    correct[index] += float((predicted == target).sum())
            count += target.shape[0]
    finally:
        model.train(was_training)
    *correct_sums, total = distributed.sum_across_ranks([*correct, count], dist_info)
    return [100.0 * right / total if total else 0.0 for right in correct_sums]


@dataclass(frozen=True)
class CorruptionResult:
    """One corruption's top-1 error (percent) at severities 1 to 5."""

    corruption: str
    errors: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.errors))


def corruption_errors(model: nn.Module, release: CorruptionRelease, normalisation: Normalisation, batch_size: int,
                      precision: methods.Precision | None = None,
                      dist_info: distributed.DistInfo | None = None) -> Iterator[CorruptionResult]:
    """Top-1 error of ``model`` in eval mode on every corruption ``release`` has, one
    :class:`CorruptionResult` as each corruption is done (in CORRUPTIONS order). The images are
    read from the memory-mapped files ``batch_size`` at a time. Under DDP every rank classifies
    every world_size-th image from its rank on, and the counts of each corruption are summed."""
    precision = precision or methods.FLOAT32
    dist_info = dist_info or distributed.DistInfo(device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        for name in release.found:
            counts: list[float] = []
            for severity in range(1, SEVERITIES + 1):
                images, labels = release.severity(name, severity)
                counts += _count_correct(model, images[dist_info.rank::dist_info.world_size],
                                         labels[dist_info.rank::dist_info.world_size], normalisation, batch_size,
                                         precision, dist_info.device)
            sums = distributed.sum_across_ranks(counts, dist_info)
            yield CorruptionResult(name, tuple(100.0 - 100.0 * right / total if total else 0.0
                                               for right, total in zip(sums[0::2], sums[1::2], strict=True)))
    finally:
        model.train(was_training)


@torch.no_grad()
def _count_correct(model: nn.Module, images: np.ndarray, labels: np.ndarray, normalisation: Normalisation,
                   batch_size: int, precision: methods.Precision, device: torch.device) -> list[float]:
    """[right predictions, images] on uint8 (N, H, W, C) ``images``."""
    right = 0.0
    for start in range(0, len(labels), batch_size):
        # np.array copies: the memory-mapped file is read-only, torch wants writable memory
        batch = torch.from_numpy(np.array(images[start:start + batch_size])).to(device)
        target = torch.from_numpy(np.array(labels[start:start + batch_size])).to(device)
        inputs = normalisation.apply(batch.permute(0, 3, 1, 2).float() / 255.0)
        with precision.autocast():
            predicted = model(inputs).argmax(dim=1)
        right += float((predicted == target).sum())
    return [right, float(len(labels))]
