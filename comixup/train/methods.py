"""The per-batch training loss of every mixing method, behind one interface.

``main.py`` trains with any of: ``vanilla`` (no mixing), ``mixup`` (input mixup), ``manifold``
(manifold mixup), ``cutmix``, ``puzzle`` (Puzzle Mix) and ``comix`` (Co-Mixup, the published
recipe); the baselines as the Puzzle Mix repository runs them. Each is a
:class:`Method`::

    method = build_method(args, num_classes, dataset_info(args.dataset), executor=pool)
    optimizer.zero_grad()
    step = method(model, images, labels)       # labels: class indices (B,)
    step.loss.backward()
    optimizer.step()
    top1 = accuracy(step.logits, labels)

A method runs every forward pass of the step (and, for ``comix`` and ``puzzle`` with
``clean_lam > 0``, the clean-loss backward that accumulates its parameter gradients); the caller
does the mixed-loss backward and the optimiser step.

Losses (``--loss``): ``bce``, the published binary cross-entropy between softmax(logits) and the
soft targets (mean over batch x classes), or ``ce``, the soft-target cross entropy
``-sum(t * log_softmax(logits))`` (mean over the batch). The clean-input loss of Co-Mixup and
Puzzle Mix is cross entropy in both published repositories, whatever ``--loss`` says.

Train accuracy (:attr:`StepResult.logits`): Co-Mixup, Puzzle Mix and vanilla give the logits of
the clean images (their clean pass computes them anyway; Co-Mixup's published log is on clean
images). Input mixup, manifold mixup and CutMix have no clean pass; they give the logits of the
mixed images, to be scored against the label of the image each mixed image was made from (the
"self" image, weight lam or the area outside the CutMix box), which is what the Puzzle Mix
repository logs for them. :attr:`Method.clean_logits` says which.

Randomness comes from numpy's global state (``np.random``) only, so a checkpoint that saves it
resumes every method bit-identically.

Mixed precision (``--amp``): a method's :attr:`Method.precision` (:class:`Precision`) runs every
forward pass (clean and mixed) under ``torch.autocast``; losses are computed in float32. With a
float16 GradScaler the clean-pass backward is scaled like the mixed loss will be (the caller
scales that one: ``scaler.scale(step.loss).backward()``), and the saliency is unscaled.

Distributed training: when the model is a DistributedDataParallel, the clean pass runs inside
``model.no_sync()``: its parameter gradients (clean_lam > 0) accumulate locally and are
all-reduced once, together with the mixed loss's, by the caller's backward; with clean_lam = 0
only the input gradient is taken and DDP expects no reduction for it. Each process mixes its
own batch.
"""
from __future__ import annotations

import contextlib
import math
import time
from abc import ABC, abstractmethod
from argparse import Namespace
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, ContextManager, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from comixup.core.losses import LOSSES, bce_on_probabilities, soft_target_loss
from comixup.core.precision import AMP_MODES, FLOAT32, Precision
from comixup.core.tensors import to_one_hot
from comixup.mixing import baselines, comix, puzzlemix
from comixup.mixing.base import Mixer
from comixup.mixing.parallel import default_workers
from comixup.mixing.saliency import saliency_and_clean_loss
from comixup.mixing.saliency_blocks import check_grid

__all__ = [
    "METHODS", "LOSSES", "PUBLISHED_MIXUP_ALPHA", "PUBLISHED_CLEAN_LAM", "PUZZLE_CHUNKS", "StepResult", "Method",
    "VanillaMethod", "InputMixupMethod", "ManifoldMixMethod", "CutMixMethod", "PuzzleMixMethod", "CoMixupMethod",
    "soft_target_loss", "bce_on_probabilities", "published_default", "fill_published_defaults", "build_method",
    "pool_workers", "puzzle_geometry_problem", "AMP_MODES", "Precision", "REGISTRY", "method_class", "MixResult",
    "FigureSettings", "pair_shares",
]

PUZZLE_CHUNKS = 8
"""Pieces a Puzzle Mix batch is cut into for the thread pool."""

