"""SaliencyMix (Uddin et al., "SaliencyMix: A Saliency Guided Data Augmentation Strategy for Better
Regularization", ICLR 2021): CutMix with the box centred on the partner's most salient pixel.

**The paper and the official CIFAR code** (``SaliencyMix_CIFAR/saliencymix.py``): with probability
``prob`` (0.5 on CIFAR) a batch is mixed, otherwise it trains clean. lam ~ Beta(beta, beta) (beta 1);
the partners are a random permutation. OpenCV's static fine-grained saliency detector
(``cv2.saliency.StaticSaliencyFineGrained``) maps **one** image, the first of the permuted batch; the
first maximum of that map (``(map * 255).astype(uint8)``, row-major) is the centre of a box reaching
``cut // 2`` pixels each way, ``cut = int(side * sqrt(1 - lam))`` (an odd cut loses a pixel), clipped to
the image. Every image takes its partner's pixels inside that one box, and the two labels are weighed
by the areas: lam is recomputed as 1 - box area / image area.

**What the official code does differently from what the paper means**: it hands the detector the
normalised float32 image (values about -2..2, RGB order). OpenCV converts it to grey but keeps the
float depth and then reads the grey pixels as 8-bit values, so the map does not measure the image's
contrast and the box lands essentially at random (a blob's arg-max is found about as often as by
chance).

**Options.** ``detector_input="uint8"`` (default): the detector sees the image as it was decoded,
un-normalised with ``mean`` and ``std``, rounded to uint8, in **BGR** order, because OpenCV's detector
converts colour with ``COLOR_BGR2GRAY`` (0.114 for the first channel, 0.299 for the third): handing it
RGB would swap the red and blue weights. ``detector_input="normalised"``: the published input, the
normalised float32 image in RGB order, which reproduces the official boxes bit for bit.

**Random draws**, from ``rng`` or numpy's global state, in the official order: the mixing coin (mix
when it is below ``prob``), then lam, then the permutation (``torch.randperm`` in the official code;
numpy here, so one saved numpy state resumes a run). A batch that is not mixed draws only the coin and
comes back unchanged. The detector draws nothing. :meth:`SaliencyMix.plan` makes the draws and finds
the box without mixing (a :class:`~comixup.mixing.baselines.CutMixPlan`, whose ``apply`` pastes it).

The detector needs OpenCV's contrib modules: ``pip install "comixup[saliencymix]"``
(opencv-contrib-python-headless, a superset of opencv-python-headless; both install the one ``cv2``
module, so keep only one of them). OpenCV is imported when a SaliencyMix is built, not before.
"""
from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from comixup.mixing.base import Mixer, check_choice, check_float, check_images
from comixup.mixing.baselines import CutMixPlan, draw_lambda, draw_permutation
from comixup.mixing.random_draws import draw_unit

__all__ = ["DETECTOR_INPUTS", "INSTALL_HINT", "OpenCVContribMissing", "require_saliency_detector",
           "detector_image", "fine_grained_saliency", "saliency_box", "SaliencyMix"]

DETECTOR_INPUTS = ("uint8", "normalised")
"""``detector_input`` options: the decoded uint8 image in BGR order, or the published normalised float input."""

INSTALL_HINT = 'pip install "comixup[saliencymix]"'


class OpenCVContribMissing(ImportError):
    """OpenCV, or its contrib module ``cv2.saliency``, is not installed."""


def require_saliency_detector() -> ModuleType:
    """The ``cv2`` module, once it is known to hold the fine-grained saliency detector.

    Raises:
        OpenCVContribMissing: one line naming the extra to install, when OpenCV or its contrib
            modules are missing.
    """
    try:
        cv2 = importlib.import_module("cv2")
    except ImportError as error:
        raise OpenCVContribMissing(f"SaliencyMix needs OpenCV with its contrib modules, and OpenCV is not "
                                   f"installed: {INSTALL_HINT} (opencv-contrib-python-headless)") from error
    if not hasattr(getattr(cv2, "saliency", None), "StaticSaliencyFineGrained_create"):
        raise OpenCVContribMissing(f"SaliencyMix needs OpenCV's contrib modules (cv2.saliency), which the installed "
                                   f"OpenCV lacks: {INSTALL_HINT} (opencv-contrib-python-headless; uninstall "
                                   f"opencv-python-headless and opencv-python first, they share the cv2 module)")
    return cv2


