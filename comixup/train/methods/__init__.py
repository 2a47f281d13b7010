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

from argparse import Namespace
from concurrent.futures import Executor
from typing import Any

from comixup.core.losses import LOSSES, bce_on_probabilities, soft_target_loss
from comixup.core.precision import AMP_MODES, FLOAT32, Precision
from comixup.mixing.parallel import default_workers
from comixup.train.methods.base import FigureSettings, Method, MethodFlag, MixResult, StepResult, pair_shares
from comixup.train.methods.baselines import CutMixMethod, InputMixupMethod, ManifoldMixMethod, VanillaMethod
from comixup.train.methods.saliency import PUZZLE_CHUNKS, CoMixupMethod, PuzzleMixMethod, puzzle_geometry_problem
from comixup.train.methods.successors import (
    FMixMethod,
    GuidedMixupAPMethod,
    GuidedMixupSRMethod,
    ResizeMixMethod,
    SaliencyMixMethod,
)

__all__ = [
    "METHODS", "LOSSES", "PUBLISHED_MIXUP_ALPHA", "PUBLISHED_CLEAN_LAM", "PUZZLE_CHUNKS", "StepResult", "Method",
    "VanillaMethod", "InputMixupMethod", "ManifoldMixMethod", "CutMixMethod", "PuzzleMixMethod", "CoMixupMethod",
    "SaliencyMixMethod", "FMixMethod", "ResizeMixMethod", "GuidedMixupAPMethod", "GuidedMixupSRMethod",
    "MethodFlag", "method_flags", "foreign_flag_problems", "add_method_flags", "format_flag_value",
    "soft_target_loss", "bce_on_probabilities", "published_default", "fill_published_defaults", "build_method",
    "pool_workers", "puzzle_geometry_problem", "AMP_MODES", "FLOAT32", "Precision", "REGISTRY", "method_class",
    "MixResult", "FigureSettings", "pair_shares",
]

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
    ``args.clean_lam`` that are None (or absent) to its published values
    (:meth:`Method.fill_defaults`); the other methods' flags are left as they are. Idempotent."""
    method_class(args.method).fill_defaults(args)


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
