"""The per-batch training loss of every mixing method, behind one interface.

``main.py`` trains with any of: ``vanilla`` (no mixing), ``mixup`` (input mixup), ``manifold``
(manifold mixup), ``cutmix``, ``puzzle`` (Puzzle Mix) and ``comix`` (Co-Mixup, the published
recipe), the baselines as the Puzzle Mix repository runs them; and Co-Mixup's successors
``saliencymix``, ``fmix``, ``resizemix``, ``guided_ap`` and ``guided_sr`` (GuidedMixup with
input-gradient or spectral-residual saliency), each as its paper describes it, each official
code's departures one flag away. Each is a :class:`Method`::

    method = build_method(args, num_classes, dataset_info(args.dataset), executor=pool)
    optimizer.zero_grad()
    step = method(model, images, labels)       # labels: class indices (B,)
    step.loss.backward()
    optimizer.step()
    top1 = accuracy(step.logits, labels)

A method runs every forward pass of the step (and, for ``comix``, ``puzzle`` and ``guided_ap``
with ``clean_lam > 0``, the clean-loss backward that accumulates its parameter gradients); the
caller does the mixed-loss backward and the optimiser step.

Losses (``--loss``): ``bce``, the published binary cross-entropy between softmax(logits) and the
soft targets (mean over batch x classes), or ``ce``, the soft-target cross entropy
``-sum(t * log_softmax(logits))`` (mean over the batch). The clean-input loss of Co-Mixup,
Puzzle Mix and GuidedMixup-AP is cross entropy in their published repositories, whatever ``--loss``
says.

Train accuracy (:attr:`StepResult.logits`): Co-Mixup, Puzzle Mix, GuidedMixup-AP and vanilla give
the logits of the clean images (their clean pass computes them anyway; Co-Mixup's published log is
on clean images). The methods without a clean pass (input mixup, manifold mixup, CutMix,
SaliencyMix, FMix, ResizeMix, GuidedMixup-SR) give the logits of the mixed images, to be scored
against the label of the image each mixed image was made from (the "self" image, weight lam or
the area outside the pasted box), which is what the Puzzle Mix repository logs for them; a batch
that a mixing coin left unmixed gives its clean logits. :attr:`Method.clean_logits` says which.

Method-specific flags: the successors' hyperparameters are flags (:class:`MethodFlag`, declared by
each class in :attr:`Method.flags`) that are None on the command line until
:func:`fill_published_defaults` sets the method's published value, so that one given with another
method is refused (:func:`foreign_flag_problems`) instead of silently ignored.

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
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, ContextManager, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from comixup.core.lifecycle import str2bool
from comixup.core.losses import LOSSES, bce_on_probabilities, soft_target_loss
from comixup.core.precision import AMP_MODES, FLOAT32, Precision
from comixup.core.tensors import to_one_hot
from comixup.mixing import baselines, comix, fmix, guided, puzzlemix, resizemix, saliencymix
from comixup.mixing.base import Mixer, check_bool, check_choice, check_float
from comixup.mixing.parallel import default_workers
from comixup.mixing.saliency import saliency_and_clean_loss
from comixup.mixing.saliency_blocks import check_grid

__all__ = [
    "METHODS", "LOSSES", "PUBLISHED_MIXUP_ALPHA", "PUBLISHED_CLEAN_LAM", "PUZZLE_CHUNKS", "StepResult", "Method",
    "VanillaMethod", "InputMixupMethod", "ManifoldMixMethod", "CutMixMethod", "PuzzleMixMethod", "CoMixupMethod",
    "SaliencyMixMethod", "FMixMethod", "ResizeMixMethod", "GuidedMixupAPMethod", "GuidedMixupSRMethod",
    "MethodFlag", "method_flags", "foreign_flag_problems", "add_method_flags", "format_flag_value",
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
    pasted box (top, bottom, left, right) shared by the batch (CutMix, SaliencyMix, ResizeMix) or
    None; max_sources: the most inputs one output can draw from under this method's settings
    (fixes the annotation space of the figure); saliency: the maps (B, H, W) the method mixed by
    when they are not the input-gradient saliency it was given (GuidedMixup-SR's spectral
    residual), else None.
    """

    method: str
    mixed: Tensor
    shares: np.ndarray
    grid_size: int | None = None
    box: tuple[int, int, int, int] | None = None
    max_sources: int = 2
    saliency: Tensor | None = None


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

    def alpha(self, method: type[Method]) -> float | None:
        """The concentration to draw with: --mixup_alpha, else the method's default under its
        options (None: the method draws no Beta / Dirichlet weight)."""
        return method.default_mixup_alpha(self.options) if self.mixup_alpha is None else self.mixup_alpha


