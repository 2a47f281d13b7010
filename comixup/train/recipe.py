"""A multi-phase training recipe: phases (epochs, data folder, crop, global batch, minimum crop
scale), a piecewise-linear learning rate set every step, the split of a global batch over the
processes, and the optimiser's parameter groups (no weight decay on BatchNorm).

The shape of the configuration is the one of a ``--config`` YAML file (see config_file.py)::

    phases:
      - {epochs: [0, 15], data_dir: "160", crop: 128, batch_size: 1024, min_scale: 0.08}
      - {epochs: [15, 40], data_dir: "352", crop: 224, batch_size: 448, min_scale: 0.087}
    lr_points: [[0, 0.5], [8, 1.0], [15, 0.125], [15, 0.2], [40, 0.02]]

``epochs: [start, end]`` is the half-open range start <= epoch < end. A relative ``data_dir`` is
taken inside the run's ``--data_dir``, so one flag moves every phase's data. The learning rate at a
fractional epoch x is the linear interpolation between the ``[epoch, lr]`` points, constant
before the first and after the last. Two points at one epoch make a jump: at x exactly there the
first one's value holds, just after it the second one's. Each step takes the rate at its end,
x = epoch + (step + 1) / steps, so the last step of the epoch before a jump at e (x = e) still
uses the value before the jump and the first step after it the value after, which is what the
published script gets by calling ``np.interp(x, epochs, lrs)`` over the running phase's own points
(its phase 1 ends at 15 with 0.125, its phase 2 starts from 0.2). ``np.interp`` over all points at
once would return the second value at x = e instead.
"""
from __future__ import annotations

import math
import os
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

__all__ = ["Phase", "Recipe", "RecipeError", "piecewise_linear", "per_process_batch", "partition_sizes",
           "partition_warning", "param_groups"]

PHASE_KEYS = ("epochs", "data_dir", "crop", "batch_size", "min_scale")


class RecipeError(ValueError):
    """An invalid recipe; the message is one line listing every problem found."""


@dataclass(frozen=True)
class Phase:
    """Epochs ``start <= epoch < end`` trained on ``data_dir`` with ``crop``-pixel random-resized
    crops of at least ``min_scale`` of the image area, ``batch_size`` images per step in all."""

    start: int
    end: int
    data_dir: str
    crop: int
    batch_size: int
    min_scale: float

    def __contains__(self, epoch: int) -> bool:
        return self.start <= epoch < self.end

    def per_process_batch(self, world_size: int) -> int:
        """This phase's images per step and process (see :func:`per_process_batch`)."""
        return per_process_batch(self.batch_size, world_size)


def per_process_batch(global_batch: int, world_size: int) -> int:
    """global_batch // world_size; ValueError when the processes cannot share it evenly."""
    if world_size < 1:
        raise ValueError(f"the number of processes must be at least 1, got {world_size}")
    if global_batch % world_size:
        raise ValueError(f"a global batch of {global_batch} images cannot be split evenly over {world_size} "
                         f"processes; use a batch size divisible by {world_size}")
    return global_batch // world_size


def partition_sizes(batch: int, m_part: int) -> list[int]:
    """The partitions Co-Mixup cuts a batch of ``batch`` images into (each mixed on its own):
    ``m_part`` images each in batch order, the remainder last."""
    if batch < 1 or m_part < 1:
        raise ValueError(f"batch and m_part must be at least 1, got {batch} and {m_part}")
    return [min(m_part, batch - start) for start in range(0, batch, m_part)]


def partition_warning(batch: int, m_part: int, where: str = "") -> str | None:
    """A ``warning:`` line when ``m_part`` does not divide the per-process batch ``batch`` (then
    the last partition is smaller, or the whole batch is one partition of fewer than ``m_part``
    images), None when it divides. ``where`` follows the batch in the sentence, e.g.
    " in phase 2/3 (448 over 8 processes)"."""
    if batch % m_part == 0:
        return None
    sizes = partition_sizes(batch, m_part)
    if len(sizes) == 1:
        made = f"one partition of {batch}"
    elif len(sizes) <= 5:
        made = "partitions of " + ", ".join(map(str, sizes[:-1])) + f" and {sizes[-1]}"
    else:
        made = f"{len(sizes) - 1} partitions of {m_part} and one of {sizes[-1]}"
    return (f"warning: --m_part {m_part} does not divide the {batch} images per process and step{where}, so "
            f"Co-Mixup mixes {made}; for whole partitions give each process a multiple of {m_part} images "
            f"(another batch size or number of processes) or use an --m_part that divides {batch}")


