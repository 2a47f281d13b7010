"""GuidedMixup (Kang & Kim, "GuidedMixup: An Efficient Mixup Strategy Guided by Saliency Maps", AAAI
2023): pixel-wise mixing ratios from two saliency maps, partners paired greedily far apart.

**The method** (paper and official code, 3neutronstar/GuidedMixup, ``mixup.py``, ``pairing.pyx``,
``spectral_residual.py``): with probability ``mix_prob`` a batch is mixed (CIFAR-100: 0.8 for AP, 0.5
for SR), otherwise it trains clean.

1. Saliency, one map (B, H, W) per image, by one of two detectors:

   - **AP** (:class:`GuidedMixupAP`): the input gradient of the clean batch's loss,
     ``sqrt(mean over channels of grad^2)`` as in Puzzle Mix and Co-Mixup, from an extra clean
     forward and backward pass whose loss also trains the model when ``clean_lam`` > 0 (0 in the
     released CIFAR-100 command, 1.0 in the Tiny-ImageNet one). The caller computes it (for instance
     with :func:`comixup.mixing.comix.saliency_and_clean_loss`) and passes it in.
   - **SR** (:class:`GuidedMixupSR`): the spectral residual (Hou & Zhang, 2007) of the grey image,
     computed here from the batch, no extra pass (:func:`spectral_residual`). The released detector
     already blurs its map by the 7x7 Gaussian, and the mixing blurs it again (step 2): SR maps are
     blurred twice, as released.

2. Each map is blurred by a 7x7 Gaussian of sigma 3 (torchvision's ``gaussian_blur``, reflect padding)
   and normalised to sum 1 (:func:`guided_saliency`).
3. Partners: greedily paired far apart (:func:`farthest_neighbour_cycle` on the L2 distances of the
   maps): start at the farthest pair, jump from each image to the farthest image not yet visited,
   close the loop back to the first; a single cycle, so nobody is paired with itself.
4. Per pixel, image a keeps the share ``M = s_a / (s_a + s_b)`` and takes ``1 - M`` of its partner b;
   the labels are weighed by ``mean(M)`` and ``1 - mean(M)`` (:func:`guided_mix`).

**What the released CIFAR code does differently**: asked for ``--condition greedy``, ``mixup_process``
calls ``pairing(..., condition='greedy_c')``, a condition ``pairing`` does not know, so it falls into
its random branch and pairs by a random permutation; the paper and the released FGVC code pair
greedily. **Options**: ``pairing="greedy"`` (default) is the paper's; ``pairing="random"`` is the
released CIFAR code's behaviour (bit for bit, given the same permutation).

**Guards the official code lacks** (they change nothing where the official code gives numbers): an
image without saliency (its blurred map sums to 0) counts as uniformly salient, and a pixel where both
maps are 0 is shared half and half (the official code gives NaN in both cases).

**Random draws**, from ``rng`` or numpy's global state, in the released order: the mixing coin (mix
unless ``mix_prob`` is below it); then, in ``mixup_process``, a block count and a permutation that the
guided branch never uses (drawn so that a seeded run draws the released sequence); then, with
``pairing="random"``, the permutation that pairs. The released code also draws the SR detector's
sigma from torch's generator (a uniform number in [3, 3]); that draw is left out, as every draw from
torch is.

Why two classes and not one with a ``saliency`` option: the two take different arguments
(``mixer(x, y, saliency)`` and ``mixer(x, y)``), so ``needs_saliency`` is a property of the class that
a training loop can read before it builds one, and their published ``mix_prob`` defaults differ.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from comixup.mixing.base import Mixer, check_choice, check_float
from comixup.mixing.baselines import draw_permutation, mix_targets
from comixup.mixing.random_draws import draw_integer, draw_unit

__all__ = ["PAIRINGS", "BLUR_KERNEL", "BLUR_SIGMA", "gaussian_smooth", "guided_saliency", "saliency_distances",
           "farthest_neighbour_cycle", "guided_mix", "spectral_residual", "GuidedMixupAP", "GuidedMixupSR"]

PAIRINGS = ("greedy", "random")
"""``pairing`` options: the greedy farthest-neighbour cycle (the paper's), or a random permutation
(the released CIFAR code's)."""

BLUR_KERNEL = 7
BLUR_SIGMA = 3.0
SR_MAX_SIDE = 128
"""The released spectral residual resizes images taller than this to SR_MAX_SIDE x SR_MAX_SIDE."""

_DISTANCE_CHUNK = 1 << 24
"""Elements of the broadcast difference (rows x B x H x W) the distance matrix takes at a time."""


def gaussian_smooth(maps: Tensor) -> Tensor:
    """Each map (..., H, W) blurred by the 7x7 Gaussian of sigma 3, reflect padding (torchvision's
    ``gaussian_blur``, as the official code calls it); H and W must be at least 4."""
    # imported here: torchvision's transforms load slowly and only the guided mixers need them
    from torchvision.transforms.functional import gaussian_blur

    if maps.shape[-1] <= BLUR_KERNEL // 2 or maps.shape[-2] <= BLUR_KERNEL // 2:
        raise ValueError(f"GuidedMixup blurs by a {BLUR_KERNEL}x{BLUR_KERNEL} Gaussian with reflect padding: "
                         f"images must be at least 4x4 pixels, got {tuple(maps.shape[-2:])}")
    return gaussian_blur(maps, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])


def guided_saliency(saliency: Tensor) -> Tensor:
    """The maps the mixing reads: each non-negative map (B, H, W) blurred (:func:`gaussian_smooth`)
    and divided by its sum; a map summing to 0 becomes uniform, 1 / (H W)."""
    blurred = gaussian_smooth(saliency)
    total = blurred.sum(dim=[-1, -2], keepdim=True)
    uniform = 1.0 / (blurred.shape[-1] * blurred.shape[-2])
    return torch.where(total > 0, blurred / total, torch.full_like(blurred, uniform))


def saliency_distances(maps: Tensor) -> Tensor:
    """The L2 distances (B, B) between the flattened maps (B, H, W), as the official
    ``distance_function(..., 'l2')`` computes them, a few rows at a time to bound the memory."""
    flat = maps.reshape(maps.shape[0], -1)
    batch, size = flat.shape
    rows = max(1, _DISTANCE_CHUNK // max(1, batch * size))
    parts = [(flat[start:start + rows, None, :] - flat[None, :, :]).norm(dim=-1) for start in range(0, batch, rows)]
    return torch.cat(parts)


def farthest_neighbour_cycle(distances: np.ndarray | Tensor) -> np.ndarray:
    """The greedy single-cycle pairing of the official ``onecycle_cover``: ``partner[i]`` (int64, B).

    Start at the farthest pair (the first maximum of the matrix, its diagonal excluded, row-major):
    its row's partner is its column. From each new image, go to the farthest image not yet left
    behind (the first maximum of its row); the last image's partner is the first. The result is one
    cycle through the whole batch (for B >= 2 nobody is its own partner). Ties go to the lower index.

    Args:
        distances: symmetric distances (B, B); read as float32, as the official Cython code is.

    Returns:
        The partners.
    """
    if isinstance(distances, Tensor):
        distances = distances.detach().cpu().numpy()
    # a float32 copy: the official function works in float32 and overwrites its input
    remaining = np.array(distances, dtype=np.float32, copy=True, order="C")
    if remaining.ndim != 2 or remaining.shape[0] != remaining.shape[1] or remaining.shape[0] < 1:
        raise ValueError(f"distances must be a square matrix (B, B), got shape {remaining.shape}")
    batch = remaining.shape[0]
    partner = np.zeros(batch, dtype=np.int64)
    np.fill_diagonal(remaining, -np.inf)
    row, col = divmod(int(np.argmax(remaining)), batch)
    first = row
    partner[row] = col
    remaining[:, row] = -np.inf  # nobody goes back to an image already visited
    for _ in range(batch - 2):
        row = col
        col = int(np.argmax(remaining[row]))
        partner[row] = col
        remaining[:, row] = -np.inf
    partner[col] = first
    return partner


def guided_mix(x: Tensor, targets: Tensor, maps: Tensor, partner: np.ndarray | Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mix each image with its partner pixel by pixel, by the ratio of their maps.

    Args:
        x: images (B, C, H, W).
        targets: soft targets (B, K).
        maps: the blurred, sum-normalised saliency (B, H, W) (:func:`guided_saliency`).
        partner: the partner of each image (B,).

    Returns:
        ``(mixed_x, mixed_y, ratio)``: ``M x + (1 - M) x[partner]`` in x's dtype with
        ``M = s / (s + s[partner])`` (B, H, W) (0.5 where both are 0), the targets
        ``mean(M) y + (1 - mean(M)) y[partner]`` float32, and ``M`` itself.
    """
    index = torch.as_tensor(np.asarray(partner, dtype=np.int64), device=x.device)
    total = maps + maps[index]
    ratio = torch.where(total > 0, maps / total, torch.full_like(maps, 0.5))
    weight = ratio.unsqueeze(1).to(x.dtype)
    mixed = weight * x + (1 - weight) * x[index]
    return mixed, mix_targets(targets, partner, ratio.mean(dim=[-1, -2])), ratio


def spectral_residual(x: Tensor) -> Tensor:
    """The released detector's spectral-residual saliency (B, H, W), float32, of images (B, C, H, W).

    Steps, as ``SpectralResidual.transform_spectral_residual`` of the released code (kernel 3, blur 7,
    sigma 3): the grey image (torchvision's ``rgb_to_grayscale``, 0.2989 R + 0.587 G + 0.114 B, of the
    values as given, normalised or not; C must be 1 or 3), resized to 128 x 128 when taller than 128;
    its 2-D FFT; the log magnitude (``sqrt(re^2 + im^2 + 1e-10)``) minus its 3x3 mean (replicate
    padding) is the residual; the spectrum keeps its phase and takes ``exp(residual)`` as magnitude;
    the inverse FFT's magnitude, blurred by the 7x7 Gaussian of sigma 3, resized back when resized.
    The map is not normalised.
    """
    # imported here: torchvision's transforms load slowly and only the guided mixers need them
    from torchvision.transforms.functional import resize, rgb_to_grayscale

    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"the spectral residual reads grey or RGB images (B, 1 or 3, H, W), got shape "
                         f"{tuple(x.shape)}")
    height, width = x.shape[-2:]
    grey = rgb_to_grayscale(x.float())
    shrunk = height > SR_MAX_SIDE  # the released test looks at the height only, and squashes to a square
    if shrunk:
        grey = resize(grey, [SR_MAX_SIDE, SR_MAX_SIDE], antialias=True)
    spectrum = torch.fft.fft2(grey)
    magnitude = (spectrum.real ** 2 + spectrum.imag ** 2 + 1e-10).sqrt()
    log_magnitude = magnitude.log()
    box = torch.full((1, 1, 3, 3), 1.0, dtype=log_magnitude.dtype, device=x.device) / 9.0
    local_mean = F.conv2d(F.pad(log_magnitude, (1, 1, 1, 1), mode="replicate"), box)
    residual = (log_magnitude - local_mean).exp()
    reshaped = torch.complex(spectrum.real * residual / magnitude, spectrum.imag * residual / magnitude)
    saliency = torch.fft.ifft2(reshaped).squeeze(1)
    saliency = gaussian_smooth((saliency.real ** 2 + saliency.imag ** 2).sqrt())
    if shrunk:
        saliency = resize(saliency, [height, width], antialias=True)
    return saliency


class _GuidedMixup(Mixer):
    """What the two GuidedMixup variants share: the mixing coin, the pairing, the mixing."""

    def __init__(self, *, mix_prob: float, pairing: str, num_classes: int | None,
                 rng: np.random.Generator | None) -> None:
        super().__init__(num_classes=num_classes, rng=rng)
        self.mix_prob = check_float("mix_prob", mix_prob, minimum=0, maximum=1)
        self.pairing = check_choice("pairing", pairing, PAIRINGS)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mix_prob={self.mix_prob}, pairing={self.pairing!r})"

    def decide(self) -> bool:
        """Draw the mixing coin: True when the next batch is to be mixed (probability ``mix_prob``).

        ``__call__`` draws it itself; a training loop that would rather skip the saliency pass of a
        batch that stays clean calls ``decide()`` first and then :meth:`mix` (the same draws)."""
        return not self.mix_prob < draw_unit(self.rng)

    def _pair(self, maps: Tensor) -> np.ndarray:
        batch = maps.shape[0]
        # the released mixup_process draws a block count and a permutation it never uses here
        draw_integer(1, 5, self.rng)
        draw_permutation(batch, self.rng)
        if self.pairing == "random":
            return draw_permutation(batch, self.rng)
        return farthest_neighbour_cycle(saliency_distances(maps))

    def _mix(self, x: Tensor, targets: Tensor, saliency: Tensor) -> tuple[Tensor, Tensor]:
        maps = guided_saliency(saliency.float())
        mixed, mixed_y, _ = guided_mix(x, targets, maps, self._pair(maps))
        return mixed, mixed_y


class GuidedMixupAP(_GuidedMixup):
    """GuidedMixup with the input-gradient saliency the caller computes (Guided-AP, module docstring).

    Args:
        mix_prob: the probability that a batch is mixed; 0.8 in the released CIFAR-100 command.
        pairing: "greedy" (default: the farthest-neighbour cycle, the paper's) or "random" (a random
            permutation, what the released CIFAR code runs).
        num_classes: the class count, needed when ``y`` holds class indices.
        rng: a numpy Generator, or None for numpy's global state.
    """

    needs_saliency = True

    def __init__(self, *, mix_prob: float = 0.8, pairing: str = "greedy", num_classes: int | None = None,
                 rng: np.random.Generator | None = None) -> None:
        super().__init__(mix_prob=mix_prob, pairing=pairing, num_classes=num_classes, rng=rng)

    @torch.no_grad()
    def mix(self, x: Tensor, y: Tensor, saliency: Tensor) -> tuple[Tensor, Tensor]:
        """Mix a batch, without the mixing coin (see :meth:`decide`); arguments and result as
        :meth:`__call__` when it mixes."""
        x, targets, saliency = self._door(x, y, saliency)
        return self._mix(x, targets, saliency)

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor, saliency: Tensor) -> tuple[Tensor, Tensor]:
        """Mix a batch, or return it unchanged (with probability 1 - mix_prob).

        Args:
            x: images (B, C, H, W), floating point, H and W at least 4.
            y: class indices (B,) or soft targets (B, K).
            saliency: the input-gradient saliency (B, H, W) of the clean batch (negative entries
                count as 0).

        Returns:
            ``(mixed_x, mixed_y)``: ``M x + (1 - M) x[partner]`` in x's dtype and
            ``mean(M) y + (1 - mean(M)) y[partner]`` (B, K) float32 (:func:`guided_mix`). When the
            batch is not mixed, ``x`` itself and y as soft targets.
        """
        x, targets, saliency = self._door(x, y, saliency)
        if not self.decide():
            return x, targets
        return self._mix(x, targets, saliency)


class GuidedMixupSR(_GuidedMixup):
    """GuidedMixup with the spectral-residual saliency computed from the batch (Guided-SR, module
    docstring): no extra pass, no saliency argument.

    Args:
        mix_prob: the probability that a batch is mixed; 0.5 in the released CIFAR-100 command.
        pairing: "greedy" (default: the farthest-neighbour cycle, the paper's) or "random" (a random
            permutation, what the released CIFAR code runs).
        num_classes: the class count, needed when ``y`` holds class indices.
        rng: a numpy Generator, or None for numpy's global state.
    """

    needs_saliency = False

    def __init__(self, *, mix_prob: float = 0.5, pairing: str = "greedy", num_classes: int | None = None,
                 rng: np.random.Generator | None = None) -> None:
        super().__init__(mix_prob=mix_prob, pairing=pairing, num_classes=num_classes, rng=rng)

    @torch.no_grad()
    def mix(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mix a batch, without the mixing coin (see :meth:`decide`); arguments and result as
        :meth:`__call__` when it mixes."""
        x, targets, _ = self._door(x, y)
        return self._mix(x, targets, spectral_residual(x))

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor, saliency: None = None) -> tuple[Tensor, Tensor]:
        """Mix a batch, or return it unchanged (with probability 1 - mix_prob).

        Args:
            x: images (B, C, H, W), floating point, C 1 or 3 (RGB), H and W at least 4.
            y: class indices (B,) or soft targets (B, K).
            saliency: must be None: the saliency is the batch's spectral residual, computed here
                (:func:`spectral_residual`).

        Returns:
            ``(mixed_x, mixed_y)`` as :meth:`GuidedMixupAP.__call__`. When the batch is not mixed,
            ``x`` itself and y as soft targets.
        """
        x, targets, _ = self._door(x, y, saliency)
        if not self.decide():
            return x, targets
        return self._mix(x, targets, spectral_residual(x))
