"""The training losses on soft targets (``--loss``), shared by the training step and the evaluation.

``bce``: the published loss, binary cross-entropy between softmax(logits) and the targets, mean over
batch x classes. ``ce``: the soft-target cross entropy ``-sum(t * log_softmax(logits))``, mean over
the batch. Both are computed in float32, whatever the logits' dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LOSSES", "soft_target_loss", "bce_on_probabilities"]

LOSSES = ("bce", "ce")
"""The --loss choices: BCE on softmax (published) or soft-target cross entropy."""


def soft_target_loss(logits: Tensor, targets: Tensor, loss: str = "bce") -> Tensor:
    """Training loss of logits (B, K) against soft targets (B, K), computed in float32.

    ``bce``: binary cross-entropy between softmax(logits) and targets, mean over B x K (the
    published loss). ``ce``: ``-sum_k t_k log_softmax(logits)_k``, mean over B.
    """
    logits = logits.float()
    if loss == "bce":
        return bce_on_probabilities(F.softmax(logits, dim=1), targets.float())
    if loss == "ce":
        return -(targets.float() * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def bce_on_probabilities(probs: Tensor, targets: Tensor) -> Tensor:
    """F.binary_cross_entropy(probs, targets), mean over all entries, but NaN (not an error) when
    ``probs`` holds a NaN, as from the logits of a diverged model: binary_cross_entropy refuses
    inputs outside [0, 1] (an exception on the CPU, a device-side assert on CUDA), which would
    hide the divergence behind a crash. For finite probabilities the value and the gradient are
    bit-identical to binary_cross_entropy's, without a device synchronisation."""
    finite = torch.isfinite(probs)
    loss = F.binary_cross_entropy(torch.where(finite, probs, torch.full_like(probs, 0.5)), targets)
    return loss + probs.sum() * 0  # +0 when finite; NaN (with a zero gradient) otherwise