def pair_shares(perm: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Shares of pair mixing: output i is own[i] of input i and 1 - own[i] of input perm[i]."""
    batch = len(perm)
    shares = np.zeros((batch, batch))
    rows = np.arange(batch)
    np.add.at(shares, (rows, rows), own)
    np.add.at(shares, (rows, perm), 1 - own)
    return shares


@dataclass(frozen=True)
class MethodFlag:
    """One hyperparameter flag of a method, ``--<dest>``.

    On the command line it is None (unset) until :func:`fill_published_defaults` sets the
    method's published value, so that a flag given with another method can be refused
    (:func:`foreign_flag_problems`). Methods that share a flag (GuidedMixup's two) declare it
    each, with their own default.
    """

    dest: str
    """The flag without its dashes, and the attribute of the parsed arguments."""
    default: Any
    """The method's published value (its paper's CIFAR setting)."""
    help: str
    check: Callable[[str, Any], Any]
    """``check("--dest", value)`` raises TypeError or ValueError, one line naming the flag, for a
    value the method cannot run with."""
    type: Callable[[str], Any] = float
    choices: tuple[str, ...] | None = None
    nargs: int | None = None
    metavar: str | None = None
    in_figure: bool = True
    """visualize.py takes it too. Not the mixing probabilities: a figure always mixes."""

    def resolved(self, value: Any) -> Any:
        """``value``, or the published value when it is None (a list where the flag takes several)."""
        if value is not None:
            return value
        return list(self.default) if self.nargs else self.default


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
    """--mixup_alpha of the method's published command (None: it draws no Beta / Dirichlet
    weight: vanilla mixes nothing, GuidedMixup's shares come from saliency maps, ResizeMix draws
    its scale uniformly)."""
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
    flags: ClassVar[tuple[MethodFlag, ...]] = ()
    """The method's own hyperparameter flags (see :class:`MethodFlag`), refused with any other method."""
    flag_group: ClassVar[str] = ""
    """The --help group of its flags (methods that share flags share the group)."""
    figure_outline: ClassVar[str | None] = None
    """What visualize.py's --grid outlines on the mixed images ("mask blocks" or "box"); None:
    nothing, and --grid is refused."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.drawable = (cls.draw_mix.__func__ is not Method.draw_mix.__func__
                        or cls.figure_mixer.__func__ is not Method.figure_mixer.__func__)

    @classmethod
    def flag(cls, dest: str) -> MethodFlag:
        """The method's flag ``--<dest>``; KeyError when it has none of that name."""
        for flag in cls.flags:
            if flag.dest == dest:
                return flag
        raise KeyError(f"--method {cls.name} has no flag --{dest}")

    @classmethod
    def setting(cls, source: Any, dest: str) -> Any:
        """The value of the method's flag ``--<dest>`` in ``source`` (parsed arguments, or a mapping
        by flag name such as :attr:`FigureSettings.options`), its published value where unset."""
        value = source.get(dest) if isinstance(source, Mapping) else getattr(source, dest, None)
        return cls.flag(dest).resolved(value)

    @classmethod
    def default_mixup_alpha(cls, source: Any) -> float | None:
        """--mixup_alpha when it is not given, under the method's flags in ``source`` (as
        :meth:`setting`): its published value, by default."""
        return cls.published_mixup_alpha

    @classmethod
    def unused_mixup_alpha(cls, source: Any) -> str | None:
        """Why a given --mixup_alpha would mean nothing under the method's flags in ``source``
        (completing "--method NAME ..."), or None when it is used."""
        return None

    @classmethod
    def missing_requirement(cls) -> str | None:
        """Why the method cannot run in this installation (an optional package it needs is
        missing: one line naming what to install), or None."""
        return None

    @classmethod
    def flag_problems(cls, source: Any) -> list[str]:
        """The method's own flags in ``source`` checked: one message per problem, naming the flag."""
        problems = []
        for flag in cls.flags:
            try:
                flag.check(f"--{flag.dest}", cls.setting(source, flag.dest))
            except (TypeError, ValueError) as err:
                problems.append(str(err))
        return problems

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
            with_pass = [n for n, m in REGISTRY.items() if m.clean_pass]
            problems.append(f"--clean_lam {args.clean_lam}: --method {cls.name} has no clean-input pass "
                            f"(only {', '.join(with_pass[:-1])} and {with_pass[-1]} do); leave it out")
        alpha = args.mixup_alpha
        unused = cls.unused_mixup_alpha(args) if alpha is not None else None
        if unused is not None:
            problems.append(f"--mixup_alpha {alpha}: --method {cls.name} {unused}; leave it out")
        elif alpha is not None and not (math.isfinite(alpha) and alpha > 0):
            problems.append(f"--mixup_alpha must be a finite number > 0, got {alpha}")
        problems += cls.flag_problems(args)
        missing = None if getattr(args, "evaluate", False) else cls.missing_requirement()  # evaluating mixes nothing
        if missing is not None:
            problems.append(f"--method {cls.name}: {missing}")
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
        return cls(num_classes, _setting(args, "mixup_alpha"), _loss(args))

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
    figure_outline = "mask blocks"

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


