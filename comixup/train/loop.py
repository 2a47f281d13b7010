"""The two loops every command runs: one training epoch (:func:`train_one_epoch`) and one evaluation
pass (:func:`evaluate`).

The evaluation pass is the only one in the package: the per-epoch test, ``main.py --evaluate``,
``evaluate.py``'s table and reliability diagrams, FGSM (a perturbation of each batch, ``perturb``)
and CIFAR-C (other data, another loader) all go through it, so they report the same top-1 accuracy
and calibration for the same model and images.

Nothing here imports the mixing code: a method is only called (``method(model, images, labels)``).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from comixup.core import lifecycle
from comixup.core.calibration import DEFAULT_BINS, CalibrationMeter
from comixup.core.losses import bce_on_probabilities
from comixup.core.metrics import accuracy
from comixup.core.precision import FLOAT32, Precision
from comixup.core.tensors import to_one_hot
from comixup.train import distributed

if TYPE_CHECKING:
    from comixup.train.methods import Method

__all__ = ["TrainingDiverged", "EpochProgress", "EpochPlan", "train_one_epoch", "EvalResult", "evaluate",
           "Perturbation"]

Perturbation = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""``perturb(model, images, target) -> images``: what the evaluation pass classifies instead of a
batch (e.g. FGSM's adversarial images); called with the model in eval mode, gradients enabled."""


@dataclass
class EpochProgress:
    """An epoch's running sums: loss x images, top-1 and top-5 x images (percent), images,
    seconds spent mixing, steps (of this process). Saved in a mid-epoch checkpoint, so that the
    resumed epoch reports what an uninterrupted one would."""

    loss: float = 0.0
    top1: float = 0.0
    top5: float = 0.0
    images: float = 0.0
    mix_seconds: float = 0.0
    steps: int = 0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict | None) -> EpochProgress:
        saved = saved or {}
        return cls(**{name: type(value)(saved.get(name, value)) for name, value in asdict(cls()).items()})


@dataclass
class EpochPlan:
    """How :func:`train_one_epoch` runs one epoch beyond its batches.

    lr_at_step(i): the learning rate of the epoch's step i (None: the optimizer's, unchanged);
    start: what a mid-epoch checkpoint had done of the epoch already (its batches are skipped
    by the loader); checkpoint_due(i): whether to write a mid-epoch checkpoint after step i
    (1-based count in the epoch); write_checkpoint(progress): writes it (every rank calls it:
    gathering the random states is collective).
    """

    lr_at_step: Callable[[int], float] | None = None
    start: EpochProgress = field(default_factory=EpochProgress)
    checkpoint_due: Callable[[int], bool] = lambda steps: False
    write_checkpoint: Callable[[EpochProgress], None] = lambda progress: None


