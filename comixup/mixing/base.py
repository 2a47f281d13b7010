"""The one dialect every mixer speaks, and the checks each makes once, at the door.

A mixer is a small callable class, like torchvision's ``MixUp`` / ``CutMix`` and timm's ``Mixup``::

    mixer = CutMix(num_classes=100, alpha=1.0)                   # keyword-only hyperparameters
    mixed_x, mixed_y = mixer(x, y)                               # or mixer(x, y, saliency)

- ``x``: images (B, C, H, W), a floating-point dtype, on any device. Integer images (uint8 pixels)
  are refused: mixing them would round every blended pixel; convert first (``x.float() / 255``,
  then normalise as usual).
- ``y``: class indices (B,) of an integer dtype in [0, num_classes) (``num_classes=`` is then
  needed), or soft targets (B, K) with non-negative rows summing to 1 (K equal to ``num_classes``
  when it is given). A (B, 1) column is refused (it is neither).
- ``saliency`` (the saliency-guided mixers only): (B, H, W), floating point, on the images' device,
  finite. Saliency is a magnitude: negative entries count as 0, and an image without positive
  saliency is treated as uniformly salient.
- Returns ``(mixed_x, mixed_y)``: ``mixed_x`` on the device and in the dtype of ``x``; ``mixed_y``
  (B, K) float32 on the device of ``y``, rows summing to 1.
- ``rng``: a ``numpy.random.Generator`` for every random draw, or None for numpy's global random
  state (which ``main.py`` saves in its checkpoints, so runs resume bit-identically).

Checks read shapes, dtypes and devices everywhere. Checks that read values (label range, target
rows, finite saliency) would synchronise an accelerator's stream every batch, so they run where the
values are on the host: always for CPU tensors, and for the saliency wherever a solver copies it to
the host anyway (Co-Mixup, Puzzle Mix). On a GPU an out-of-range class index therefore ends in
PyTorch's own device-side error, as with torchvision's ``MixUp``.

Every problem is one ``ValueError`` or ``TypeError`` line naming the argument, the value and what
is allowed; hyperparameters are checked at construction.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
import torch
from torch import Tensor

from comixup.core.tensors import to_one_hot

__all__ = [
    "Mixer", "check_images", "check_saliency", "soft_targets", "check_rng", "check_num_classes", "check_executor",
    "check_int", "check_number", "check_float", "check_choice", "check_bool", "TARGET_ROW_TOLERANCE",
]

TARGET_ROW_TOLERANCE = 1e-3
"""How far a soft-target row's sum may be from 1."""


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


# --------------------------------------------------------------------------- hyperparameters

def check_int(name: str, value: Any, minimum: int | None = None, allowed: Sequence[int] = ()) -> int:
    """``value`` as an int (numpy integers too, never a bool or a float); TypeError or ValueError
    naming ``name`` when it is not one, or below ``minimum`` (unless it is one of ``allowed``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_kind(value)}")
    value = int(value)
    if minimum is not None and value < minimum and value not in allowed:
        extra = f" or {' or '.join(map(str, allowed))}" if allowed else ""
        raise ValueError(f"{name} must be an int >= {minimum}{extra}, got {value}")
    return value


def check_number(name: str, value: Any) -> float:
    """``value`` as a float when it is a real number (an int, a float, a numpy number; not a bool);
    TypeError naming ``name`` otherwise. Its range is the caller's to check."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {_kind(value)}")
    return float(value)