class _AutocastForward(nn.Module):
    """``model`` whose forward runs under ``precision``'s autocast (the backward then runs
    outside it, as PyTorch recommends), for code that does a forward and a backward itself."""

    def __init__(self, model: nn.Module, precision: Precision) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        self.train(model.training)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        with self.precision.autocast():
            return self.model(*args, **kwargs)


def _local_gradients(model: nn.Module) -> ContextManager:
    """DDP's no_sync for a DistributedDataParallel model (gradients accumulate locally, to be
    all-reduced by the next synchronised backward), nothing for any other model."""
    if isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def _zero_non_finite(saliency: Tensor) -> Tensor:
    """Saliency maps with an inf/NaN entry become all zero, i.e. uniform block costs for the
    mixer, instead of poisoning its solver: a float16 step whose scaled gradients overflowed
    (the GradScaler skips that step's update anyway), or a model that already diverged (its
    mixed loss is then NaN too, and the training loop stops on it). Finite maps pass unchanged."""
    finite = torch.isfinite(saliency).flatten(1).all(dim=1)
    return torch.where(finite.view(-1, 1, 1), saliency, torch.zeros_like(saliency))


# --------------------------------------------------------------------------- shared pieces

@dataclass(frozen=True)
class StepResult:
    """What one training step of a method produced.

    loss: the scalar to back-propagate (not yet back-propagated). logits: detached (B, K) for
    the train accuracy against the batch's labels (clean or mixed, see
    :attr:`Method.clean_logits`). mix_time: seconds spent building the mixed batch (0 for
    vanilla). targets: detached (B, K) float32 soft targets the loss used, rows summing to 1.
    """

    loss: Tensor
    logits: Tensor
    mix_time: float
    targets: Tensor


@dataclass
class MixResult:
    """One mixed batch as visualize.py draws it.

    mixed (B_out, C, H, W) like the inputs; shares (B_out, B_in) float64, row j the share of each
    input in output j (rows sum to 1); grid_size: the mask grid n (n x n blocks) or None; box: the
    CutMix box (top, bottom, left, right) or None; max_sources: the most inputs one output can
    draw from under this method's settings (fixes the annotation space of the figure).
    """

    method: str
    mixed: Tensor
    shares: np.ndarray
    grid_size: int | None = None
    box: tuple[int, int, int, int] | None = None
    max_sources: int = 2


@dataclass(frozen=True)
class FigureSettings:
    """What visualize.py asks of a method's drawing: the class count, the generator of every draw,
    the Beta / Dirichlet concentration (None: the method's published one), the images'
    normalisation, and the method's own options given on its command line (by flag name)."""

    num_classes: int
    rng: np.random.Generator
    mixup_alpha: float | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def alpha(self, method: type[Method]) -> float:
        return method.published_mixup_alpha if self.mixup_alpha is None else self.mixup_alpha


