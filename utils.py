"""The published module ``utils``: the helpers of the training script.

``from utils import to_one_hot, distance`` and the meters and time helpers work as in the
published repository. They live in :mod:`comixup.core`, which imports no mixing code.
"""
from comixup.core.logs import LogPrinter, ScalarLog, convert_secs2time, plot_curves, time_string
from comixup.core.metrics import AverageMeter, accuracy
from comixup.core.tensors import distance, to_one_hot

__all__ = ["AverageMeter", "accuracy", "time_string", "convert_secs2time", "LogPrinter", "ScalarLog", "plot_curves",
           "to_one_hot", "distance"]