# --------------------------------------------------------------------------- the successors

def _probability(name: str, value: Any) -> float:
    return check_float(name, value, minimum=0, maximum=1)


def _scale_range(name: str, value: Any) -> tuple[float, float]:
    """ResizeMix's scope: two shares of the image side, LOW <= HIGH, within [0, 1]."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name} takes two numbers, LOW HIGH, got {value!r}")
    low, high = (check_float(name, part, minimum=0, maximum=1) for part in value)
    if low > high:
        raise ValueError(f"{name} must be LOW HIGH with LOW <= HIGH, got {low} {high}")
    return low, high


_SALMIX_PROB = MethodFlag(
    "salmix_prob", 0.5, "probability that a batch is mixed; the others train on clean images (the official "
    "--salmix_prob)", check=_probability, metavar="P", in_figure=False)
_SALMIX_DETECTOR_INPUT = MethodFlag(
    "salmix_detector_input", "uint8", "what OpenCV's saliency detector reads: uint8 = the decoded image in BGR "
    "order, what the detector is made for; normalised = the normalised float image, as the official code passes it "
    "(the detector misreads it, so the box lands about at random)",
    check=lambda name, value: check_choice(name, value, saliencymix.DETECTOR_INPUTS), type=str,
    choices=saliencymix.DETECTOR_INPUTS)
_FMIX_DECAY_POWER = MethodFlag(
    "fmix_decay_power", 3.0, "decay d of the random spectrum, 1 / f^d: larger values give smoother masks",
    check=lambda name, value: check_float(name, value, minimum=0), metavar="D")
_FMIX_MAX_SOFT = MethodFlag(
    "fmix_max_soft", 0.0, "share of the pixels on each side of the mask's threshold that ramp from 1 to 0, "
    "in [0, 0.5] (0: binary masks)", check=lambda name, value: check_float(name, value, minimum=0, maximum=0.5),
    metavar="S")
_FMIX_SPECTRUM = MethodFlag(
    "fmix_spectrum", "isotropic", "isotropic = the paper's spectrum; published = the official make_low_freq_image's, "
    "which keeps only the horizontal frequencies 0 and 1/W (vertical bands)",
    check=lambda name, value: check_choice(name, value, fmix.SPECTRA), type=str, choices=fmix.SPECTRA)
_RESIZEMIX_SCOPE = MethodFlag(
    "resizemix_scope", (0.1, 0.8), "range of the scale rate tau: the partner image is shrunk to a box of "
    "int(side x tau) pixels", check=_scale_range, nargs=2, metavar=("LOW", "HIGH"))
_RESIZEMIX_USE_ALPHA = MethodFlag(
    "resizemix_use_alpha", False, "True: tau ~ Beta(a, a), a = --mixup_alpha (then default 1.0), drawn again "
    "uniformly over the scope when outside it, as OpenMixup's CIFAR configuration; False: tau uniform over the "
    "scope, as the paper", check=check_bool, type=str2bool, metavar="BOOL")
_GUIDED_MIX_PROB_AP = MethodFlag(
    "mix_prob", 0.8, "probability that a batch is mixed; the others train on clean images, without guided_ap's "
    "saliency pass (the released code's --mix_prob)", check=_probability, metavar="P", in_figure=False)
_GUIDED_MIX_PROB_SR = replace(_GUIDED_MIX_PROB_AP, default=0.5)
_GUIDED_PAIRING = MethodFlag(
    "guided_pairing", "greedy", "greedy = the paper's farthest-neighbour cycle over the saliency maps; random = a "
    "random permutation, which is what the released CIFAR code runs",
    check=lambda name, value: check_choice(name, value, guided.PAIRINGS), type=str, choices=guided.PAIRINGS)


class _SuccessorMethod(_MixedInputMethod):
    """A successor without a clean pass: ``mixer`` mixes the inputs, one forward pass follows."""

    def __init__(self, num_classes: int, mixer: Mixer, loss: str = "bce") -> None:
        super().__init__(num_classes, loss)
        self.mixer = mixer

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mixer!r}, num_classes={self.num_classes}, loss={self.loss!r})"


class SaliencyMixMethod(_SuccessorMethod):
    """SaliencyMix (Uddin et al., "SaliencyMix: A Saliency Guided Data Augmentation Strategy for Better
    Regularization", ICLR 2021): with probability --salmix_prob, CutMix with the box centred on the
    saliency peak of one permuted image (OpenCV's fine-grained detector), lam ~ Beta(--mixup_alpha,
    --mixup_alpha) (the official --beta); :class:`saliencymix.SaliencyMix`."""

    name = "saliencymix"
    title = "SaliencyMix"
    published_mixup_alpha = 1.0
    flags = (_SALMIX_PROB, _SALMIX_DETECTOR_INPUT)
    flag_group = "SaliencyMix"
    figure_outline = "box"

    @classmethod
    def missing_requirement(cls) -> str | None:
        try:
            saliencymix.require_saliency_detector()
        except saliencymix.OpenCVContribMissing as err:
            return str(err)
        return None

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        normalisation = {} if dataset_info is None else {"mean": dataset_info.mean, "std": dataset_info.std}
        mixer = saliencymix.SaliencyMix(prob=cls.setting(args, "salmix_prob"), beta=_setting(args, "mixup_alpha"),
                                        detector_input=cls.setting(args, "salmix_detector_input"),
                                        num_classes=num_classes, **normalisation)
        return cls(num_classes, mixer, _loss(args))

    @classmethod
    def name_part(cls, args: Any) -> str:
        part = f"{super().name_part(args)}_prob_{cls.setting(args, 'salmix_prob')}"
        detector_input = cls.setting(args, "salmix_detector_input")
        if detector_input != cls.flag("salmix_detector_input").default:
            part += f"_detector_{detector_input}"
        return part

    @classmethod
    def draw_mix(cls, images: Tensor, labels: Tensor, saliency: Tensor, settings: FigureSettings) -> MixResult:
        """A mixed batch (the coin always mixes) under ``settings.options``; shares the box's area."""
        mixer = saliencymix.SaliencyMix(prob=1.0, beta=settings.alpha(cls), mean=settings.mean, std=settings.std,
                                        detector_input=cls.setting(settings.options, "salmix_detector_input"),
                                        rng=settings.rng)
        plan = mixer.plan(images)
        mixed, _ = plan.apply(images, torch.eye(images.shape[0], device=images.device))
        return MixResult(cls.name, mixed, pair_shares(plan.perm, np.full(images.shape[0], plan.kept)), box=plan.box)


class FMixMethod(_SuccessorMethod):
    """FMix (Harris et al., "FMix: Enhancing Mixed Sample Data Augmentation", 2020): one binary mask per
    batch cut from a random low-frequency image, lam ~ Beta(--mixup_alpha, --mixup_alpha) weighing
    the labels; :class:`fmix.FMix`."""

    name = "fmix"
    title = "FMix"
    published_mixup_alpha = 1.0
    flags = (_FMIX_DECAY_POWER, _FMIX_MAX_SOFT, _FMIX_SPECTRUM)
    flag_group = "FMix"

    @classmethod
    def _mixer(cls, source: Any, alpha: float, num_classes: int | None = None,
               rng: np.random.Generator | None = None) -> fmix.FMix:
        return fmix.FMix(alpha=alpha, decay_power=cls.setting(source, "fmix_decay_power"),
                         max_soft=cls.setting(source, "fmix_max_soft"), spectrum=cls.setting(source, "fmix_spectrum"),
                         num_classes=num_classes, rng=rng)

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        return cls(num_classes, cls._mixer(args, _setting(args, "mixup_alpha"), num_classes), _loss(args))

    @classmethod
    def name_part(cls, args: Any) -> str:
        part = f"{super().name_part(args)}_decay_{cls.setting(args, 'fmix_decay_power')}"
        max_soft = cls.setting(args, "fmix_max_soft")
        if max_soft > 0:
            part += f"_soft_{max_soft}"
        spectrum = cls.setting(args, "fmix_spectrum")
        return part + ("" if spectrum == cls.flag("fmix_spectrum").default else f"_spectrum_{spectrum}")

    @classmethod
    def figure_mixer(cls, batch: int, settings: FigureSettings) -> Mixer | None:
        """FMix under ``settings.options``; the shares are the label weights lam (the mask's mean is
        within one pixel of it)."""
        return cls._mixer(settings.options, settings.alpha(cls), rng=settings.rng)


class ResizeMixMethod(_SuccessorMethod):
    """ResizeMix (Qin et al., "ResizeMix: Mixing Data with Preserved Object Information and True
    Labels", 2020): each image's whole partner, shrunk by tau ~ U(--resizemix_scope), pasted into one
    random box; labels by the box's area. Where the paper leaves it open (no official code), as
    OpenMixup implements it; :class:`resizemix.ResizeMix`."""

    name = "resizemix"
    title = "ResizeMix"
    published_mixup_alpha = None
    flags = (_RESIZEMIX_SCOPE, _RESIZEMIX_USE_ALPHA)
    flag_group = "ResizeMix"
    figure_outline = "box"
    OPENMIXUP_ALPHA: ClassVar[float] = 1.0
    """The Beta concentration of OpenMixup's CIFAR configuration (use_alpha with alpha 1)."""

    @classmethod
    def default_mixup_alpha(cls, source: Any) -> float | None:
        return cls.OPENMIXUP_ALPHA if cls.setting(source, "resizemix_use_alpha") else None

    @classmethod
    def unused_mixup_alpha(cls, source: Any) -> str | None:
        if cls.setting(source, "resizemix_use_alpha"):
            return None
        return ("draws its scale uniformly over --resizemix_scope (--mixup_alpha is the Beta concentration of "
                "--resizemix_use_alpha True)")

    @classmethod
    def _mixer(cls, source: Any, alpha: float | None, num_classes: int | None = None,
               rng: np.random.Generator | None = None) -> resizemix.ResizeMix:
        # without use_alpha the mixer never reads alpha: its own default then
        return resizemix.ResizeMix(scope=tuple(cls.setting(source, "resizemix_scope")),
                                   use_alpha=cls.setting(source, "resizemix_use_alpha"),
                                   alpha=cls.OPENMIXUP_ALPHA if alpha is None else alpha, num_classes=num_classes,
                                   rng=rng)

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        alpha = getattr(args, "mixup_alpha", None)
        return cls(num_classes, cls._mixer(args, cls.default_mixup_alpha(args) if alpha is None else alpha,
                                           num_classes), _loss(args))

    @classmethod
    def name_part(cls, args: Any) -> str:
        low, high = cls.setting(args, "resizemix_scope")
        part = f"_method_{cls.name}_scope_{low}_{high}"
        if cls.setting(args, "resizemix_use_alpha"):
            alpha = getattr(args, "mixup_alpha", None)
            part += f"_use_alpha_{cls.default_mixup_alpha(args) if alpha is None else alpha}"
        return part

    @classmethod
    def draw_mix(cls, images: Tensor, labels: Tensor, saliency: Tensor, settings: FigureSettings) -> MixResult:
        """ResizeMix under ``settings.options``; shares the box's area."""
        drawn = cls._mixer(settings.options, settings.alpha(cls), rng=settings.rng).draw(
            images.shape[0], images.shape[-2], images.shape[-1])
        mixed = resizemix.paste_resized(images, drawn.perm, drawn.box)
        return MixResult(cls.name, mixed, pair_shares(drawn.perm, np.full(images.shape[0], drawn.kept)),
                         box=drawn.box)


class _GuidedMixup(Method):
    """What GuidedMixup's two methods share: the flags' group, the folder name, no Beta weight."""

    flag_group = "GuidedMixup"
    published_mixup_alpha = None

    @classmethod
    def unused_mixup_alpha(cls, source: Any) -> str | None:
        return "draws no mixing weight (each pixel's share comes from the two images' saliency maps)"

    @classmethod
    def name_part(cls, args: Any) -> str:
        part = f"_method_{cls.name}_mix_prob_{cls.setting(args, 'mix_prob')}"
        pairing = cls.setting(args, "guided_pairing")
        return part + ("" if pairing == cls.flag("guided_pairing").default else f"_pairing_{pairing}")


class GuidedMixupAPMethod(_GuidedMixup, _SaliencyMethod):
    """GuidedMixup with input-gradient saliency (Guided-AP; Kang & Kim, "GuidedMixup: An Efficient
    Mixup Strategy Guided by Saliency Maps", AAAI 2023), as the released training loop runs it: the
    mixing coin first (probability --mix_prob); a batch left unmixed trains as vanilla, without the
    clean pass; a mixed one runs Co-Mixup's clean pass (saliency and, with clean_lam > 0, the clean
    loss), then each image mixes pixel by pixel with its partner (paired greedily far apart) by the
    ratio of their blurred saliency maps; :class:`guided.GuidedMixupAP`."""

    name = "guided_ap"
    title = "GuidedMixup (AP)"
    published_clean_lam = 0.0
    flags = (_GUIDED_MIX_PROB_AP, _GUIDED_PAIRING)
    mixer: guided.GuidedMixupAP

    @classmethod
    def arg_problems(cls, args: Any, image_size: int, already: Sequence[str]) -> list[str]:
        return Method.arg_problems.__func__(cls, args, image_size, already)

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        mixer = guided.GuidedMixupAP(mix_prob=cls.setting(args, "mix_prob"),
                                     pairing=cls.setting(args, "guided_pairing"), num_classes=num_classes)
        return cls(num_classes, mixer, _setting(args, "clean_lam"), _loss(args))

    def __init__(self, num_classes: int, mixer: guided.GuidedMixupAP, clean_lam: float = 0.0,
                 loss: str = "bce") -> None:
        super().__init__(num_classes, clean_lam, loss)
        self.mixer = mixer

    def __repr__(self) -> str:
        return f"GuidedMixupAPMethod({self.mixer!r}, clean_lam={self.clean_lam}, loss={self.loss!r})"

    def _mix(self, images: Tensor, targets: Tensor, saliency: Tensor) -> tuple[Tensor, Tensor]:
        return self.mixer.mix(images, targets, saliency)  # the coin is drawn already

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor) -> StepResult:
        if self.mixer.decide():
            return super().__call__(model, images, labels)
        targets = self._one_hot(images, labels)
        with self.precision.autocast():
            logits = model(images)
        return self._result(logits, targets, 0.0, logits)

    @classmethod
    def figure_mixer(cls, batch: int, settings: FigureSettings) -> Mixer | None:
        """A mixed batch (the coin always mixes) by the given input-gradient saliency; shares mean(M)."""
        return guided.GuidedMixupAP(mix_prob=1.0, pairing=cls.setting(settings.options, "guided_pairing"),
                                    rng=settings.rng)


