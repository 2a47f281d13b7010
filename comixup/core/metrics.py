"""Classification metrics of a run: running averages and top-k accuracy."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["AverageMeter", "accuracy"]


class AverageMeter:
    """Running average of a value weighted by sample counts: ``update(val, n)``, then ``avg``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.val = 0.0
        self.sum = 0.0
        self.count = 0
        self.avg = 0.0

    def update(self, val: float, n: int = 1) -> None:
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count if self.count else 0.0


def accuracy(output: Tensor, target: Tensor, topk: Sequence[int] = (1,)) -> list[float]:
    """Precision@k in percent of logits ``output`` (B, K) for class indices ``target`` (B,).

    A k larger than the number of classes counts every prediction as correct (there are only
    K candidates), rather than failing on data sets with fewer than 5 classes.
    """
    batch = target.shape[0]
    if batch == 0:
        return [0.0 for _ in topk]
    maxk = min(max(topk), output.shape[1])
    predicted = output.topk(maxk, dim=1, largest=True, sorted=True).indices
    correct = predicted.eq(target.reshape(-1, 1))
    return [correct[:, :min(k, maxk)].any(dim=1).float().sum().item() * 100.0 / batch for k in topk]
