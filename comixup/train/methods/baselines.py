"""The methods of the published Co-Mixup and Puzzle Mix repositories that mix without saliency:
vanilla, input mixup, CutMix and manifold mixup."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from comixup.mixing import baselines
from comixup.mixing.base import Mixer
from comixup.train.methods.base import FigureSettings, Method, MixResult, StepResult, _loss, _TimedMix, pair_shares

__all__ = ["VanillaMethod", "InputMixupMethod", "CutMixMethod", "ManifoldMixMethod"]


class VanillaMethod(Method):
    """No mixing: loss(model(x), one_hot(y))."""

    name = "vanilla"
    title = "Vanilla"
    published_mixup_alpha = None
    published_clean_lam = 1.0  # unused, but part of the published experiment name
    clean_logits = True

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        return cls(num_classes, _loss(args))

    @classmethod
    def name_part(cls, args: Any) -> str:
        return ""

    @classmethod
    def arg_problems(cls, args: Any, image_size: int, already: Sequence[str]) -> list[str]:
        alpha = args.mixup_alpha
        if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
            return [f"--mixup_alpha must be a finite number > 0, got {alpha}"]
        return []

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor) -> StepResult:
        targets = self._one_hot(images, labels)
        with self.precision.autocast():
            logits = model(images)
        return self._result(logits, targets, 0.0, logits)


class _MixedInputMethod(Method):
    """Mix the inputs with ``self.mixer`` (``mixer(images, labels)``), then one forward pass on the
    mixed batch, whose logits give the train accuracy."""

    clean_logits = False
    published_clean_lam = 0.0
    mixer: Mixer

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor) -> StepResult:
        self._one_hot(images, labels)  # the shapes; the mixer makes the targets
        started = time.perf_counter()
        mixed_images, mixed_targets = self.mixer(images, labels)
        mix_time = time.perf_counter() - started
        with self.precision.autocast():
            logits = model(mixed_images)
        return self._result(logits, mixed_targets, mix_time, logits)


class _PairMethod(_MixedInputMethod):
    """Shared by input mixup and CutMix: mix the inputs with ``mixer_class``, then one forward pass."""

    mixer_class: ClassVar[type[Mixer]]

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        return cls(num_classes, cls.published_setting(args, "mixup_alpha"), _loss(args))

    def __init__(self, num_classes: int, alpha: float, loss: str = "bce") -> None:
        super().__init__(num_classes, loss)
        self.mixer = self.mixer_class(num_classes=num_classes, alpha=alpha)
        self.alpha = self.mixer.alpha

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes}, alpha={self.alpha}, loss={self.loss!r})"


class InputMixupMethod(_PairMethod):
    """Input mixup (:class:`baselines.InputMixup`): lam x + (1 - lam) x[perm], lam ~ Beta(alpha, alpha)."""

    name = "mixup"
    title = "Input mixup"
    published_mixup_alpha = 1.0
    mixer_class = baselines.InputMixup

    @classmethod
    def draw_mix(cls, images: Tensor, labels: Tensor, saliency: Tensor, settings: FigureSettings) -> MixResult:
        batch = images.shape[0]
        lam, perm = baselines.draw_pairing(batch, settings.alpha(cls), settings.rng)
        mixed = baselines.PairMix(lam, perm)(images)
        return MixResult(cls.name, mixed, pair_shares(perm, np.full(batch, lam)))


class CutMixMethod(_PairMethod):
    """CutMix (:class:`baselines.CutMix`): a box from the partner image, targets by the box's area."""

    name = "cutmix"
    title = "CutMix"
    published_mixup_alpha = 1.0
    mixer_class = baselines.CutMix
    figure_outline = "box"

    @classmethod
    def draw_mix(cls, images: Tensor, labels: Tensor, saliency: Tensor, settings: FigureSettings) -> MixResult:
        plan = baselines.CutMix(alpha=settings.alpha(cls), rng=settings.rng).plan(images)
        mixed, _ = plan.apply(images, torch.eye(images.shape[0], device=images.device))
        return MixResult(cls.name, mixed, pair_shares(plan.perm, np.full(images.shape[0], plan.kept)), box=plan.box)


class ManifoldMixMethod(Method):
    """Manifold mixup (:class:`baselines.ManifoldMixup`): one forward pass
    ``model(x, mix_layer=k, mix_fn=f)`` with k drawn from ``layers``; the model must be a
    ``models.MixableClassifier`` (not wrapped in DataParallel, which would split the batch that
    mix_fn pairs across)."""

    name = "manifold"
    title = "Manifold mixup"
    published_mixup_alpha = 2.0
    published_clean_lam = 0.0
    clean_logits = False

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        return cls(num_classes, cls.published_setting(args, "mixup_alpha"), _loss(args))

    @classmethod
    def arg_problems(cls, args: Any, image_size: int, already: Sequence[str]) -> list[str]:
        problems = super().arg_problems(args, image_size, already)
        if args.ngpu > 1:
            problems.append(f"--method manifold mixes hidden features across the whole batch, which --ngpu "
                            f"{args.ngpu} (DataParallel) splits; use --ngpu 1")
        return problems

    def __init__(self, num_classes: int, alpha: float, loss: str = "bce", layers: Sequence[int] = (0, 1, 2)) -> None:
        super().__init__(num_classes, loss)
        self.mixer = baselines.ManifoldMixup(num_classes=num_classes, alpha=alpha, layers=layers)

    def __repr__(self) -> str:
        return f"ManifoldMixMethod(num_classes={self.num_classes}, {self.mixer!r}, loss={self.loss!r})"

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor) -> StepResult:
        self._one_hot(images, labels)  # the shapes; the mixer makes the targets
        started = time.perf_counter()
        drawn, mixed_targets = self.mixer(images, labels)
        timed = _TimedMix(drawn.mix_fn)
        draw_time = time.perf_counter() - started
        with self.precision.autocast():
            logits = model(images, mix_layer=drawn.mix_layer, mix_fn=timed)
        return self._result(logits, mixed_targets, draw_time + timed.seconds, logits)


