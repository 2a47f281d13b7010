"""Co-Mixup: saliency-guided joint mixup with supermodular diversity (Kim et al., ICLR 2021).

Given a batch ``x`` (B x C x H x W), targets ``y`` and a saliency map per image (B x H x W),
Co-Mixup builds B mixed images. The batch is cut into partitions of ``m_part`` inputs; for each
partition it labels every block of an ``n x n`` grid of every output with the input that fills
it (or half of each of two inputs), minimising negative saliency + label smoothness + a
supermodular penalty on inputs used by many outputs. Mixed images are the
mask-weighted inputs; mixed targets are the inputs' area shares.

The main entry point is :class:`CoMixup`, a mixer of the library's one dialect
(:mod:`comixup.mixing.base`)::

    mixer = CoMixup(num_classes=100)                   # published defaults
    saliency, clean_loss, logits = saliency_and_clean_loss(model, x, y, clean_lam=1.0, num_classes=100)
    mixed_x, mixed_y = mixer(x, y, saliency)           # y: class indices or B x K soft targets

The published functions keep their names, signatures and meaning for code ported from the
published repository: :func:`get_onehot_matrix`, :func:`mix_input`, :func:`obj_fn`,
:func:`obj_fn_thres`, :func:`mixup_process`, :func:`to_one_hot` and :func:`distance`.

Randomness (the Dirichlet prior, the initial labelling, the grid size when
``m_block_num = -1``) comes from a ``numpy.random.Generator`` when one is given, else from
numpy's global random state, so seeding numpy (and saving its state in a checkpoint) makes
runs reproducible. Nothing here depends on the device: masks are solved on the CPU and
applied on the device and in the dtype of ``x``.
"""
from __future__ import annotations

import math
from argparse import Namespace
from concurrent.futures import Executor, Future
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from comixup.core.tensors import distance, to_one_hot
from comixup.mixing import comix_solver
from comixup.mixing.base import Mixer, check_executor, check_images, soft_targets
from comixup.mixing.saliency import saliency_and_clean_loss
from comixup.mixing.saliency_blocks import NamespaceConfig, block_saliency, check_grid, draw_grid_size

__all__ = [
    "CoMixup", "CoMixupConfig", "saliency_and_clean_loss", "saliency_peak_distance", "block_cost",
    "compatibility", "get_onehot_matrix", "mix_input", "obj_fn", "obj_fn_thres", "mixup_process",
    "to_one_hot", "distance", "MaskSolve", "masks_to_device",
]

PEAK_WINDOW = 8  # side of the averaging window that locates each input's saliency peak