class GuidedMixupSRMethod(_GuidedMixup, _SuccessorMethod):
    """GuidedMixup with spectral-residual saliency (Guided-SR; Kang & Kim, AAAI 2023): no extra pass;
    with probability --mix_prob each image mixes pixel by pixel with its partner (paired greedily
    far apart) by the ratio of the blurred spectral residuals of the two images;
    :class:`guided.GuidedMixupSR`."""

    name = "guided_sr"
    title = "GuidedMixup (SR)"
    flags = (_GUIDED_MIX_PROB_SR, _GUIDED_PAIRING)

    @classmethod
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
        mixer = guided.GuidedMixupSR(mix_prob=cls.setting(args, "mix_prob"),
                                     pairing=cls.setting(args, "guided_pairing"), num_classes=num_classes)
        return cls(num_classes, mixer, _loss(args))

    @classmethod
    def draw_mix(cls, images: Tensor, labels: Tensor, saliency: Tensor, settings: FigureSettings) -> MixResult:
        """A mixed batch (the coin always mixes); the figure shows the spectral residual it mixed by
        instead of the input-gradient saliency; shares mean(M)."""
        mixer = guided.GuidedMixupSR(mix_prob=1.0, pairing=cls.setting(settings.options, "guided_pairing"),
                                     rng=settings.rng)
        mixed, shares = mixer(images, torch.eye(images.shape[0], device=images.device))
        return MixResult(cls.name, mixed, shares.double().cpu().numpy(), saliency=guided.spectral_residual(images))


