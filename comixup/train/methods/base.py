"""What every training method shares: the :class:`Method` interface (a step's loss, and what the
registry, the command line and visualize.py know of it), its result, its flags, and the pieces of a
step several methods use (the autocast wrapper, DDP's local gradients, timing a mix)."""
from __future__ import annotations

import contextlib
import math
import time
from abc import ABC, abstractmethod
from argparse import Namespace
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from comixup.core.losses import LOSSES, soft_target_loss
from comixup.core.precision import FLOAT32, Precision
from comixup.core.tensors import to_one_hot
from comixup.mixing.base import Mixer

__all__ = ["StepResult", "MixResult", "FigureSettings", "pair_shares", "MethodFlag", "Method"]


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


def _local_gradients(model: nn.Module) -> AbstractContextManager:
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
    def published_setting(cls, args: Any, name: str) -> Any:
        """``args.mixup_alpha`` or ``args.clean_lam`` (``name``), or the method's published value where
        it is None."""
        value = getattr(args, name, None)
        if value is not None:
            return value
        return cls.published_mixup_alpha if name == "mixup_alpha" else cls.published_clean_lam

    @classmethod
    def fill_defaults(cls, args: Any) -> None:
        """Set the method's flags (:attr:`flags`), ``args.mixup_alpha`` and ``args.clean_lam`` that are
        None (or absent) to its published values; other methods' flags are left as they are.
        ``mixup_alpha`` stays None for a method that draws no Beta / Dirichlet weight. Idempotent."""
        for flag in cls.flags:
            setattr(args, flag.dest, flag.resolved(getattr(args, flag.dest, None)))
        if getattr(args, "mixup_alpha", None) is None:
            args.mixup_alpha = cls.default_mixup_alpha(args)
        if getattr(args, "clean_lam", None) is None:
            args.clean_lam = cls.published_clean_lam

    @classmethod
    def resolved(cls, args: Any) -> Namespace:
        """A copy of ``args`` with :meth:`fill_defaults` applied."""
        copy = Namespace(**vars(args))
        cls.fill_defaults(copy)
        return copy

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
    def from_args(cls, args: Any, num_classes: int, dataset_info: Any, executor: Executor | None) -> Method:
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
        from comixup.train.methods import REGISTRY  # the registry is built from the method classes

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


def _loss(args: Any) -> str:
    return getattr(args, "loss", "bce")


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


