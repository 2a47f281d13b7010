"""Calibration of a classifier's confidence: the expected calibration error (ECE) of Guo et al.,
"On Calibration of Modern Neural Networks" (ICML 2017), with the negative log-likelihood.

The confidence of a prediction is its top-1 softmax probability. The interval (0, 1] is cut into
``bins`` equal-width bins, bin b holding the predictions whose confidence lies in
(b / bins, (b + 1) / bins]. With n_b predictions in bin b, acc_b the fraction of them that are
right and conf_b their mean confidence, out of n predictions in all,

    ECE = sum over b of (n_b / n) * |acc_b - conf_b|,   reported in percent.

:class:`CalibrationMeter` keeps the raw sums (per bin: count, sum of confidences, right
predictions; the summed NLL and the count), never averages, so that meters of several batches or
processes merge exactly: add their :meth:`~CalibrationMeter.sums` (an all-reduce under torchrun)
and rebuild one with :meth:`~CalibrationMeter.from_sums`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CalibrationMeter", "ReliabilityBin", "DEFAULT_BINS"]

DEFAULT_BINS = 15
"""The bin count of Guo et al. (2017), the usual one for reliability diagrams and ECE."""


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin (lo, hi]: how many predictions fell in it, their accuracy and mean
    confidence (fractions in [0, 1]; None for an empty bin)."""

    lo: float
    hi: float
    count: int
    accuracy: float | None
    confidence: float | None


class CalibrationMeter:
    """Per-bin counts, confidence sums and right predictions, and the summed NLL, of the
    predictions seen so far (:meth:`update` with a batch's logits and labels).

    The sums live on the device of the first batch (no transfer per batch) in float64.
    """

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        if not isinstance(bins, int) or bins < 1:
            raise ValueError(f"the number of calibration bins must be a positive integer, got {bins!r}")
        self.bins = bins
        self._counts: Tensor | None = None
        self._confidence: Tensor | None = None
        self._correct: Tensor | None = None
        self._nll: Tensor | None = None

    # ----------------------------------------------------------------------- accumulating

    def _ensure(self, device: torch.device) -> None:
        if self._counts is None:
            zeros = torch.zeros(self.bins, dtype=torch.float64, device=device)
            self._counts, self._confidence, self._correct = zeros, zeros.clone(), zeros.clone()
            self._nll = torch.zeros((), dtype=torch.float64, device=device)

    def bin_index(self, confidence: Tensor) -> Tensor:
        """The bin of each confidence: b with b / bins < confidence <= (b + 1) / bins (float64
        edges; a confidence of exactly 0, which softmax never gives, goes to the first bin)."""
        inner_edges = torch.arange(1, self.bins, dtype=torch.float64, device=confidence.device) / self.bins
        return torch.bucketize(confidence.to(torch.float64), inner_edges, right=False)

    @torch.no_grad()
    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add a batch: ``logits`` (N, classes), any float dtype (softmax taken in float32),
        ``target`` (N,) class indices."""
        self._ensure(logits.device)
        log_probs = F.log_softmax(logits.detach().float(), dim=1)
        target = target.to(log_probs.device).long()
        top_log_prob, predicted = log_probs.max(dim=1)
        confidence = top_log_prob.exp()
        index = self.bin_index(confidence)
        self._counts += torch.bincount(index, minlength=self.bins).to(torch.float64)
        self._confidence += torch.bincount(index, weights=confidence.to(torch.float64), minlength=self.bins)
        right = (predicted == target).to(torch.float64)
        self._correct += torch.bincount(index, weights=right, minlength=self.bins)
        self._nll -= log_probs.gather(1, target[:, None]).to(torch.float64).sum()

    # ----------------------------------------------------------------------- merging

    def sums(self) -> list[float]:
        """The raw sums as one flat list: counts, confidence sums and right predictions per bin,
        then the summed NLL (3 x bins + 1 numbers). Adding the lists of several meters (e.g.
        :func:`comixup.train.distributed.sum_across_ranks`) gives the sums of their union."""
        if self._counts is None:
            return [0.0] * (3 * self.bins + 1)
        packed = torch.cat([self._counts, self._confidence, self._correct, self._nll[None]])
        return packed.cpu().tolist()

    @classmethod
    def from_sums(cls, sums: Sequence[float]) -> CalibrationMeter:
        """A meter (on the CPU) holding the sums of :meth:`sums` (or of several added together)."""
        values = [float(v) for v in sums]
        if len(values) < 4 or (len(values) - 1) % 3:
            raise ValueError(f"calibration sums come as 3 x bins + 1 numbers, got {len(values)}")
        bins = (len(values) - 1) // 3
        meter = cls(bins)
        packed = torch.tensor(values, dtype=torch.float64)
        meter._counts, meter._confidence, meter._correct = (packed[i * bins:(i + 1) * bins].clone() for i in range(3))
        meter._nll = packed[3 * bins].clone()
        return meter

    def merge(self, other: CalibrationMeter) -> CalibrationMeter:
        """A meter holding this one's predictions and ``other``'s (same bin count)."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge calibration meters of {self.bins} and {other.bins} bins")
        return CalibrationMeter.from_sums([a + b for a, b in zip(self.sums(), other.sums(), strict=True)])

    # ----------------------------------------------------------------------- results

    @property
    def count(self) -> int:
        """Predictions seen."""
        return 0 if self._counts is None else int(round(float(self._counts.sum())))

    @property
    def ece(self) -> float:
        """Expected calibration error in percent (0 with no predictions)."""
        if not self.count:
            return 0.0
        gap = (self._correct - self._confidence).abs().sum()
        return float(100.0 * gap / self._counts.sum())

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood of the true class, in nats (0 with no predictions)."""
        return float(self._nll) / self.count if self.count else 0.0

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy in percent."""
        return float(100.0 * self._correct.sum() / self._counts.sum()) if self.count else 0.0

    @property
    def mean_confidence(self) -> float:
        """Mean top-1 confidence in percent; above :attr:`accuracy` means overconfident on average."""
        return float(100.0 * self._confidence.sum() / self._counts.sum()) if self.count else 0.0

    def reliability(self) -> list[ReliabilityBin]:
        """Every bin with its count, accuracy and mean confidence: a reliability diagram's data."""
        counts = self.sums()
        bins = self.bins
        result = []
        for b in range(bins):
            n, confidence, correct = counts[b], counts[bins + b], counts[2 * bins + b]
            result.append(ReliabilityBin(lo=b / bins, hi=(b + 1) / bins, count=int(round(n)),
                                         accuracy=correct / n if n else None,
                                         confidence=confidence / n if n else None))
        return result
