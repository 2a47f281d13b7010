"""FMix (Harris et al., "FMix: Enhancing Mixed Sample Data Augmentation", 2020): masks cut from
low-frequency images.

**The paper.** Draw lam ~ Beta(alpha, alpha). Draw a random complex spectrum (real and imaginary parts
standard normal) over the image's frequencies, scale each frequency f by 1 / max(f, 1/max(H, W))^decay_power
(decay_power 3), transform back to a real grey image (inverse real FFT) and min-max normalise it. The
top ceil(lam N) or floor(lam N) of its N pixels (ceil or floor at random) become 1, the rest 0
(``max_soft`` > 0 ramps the pixels around the threshold linearly instead). Every image keeps its own
pixels where the mask is 1 and takes its partner's elsewhere; the partner is a random permutation of
the batch and one mask serves the whole batch. The targets weigh the two labels by the drawn lam (not by
the mask's mean, which is within 1/N of it).

**The official code** (``fmix.py`` of ecs-vlc/FMix, commit e5991dc) follows the paper except in
``make_low_freq_image``: it builds the complex spectrum as ``spectrum[:, 0] + 1j * spectrum[:, 1]``,
indexing the frequency-row axis instead of the last (real, imaginary) axis. The transform then reads
the two frequency rows fy = 0 and fy = 1/H of the drawn spectrum as a (W//2 + 1) x 2 half-spectrum
whose first axis becomes the image's rows and whose second the columns: every mask holds only the
horizontal frequencies 0 and 1/W (vertical bands that drift across the image), not the isotropic
blobs the paper shows. The other rows are drawn but never used.

**Options.** ``spectrum="isotropic"`` (default) is the paper's spectrum; ``spectrum="published"`` is
the official one, bit for bit given the same draws. Both use the same draws in the same order, so
they differ only by the spectrum.

**Random draws**, from ``rng`` or numpy's global state (:mod:`comixup.mixing.random_draws`), in the
official order: lam (``scipy.stats.beta.rvs`` there, the same numbers as ``np.random.beta``), the
H x (W//2 + 1) x 2 normals (W//2 + 2 columns for odd W, as the official code draws), then the coin
for ceil or floor; then the permutation. The official code takes the coin from Python's ``random``
and the permutation from ``torch.randperm``; here both come from numpy, so one saved numpy state
resumes a run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from comixup.mixing.base import Mixer, check_choice, check_float
from comixup.mixing.baselines import draw_lambda, draw_permutation, mix_targets
from comixup.mixing.random_draws import draw_normals, draw_unit

__all__ = ["SPECTRA", "spectrum_columns", "draw_spectrum_normals", "low_frequency_image", "binarise_mask",
           "FMixDraw", "FMix"]

SPECTRA = ("isotropic", "published")
"""``spectrum`` options: the paper's isotropic spectrum, or the official code's (two frequency rows)."""


def spectrum_columns(width: int) -> int:
    """How many frequency columns the official code draws for an image ``width`` pixels wide:
    W//2 + 1, and one more for odd W (the inverse transform ignores that extra column)."""
    return width // 2 + 1 + width % 2