class TrainingDiverged(ArithmeticError):
    """The training loss of a step was NaN or infinite (on any process of a distributed run).

    epoch and step are 0-based, as the log counts them; value is this process's loss, or None
    when only another process's was not finite."""

    def __init__(self, epoch: int, step: int, value: float | None) -> None:
        self.epoch, self.step, self.value = epoch, step, value
        what = f"became {value}" if value is not None else "became NaN or infinite on another process"
        super().__init__(f"the training loss {what} at epoch {epoch}, step {step} (0-based, as in the log)")


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, method: Method,
                    epoch: int, *, plan: EpochPlan | None = None,
                    dist_info: distributed.DistInfo | None = None) -> dict[str, float]:
    """One epoch of training steps over ``loader``: per batch, ``method`` gives the loss, then one
    backward and one SGD step (through the float16 GradScaler of ``method.precision`` if any).

    ``plan`` (:class:`EpochPlan`): the per-step learning rate (the warm-up),
    the steps a mid-epoch checkpoint already did (``loader`` skips their batches), when to write a
    mid-epoch checkpoint. Under DDP (``dist_info``) ``model`` is the DDP module, the returned
    numbers are those of all processes together, and only rank 0 shows a progress bar. Batches go
    to ``dist_info``'s device (default: the model's).

    After every step the processes agree (one all-reduce) on three things: a NaN or infinite
    loss raises :class:`TrainingDiverged` (that step's update is garbage and must not be saved);
    a due mid-epoch checkpoint is written; a stop signal received during the epoch
    (:func:`lifecycle.stop_requested`) writes one and raises :class:`lifecycle.Interrupted`. So
    every process stops at the same step.

    Returns loss (mean per image, without the clean-input loss), top1, top5 (percent; clean
    images' logits for vanilla, comix and puzzle, mixed images against each one's own label for
    mixup, manifold and cutmix), mix_time (mean seconds per step spent mixing), steps (per
    process) and images (trained on, all processes).
    """
    plan = plan or EpochPlan()
    dist_info = dist_info or distributed.DistInfo(device=next(model.parameters()).device)
    device, scaler = dist_info.device, method.precision.scaler
    done = dataclasses.replace(plan.start)
    model.train()
    # disable=None: the bar shows only when stderr is a terminal (not in logs, pipes or tests).
    progress = tqdm(loader, desc=f"Epoch {epoch:03d}", leave=False, disable=None if dist_info.is_main else True,
                    dynamic_ncols=True)
    for images, target in progress:
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True).long()
        if plan.lr_at_step is not None:
            for group in optimizer.param_groups:
                group["lr"] = plan.lr_at_step(done.steps)
        optimizer.zero_grad(set_to_none=True)
        step = method(model, images, target)
        if scaler is not None:
            scaler.scale(step.loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            step.loss.backward()
            optimizer.step()

        loss_value = step.loss.item()
        diverged, stop, save = distributed.max_across_ranks(
            [not math.isfinite(loss_value), lifecycle.stop_requested(), plan.checkpoint_due(done.steps + 1)],
            dist_info)
        if diverged:
            progress.close()
            raise TrainingDiverged(epoch, done.steps, None if math.isfinite(loss_value) else loss_value)
        prec1, prec5 = accuracy(step.logits, target, topk=(1, 5))
        batch = images.shape[0]
        done.loss += loss_value * batch
        done.top1 += prec1 * batch
        done.top5 += prec5 * batch
        done.images += batch
        done.mix_seconds += step.mix_time
        done.steps += 1
        progress.set_postfix(loss=f"{done.loss / done.images:.4f}", acc=f"{done.top1 / done.images:.2f}",
                             refresh=False)
        if save or stop:
            plan.write_checkpoint(done)
        if stop:
            progress.close()
            raise lifecycle.Interrupted(int(stop))
    progress.close()
    (stop,) = distributed.max_across_ranks([lifecycle.stop_requested()], dist_info)
    if stop:  # after the last step: save the finished steps, evaluate after the resume
        plan.write_checkpoint(done)
        raise lifecycle.Interrupted(int(stop))
    loss_sum, top1_sum, top5_sum, count, seconds, all_steps = distributed.sum_across_ranks(
        [done.loss, done.top1, done.top5, done.images, done.mix_seconds, done.steps], dist_info)
    return {"loss": loss_sum / count if count else 0.0, "top1": top1_sum / count if count else 0.0,
            "top5": top5_sum / count if count else 0.0, "mix_time": seconds / all_steps if all_steps else 0.0,
            "steps": done.steps, "images": int(count)}


@dataclass(frozen=True)
class EvalResult:
    """One evaluation pass over a set: top1, top5 (percent), loss (the published BCE on softmax
    against one-hot targets, mean per image), images (counted over every process), and the
    calibration meter (:class:`~comixup.core.calibration.CalibrationMeter`: ECE, NLL, confidence,
    the reliability bins)."""

    top1: float
    top5: float
    loss: float
    images: int
    calibration: CalibrationMeter

    @property
    def ece(self) -> float:
        """Expected calibration error, percent."""
        return self.calibration.ece

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood, nats."""
        return self.calibration.nll

    @property
    def confidence(self) -> float:
        """Mean top-1 softmax probability, percent."""
        return self.calibration.mean_confidence

    @property
    def error(self) -> float:
        """Top-1 error, percent."""
        return 100.0 - self.top1


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, num_classes: int | None = None, precision: Precision | None = None,
             dist_info: distributed.DistInfo | None = None, ece_bins: int = DEFAULT_BINS,
             perturb: Perturbation | None = None) -> EvalResult:
    """``model`` in eval mode over ``loader`` (its mode is restored): top-1/top-5 accuracy, the
    published loss and the calibration (``ece_bins`` bins).

    Args:
        model: the classifier (under DDP the plain, unwrapped model: each rank evaluates its shard).
        loader: batches of (images, class indices); any iterable of such pairs.
        num_classes: K of the one-hot targets of the loss (None: the width of the logits).
        precision: forwards under its autocast (the loss and the softmax in float32).
        dist_info: where this process stands; the sums and counts are all-reduced in one call, so
            every rank returns the whole set's numbers.
        ece_bins: the calibration bins.
        perturb: what to classify instead of each batch, e.g. FGSM's images (:data:`Perturbation`).

    Returns:
        An :class:`EvalResult`.
    """
    precision = precision or FLOAT32
    dist_info = dist_info or distributed.DistInfo(device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    loss_sum = top1_sum = top5_sum = 0.0  # x images each, as the published AverageMeter sums them
    count = 0
    calibration = CalibrationMeter(ece_bins)
    try:
        for images, target in loader:
            images = images.to(dist_info.device, non_blocking=True)
            target = target.to(dist_info.device, non_blocking=True).long()
            if perturb is not None:
                with torch.enable_grad():
                    images = perturb(model, images, target)
            with precision.autocast():
                logits = model(images)
            probs = F.softmax(logits.float(), dim=1)
            loss = bce_on_probabilities(probs, to_one_hot(target, num_classes or logits.shape[1]))
            prec1, prec5 = accuracy(logits, target, topk=(1, 5))
            batch = images.shape[0]
            loss_sum += loss.item() * batch
            top1_sum += prec1 * batch
            top5_sum += prec5 * batch
            count += batch
            calibration.update(logits, target)
    finally:
        model.train(was_training)
    # one all-reduce: the published sums first, then the calibration's raw sums (never averages)
    loss_sum, top1_sum, top5_sum, total, *calibration_sums = distributed.sum_across_ranks(
        [loss_sum, top1_sum, top5_sum, count, *calibration.sums()], dist_info)
    calibration = CalibrationMeter.from_sums(calibration_sums)
    if not total:
        return EvalResult(top1=0.0, top5=0.0, loss=0.0, images=0, calibration=calibration)
    return EvalResult(top1=top1_sum / total, top5=top5_sum / total, loss=loss_sum / total, images=int(total),
                      calibration=calibration)