def piecewise_linear(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """The piecewise-linear function through the points (xs non-decreasing) at ``x``: ys[0] up to
    xs[0], ys[-1] after xs[-1], linear in between. At an x shared by two points (a jump) the
    first point's value: a jump takes effect just after its epoch. Everywhere else this is
    ``np.interp(x, xs, ys)`` to the last bit; at a jump ``np.interp`` returns the second value."""
    if math.isnan(x):
        raise ValueError("the learning rate is undefined at a NaN epoch")
    j = bisect_left(xs, x)  # the first point at or after x
    if j == len(xs):
        return float(ys[-1])
    if xs[j] == x or j == 0:
        return float(ys[j])
    # xs[j - 1] < x < xs[j]; numpy's own arithmetic (slope first), so that the values agree bit for bit
    slope = (ys[j] - ys[j - 1]) / (xs[j] - xs[j - 1])
    return float(slope * (x - xs[j - 1]) + ys[j - 1])


@dataclass(frozen=True)
class Recipe:
    """The phases (none: the flags' single data set and batch) and learning-rate points (none:
    the flags' schedule) of one run. Build it with :meth:`from_config`, which checks it."""

    phases: tuple[Phase, ...] = ()
    lr_points: tuple[tuple[float, float], ...] = ()

    @classmethod
    def from_config(cls, phases: Sequence[Any] | None, lr_points: Sequence[Any] | None, epochs: int,
                    data_dir: str | None = None) -> Recipe:
        """Check and build the recipe of the ``phases:`` and ``lr_points:`` entries of a config
        (either may be None). The phases must follow each other from epoch 0 to ``epochs``;
        relative data folders are joined to ``data_dir``. RecipeError with every problem."""
        problems: list[str] = []
        built = tuple(_phases(phases, epochs, data_dir, problems)) if phases is not None else ()
        points = tuple(_lr_points(lr_points, problems)) if lr_points is not None else ()
        if problems:
            raise RecipeError("; ".join(problems))
        return cls(built, points)

    @classmethod
    def from_args(cls, args: Any) -> Recipe:
        """The recipe of main.py's arguments: their ``phases`` and ``lr_points`` (absent or None:
        none), ``epochs`` and ``data_dir`` (see :meth:`from_config`)."""
        return cls.from_config(getattr(args, "phases", None), getattr(args, "lr_points", None), args.epochs,
                               args.data_dir)

    def phase_index(self, epoch: int) -> int:
        """Position of the phase that trains ``epoch``."""
        for index, phase in enumerate(self.phases):
            if epoch in phase:
                return index
        raise ValueError(f"epoch {epoch} lies in no phase (the phases cover epochs 0 to "
                         f"{self.phases[-1].end if self.phases else 0})")

    def phase_at(self, epoch: int) -> Phase:
        """The phase that trains ``epoch`` (0-based)."""
        return self.phases[self.phase_index(epoch)]

    @property
    def eval_data_dir(self) -> str | None:
        """Evaluation reads the last phase's data (the final resolution), after every phase."""
        return self.phases[-1].data_dir if self.phases else None

    def lr_at(self, epoch: float) -> float:
        """The learning rate at a fractional epoch (piecewise linear in the points)."""
        if not self.lr_points:
            raise ValueError("this recipe has no lr_points")
        xs, ys = zip(*self.lr_points, strict=False)
        return piecewise_linear(epoch, xs, ys)

    def step_lr(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The rate of step ``step`` (0-based) of ``epoch``: its value at the end of the step,
        epoch + (step + 1) / steps_per_epoch, as the published training loop sets it (the last
        step of an epoch that ends at a jump takes the value before the jump)."""
        return self.lr_at(epoch + (step + 1) / steps_per_epoch)

    def check_world_size(self, world_size: int) -> None:
        """RecipeError unless every phase's global batch splits evenly over ``world_size``."""
        problems = [f"phases[{i}]: batch_size {p.batch_size} is not divisible by the {world_size} processes"
                    for i, p in enumerate(self.phases) if p.batch_size % world_size]
        if problems:
            raise RecipeError("; ".join(problems) + "; use global batch sizes divisible by the number of processes")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _phases(entries: Any, epochs: int, data_dir: str | None, problems: list[str]) -> list[Phase]:
    if not isinstance(entries, (list, tuple)) or not entries:
        problems.append(f"phases must be a non-empty list of mappings with the keys {', '.join(PHASE_KEYS)}")
        return []
    built: list[Phase] = []
    expected_start = 0
    for i, entry in enumerate(entries):
        where = f"phases[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} must be a mapping with the keys {', '.join(PHASE_KEYS)}, got {entry!r}")
            continue
        wrong = sorted(set(map(str, entry)) ^ set(PHASE_KEYS))
        if wrong:
            problems.append(f"{where} must have exactly the keys {', '.join(PHASE_KEYS)} "
                            f"(unknown or missing: {', '.join(wrong)})")
            continue
        span = entry["epochs"]
        if not (isinstance(span, (list, tuple)) and len(span) == 2 and all(map(_whole, span)) and span[0] < span[1]):
            problems.append(f"{where}: epochs must be [start, end], whole numbers with start < end, got {span!r}")
            continue
        start, end = span
        if start != expected_start:
            problems.append(f"{where}: epochs [{start}, {end}] must start at epoch {expected_start} "
                            f"({'the first epoch' if i == 0 else f'where phases[{i - 1}] ends'})")
        expected_start = end
        crop, batch, scale, folder = entry["crop"], entry["batch_size"], entry["min_scale"], entry["data_dir"]
        if not (_whole(crop) and crop > 0):
            problems.append(f"{where}: crop must be a positive number of pixels, got {crop!r}")
        if not (_whole(batch) and batch > 0):
            problems.append(f"{where}: batch_size (global) must be a positive whole number, got {batch!r}")
        if not (_number(scale) and 0 < scale <= 1):
            problems.append(f"{where}: min_scale must lie in (0, 1], got {scale!r}")
        if not (isinstance(folder, (str, int)) and not isinstance(folder, bool) and str(folder)):
            problems.append(f"{where}: data_dir must be a folder name, got {folder!r}")
            continue
        folder = os.path.expanduser(str(folder))
        if data_dir is not None and not os.path.isabs(folder):
            folder = os.path.join(data_dir, folder)
        built.append(Phase(start, end, folder, crop, batch, float(scale)))
    if built and expected_start != epochs:
        problems.append(f"the last phase must end at --epochs {epochs}, got {expected_start}")
    return built


def _lr_points(entries: Any, problems: list[str]) -> list[tuple[float, float]]:
    if not isinstance(entries, (list, tuple)) or not entries:
        problems.append("lr_points must be a non-empty list of [epoch, learning rate] pairs")
        return []
    points: list[tuple[float, float]] = []
    for i, pair in enumerate(entries):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(map(_number, pair))
                and pair[0] >= 0 and pair[1] >= 0):
            problems.append(f"lr_points[{i}] must be [epoch, learning rate], two finite numbers >= 0, got {pair!r}")
            return []
        points.append((float(pair[0]), float(pair[1])))
    epochs = [x for x, _ in points]
    for i in range(1, len(epochs)):
        if epochs[i] < epochs[i - 1]:
            problems.append(f"lr_points must be in epoch order: lr_points[{i}] at epoch {epochs[i]:g} "
                            f"comes after epoch {epochs[i - 1]:g}")
        elif i > 1 and epochs[i] == epochs[i - 1] == epochs[i - 2]:
            problems.append(f"at most two lr_points may share an epoch (a jump), three are at epoch {epochs[i]:g}")
    return points


# ---------------------------------------------------------------------------------------------
# Optimiser parameter groups
# ---------------------------------------------------------------------------------------------

def param_groups(model: nn.Module, weight_decay: float, bn_weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """SGD parameter groups: ``bn_weight_decay`` for the weights and biases of every BatchNorm
    layer (BatchNorm1d/2d/3d, SyncBatchNorm), ``weight_decay`` for every other parameter.

    One group of all parameters (in ``model.parameters()`` order, as a plain optimiser has)
    when the two decays are equal, so the default keeps the optimiser state layout of
    checkpoints written without groups; otherwise the other parameters first, then the
    BatchNorm ones. A parameter shared by several modules counts once.
    """
    bn_ids = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              for p in m.parameters(recurse=False)}
    if bn_weight_decay == weight_decay:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    rest = [p for p in model.parameters() if id(p) not in bn_ids]
    batch_norm = [p for p in model.parameters() if id(p) in bn_ids]
    return [{"params": rest, "weight_decay": weight_decay},
            {"params": batch_norm, "weight_decay": bn_weight_decay}]