# --------------------------------------------------------------------------- the registry

REGISTRY: dict[str, type[Method]] = {
    method.name: method
    for method in (VanillaMethod, InputMixupMethod, ManifoldMixMethod, CutMixMethod, PuzzleMixMethod, CoMixupMethod,
                   SaliencyMixMethod, FMixMethod, ResizeMixMethod, GuidedMixupAPMethod, GuidedMixupSRMethod)
}
"""Every method by its --method name. Adding a method: its class (the attributes and class
methods of :class:`Method`) and one entry here; the parser, the checks, the experiment name,
the thread pool and visualize.py read them from here."""

METHODS = tuple(REGISTRY)
"""The --method choices."""

PUBLISHED_MIXUP_ALPHA: dict[str, float | None] = {name: m.published_mixup_alpha for name, m in REGISTRY.items()}
"""--mixup_alpha of each method's published command (None: vanilla mixes nothing, GuidedMixup draws
no mixing weight, ResizeMix draws its scale uniformly unless --resizemix_use_alpha True, with 1.0)."""

PUBLISHED_CLEAN_LAM: dict[str, float] = {name: m.published_clean_lam for name, m in REGISTRY.items()}
"""--clean_lam of each method's published command. Puzzle Mix's and GuidedMixup-AP's default 0 runs
the saliency pass in eval mode and discards its loss; vanilla ignores it but the Co-Mixup
script's default 1.0 is part of its published experiment name; the methods without a clean pass
take 0."""


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
    """Set the flags of ``args.method`` (:attr:`Method.flags`), ``args.mixup_alpha`` and
    ``args.clean_lam`` that are None (or absent) to its published values; the other methods' flags
    are left as they are. ``mixup_alpha`` stays None for the methods that draw no Beta / Dirichlet
    weight (vanilla, GuidedMixup, ResizeMix without --resizemix_use_alpha). Idempotent."""
    method = method_class(args.method)
    for flag in method.flags:
        setattr(args, flag.dest, flag.resolved(getattr(args, flag.dest, None)))
    if getattr(args, "mixup_alpha", None) is None:
        args.mixup_alpha = method.default_mixup_alpha(args)
    if getattr(args, "clean_lam", None) is None:
        args.clean_lam = method.published_clean_lam