def draw_spectrum_normals(height: int, width: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """The normals of one random spectrum: float64 (H, spectrum_columns(W), 2), last axis (real,
    imaginary), drawn in C order like the official ``np.random.randn(1, H, W2, 2)``."""
    return draw_normals((height, spectrum_columns(width), 2), rng)


def _frequency_scale(height: int, width: int, decay_power: float) -> np.ndarray:
    """1 / max(f, 1/max(H, W))^decay_power for each frequency (H, W2) of the half-spectrum."""
    rows = np.fft.fftfreq(height)[:, None]
    cols = np.fft.fftfreq(width)[:spectrum_columns(width)]
    frequency = np.sqrt(cols * cols + rows * rows)
    # the official floor 1/max(H, W) keeps the zero frequency finite
    return 1.0 / np.maximum(frequency, 1.0 / max(height, width)) ** decay_power


def low_frequency_image(normals: np.ndarray, height: int, width: int, decay_power: float = 3.0,
                        spectrum: str = "isotropic") -> np.ndarray:
    """The grey low-frequency image (H, W), float64 min-max normalised to [0, 1], of one spectrum.

    Args:
        normals: the spectrum's normals (H, spectrum_columns(W), 2), as :func:`draw_spectrum_normals`
            draws them.
        height, width: the image's size.
        decay_power: each frequency f is scaled by 1 / max(f, 1/max(H, W))^decay_power.
        spectrum: "isotropic" (the paper's) or "published" (the official code's: only the frequency rows
            0 and 1/H of the spectrum, read as horizontal frequencies 0 and 1/W; needs H >= 2).

    Returns:
        The image; all zeros when it is constant.
    """
    check_choice("spectrum", spectrum, SPECTRA)
    expected = (height, spectrum_columns(width), 2)
    if normals.shape != expected:
        raise ValueError(f"normals must have shape {expected} for a {height}x{width} image, got {normals.shape}")
    weighted = _frequency_scale(height, width, decay_power)[:, :, None] * normals
    if spectrum == "published":
        if height < 2:
            raise ValueError("the published spectrum reads two frequency rows: it needs images of height >= 2")
        # the official indexing: frequency rows 0 and 1 as real and imaginary parts, shape (W2, 2)
        half_spectrum = weighted[0] + 1j * weighted[1]
    else:
        half_spectrum = weighted[..., 0] + 1j * weighted[..., 1]
    # the official call gives only s; giving the axes it then transforms (the last two) avoids numpy's warning
    image = np.real(np.fft.irfftn(half_spectrum, s=(height, width), axes=(-2, -1)))
    image = image - image.min()
    peak = image.max()
    return image / peak if peak > 0 else image


def binarise_mask(image: np.ndarray, lam: float, round_up: bool, max_soft: float = 0.0) -> np.ndarray:
    """The FMix mask of a low-frequency image, float64 of the image's shape.

    The brightest ceil(lam N) (``round_up``) or floor(lam N) of its N pixels become 1, the others 0.
    With ``max_soft`` > 0, int(N * s) pixels on each side of that threshold (s = max_soft, or
    min(lam, 1 - lam) when that is smaller) ramp linearly from 1 to 0 instead, as the official
    ``binarise_mask`` does. Pixels are ranked by numpy's default argsort, reversed, as there.

    Args:
        image: the low-frequency image (any shape).
        lam: the share of pixels the mask keeps, in [0, 1].
        round_up: True for ceil(lam N), False for floor(lam N).
        max_soft: the half-width of the soft band, as a share of N, in [0, 0.5].

    Returns:
        The mask.
    """
    flat = image.reshape(-1)
    order = flat.argsort()[::-1]
    size = flat.size
    count = math.ceil(lam * size) if round_up else math.floor(lam * size)
    soft_share = min(lam, 1 - lam) if (max_soft > lam or max_soft > 1 - lam) else max_soft
    soft = int(size * soft_share)
    low, high = count - soft, min(count + soft, size)
    mask = np.empty(size, dtype=np.float64)
    mask[order[:high]] = 1
    mask[order[low:]] = 0
    mask[order[low:high]] = np.linspace(1, 0, high - low)
    return mask.reshape(image.shape)


@dataclass(frozen=True)
class FMixDraw:
    """One FMix draw for a batch: image i keeps its pixels where ``mask`` (H, W) is 1 and takes
    image ``perm[i]``'s elsewhere; ``lam`` weighs its own label."""

    lam: float
    perm: np.ndarray
    mask: np.ndarray


class FMix(Mixer):
    """FMix (module docstring): one low-frequency binary mask per batch, partners a random
    permutation, label weights the drawn lam.

    Args:
        alpha: lam ~ Beta(alpha, alpha); 1.0 in the paper's CIFAR runs.
        decay_power: the spectrum's decay 1/f^decay_power; 3.0 in the paper.
        max_soft: the soft band around the mask's threshold, a share of the pixels in [0, 0.5]; 0.0
            (a binary mask) in the paper.
        spectrum: "isotropic" (the paper's) or "published" (the official ``make_low_freq_image``,
            horizontal frequencies 0 and 1/W only).
        num_classes: the class count, needed when ``y`` holds class indices.
        rng: a numpy Generator, or None for numpy's global state.
    """

    def __init__(self, *, alpha: float = 1.0, decay_power: float = 3.0, max_soft: float = 0.0,
                 spectrum: str = "isotropic", num_classes: int | None = None,
                 rng: np.random.Generator | None = None) -> None:
        super().__init__(num_classes=num_classes, rng=rng)
        self.alpha = check_float("alpha", alpha, minimum=0, strict_minimum=True)
        self.decay_power = check_float("decay_power", decay_power, minimum=0)
        self.max_soft = check_float("max_soft", max_soft, minimum=0, maximum=0.5)
        self.spectrum = check_choice("spectrum", spectrum, SPECTRA)

    def __repr__(self) -> str:
        return (f"FMix(alpha={self.alpha}, decay_power={self.decay_power}, max_soft={self.max_soft}, "
                f"spectrum={self.spectrum!r})")

    def draw(self, batch: int, height: int, width: int) -> FMixDraw:
        """Draw lam, the mask (H, W) and the partners for a batch, in the official order (module
        docstring)."""
        lam = draw_lambda(self.alpha, self.rng)
        normals = draw_spectrum_normals(height, width, self.rng)
        round_up = draw_unit(self.rng) > 0.5
        perm = draw_permutation(batch, self.rng)
        image = low_frequency_image(normals, height, width, self.decay_power, self.spectrum)
        return FMixDraw(lam=lam, perm=perm, mask=binarise_mask(image, lam, round_up, self.max_soft))

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor, saliency: None = None) -> tuple[Tensor, Tensor]:
        """Mix a batch.

        Args:
            x: images (B, C, H, W), floating point.
            y: class indices (B,) or soft targets (B, K).
            saliency: must be None: this mixer reads no saliency map given to it.

        Returns:
            ``(mixed_x, mixed_y)``: ``mask * x + (1 - mask) * x[perm]`` in x's dtype, and
            ``lam * y + (1 - lam) * y[perm]`` (B, K) float32.
        """
        x, targets, _ = self._door(x, y, saliency)
        drawn = self.draw(x.shape[0], x.shape[-2], x.shape[-1])
        mask = torch.from_numpy(drawn.mask).to(device=x.device, dtype=x.dtype)
        partner = torch.as_tensor(drawn.perm, device=x.device)
        mixed = mask * x + (1 - mask) * x[partner]
        return mixed, mix_targets(targets, drawn.perm, drawn.lam)