def _channel_values(name: str, value: Any) -> tuple[float, ...] | None:
    """``value`` (None, or a sequence of finite numbers, one per channel or one for all) as floats."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        value = value.detach().cpu().reshape(-1).tolist()
    elif isinstance(value, np.ndarray):
        value = value.reshape(-1).tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise TypeError(f"{name} must be a sequence of numbers, one per channel, got {type(value).__name__} "
                        f"{value!r}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{name} must be a sequence of numbers, one per channel, got {value!r}")
    if not all(math.isfinite(float(v)) for v in value):
        raise ValueError(f"{name} must hold finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def detector_image(image: Tensor, detector_input: str = "uint8", mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> np.ndarray:
    """What the saliency detector is handed for one normalised image.

    Args:
        image: one image (C, H, W), C 1 or 3 (RGB), normalised as ``(pixels / 255 - mean) / std``.
        detector_input: "uint8": the pixels recovered as uint8 (H, W, 3) in BGR order, OpenCV's own,
            or (H, W) grey; "normalised": the normalised values as float32 (H, W, C) in the image's own
            (RGB) order, as the official code passes them.
        mean, std: the normalisation, one value per channel (or one for all); needed for "uint8".

    Returns:
        A C-contiguous numpy image.
    """
    check_choice("detector_input", detector_input, DETECTOR_INPUTS)
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"the saliency detector reads grey or RGB images (1 or 3, H, W), got shape "
                         f"{tuple(image.shape)}")
    if detector_input == "normalised":
        return np.ascontiguousarray(image.detach().float().cpu().numpy().transpose(1, 2, 0))
    if mean is None or std is None:
        raise ValueError("detector_input='uint8' recovers the pixels from the normalised image: give mean and std")
    channels = image.shape[0]
    scales = []
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise ValueError(f"{name} holds {len(values)} values for images of {channels} channels")
        scales.append(torch.tensor(values, dtype=torch.float64).reshape(-1, 1, 1))
    # float64 so that the rounding recovers exactly the decoded 8-bit pixels
    pixels = ((image.detach().cpu().double() * scales[1] + scales[0]) * 255).round().clamp(0, 255)
    hwc = pixels.to(torch.uint8).numpy().transpose(1, 2, 0)
    return np.ascontiguousarray(hwc[:, :, ::-1] if channels == 3 else hwc[:, :, 0])


def fine_grained_saliency(image: np.ndarray) -> np.ndarray:
    """OpenCV's static fine-grained saliency map (H, W) of one image, float32 in [0, 1].

    Args:
        image: (H, W) grey or (H, W, 3) BGR, uint8 (or float32, which the detector misreads: see the
            module docstring).

    Returns:
        The map.

    Raises:
        OpenCVContribMissing: without OpenCV's contrib modules.
    """
    cv2 = require_saliency_detector()
    ok, saliency_map = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(image)
    if not ok:
        raise RuntimeError(f"OpenCV's fine-grained saliency detector failed on an image of shape {image.shape}")
    return saliency_map


def saliency_box(saliency_map: np.ndarray, lam: float) -> tuple[int, int, int, int]:
    """The SaliencyMix box ``(top, bottom, left, right)`` (rows top:bottom, columns left:right).

    As the official ``saliency_bbox``: ``cut = int(side * sqrt(1 - lam))`` per side, the centre the
    first maximum (row-major) of ``(saliency_map * 255).astype(uint8)``, the box reaching ``cut // 2``
    each way from it, clipped to the image.

    Args:
        saliency_map: the detector's map (H, W), in [0, 1].
        lam: the drawn mixing weight, in [0, 1].

    Returns:
        The box; its area share is about 1 - lam, less where it is clipped.
    """
    height, width = saliency_map.shape
    cut_ratio = np.sqrt(1.0 - lam)
    cut_rows, cut_cols = int(height * cut_ratio), int(width * cut_ratio)
    # the official quantisation (truncating, in the map's float32) decides which of tied maxima wins
    quantised = (saliency_map * 255).astype(np.uint8)
    row, col = np.unravel_index(np.argmax(quantised), quantised.shape)
    top = int(np.clip(row - cut_rows // 2, 0, height))
    bottom = int(np.clip(row + cut_rows // 2, 0, height))
    left = int(np.clip(col - cut_cols // 2, 0, width))
    right = int(np.clip(col + cut_cols // 2, 0, width))
    return top, bottom, left, right


class SaliencyMix(Mixer):
    """SaliencyMix (module docstring): with probability ``prob``, one box centred on the first
    permuted image's saliency peak, pasted from each image's partner; labels by area.

    Args:
        prob: the probability that a batch is mixed; 0.5 in the official CIFAR runs.
        beta: lam ~ Beta(beta, beta); 1.0 there.
        mean, std: the normalisation of ``x`` (``x = (pixels / 255 - mean) / std``), one value per
            channel or one for all; needed by ``detector_input="uint8"`` to recover the pixels (use
            ``(0.0,)`` and ``(1.0,)`` for images in [0, 1]).
        detector_input: "uint8" (default: the decoded image in BGR order, what the detector is made
            for) or "normalised" (the official code's normalised float input).
        num_classes: the class count, needed when ``y`` holds class indices.
        rng: a numpy Generator, or None for numpy's global state.

    Raises:
        OpenCVContribMissing: at construction, without OpenCV's contrib modules (one line naming the
            extra to install).
    """

    def __init__(self, *, prob: float = 0.5, beta: float = 1.0, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, detector_input: str = "uint8",
                 num_classes: int | None = None, rng: np.random.Generator | None = None) -> None:
        super().__init__(num_classes=num_classes, rng=rng)
        self.prob = check_float("prob", prob, minimum=0, maximum=1)
        self.beta = check_float("beta", beta, minimum=0, strict_minimum=True)
        self.detector_input = check_choice("detector_input", detector_input, DETECTOR_INPUTS)
        self.mean = _channel_values("mean", mean)
        self.std = _channel_values("std", std)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must hold numbers > 0, got {self.std}")
        if detector_input == "uint8" and (self.mean is None or self.std is None):
            raise ValueError("SaliencyMix with detector_input='uint8' recovers the pixels from the normalised "
                             "images: give mean= and std= (mean=(0.0,), std=(1.0,) for images in [0, 1])")
        require_saliency_detector()

    def __repr__(self) -> str:
        return (f"SaliencyMix(prob={self.prob}, beta={self.beta}, detector_input={self.detector_input!r}, "
                f"mean={self.mean}, std={self.std})")

    def plan(self, x: Tensor) -> CutMixPlan | None:
        """Draw the mixing coin, then lam, the partners and the box for the batch x, in the official
        order (module docstring); None when the coin leaves the batch unmixed (only the coin drawn).

        Args:
            x: normalised images (B, C, H, W), floating point, C 1 or 3 (RGB).

        Returns:
            The box every image takes from its partner, and ``kept`` = 1 - the box's area share.
        """
        x = check_images(x)
        if not draw_unit(self.rng) < self.prob:
            return None
        lam = draw_lambda(self.beta, self.rng)
        perm = draw_permutation(x.shape[0], self.rng)
        image = detector_image(x[int(perm[0])], self.detector_input, self.mean, self.std)
        top, bottom, left, right = saliency_box(fine_grained_saliency(image), lam)
        kept = 1 - (bottom - top) * (right - left) / (x.shape[-2] * x.shape[-1])
        return CutMixPlan(perm=perm, box=(top, bottom, left, right), kept=kept)

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor, saliency: None = None) -> tuple[Tensor, Tensor]:
        """Mix a batch, or return it unchanged (with probability 1 - prob).

        Args:
            x: normalised images (B, C, H, W), floating point, C 1 or 3 (RGB).
            y: class indices (B,) or soft targets (B, K).
            saliency: must be None: this mixer reads no saliency map given to it.

        Returns:
            ``(mixed_x, mixed_y)``: the images with the partners' box pasted in, in x's dtype, and
            ``kept * y + (1 - kept) * y[perm]`` (B, K) float32, kept = 1 - the box's area share. When
            the batch is not mixed, ``x`` itself and y as soft targets.
        """
        x, targets, _ = self._door(x, y, saliency)
        plan = self.plan(x)
        if plan is None:
            return x, targets
        return plan.apply(x, targets)
