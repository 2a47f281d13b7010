"""The saliency-guided methods of the published repositories: Puzzle Mix and Co-Mixup, each a clean
pass (the input-gradient saliency, and the clean loss that --clean_lam weighs) and then the mixer."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, ClassVar

import torch
import torch.nn as nn
from torch import Tensor

from comixup.core.tensors import to_one_hot
from comixup.mixing import comix, puzzlemix
from comixup.mixing.base import Mixer
from comixup.mixing.saliency import saliency_and_clean_loss
from comixup.mixing.saliency_blocks import check_grid
from comixup.train.methods.base import (
    FigureSettings,
    Method,
    MixResult,
    StepResult,
    _as_flags,
    _AutocastForward,
    _local_gradients,
    _loss,
    _zero_non_finite,
    pair_shares,
)

__all__ = ["PUZZLE_CHUNKS", "PuzzleMixMethod", "CoMixupMethod", "puzzle_geometry_problem"]

PUZZLE_CHUNKS = 8
"""Pieces a Puzzle Mix batch is cut into for the thread pool."""


class _SaliencyMethod(Method):
    """Shared by Puzzle Mix and Co-Mixup: the clean pass (saliency, clean loss), then the mixer."""

    clean_logits = True
    clean_pass = True
    published_mixup_alpha = 1.0
    mixer: Mixer

    config_class: ClassVar[Any]
    """The mixer's settings (``from_namespace(args)`` raises ValueError listing every problem)."""

    @classmethod
    def arg_problems(cls, args: Any, image_size: int, already: Sequence[str]) -> list[str]:
        # mixup_alpha > 0 is the mixer config's check, under its own message
        problems = []
        if args.mixup_alpha is not None and not math.isfinite(args.mixup_alpha):
            problems.append(f"--mixup_alpha must be a finite number > 0, got {args.mixup_alpha}")
        try:
            cls.config_class.from_namespace(args)
        except ValueError as err:
            problems += _as_flags(str(err), already + problems)
        return problems

    def __init__(self, num_classes: int, mixer: Mixer, clean_lam: float, loss: str = "bce") -> None:
        super().__init__(num_classes, loss)
        if not (isinstance(clean_lam, (int, float)) and math.isfinite(clean_lam) and clean_lam >= 0):
            raise ValueError(f"clean_lam must be a finite number >= 0, got {clean_lam!r}")
        self.clean_lam = float(clean_lam)
        self.mixer = mixer

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mixer!r}, clean_lam={self.clean_lam}, loss={self.loss!r})"

    def _clean_pass(self, model: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The clean forward/backward: (the input-gradient saliency (B, H, W), non-finite maps
        zeroed; the clean logits), the clean loss's parameter gradients accumulated when
        clean_lam > 0."""
        precision = self.precision
        clean_model = _AutocastForward(model, precision) if precision.enabled else model
        with _local_gradients(model):
            saliency, _, clean_logits = saliency_and_clean_loss(clean_model, images, labels, self.clean_lam,
                                                                self.num_classes, scaler=precision.scaler)
        return _zero_non_finite(saliency), clean_logits

    def _mix(self, images: Tensor, targets: Tensor, saliency: Tensor) -> tuple[Tensor, Tensor]:
        """The mixed images and targets of the batch (``targets`` one-hot (B, K))."""
        return self.mixer(images, targets, saliency)

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor) -> StepResult:
        targets = self._one_hot(images, labels)
        saliency, clean_logits = self._clean_pass(model, images, labels)
        started = time.perf_counter()
        mixed_images, mixed_targets = self._mix(images, targets, saliency)
        mix_time = time.perf_counter() - started
        with self.precision.autocast():
            logits = model(mixed_images)
        return self._result(logits, mixed_targets, mix_time, clean_logits)


class PuzzleMixMethod(_SaliencyMethod):
    """Puzzle Mix as the Puzzle Mix repository trains it: the clean pass gives the input-gradient
    saliency (with clean_lam = 0, its published default, in eval mode and its loss discarded;
    with clean_lam > 0 in train mode, 2 clean_lam CE / K kept as a regulariser), then
    ``mixer`` (a :class:`puzzlemix.PuzzleMix`) mixes the batch."""

    name = "puzzle"
    title = "Puzzle Mix"
    config_class = puzzlemix.PuzzleMixConfig
    published_clean_lam = 0.0
    figure_outline = "mask blocks"

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        config = puzzlemix.PuzzleMixConfig.from_namespace(cls.resolved(args))
        mixer = puzzlemix.PuzzleMix(num_classes=num_classes, mean=dataset_info.mean, std=dataset_info.std,
                                    executor=executor, chunks=PUZZLE_CHUNKS, **vars(config))
        return cls(num_classes, mixer, cls.published_setting(args, "clean_lam"), _loss(args))

    @classmethod
    def pool_jobs(cls, args: Any) -> int:
        return PUZZLE_CHUNKS

    @classmethod
    def name_part(cls, args: Any) -> str:
        part = (f"{super().name_part(args)}_n_labels_{args.n_labels}_beta_{args.beta}_gamma_{args.gamma}"
                f"_neigh_{args.neigh_size}_eta_{args.eta}")
        if args.transport:
            part += f"_transport_eps_{args.t_eps}_size_{args.t_size}"
        return part

    @classmethod
    def arg_problems(cls, args: Any, image_size: int, already: Sequence[str]) -> list[str]:
        problems = super().arg_problems(args, image_size, already)
        geometry = None if problems else puzzle_geometry_problem(image_size, args.neigh_size, args.t_size)
        return problems + ([geometry] if geometry is not None else [])

    def __init__(self, num_classes: int, mixer: puzzlemix.PuzzleMix, clean_lam: float = 0.0,
                 loss: str = "bce") -> None:
        super().__init__(num_classes, mixer, clean_lam, loss)

    @classmethod
    def draw_mix(cls, images: Tensor, labels: Tensor, saliency: Tensor, settings: FigureSettings) -> MixResult:
        """Puzzle Mix with its published defaults, ``settings.options["block_num"]`` (default -1:
        drawn) and the images' mean/std; shares the mask areas."""
        mixer = puzzlemix.PuzzleMix(mean=settings.mean, std=settings.std, rng=settings.rng,
                                    mixup_alpha=settings.alpha(cls), block_num=settings.options.get("block_num", -1))
        plan = mixer.plan(images, saliency)
        mixed, _ = mixer.apply(plan, images, torch.eye(images.shape[0], device=images.device))
        return MixResult(cls.name, mixed, pair_shares(plan.perm, plan.shares()), grid_size=plan.block_num)


class CoMixupMethod(_SaliencyMethod):
    """Co-Mixup, the published recipe: the clean pass (saliency and, with clean_lam > 0,
    the clean-loss gradients), ``mixer`` (a :class:`comix.CoMixup`), the loss on the mixed batch."""

    name = "comix"
    title = "Co-Mixup"
    config_class = comix.CoMixupConfig
    published_mixup_alpha = 2.0
    published_clean_lam = 1.0
    figure_outline = "mask blocks"

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        config = comix.CoMixupConfig.from_namespace(cls.resolved(args))
        mixer = comix.CoMixup(num_classes=num_classes, executor=executor, **vars(config))
        return cls(num_classes, mixer, cls.published_setting(args, "clean_lam"), _loss(args))

    @classmethod
    def pool_jobs(cls, args: Any) -> int:
        return math.ceil(args.batch_size / args.m_part)

    @classmethod
    def name_part(cls, args: Any) -> str:
        part = (f"_mblock_{args.m_block_num}_mbeta_{args.m_beta}_mgamma_{args.m_gamma}"
                f"_mthres_{args.m_thres_type}{args.m_thres}_meta_{args.m_eta}_m_alpha_{args.mixup_alpha}"
                f"_mpart_{args.m_part}_niter_{args.m_niter}_omega_{args.m_omega}")
        if args.set_resolve:
            part += "_set"
        if args.m_solver != "fast":
            part += f"_solver_{args.m_solver}"
        return part

    @classmethod
    def arg_problems(cls, args: Any, image_size: int, already: Sequence[str]) -> list[str]:
        problems = super().arg_problems(args, image_size, already)
        if args.m_block_num >= 1 and image_size % args.m_block_num:
            divisors = [n for n in range(1, image_size + 1) if image_size % n == 0]
            problems.append(f"--m_block_num {args.m_block_num} does not divide the {image_size}x{image_size} "
                            f"images of {args.dataset}; use -1 (random) or one of {', '.join(map(str, divisors))}")
        elif args.m_block_num == -1:
            try:
                check_grid("--m_block_num", -1, image_size, image_size)
            except ValueError as err:
                problems.append(f"{err} (images of {args.dataset})")
        return problems

    def __init__(self, num_classes: int, mixer: comix.CoMixup, clean_lam: float = 1.0, loss: str = "bce") -> None:
        super().__init__(num_classes, mixer, clean_lam, loss)

    @classmethod
    def draw_mix(cls, images: Tensor, labels: Tensor, saliency: Tensor, settings: FigureSettings) -> MixResult:
        """The whole batch as one partition (m_part = B), with ``settings.options`` (CoMixup keyword
        arguments) over the published defaults; shares the mask areas."""
        batch = images.shape[0]
        mixer = comix.CoMixup(num_classes=settings.num_classes, rng=settings.rng,
                              **{**settings.options, "m_part": batch, "mixup_alpha": settings.alpha(cls)})
        (mask,) = mixer.masks(saliency)
        mixed, _ = comix.mix_input(mask, images, to_one_hot(labels, settings.num_classes))
        n_block = mask.shape[1]
        return MixResult(cls.name, mixed, mask.double().mean(dim=(1, 2)).numpy(), grid_size=n_block,
                         max_sources=min(batch, n_block * n_block))


def puzzle_geometry_problem(image_size: int, neigh_size: int, t_size: int) -> str | None:
    """Why Puzzle Mix cannot run on image_size x image_size images with these settings (the grid
    is drawn from 2, 4, 8, 16 per batch, and every block side must be divisible by
    min(neigh_size, side) and by the transport block min(t_size, side)), or None when it can."""
    for n in puzzlemix.BLOCK_CHOICES:
        if image_size % n:
            return f"Puzzle Mix draws grids of {', '.join(map(str, puzzlemix.BLOCK_CHOICES))} blocks, and " \
                   f"{n} does not divide the {image_size}x{image_size} images"
        side = image_size // n
        pool = min(neigh_size, side)
        if side % pool:
            return f"--neigh_size {neigh_size} does not divide the {side}-pixel blocks of a {n}x{n} grid on " \
                   f"{image_size}x{image_size} images; use a power of 2"
        t_block = side if t_size == -1 else min(t_size, side)
        if side % t_block:
            return f"--t_size {t_size} does not divide the {side}-pixel blocks of a {n}x{n} grid on " \
                   f"{image_size}x{image_size} images; use a power of 2 or -1"
    return None