def check_float(name: str, value: Any, minimum: float | None = None, maximum: float | None = None,
                strict_minimum: bool = False) -> float:
    """``value`` as a finite float within [minimum, maximum] (``strict_minimum``: > minimum);
    TypeError for what is not a real number (a bool, a string), ValueError otherwise."""
    value = check_number(name, value)
    too_low = minimum is not None and (value <= minimum if strict_minimum else value < minimum)
    too_high = maximum is not None and value > maximum
    if not math.isfinite(value) or too_low or too_high:
        low = "" if minimum is None else f"{'>' if strict_minimum else '>='} {minimum:g}"
        high = "" if maximum is None else f"<= {maximum:g}"
        allowed = " and ".join(part for part in (low, high) if part)
        raise ValueError(f"{name} must be a finite number{' ' + allowed if allowed else ''}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` when it is a bool (numpy's too); TypeError otherwise (a string "False" is truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_kind(value)}")
    return bool(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` when it is one of ``choices``; ValueError (TypeError for a non-string) otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {', '.join(map(repr, choices))}, got {_kind(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_executor(executor: Any) -> Executor | None:
    """None (solve in the caller's thread) or a concurrent.futures.Executor; TypeError otherwise."""
    if executor is None or isinstance(executor, Executor):
        return executor
    raise TypeError(f"executor must be a concurrent.futures.Executor (e.g. comixup.PartitionPool(4)) or None, "
                    f"got {_kind(executor)}")


def check_num_classes(num_classes: Any) -> int | None:
    """None, or the class count as an int >= 1."""
    if num_classes is None:
        return None
    return check_int("num_classes", num_classes, minimum=1)


def check_rng(rng: Any) -> np.random.Generator | None:
    """None (numpy's global state) or a numpy Generator; TypeError for a seed or anything else."""
    if rng is None or isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)) or None, "
                    f"got {_kind(rng)}")


# --------------------------------------------------------------------------- tensors

def _check_tensor(name: str, value: Any) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_meta:
        raise ValueError(f"{name} is on the meta device: it holds no values to mix")
    return value


def check_images(x: Any) -> Tensor:
    """A non-empty batch (B, C, H, W) of floating-point images."""
    x = _check_tensor("x", x)
    if x.dim() != 4 or x.shape[0] < 1 or x.shape[-1] < 1 or x.shape[-2] < 1:
        raise ValueError(f"x must be a non-empty batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must hold floating-point images, got {x.dtype}; mixing integer pixels would round "
                        f"every blend: convert first, e.g. x.float() / 255")
    return x


def soft_targets(y: Any, batch: int, num_classes: int | None) -> Tensor:
    """``y`` as soft targets (B, K) float32 on its device: class indices become one-hot rows.

    Class indices: (B,), an integer dtype, in [0, num_classes) (needs ``num_classes``). Soft targets:
    (B, K), K >= 2 (and K == num_classes when given), non-negative rows summing to 1. Values are
    read only on the CPU (see the module docstring)."""
    y = _check_tensor("y", y)
    if y.dim() == 1:
        if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
            raise TypeError(f"y of shape ({y.shape[0]},) must hold class indices of an integer dtype, got {y.dtype} "
                            f"(soft targets are (B, K))")
        if y.shape[0] != batch:
            raise ValueError(f"y holds {y.shape[0]} class indices for {batch} images")
        if num_classes is None:
            raise ValueError("y holds class indices: give the mixer num_classes=K to turn them into targets")
        if y.device.type == "cpu":
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= num_classes:
                bad = low if low < 0 else high
                raise ValueError(f"y holds class index {bad}, outside [0, {num_classes - 1}] (num_classes="
                                 f"{num_classes})")
        return to_one_hot(y, num_classes)
    if y.dim() != 2:
        raise ValueError(f"y must be class indices (B,) or soft targets (B, K), got shape {tuple(y.shape)}")
    rows, width = y.shape
    if width == 1:
        raise ValueError(f"y has shape ({rows}, 1): class indices are (B,) (squeeze the last dimension), soft "
                         f"targets (B, K) with K >= 2 classes")
    if rows != batch:
        raise ValueError(f"y holds {rows} target rows for {batch} images")
    if num_classes is not None and width != num_classes:
        raise ValueError(f"y holds soft targets of {width} classes, but num_classes={num_classes}")
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"y soft targets must be real numbers, got {y.dtype}")
    targets = y.float()
    if targets.device.type == "cpu":
        if not bool(torch.isfinite(targets).all()) or bool((targets < 0).any()):
            raise ValueError("y soft targets must be finite and non-negative")
        sums = targets.sum(dim=1)
        worst = int((sums - 1).abs().argmax())
        if abs(float(sums[worst]) - 1) > TARGET_ROW_TOLERANCE:
            raise ValueError(f"y soft-target rows must sum to 1, row {worst} sums to {float(sums[worst]):.4g}")
    return targets


def check_saliency(saliency: Any, x: Tensor) -> Tensor:
    """Saliency maps (B, H, W) for the images x, floating point, on x's device, finite (read on the
    CPU only), negative entries set to 0."""
    saliency = _check_tensor("saliency", saliency)
    expected = (x.shape[0], *x.shape[-2:])
    if tuple(saliency.shape) != expected:
        raise ValueError(f"saliency must be (B, H, W) = {expected} for x of shape {tuple(x.shape)}, got "
                         f"{tuple(saliency.shape)}")
    if not saliency.is_floating_point():
        raise TypeError(f"saliency must be floating point, got {saliency.dtype}")
    if saliency.device != x.device:
        raise ValueError(f"saliency is on {saliency.device} but x on {x.device}; put them on one device")
    if saliency.device.type == "cpu":
        finite = torch.isfinite(saliency).flatten(1).all(dim=1)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            raise ValueError(f"saliency of image {first} holds NaN or infinite values; saliency must be finite")
    return saliency.clamp_min(0)


class Mixer:
    """Base of the mixers (module docstring for the contract).

    A subclass takes its hyperparameters as keyword-only arguments, checked at construction, passes
    ``num_classes`` and ``rng`` to this class, and implements ``__call__``; :meth:`_door` makes the
    checks every mixer shares.
    """

    needs_saliency: bool = False
    """True when ``__call__`` takes a saliency map (B, H, W) as its third argument."""

    def __init__(self, *, num_classes: int | None = None, rng: np.random.Generator | None = None) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.rng = check_rng(rng)

    def _door(self, x: Any, y: Any, saliency: Any = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """(x, y as soft targets (B, K) float32, saliency or None), each checked."""
        x = check_images(x)
        targets = soft_targets(y, x.shape[0], self.num_classes)
        if self.needs_saliency:
            if saliency is None:
                raise ValueError(f"{type(self).__name__} mixes by saliency: call it as mixer(x, y, saliency)")
            saliency = check_saliency(saliency, x)
        elif saliency is not None:
            raise ValueError(f"{type(self).__name__} takes no saliency: call it as mixer(x, y)")
        return x, targets, saliency

    def __call__(self, x: Tensor, y: Tensor, saliency: Tensor | None = None) -> tuple[Any, Tensor]:
        raise NotImplementedError
