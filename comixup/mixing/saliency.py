"""Input-gradient saliency of a batch, the map Co-Mixup and Puzzle Mix mix by.

- :func:`input_gradient_saliency`: only the map; the model's parameter gradients are left as they were.
- :func:`saliency_and_clean_loss`: the published recipe's clean pass, which also back-propagates the
  clean-input loss into the parameters' ``.grad`` (clean_lam > 0), so the optimiser step after the
  mixed pass applies both.

Both return float32 maps (B, H, W): the root mean square over channels of the gradient of the
cross-entropy with respect to the input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["input_gradient_saliency", "saliency_and_clean_loss"]


def _rms_over_channels(grad: Tensor) -> Tensor:
    return grad.detach().float().pow(2).mean(dim=1).sqrt()


def input_gradient_saliency(model: torch.nn.Module, x: Tensor, target: Tensor, eval_mode: bool = True) -> Tensor:
    """The saliency maps (B, H, W), float32, of ``model`` on images ``x`` for class indices ``target``,
    without touching the parameters' gradients.

    Args:
        model: the classifier; with ``eval_mode`` (default) it runs in eval mode and its mode is
            restored afterwards.
        x: images (B, C, H, W).
        target: class indices (B,).

    Returns:
        sqrt(mean over channels of (d CE / d x)^2), detached.
    """
    x = x.detach().requires_grad_(True)
    was_training = model.training
    if eval_mode:
        model.eval()
    try:
        loss = F.cross_entropy(model(x).float(), target)
        (grad,) = torch.autograd.grad(loss, x)
    finally:
        model.train(was_training)
    return _rms_over_channels(grad)


def saliency_and_clean_loss(model: torch.nn.Module, x: Tensor, target: Tensor, clean_lam: float = 1.0,
                            num_classes: int | None = None,
                            scaler: torch.amp.GradScaler | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One clean forward and backward: the saliency, and (clean_lam > 0) the clean loss's parameter
    gradients accumulated into ``.grad``.

    clean_lam > 0 (published recipe): train mode, loss = 2 * clean_lam * CE / num_classes (batch
    mean); its ``backward()`` both gives the input gradient and accumulates the parameter gradients
    of this clean-input regulariser, so the optimiser step that follows the mixed pass applies
    both. clean_lam == 0: eval mode, plain CE, and only the input gradient is taken (the
    parameter gradients stay untouched, as :func:`input_gradient_saliency`); the model's mode is
    restored.

    With a float16 GradScaler the loss is scaled before the backward (as the mixed loss will
    be, so the accumulated parameter gradients agree) and the input gradient unscaled, so
    small gradients do not underflow to zero.

    Returns:
        (saliency B x H x W float32 = sqrt(mean over channels of grad^2), the loss, the clean
        logits), all detached.
    """
    if clean_lam < 0:
        raise ValueError(f"clean_lam must be >= 0, got {clean_lam}")
    x = x.detach().requires_grad_(True)
    was_training = model.training
    if clean_lam == 0:
        model.eval()
    try:
        logits = model(x)
        loss = F.cross_entropy(logits.float(), target)
        if clean_lam > 0:
            classes = num_classes if num_classes is not None else logits.shape[1]
            loss = 2 * clean_lam * loss / classes
            (scaler.scale(loss) if scaler is not None else loss).backward()
            grad = x.grad
        else:
            (grad,) = torch.autograd.grad(scaler.scale(loss) if scaler is not None else loss, x)
    finally:
        model.train(was_training)
    if scaler is not None:
        grad = grad.detach().float() / scaler.get_scale()
    return _rms_over_channels(grad), loss.detach(), logits.detach()