def pair_shares(perm: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Shares of pair mixing: output i is own[i] of input i and 1 - own[i] of input perm[i]."""
    batch = len(perm)
    shares = np.zeros((batch, batch))
    rows = np.arange(batch)
    np.add.at(shares, (rows, rows), own)
    np.add.at(shares, (rows, perm), 1 - own)
    return shares


class Method(ABC):
    """One training step's loss: ``method(model, images, labels) -> StepResult``.

    images (B, C, H, W) on the model's device, labels (B,) class indices in [0, num_classes).
    The model must be in train mode; a method that runs a pass in eval mode restores it.
    """

    # What the registry (:data:`REGISTRY`) and the command line know of a method:
    name: ClassVar[str]
    """The --method value."""
    title: ClassVar[str]
    """How figures and tables name it."""
    published_mixup_alpha: ClassVar[float | None]
    """--mixup_alpha of the method's published command (None: it mixes nothing)."""
    published_clean_lam: ClassVar[float]
    """--clean_lam of the method's published command."""
    clean_pass: ClassVar[bool] = False
    """True when a step starts with a clean forward/backward (saliency, and the clean loss that
    --clean_lam weighs)."""
    clean_logits: ClassVar[bool]
    """True when StepResult.logits are the clean images' logits, False for the mixed images'."""
    drawable: ClassVar[bool] = False
    """True when visualize.py can draw its mixed batch: set from whether the class defines
    :meth:`draw_mix` or :meth:`figure_mixer` (so a method cannot be marked drawable and drawn
    with another method's mixing)."""
    precision: Precision = FLOAT32
    """How the forward passes run (see :class:`Precision`); set by :func:`build_method`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.drawable = (cls.draw_mix.__func__ is not Method.draw_mix.__func__
                        or cls.figure_mixer.__func__ is not Method.figure_mixer.__func__)

    @classmethod
    def figure_mixer(cls, batch: int, settings: FigureSettings) -> Mixer | None:
        """The mixer (with ``num_classes=None`` and ``settings.rng``) that draws this method's
        figure of ``batch`` images, when the default :meth:`draw_mix` suits it; None: not drawable."""
        return None

    @classmethod
    def draw_mix(cls, images: Tensor, labels: Tensor, saliency: Tensor, settings: FigureSettings) -> MixResult:
        """Mix ``images`` (B, C, H, W) with ``labels`` (B,) and ``saliency`` (B, H, W) as this
        method does, for visualize.py, every draw from ``settings.rng``. By default: the mixer of
        :meth:`figure_mixer`, called on the identity matrix as the targets, so that its mixed
        targets are the inputs' shares of each output. ValueError for what cannot be drawn."""
        mixer = cls.figure_mixer(images.shape[0], settings)
        if mixer is None:
            raise ValueError(f"{cls.title} does not mix the input images, so its mixed batch cannot be drawn")
        identity = torch.eye(images.shape[0], device=images.device)
        mixed, shares = mixer(images, identity, saliency) if mixer.needs_saliency else mixer(images, identity)
        return MixResult(cls.name, mixed, shares.double().cpu().numpy())

    @classmethod
    @abstractmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> "Method":
        """The method as ``args`` (main.py's flags, None mixup_alpha / clean_lam resolved) asks for."""

    @classmethod
    def pool_jobs(cls, args: Any) -> int:
        """Independent pieces of one step's mixing worth a thread each (0: nothing to solve)."""
        return 0

    @classmethod
    def name_part(cls, args: Any) -> str:
        """What the method adds to the experiment folder name after the learning rate."""
        return f"_method_{cls.name}_m_alpha_{args.mixup_alpha}"

    @classmethod
    def arg_problems(cls, args: Any, image_size: int, already: Sequence[str]) -> list[str]:
        """The method's own checks of the flags (one message per problem, naming its flag), on
        images of side ``image_size``; ``already``: the problems the common checks found."""
        problems = []
        if not cls.clean_pass and args.clean_lam > 0:
            problems.append(f"--clean_lam {args.clean_lam}: --method {cls.name} has no clean-input pass "
                            f"(only {' and '.join(n for n, m in REGISTRY.items() if m.clean_pass)} do); leave it out")
        alpha = args.mixup_alpha
        if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
            problems.append(f"--mixup_alpha must be a finite number > 0, got {alpha}")
        return problems

    def __init__(self, num_classes: int, loss: str = "bce") -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.num_classes = num_classes
        self.loss = loss

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes}, loss={self.loss!r})"

    def _one_hot(self, images: Tensor, labels: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[0] < 1:
            raise ValueError(f"images must be a non-empty batch (B, C, H, W), got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be class indices (B,) = ({images.shape[0]},), got shape "
                             f"{tuple(labels.shape)}")
        return to_one_hot(labels, self.num_classes)

    def _result(self, logits: Tensor, targets: Tensor, mix_time: float, accuracy_logits: Tensor) -> StepResult:
        return StepResult(loss=soft_target_loss(logits, targets, self.loss), logits=accuracy_logits.detach(),
                          mix_time=mix_time, targets=targets.detach().float())

    @abstractmethod
    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor) -> StepResult:
        """Run the step's forward passes and return its loss (see the class docstring)."""


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