@dataclass
class CoMixupConfig(NamespaceConfig):
    """Co-Mixup hyperparameters, under the published command-line names and defaults."""

    m_block_num: int = 4
    m_part: int = 20
    m_beta: float = 0.32
    m_gamma: float = 1.0
    m_thres: float = 0.83
    m_thres_type: str = "hard"
    m_eta: float = 0.05
    mixup_alpha: float = 2.0
    m_omega: float = 0.001
    set_resolve: bool = True
    m_niter: int = 4
    m_solver: str = "fast"
    m_peak_stride: int = 1  # stride of the saliency-peak pooling (published CIFAR code 1, ImageNet code 8)

    def __post_init__(self) -> None:
        self.check_types()
        problems = []
        if self.m_block_num != -1 and self.m_block_num < 1:
            problems.append(f"m_block_num must be a positive grid size or -1 (random), got {self.m_block_num}")
        if self.m_part < 1:
            problems.append(f"m_part must be at least 1, got {self.m_part}")
        if self.m_thres_type not in ("hard", "soft"):
            problems.append(f"m_thres_type must be 'hard' or 'soft', got {self.m_thres_type!r}")
        if self.m_niter < 1:
            problems.append(f"m_niter must be at least 1, got {self.m_niter}")
        if self.m_peak_stride < 1:
            problems.append(f"m_peak_stride must be at least 1, got {self.m_peak_stride}")
        if not self.mixup_alpha > 0:
            problems.append(f"mixup_alpha must be > 0 (Dirichlet concentration), got {self.mixup_alpha}")
        if not 0 <= self.m_omega <= 1:
            problems.append(f"m_omega must lie in [0, 1], got {self.m_omega}")
        for name in ("m_beta", "m_gamma", "m_eta", "m_thres"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be a finite number >= 0, got {value}")
        if self.m_solver not in comix_solver.SOLVERS:
            problems.append(f"m_solver must be one of {', '.join(comix_solver.SOLVERS)}, got {self.m_solver!r}")
        if problems:
            raise ValueError("; ".join(problems))


# --------------------------------------------------------------------------- saliency

def saliency_peak_distance(saliency: Tensor, window: int = PEAK_WINDOW, stride: int = 1) -> Tensor:
    """A_dist: L1 distances (B x B) between the inputs' saliency peaks, the peak being the
    arg-max of the saliency averaged over window x window squares every ``stride`` pixels,
    as a (row, col) position on that grid of squares (so in units of ``stride`` pixels)."""
    window = min(window, saliency.shape[-2], saliency.shape[-1])
    pooled = F.avg_pool2d(saliency.float().unsqueeze(1), kernel_size=window, stride=stride).squeeze(1)
    flat = pooled.flatten(1).argmax(dim=1)
    width = pooled.shape[-1]
    points = torch.stack([flat // width, flat % width], dim=1).float()
    return distance(points, "l1")


def block_cost(saliency: Tensor, n_block: int) -> Tensor:
    """Per-block cost (B, n, n): block-averaged saliency, normalised per input to sum 1,
    negated (:func:`saliency_blocks.block_saliency`). An input with no saliency at all gets a
    uniform cost."""
    return -block_saliency(saliency, n_block)


def compatibility(a_dist: Tensor, omega: float) -> Tensor:
    """A = (1 - omega) I + omega * A_dist * m / sum(A_dist) for one partition of m inputs
    (the distance part is left out when all distances are 0, e.g. a partition of one)."""
    m = a_dist.shape[0]
    eye = torch.eye(m, dtype=torch.float64, device=a_dist.device)
    total = a_dist.double().sum()
    if total <= 0:
        return (1 - omega) * eye
    return (1 - omega) * eye + omega * a_dist.double() * m / total


# --------------------------------------------------------------------------- objective

def _mask_terms(cost_matrix: Tensor, mask_onehot: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    n_output, height, width, n_input = mask_onehot.shape
    unary = torch.sum(cost_matrix.permute(1, 2, 0).unsqueeze(0) * mask_onehot)
    boundary = beta / 2 * (((mask_onehot[:, :-1] - mask_onehot[:, 1:]) ** 2).sum()
                           + ((mask_onehot[:, :, :-1] - mask_onehot[:, :, 1:]) ** 2).sum())
    counts = mask_onehot.reshape(n_output, height * width, n_input).sum(1)
    return unary + boundary, counts


def obj_fn(cost_matrix: Tensor, mask_onehot: Tensor, beta: float, gamma: float) -> Tensor:
    """Published objective of a mask (n_out, n, n, m) for costs (m, n, n), with beta and gamma
    already divided by the number of blocks: unary + beta/2 * sum of squared neighbour
    differences + gamma * (|sum_j o_j|^2 - sum_j |o_j|^2), o_j the input counts of output j."""
    smooth_unary, counts = _mask_terms(cost_matrix, mask_onehot, beta)
    return smooth_unary + gamma * (counts.sum(0).pow(2).sum() - counts.pow(2).sum())


def obj_fn_thres(cost_matrix: Tensor, mask_onehot: Tensor, beta: float, gamma: float, thres: float) -> Tensor:
    """Published thresholded objective: as obj_fn, with the diversity term
    gamma * sum_j o_j . h(P - o_j), h(v) = v where v > thres else 0 (thres in blocks)."""
    smooth_unary, counts = _mask_terms(cost_matrix, mask_onehot, beta)
    others = counts.sum(0, keepdim=True) - counts
    return smooth_unary + gamma * torch.sum((others > thres).float() * others * counts)


# --------------------------------------------------------------------------- the solver

def _draw_prior(m: int, mixup_alpha: float, rng: np.random.Generator | None) -> np.ndarray:
    if rng is None:
        return np.random.dirichlet(np.full(m, mixup_alpha))
    return rng.dirichlet(np.full(m, mixup_alpha))


def _draw_labels(m: int, shape: tuple[int, ...], rng: np.random.Generator | None) -> np.ndarray:
    if rng is None:
        return np.random.randint(0, m, size=shape)
    return rng.integers(0, m, size=shape)


def _draw_partition(m: int, n_output: int, size: int, mixup_alpha: float, idx: Tensor | np.ndarray | None,
                    rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """The random draws of one partition: the Dirichlet prior over its m inputs and the initial
    labelling (n_output, size), or idx when given. They need no saliency, so they are made in
    the caller's thread, in partition order, while the saliency may still be on its way."""
    lam = _draw_prior(m, mixup_alpha, rng)
    if idx is None:
        init = _draw_labels(m, (n_output, size), rng)
    else:
        init = np.asarray(idx.cpu() if isinstance(idx, Tensor) else idx).reshape(n_output, size)
        if init.min() < 0 or init.max() >= m:
            raise ValueError(f"idx must hold input indices in [0, {m - 1}]")
    return lam, init.astype(np.int64)


def _partition_job(cost: Tensor, A: Tensor, draws: tuple[np.ndarray, np.ndarray], cfg: dict) -> tuple:
    """Everything one partition's solve needs, as numpy: block costs (m, n, n) with the prior
    added, compatibility, initial labelling, the scaled weights."""
    m, n, _ = cost.shape
    size = n * n
    lam, init = draws
    cost_np = cost.detach().double().cpu().numpy().reshape(m, size)
    cost_np = cost_np - cfg["eta"] / size * np.log(lam + 1e-8)[:, None]
    return (cost_np, A.detach().double().cpu().numpy(), init, n,
            cfg["beta"] / size, cfg["gamma"] / size, cfg["thres"] * size, cfg["thres_type"] == "hard",
            cfg["set_resolve"], cfg["niter"], cfg["solver"])


def _run_job(job: tuple) -> np.ndarray:
    return comix_solver.solve(*job[:-1], solver=job[-1])


# --------------------------------------------------------------------------- mixing

def mix_input(mask_onehot: Tensor, input_sp: Tensor, target_reweighted: Tensor,
              sc: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mixed images and targets of one partition (the published function).

    mask_onehot (n_out, n, n, m), input_sp (m, C, H, W), target_reweighted (m, K). The mask is
    upsampled to H x W by nearest neighbour; output j = sum_i mask[j, :, :, i] * input_i. Target
    j = sum over blocks and inputs of mask * target_i, normalised to sum 1 (area shares); with
    sc (m, n, n) the blocks are weighted by that saliency instead of by area.
    """
    n_output, n, _, m = mask_onehot.shape
    channels, height, width = input_sp.shape[1:]
    if height % n or width % n:
        raise ValueError(f"image size {height}x{width} is not divisible by the block count {n}")
    bh, bw = height // n, width // n
    mask = mask_onehot.to(device=input_sp.device, dtype=input_sp.dtype)
    # (blocks, out, in) @ (blocks, in, pixels-of-block): one small matmul per block, no H x W mask
    blocks = input_sp.reshape(m, channels, n, bh, n, bw).permute(2, 4, 0, 1, 3, 5).reshape(n * n, m, -1)
    mixed = torch.bmm(mask.reshape(n_output, n * n, m).transpose(0, 1), blocks)
    output = mixed.reshape(n, n, n_output, channels, bh, bw).permute(2, 3, 0, 4, 1, 5)
    output = output.reshape(n_output, channels, height, width)

    weights = mask_onehot.to(device=target_reweighted.device, dtype=torch.float32)
    if sc is not None:
        weights = weights * sc.to(weights).permute(1, 2, 0).unsqueeze(0)
    target = weights.reshape(n_output, n * n, m).sum(1) @ target_reweighted.float()
    target = target / target.sum(-1, keepdim=True)
    return output, target


class CoMixup(Mixer):
    """Co-Mixup: a batch mixed at once, each output from the most salient blocks of several inputs,
    the outputs kept diverse (Kim et al., ICLR 2021).

    The batch is cut into partitions of ``m_part`` inputs; each partition's masks come from the
    compiled solver, on CPU threads (``executor``) while the device goes on; the masks are applied
    on the images' device, in their dtype.

    Args:
        num_classes: K, needed when ``y`` holds class indices.
        m_block_num: the mask grid n (n x n blocks); -1 draws n from 2, 4, 8, 16 per batch (every
            one of those must divide the images).
        m_part: inputs per partition (the last one may be smaller).
        m_beta: label smoothness weight.
        m_gamma: supermodular diversity weight.
        m_thres: diversity threshold (in blocks, per output); m_thres_type: "hard" or "soft".
        m_eta: weight of the Dirichlet prior over the inputs' shares.
        mixup_alpha: the Dirichlet concentration.
        m_omega: weight of the saliency-peak distances in the compatibility matrix.
        set_resolve: pull apart outputs that use the same set of inputs.
        m_niter: solver iterations.
        m_solver: "fast" (compiled), or "bkgco" / "gco" (the published graph-cut library, optional).
        m_peak_stride: stride of the saliency-peak pooling (published CIFAR code 1, ImageNet code 8).
        executor: a thread pool (:class:`comixup.PartitionPool`) that solves partitions
            concurrently, with the same result; None solves them in the caller's thread.
        rng: a ``numpy.random.Generator`` for every draw (the prior, the initial labelling, the
            grid); None uses numpy's global state.

    Every hyperparameter is checked here (type and range, one line naming it).
    """

    needs_saliency = True

    def __init__(self, *, num_classes: int | None = None, m_block_num: int = 4, m_part: int = 20,
                 m_beta: float = 0.32, m_gamma: float = 1.0, m_thres: float = 0.83, m_thres_type: str = "hard",
                 m_eta: float = 0.05, mixup_alpha: float = 2.0, m_omega: float = 0.001, set_resolve: bool = True,
                 m_niter: int = 4, m_solver: str = "fast", m_peak_stride: int = 1, executor: Executor | None = None,
                 rng: np.random.Generator | None = None) -> None:
        given = dict(locals())  # the hyperparameters, by the names CoMixupConfig checks them under
        super().__init__(num_classes=num_classes, rng=rng)
        self.config = CoMixupConfig(**{field.name: given[field.name] for field in fields(CoMixupConfig)})
        self.executor = check_executor(executor)

    def __repr__(self) -> str:
        return f"CoMixup(num_classes={self.num_classes}, {self.config})"

    def grid_size(self) -> int:
        """The block count for the next batch (drawn from 2, 4, 8, 16 when m_block_num == -1)."""
        return draw_grid_size(self.config.m_block_num, self.rng)

    def _solver_settings(self) -> dict:
        cfg = self.config
        return dict(beta=cfg.m_beta, gamma=cfg.m_gamma, eta=cfg.m_eta, mixup_alpha=cfg.mixup_alpha,
                    thres=cfg.m_thres, thres_type=cfg.m_thres_type, set_resolve=cfg.set_resolve,
                    niter=cfg.m_niter, solver=cfg.m_solver)

    @torch.no_grad()
    def pool(self, saliency: Tensor, a_dist: Tensor | None = None, n_block: int | None = None) -> Tensor:
        """What the solver reads of the saliency, on its device, as one float64 tensor
        (B, n*n + B): each input's block costs (:func:`block_cost`), then its row of peak
        distances (a_dist, computed from saliency when None). One copy brings it to the CPU.
        n_block: the grid size (default: :meth:`grid_size`, drawn when m_block_num == -1)."""
        if not isinstance(saliency, Tensor) or saliency.dim() != 3 or saliency.shape[0] < 1:
            shape = tuple(saliency.shape) if isinstance(saliency, Tensor) else type(saliency).__name__
            raise ValueError(f"saliency must be (B, H, W) with B >= 1, got {shape}")
        batch = saliency.shape[0]
        if n_block is None:
            check_grid("m_block_num", self.config.m_block_num, *saliency.shape[-2:])
            n_block = self.grid_size()
        costs = block_cost(saliency, n_block)
        if a_dist is None:
            a_dist = saliency_peak_distance(saliency, stride=self.config.m_peak_stride)
        if not isinstance(a_dist, Tensor) or a_dist.shape != (batch, batch):
            shape = tuple(a_dist.shape) if isinstance(a_dist, Tensor) else type(a_dist).__name__
            raise ValueError(f"a_dist must be (B, B) = {(batch, batch)}, got {shape}")
        return torch.cat([costs.flatten(1).double(), a_dist.to(costs.device, torch.float64)], 1)

    @torch.no_grad()
    def start(self, saliency: Tensor, a_dist: Tensor | None = None) -> MaskSolve:
        """Begin solving the masks of a batch and return at once with the solve in flight:
        :meth:`submit` of :meth:`pool`. The caller's thread is then free to queue device work
        that does not need the masks; :meth:`finish` waits and mixes. Same draws, same masks
        as solving in one go."""
        return self.submit(self.pool(saliency, a_dist))

    @torch.no_grad()
    def submit(self, pooled: Tensor) -> MaskSolve:
        """Solve the partitions of a pooled batch (:meth:`pool`, on any device).

        From a GPU the pooled saliency goes to pinned host memory in one non-blocking copy; the
        partitions' random draws are made meanwhile, in partition order, and with an executor
        the partitions are handed to its threads before the copy lands (each waits for it,
        without the GIL). Without one they are solved when :meth:`MaskSolve.masks` asks. A
        non-finite saliency (NaN or infinite block costs or distances) is refused there, once
        the values are on the host: ValueError naming the image."""
        batch = pooled.shape[0]
        n_block = math.isqrt(pooled.shape[1] - batch)
        if pooled.device.type == "cuda":
            host = torch.empty(pooled.shape, dtype=pooled.dtype, pin_memory=True)
            host.copy_(pooled, non_blocking=True)
            landed = torch.cuda.Event()
            landed.record()
        else:
            host, landed = pooled.cpu(), None
        cfg = self.config
        bounds = [(start, min(start + cfg.m_part, batch)) for start in range(0, batch, cfg.m_part)]
        draws = [_draw_partition(stop - start, stop - start, n_block * n_block, cfg.mixup_alpha, None, self.rng)
                 for start, stop in bounds]
        solve = _PartitionSolve(host, landed, n_block, cfg.m_omega, self._solver_settings())
        tasks = [(start, stop, drawn) for (start, stop), drawn in zip(bounds, draws, strict=True)]
        if self.executor is not None and len(bounds) > 1:
            return MaskSolve(n_block, bounds, pending=[self.executor.submit(solve, *task) for task in tasks])
        return MaskSolve(n_block, bounds, later=[(solve, *task) for task in tasks])

    @torch.no_grad()
    def masks(self, saliency: Tensor, a_dist: Tensor | None = None) -> list[Tensor]:
        """Solve every partition: one mask (m, n, n, m) per partition of m inputs, float32 on
        the CPU, entries 0, 0.5 or 1 (output j, block, input i)."""
        return self.start(saliency, a_dist).masks()

    @torch.no_grad()
    def finish(self, solve: MaskSolve, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Wait for the masks of :meth:`start`, bring them to x's device in one copy and mix:
        (mixed_x, mixed_y) as :meth:`__call__` returns them."""
        x = check_images(x)
        return self._mix(masks_to_device(solve.masks(), x.device), x, soft_targets(y, x.shape[0], self.num_classes))

    @torch.no_grad()
    def mix(self, masks: list[Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mix a batch with its partitions' masks (m, n, n, m), in order: :func:`mix_input` per
        partition, concatenated."""
        x = check_images(x)
        return self._mix(masks, x, soft_targets(y, x.shape[0], self.num_classes))

    def _mix(self, masks: list[Tensor], x: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        covered = sum(mask.shape[-1] for mask in masks)
        if x.shape[0] != covered:
            raise ValueError(f"got {x.shape[0]} images for masks of {covered} inputs")
        mixed_x, mixed_y = [], []
        start = 0
        for mask in masks:
            stop = start + mask.shape[-1]
            part_x, part_y = mix_input(mask, x[start:stop], targets[start:stop])
            mixed_x.append(part_x)
            mixed_y.append(part_y)
            start = stop
        return torch.cat(mixed_x), torch.cat(mixed_y)

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor, saliency: Tensor, a_dist: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mix a batch.

        Args:
            x: images (B, C, H, W), floating point, any device; H and W divisible by the grid.
            y: class indices (B,) (needs ``num_classes``) or soft targets (B, K).
            saliency: (B, H, W) on x's device, e.g. from :func:`saliency_and_clean_loss`.
            a_dist: (B, B) distances between the inputs' saliency peaks; computed from the
                saliency when None.

        Returns:
            (mixed_x like x, mixed_y (B, K) float32 on y's device, rows summing to 1: each
            input's share of the output's area).
        """
        x, targets, saliency = self._door(x, y, saliency)
        return self._mix(masks_to_device(self.start(saliency, a_dist).masks(), x.device), x, targets)


def masks_to_device(masks: list[Tensor], device: torch.device) -> list[Tensor]:
    """The partitions' masks on device: to a GPU in one copy from pinned memory (non-blocking,
    ordered on the current stream before the mixing that reads them)."""
    device = torch.device(device)
    if device.type != "cuda":
        return [mask.to(device) for mask in masks]
    flat = torch.cat([mask.flatten() for mask in masks]).pin_memory().to(device, non_blocking=True)
    on_device = []
    offset = 0
    for mask in masks:
        on_device.append(flat[offset:offset + mask.numel()].view(mask.shape))
        offset += mask.numel()
    return on_device


class _PartitionSolve:
    """Solves one partition from the pooled saliency on the host, once its copy has landed."""

    def __init__(self, host: Tensor, landed: Any, n_block: int, omega: float, settings: dict) -> None:
        self.host = host
        self.landed = landed
        self.n_block = n_block
        self.omega = omega
        self.settings = settings

    def __call__(self, start: int, stop: int, draws: tuple[np.ndarray, np.ndarray]) -> Tensor:
        if self.landed is not None:
            self.landed.synchronize()  # releases the GIL
        size = self.n_block * self.n_block
        rows = self.host[start:stop]
        finite = torch.isfinite(rows[:, :size]).all(dim=1)
        if not bool(finite.all()):
            raise ValueError(f"saliency of image {start + int((~finite).nonzero()[0])} holds NaN or infinite values; "
                             f"saliency must be finite")
        if not bool(torch.isfinite(rows[:, size:]).all()):
            raise ValueError("a_dist (the distances between saliency peaks) holds NaN or infinite values")
        cost = rows[:, :size].reshape(stop - start, self.n_block, self.n_block)
        A = compatibility(rows[:, size + start:size + stop], self.omega)
        mask = _run_job(_partition_job(cost, A, draws, self.settings))
        return torch.from_numpy(mask).float().reshape(stop - start, self.n_block, self.n_block, stop - start)


class MaskSolve:
    """The masks of one batch being solved (:meth:`CoMixup.start`): partitions in flight on an
    executor (pending futures) or left to solve in the caller's thread when asked (later)."""

    def __init__(self, n_block: int, bounds: list[tuple[int, int]], pending: list[Future] | None = None,
                 later: list[tuple] | None = None) -> None:
        self.n_block = n_block
        self.bounds = bounds
        self._pending = pending
        self._later = later
        self._masks: list[Tensor] | None = None

    def masks(self) -> list[Tensor]:
        """One mask (m, n, n, m) per partition, float32 on the CPU, waiting for them if needed."""
        if self._masks is None:
            if self._pending is not None:
                self._masks = [future.result() for future in self._pending]
            else:
                self._masks = [solve(start, stop, draws) for solve, start, stop, draws in self._later]
        return self._masks


# --------------------------------------------------------------------------- compatibility: the published API
# Kept for code written against the published repository: the same names, signatures and meaning.

def get_onehot_matrix(cost_matrix: Tensor, A: Tensor, n_output: int, idx: Tensor | None = None,
                      beta: float = 0.32, gamma: float = 1., eta: float = 0.05, mixup_alpha: float = 2.0,
                      thres: float = 0.84, thres_type: str = "hard", set_resolve: bool = True, niter: int = 3,
                      device: str | torch.device | None = None, solver: str = "fast",
                      rng: np.random.Generator | None = None) -> Tensor:
    """Solve one partition: the published function.

    cost_matrix (m, n, n): block costs of the m inputs (normalised negated saliency); A (m, m):
    compatibility; idx (n_output, n, n): initial input per block (random when None). beta,
    gamma, eta and thres are the unscaled hyperparameters (divided or multiplied by n*n here).
    Returns mask_onehot (n_output, n, n, m): entries 0, 0.5 or 1, each block summing to 1, on
    `device` (default: the device of cost_matrix). Unlike the published code, cost_matrix is
    not modified.
    """
    if thres_type not in ("hard", "soft"):
        raise ValueError(f"thres_type must be 'hard' or 'soft', got {thres_type!r}")
    m, n, n_cols = cost_matrix.shape
    if n != n_cols:
        raise ValueError(f"cost_matrix must be (m, n, n), got {tuple(cost_matrix.shape)}")
    cfg = dict(beta=beta, gamma=gamma, eta=eta, mixup_alpha=mixup_alpha, thres=thres, thres_type=thres_type,
               set_resolve=set_resolve, niter=niter, solver=solver)
    draws = _draw_partition(m, n_output, n * n, mixup_alpha, idx, rng)
    mask = _run_job(_partition_job(cost_matrix, A, draws, cfg))
    device = cost_matrix.device if device is None else device
    return torch.from_numpy(mask).float().reshape(n_output, n, n, m).to(device)


def mixup_process(out: Tensor, target_reweighted: Tensor, args: Any = None, sc: Tensor | None = None,
                  A_dist: Tensor | None = None, executor: Executor | None = None) -> tuple[Tensor, Tensor]:
    """The published entry point: Co-Mixup of a batch with the m_* settings of `args`.

    args: any object with the published fields (m_block_num, m_part, m_beta, m_gamma, m_thres,
    m_thres_type, m_eta, mixup_alpha, m_omega, set_resolve, m_niter; m_solver optional);
    missing fields take the defaults. sc: saliency (B, H, W), required. A_dist: peak distances
    (B, B); the published code falls back to the identity when it is None, and so does this.
    """
    if sc is None:
        raise ValueError("mixup_process needs the saliency maps sc (B, H, W)")
    config = CoMixupConfig.from_namespace(args if args is not None else Namespace())
    mixer = CoMixup(executor=executor, **vars(config))
    if A_dist is None:
        A_dist = torch.eye(out.shape[0], device=out.device)
    return mixer(out, target_reweighted, sc, A_dist)