def method_flags() -> dict[str, list[type[Method]]]:
    """Every method-specific flag (:attr:`Method.flags`) by name, with the methods that take it."""
    owners: dict[str, list[type[Method]]] = {}
    for method in REGISTRY.values():
        for flag in method.flags:
            owners.setdefault(flag.dest, []).append(method)
    return owners


def foreign_flag_problems(args: Any) -> list[str]:
    """The method-specific flags set in ``args`` (not None) that ``args.method`` does not take, one
    message each, naming the flag and the methods it belongs to."""
    problems = []
    for dest, owners in method_flags().items():
        if getattr(args, dest, None) is not None and args.method not in (m.name for m in owners):
            problems.append(f"--{dest} applies only to --method {' or '.join(m.name for m in owners)}")
    return problems


def format_flag_value(value: Any) -> str:
    """A flag's value as it is typed on the command line (``0.1 0.8`` for two numbers)."""
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def add_method_flags(parser: Any, figure: bool = False) -> None:
    """Add every method-specific flag to ``parser`` (an argparse parser), one group per
    :attr:`Method.flag_group`, each flag defaulting to None (unset) with its published value(s) in
    its help; ``figure``: only the ones visualize.py takes (:attr:`MethodFlag.in_figure`)."""
    groups: dict[str, Any] = {}
    for dest, owners in method_flags().items():
        flag = owners[0].flag(dest)
        if figure and not flag.in_figure:
            continue
        group_name = owners[0].flag_group
        if group_name not in groups:
            names = [m.name for m in REGISTRY.values() if m.flag_group == group_name]
            groups[group_name] = parser.add_argument_group(f"{group_name} (--method {', '.join(names)})")
        defaults = {m.name: format_flag_value(m.flag(dest).default) for m in owners}
        shown = (next(iter(defaults.values())) if len(set(defaults.values())) == 1
                 else ", ".join(f"{name} {value}" for name, value in defaults.items()))
        groups[group_name].add_argument(f"--{dest}", type=flag.type, default=None, choices=flag.choices,
                                        nargs=flag.nargs, metavar=flag.metavar, help=f"{flag.help} (default: {shown})")


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