class _PairMethod(Method):
    """Shared by input mixup and CutMix: mix the inputs with ``mixer_class``, then one forward pass."""

    clean_logits = False
    published_clean_lam = 0.0
    mixer_class: ClassVar[type[Mixer]]

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        return cls(num_classes, _setting(args, "mixup_alpha"), _loss(args))

    def __init__(self, num_classes: int, alpha: float, loss: str = "bce") -> None:
        super().__init__(num_classes, loss)
        self.mixer = self.mixer_class(num_classes=num_classes, alpha=alpha)
        self.alpha = self.mixer.alpha

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes}, alpha={self.alpha}, loss={self.loss!r})"

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor) -> StepResult:
        self._one_hot(images, labels)  # the shapes; the mixer makes the targets
        started = time.perf_counter()
        mixed_images, mixed_targets = self.mixer(images, labels)
        mix_time = time.perf_counter() - started
        with self.precision.autocast():
            logits = model(mixed_images)
        return self._result(logits, mixed_targets, mix_time, logits)


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

    @classmethod
    def draw_mix(cls, images: Tensor, labels: Tensor, saliency: Tensor, settings: FigureSettings) -> MixResult:
        plan = baselines.CutMix(alpha=settings.alpha(cls), rng=settings.rng).plan(images)
        mixed, _ = plan.apply(images, torch.eye(images.shape[0], device=images.device))
        return MixResult(cls.name, mixed, pair_shares(plan.perm, np.full(images.shape[0], plan.kept)), box=plan.box)


class _TimedMix:
    """Wraps a mix function and adds the seconds spent in it to ``seconds``."""

    def __init__(self, mix_fn: Callable[[Tensor], Tensor]) -> None:
        self.mix_fn = mix_fn
        self.seconds = 0.0

    def __call__(self, h: Tensor) -> Tensor:
        started = time.perf_counter()
        try:
            return self.mix_fn(h)
        finally:
            self.seconds += time.perf_counter() - started


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
        return cls(num_classes, _setting(args, "mixup_alpha"), _loss(args))

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

    def __init__(self, num_classes: int, clean_lam: float, loss: str = "bce") -> None:
        super().__init__(num_classes, loss)
        if not (isinstance(clean_lam, (int, float)) and math.isfinite(clean_lam) and clean_lam >= 0):
            raise ValueError(f"clean_lam must be a finite number >= 0, got {clean_lam!r}")
        self.clean_lam = float(clean_lam)

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor) -> StepResult:
        targets = self._one_hot(images, labels)
        precision = self.precision
        clean_model = _AutocastForward(model, precision) if precision.enabled else model
        with _local_gradients(model):
            saliency, _, clean_logits = saliency_and_clean_loss(clean_model, images, labels, self.clean_lam,
                                                                self.num_classes, scaler=precision.scaler)
        saliency = _zero_non_finite(saliency)
        started = time.perf_counter()
        mixed_images, mixed_targets = self.mixer(images, targets, saliency)
        mix_time = time.perf_counter() - started
        with precision.autocast():
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

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        config = puzzlemix.PuzzleMixConfig.from_namespace(_resolved(args))
        mixer = puzzlemix.PuzzleMix(num_classes=num_classes, mean=dataset_info.mean, std=dataset_info.std,
                                    executor=executor, chunks=PUZZLE_CHUNKS, **vars(config))
        return cls(num_classes, mixer, _setting(args, "clean_lam"), _loss(args))

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
        super().__init__(num_classes, clean_lam, loss)
        self.mixer = mixer

    def __repr__(self) -> str:
        return f"PuzzleMixMethod({self.mixer!r}, clean_lam={self.clean_lam}, loss={self.loss!r})"

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

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        config = comix.CoMixupConfig.from_namespace(_resolved(args))
        mixer = comix.CoMixup(num_classes=num_classes, executor=executor, **vars(config))
        return cls(num_classes, mixer, _setting(args, "clean_lam"), _loss(args))

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
        super().__init__(num_classes, clean_lam, loss)
        self.mixer = mixer

    def __repr__(self) -> str:
        return f"CoMixupMethod({self.mixer!r}, clean_lam={self.clean_lam}, loss={self.loss!r})"

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


# --------------------------------------------------------------------------- the registry

REGISTRY: dict[str, type[Method]] = {
    method.name: method
    for method in (VanillaMethod, InputMixupMethod, ManifoldMixMethod, CutMixMethod, PuzzleMixMethod, CoMixupMethod)
}
"""Every method by its --method name. Adding a method: its class (the attributes and class
methods of :class:`Method`) and one entry here; the parser, the checks, the experiment name,
the thread pool and visualize.py read them from here."""

METHODS = tuple(REGISTRY)
"""The --method choices."""

PUBLISHED_MIXUP_ALPHA: dict[str, float | None] = {name: m.published_mixup_alpha for name, m in REGISTRY.items()}
"""--mixup_alpha of each method's published command (vanilla mixes nothing)."""

PUBLISHED_CLEAN_LAM: dict[str, float] = {name: m.published_clean_lam for name, m in REGISTRY.items()}
"""--clean_lam of each method's published command. Puzzle Mix's default 0 runs the saliency pass
in eval mode and discards its loss; vanilla ignores it but the Co-Mixup script's default 1.0 is
part of its published experiment name; mixup, manifold and CutMix have no clean pass."""


def method_class(name: str) -> type[Method]:
    """The registered class of ``name``; ValueError naming the choices otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {name!r}")
    return REGISTRY[name]


# --------------------------------------------------------------------------- from the command line

def published_default(method: str, name: str) -> float | None:
    """The published value of ``mixup_alpha`` or ``clean_lam`` for ``method``."""
    cls = method_class(method)
    if name not in ("mixup_alpha", "clean_lam"):
        raise ValueError(f"only mixup_alpha and clean_lam have per-method defaults, got {name!r}")
    return cls.published_mixup_alpha if name == "mixup_alpha" else cls.published_clean_lam


def fill_published_defaults(args: Namespace) -> None:
    """Set ``args.mixup_alpha`` and ``args.clean_lam`` that are None to ``args.method``'s published
    values (vanilla's mixup_alpha stays None: it mixes nothing)."""
    for name in ("mixup_alpha", "clean_lam"):
        if getattr(args, name, None) is None:
            setattr(args, name, published_default(args.method, name))


def _setting(args: Any, name: str) -> Any:
    value = getattr(args, name, None)
    return published_default(args.method, name) if value is None else value


def _loss(args: Any) -> str:
    return getattr(args, "loss", "bce")


def _resolved(args: Any) -> Namespace:
    resolved = Namespace(**vars(args))
    fill_published_defaults(resolved)
    return resolved


def _as_flags(message: str, already: Sequence[str]) -> list[str]:
    """A mixer config's problems ("m_part must be ...; beta must be ...") under the flags' names
    ("--m_part must be ..."), without the ones already reported by the common checks."""
    found = []
    for problem in message.split("; "):
        name = problem.split(" ", 1)[0]
        flagged = f"--{problem}" if name.isidentifier() else problem
        if not any(done.startswith(f"--{name} ") for done in already):
            found.append(flagged)
    return found


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


def build_method(args: Any, num_classes: int, dataset_info: Any, executor: Executor | None = None,
                 precision: Precision | None = None) -> Method:
    """The :class:`Method` that ``args`` (a namespace of main.py's flags, or any object with the
    same attributes) asks for: ``args.method`` in METHODS, ``args.loss`` (default bce), the
    method's flags; a None ``mixup_alpha`` / ``clean_lam`` means the method's published value.
    ``dataset_info`` (comixup.data.datasets.DatasetInfo) gives Puzzle Mix the images' mean/std; ``executor``
    (a thread pool) solves Co-Mixup partitions / Puzzle Mix pairs concurrently; ``precision``
    (default float32) becomes the method's :attr:`Method.precision`."""
    built = method_class(args.method).from_args(args, num_classes, dataset_info, executor)
    if precision is not None:
        built.precision = precision
    return built


def pool_workers(args: Any, processes_per_node: int = 1) -> int:
    """Threads worth a pool for ``args.method`` (0: it solves nothing in parallel, or
    ``args.parallel`` is False): one per Co-Mixup partition / Puzzle Mix chunk, at most one per
    core, the node's cores being shared by ``processes_per_node`` training processes (torchrun)."""
    jobs = method_class(args.method).pool_jobs(args)
    if not getattr(args, "parallel", True) or jobs == 0:
        return 0
    if processes_per_node <= 1:
        return default_workers(jobs)
    cores = default_workers(2**31 - 1)  # every usable core
    return max(1, min(jobs, cores // processes_per_node))
