"""Bookkeeping for the training script: meters, log lines, atomic files, checkpoints, RNG states.

Nothing here trains a model. ``main.py`` uses it to print and log the published lines, to write
``log.txt``/``log.pkl``/curve plots/checkpoints without ever leaving a half-written file, and to
load checkpoints, both its own format and the published ``checkpoint.pth.tar`` (SPEC §6), with
``torch.load(weights_only=True)`` only: no arbitrary code is unpickled.

``to_one_hot`` and ``distance`` are re-exported from :mod:`comix` because code written for the
published repository does ``from utils import to_one_hot, distance``.
"""
from __future__ import annotations

import argparse
import errno
import functools
import glob
import io
import os
import pickle
import random
import tempfile
import time
import zipfile
from typing import IO, Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from comix import distance, to_one_hot

__all__ = [
    "AverageMeter", "accuracy", "str2bool", "time_string", "convert_secs2time", "LogPrinter",
    "atomic_write", "atomic_write_bytes", "atomic_pickle_dump", "save_checkpoint", "remove_stale_temp_files",
    "CheckpointError", "load_checkpoint", "capture_rng_state", "restore_rng_state", "state_dict_mismatch",
    "plot_curves", "ScalarLog", "HISTORY_KEYS",
    "CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "BEST_NAME", "to_one_hot", "distance",
]

CHECKPOINT_NAME = "checkpoint.pth.tar"
BEST_NAME = "model_best.pth.tar"
CHECKPOINT_FORMAT = 1
"""Version of our checkpoint layout, stored under 'format' in every checkpoint we write."""

HISTORY_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")
"""The per-epoch lists of the published log.pkl (accuracies in percent)."""

_DATAPARALLEL_PREFIX = "module."


# ---------------------------------------------------------------------------------------------
# Meters and formatting
# ---------------------------------------------------------------------------------------------

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


def str2bool(value: str | bool) -> bool:
    """Parse a command-line boolean: true/false, yes/no, t/f, y/n, 1/0 in any case."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("yes", "true", "t", "y", "1"):
        return True
    if lowered in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected (true/false, yes/no or 1/0), got {value!r}")


def time_string() -> str:
    """The current UTC time as the published logs show it: ``[2020-10-12 04:53:43]``."""
    return time.strftime("[%Y-%m-%d %H:%M:%S]", time.gmtime())


def convert_secs2time(seconds: float) -> tuple[int, int, int]:
    """Seconds to (hours, minutes, seconds), each truncated."""
    seconds = max(0.0, seconds)
    hours = int(seconds // 3600)
    minutes = int((seconds - 3600 * hours) // 60)
    return hours, minutes, int(seconds - 3600 * hours - 60 * minutes)


class LogPrinter:
    """Prints lines to stdout and appends them to a log file (flushed per line) when one is open.

    ``LogPrinter(None)`` only prints (``--log_off``); ``LogPrinter(None, echo=False)`` does
    nothing at all (the ranks other than 0 of a distributed run). Use as a context manager or
    call close().
    """

    def __init__(self, path: str | os.PathLike | None, echo: bool = True) -> None:
        self.path = path
        self.echo = echo
        self._file: IO[str] | None = open(path, "a", encoding="utf-8") if path is not None else None

    def __call__(self, line: Any) -> None:
        text = str(line)
        if self.echo:
            print(text, flush=True)
        if self._file is not None:
            self._file.write(text + "\n")
            self._file.flush()

    def record(self, line: Any) -> None:
        """Append ``line`` to the log file only (not printed); nothing without a file."""
        if self._file is not None:
            self._file.write(str(line) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> LogPrinter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Atomic files
# ---------------------------------------------------------------------------------------------

def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file so that ``path`` holds either its old content or the complete new one.

    ``write(f)`` fills an in-memory buffer, which :func:`atomic_write_bytes` then writes. On any
    error nothing on disk changes and the error propagates (see there).
    """
    buffer = io.BytesIO()
    write(buffer)
    # release the view even on error: a live export keeps the buffer from being freed or resized
    with buffer.getbuffer() as data:
        atomic_write_bytes(path, data)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically: into a temporary file in the same folder (named
    ``.<name>.<random>.tmp``), fsynced, then renamed over ``path`` with os.replace, so ``path``
    holds either its old content or the complete new one, even if the process is killed.

    On any error (a full disk, an interruption) the temporary file is removed and the error
    propagates; an OSError with an errno comes back as the same kind of OSError naming ``path``
    ("[Errno 28] No space left on device: '.../checkpoint.pth.tar'"). A process killed
    outright leaves its temporary file behind (:func:`remove_stale_temp_files`).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp_path = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    except OSError as err:
        raise _naming(err, path) from err
    try:
        try:
            # mkstemp creates the file 0600; give it the mode a plain open() would have.
            os.fchmod(fd, _new_file_mode())
            _write_fully(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_path, path)
    except BaseException as err:
        try:
            os.remove(tmp_path)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError):
            raise _naming(err, path) from err
        raise
    _fsync_folder(folder)


def _write_fully(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written (a write may take only part of it).

    Every view is released on the way out, error or not: a traceback that kept one alive would
    keep the caller's buffer exported, and an io.BytesIO cannot be freed cleanly then.
    """
    with memoryview(data) as raw, raw.cast("B") as view:
        offset = 0
        while offset < len(view):
            with view[offset:] as rest:
                written = os.write(fd, rest)
            if written <= 0:
                raise OSError(errno.EIO, "the write made no progress")
            offset += written


def _naming(err: OSError, path: str) -> OSError:
    """``err`` as an OSError of the same kind that names ``path`` (unchanged without an errno)."""
    if err.errno is None:
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), path)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files that :func:`atomic_write_bytes` leaves in ``folder`` when a
    process is killed mid-write (``.<name>.<random>.tmp``); returns their paths. Call it only
    when no other process writes into ``folder``."""
    removed = []
    for path in sorted(glob.glob(os.path.join(glob.escape(os.fspath(folder)), ".*.tmp"))):
        if os.path.isfile(path):
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


@functools.cache
def _new_file_mode() -> int:
    """0o666 less the process umask (read once; os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable where the platform allows opening a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_pickle_dump(obj: Any, path: str | os.PathLike) -> None:
    """Pickle ``obj`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: pickle.dump(obj, f))


def save_checkpoint(state: dict, is_best: bool, exp_dir: str | os.PathLike) -> None:
    """Write ``state`` to exp_dir/checkpoint.pth.tar, and to exp_dir/model_best.pth.tar when
    ``is_best``; each file is replaced atomically. The state is serialised once."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with buffer.getbuffer() as data:
        atomic_write_bytes(os.path.join(exp_dir, CHECKPOINT_NAME), data)
        if is_best:
            atomic_write_bytes(os.path.join(exp_dir, BEST_NAME), data)


class ScalarLog:
    """Per-epoch TensorBoard scalars in ``folder`` (next to log.txt) when the optional tensorboard
    package is installed; without it, or with no folder (--log_off), every call does nothing."""

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.writer = None
        if folder is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self.writer = SummaryWriter(log_dir=str(folder))

    def add(self, epoch: int, scalars: dict[str, float]) -> None:
        if self.writer is None:
            return
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> "ScalarLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plot_curves(history: dict[str, list[float]], exp_dir: str | os.PathLike) -> None:
    """Write exp_dir/loss.png (train and test loss per epoch) and exp_dir/acc.png (train and
    test accuracy), as the published ``plotting`` did, atomically. Uses matplotlib's Agg canvas
    directly, so the caller's pyplot state and backend are left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for metric, filename in (("loss", "loss.png"), ("acc", "acc.png")):
        figure = Figure()
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        for split in ("train", "valid", "test"):
            values = history.get(f"{split}_{metric}")
            if values:
                axes.plot(np.asarray(values, dtype=float), label=f"{split}_{metric}")
        axes.set_xlabel("evaluation step")
        axes.set_ylabel("metrics")
        axes.legend(loc="upper right")
        figure.tight_layout()
        atomic_write(os.path.join(exp_dir, filename), functools.partial(figure.savefig, format="png"))


# ---------------------------------------------------------------------------------------------
# RNG states
# ---------------------------------------------------------------------------------------------

def capture_rng_state(include_cuda: bool = False, cuda_device: int | None = None) -> dict:
    """The global python, numpy and torch (CPU, and CUDA when ``include_cuda``) RNG states, as
    plain lists, numbers and uint8 tensors, so they load under ``weights_only=True``.

    CUDA: every visible device's state, or only ``cuda_device``'s when given (a distributed
    process, which must not touch the other processes' GPUs)."""
    version, internal, gauss_next = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {"bit_generator": numpy_state["bit_generator"],
                  "key": numpy_state["state"]["key"].tolist(),
                  "pos": int(numpy_state["state"]["pos"]),
                  "has_gauss": int(numpy_state["has_gauss"]),
                  "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if include_cuda and torch.cuda.is_available():
        if cuda_device is None:
            state["cuda"] = list(torch.cuda.get_rng_state_all())
        else:
            state["cuda"] = [torch.cuda.get_rng_state(cuda_device)]
    return state


def restore_rng_state(state: dict, cuda_device: int | None = None) -> None:
    """Set the global RNGs from :func:`capture_rng_state`'s dict. CUDA states are restored when
    CUDA is available and the saved count matches the visible devices, or, with
    ``cuda_device``, when exactly one state was saved (it goes to that device). Raises
    CheckpointError when the dict is malformed."""
    try:
        py = state["python"]
        py_state = (int(py["version"]), tuple(int(v) for v in py["internal"]), py["gauss_next"])
        np_saved = state["numpy"]
        np_state = {"bit_generator": str(np_saved["bit_generator"]),
                    "state": {"key": np.asarray(np_saved["key"], dtype=np.uint32), "pos": int(np_saved["pos"])},
                    "has_gauss": int(np_saved["has_gauss"]), "gauss": float(np_saved["gauss"])}
        torch_state = state["torch"].to("cpu", torch.uint8)
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"the checkpoint's saved random states are malformed ({_one_line(err)})") from err
    cuda_states = state.get("cuda") or []
    if not cuda_states or not torch.cuda.is_available():
        return
    if cuda_device is not None:
        if len(cuda_states) == 1:
            torch.cuda.set_rng_state(cuda_states[0].to("cpu", torch.uint8), cuda_device)
    elif len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.to("cpu", torch.uint8) for s in cuda_states])


# ---------------------------------------------------------------------------------------------
# Checkpoint loading
# ---------------------------------------------------------------------------------------------

class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line meant for the user."""


class PublishedRecorder:
    """Stand-in for the published ``logger.RecorderMeter`` so its pickle loads without that module.

    Its ``__module__``/``__qualname__`` are the published ones, which is the name the pickle
    asks for; only attribute assignment happens when it is unpickled (no method of the
    published class runs). Attributes: total_epoch, current_epoch, epoch_losses and
    epoch_accuracy (float32 arrays epochs x 2, column 0 train, column 1 test).
    """


PublishedRecorder.__module__ = "logger"
PublishedRecorder.__qualname__ = "RecorderMeter"
PublishedRecorder.__name__ = "RecorderMeter"


def _published_safe_globals() -> list:
    """What the published checkpoint's pickle needs beyond torch's defaults: the recorder
    stand-in and numpy's array reconstruction, under the numpy 1 name (``numpy.core``) the file
    was written with and the numpy 2 name (``numpy._core``), whichever numpy is installed."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 1.26
        from numpy.core.multiarray import _reconstruct
    allowed: list = [PublishedRecorder, np.ndarray, np.dtype,
                     (_reconstruct, "numpy.core.multiarray._reconstruct"),
                     (_reconstruct, "numpy._core.multiarray._reconstruct")]
    # Unpickling a dtype builds an instance of its concrete class (numpy.dtypes.Float32DType...).
    allowed += [type(np.dtype(t)) for t in (np.float32, np.float64, np.int64, np.int32)]
    return allowed


def _global_name(entry: Any) -> str:
    if isinstance(entry, tuple):
        return entry[1]
    return f"{entry.__module__}.{entry.__qualname__}"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] if text else type(err).__name__


def _load_published(path: str, map_location: Any) -> Any:
    """Load a checkpoint whose pickle references the published recorder, with weights_only and
    an allowlist; any other non-tensor object in it is refused."""
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        raise CheckpointError(f"{path} holds pickled objects (the published RecorderMeter?); reading them "
                              f"safely needs torch >= 2.6, found {torch.__version__}")
    allowed = _published_safe_globals()
    try:
        needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as err:  # not a zip checkpoint, unreadable pickle...
        raise CheckpointError(f"cannot read checkpoint {path}: {_one_line(err)}") from err
    unknown = sorted(needed - {_global_name(entry) for entry in allowed})
    if unknown:
        raise CheckpointError(f"checkpoint {path} holds objects other than tensors and the published "
                              f"RecorderMeter ({', '.join(unknown)}); refusing to unpickle them")
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {_one_line(err)}") from err


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint safely and return it in our in-memory form.

    Accepts our checkpoints, the published ``checkpoint.pth.tar`` (SPEC §6: DataParallel keys,
    a pickled ``logger.RecorderMeter``) and a bare state dict. Everything is read with
    ``torch.load(weights_only=True)``; the published recorder resolves to a stand-in class.

    Returns a dict with: epoch (finished epochs), arch (or None), state_dict (keys without the
    'module.' prefix), optimizer (state dict or None), best_acc, history (train_loss, train_acc,
    test_loss, test_acc and any valid_* lists), rng (rank 0's random states, or None),
    rng_ranks (every rank's states of a distributed run, or None), scaler (the float16
    GradScaler's state, or None), args (dict or None), num_classes (or None), dataset (or None)
    and source ('ours', 'published' or 'state_dict').
    Raises CheckpointError (one line) for a missing, unreadable or unexpected file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint file at {path}")
    _verify_archive(path)
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raw = _load_published(path, map_location)
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {_one_line(err)}") from err
    return _normalise(raw, path)


def _verify_archive(path: str) -> None:
    """torch.save's zip format stores a CRC-32 per member, which torch.load does not check: a
    damaged tensor would load as wrong weights. Check every member (one read of the file), and
    name a cut-off archive as such. Files that are not zip archives are left to torch.load
    (the legacy format, or not a checkpoint at all)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {_one_line(err)}") from err
    if not head:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty (a copy or save that never "
                              f"completed?); use another copy")
    if head != b"PK\x03\x04":
        return
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except Exception as err:  # BadZipFile, zlib.error, EOFError, OSError... all mean unusable
        raise CheckpointError(f"cannot read checkpoint {path}: the file is damaged or incomplete, e.g. cut "
                              f"off by a full disk or a killed copy ({_one_line(err)}); use another copy") from err
    if damaged is not None:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is damaged (its part {damaged} fails "
                              f"its CRC-32 check); use another copy")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _strip_prefix(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    if all(key.startswith(_DATAPARALLEL_PREFIX) for key in state_dict):
        return {key[len(_DATAPARALLEL_PREFIX):]: value for key, value in state_dict.items()}
    return dict(state_dict)


def _empty_history() -> dict[str, list[float]]:
    return {key: [] for key in HISTORY_KEYS}


def _normalise(raw: Any, path: str) -> dict:
    if _is_state_dict(raw):
        return {"epoch": 0, "arch": None, "state_dict": _strip_prefix(raw), "optimizer": None, "best_acc": 0.0,
                "history": _empty_history(), "rng": None, "rng_ranks": None, "scaler": None, "args": None,
                "num_classes": None, "dataset": None, "source": "state_dict"}
    if not isinstance(raw, dict) or not _is_state_dict(raw.get("state_dict")):
        raise CheckpointError(f"{path} is not a training checkpoint (expected a dict with a 'state_dict' "
                              f"of tensors, as main.py or the published code saves)")
    epoch = raw.get("epoch", 0)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise CheckpointError(f"{path} has an invalid epoch count {epoch!r}")
    version = raw.get("format", CHECKPOINT_FORMAT)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {version!r}; this code reads formats up to "
                              f"{CHECKPOINT_FORMAT} (update the code)")
    result = {"epoch": epoch, "arch": raw.get("arch"), "state_dict": _strip_prefix(raw["state_dict"]),
              "optimizer": raw.get("optimizer"), "rng": raw.get("rng"), "rng_ranks": raw.get("rng_ranks"),
              "scaler": raw.get("scaler"), "args": raw.get("args"),
              "num_classes": raw.get("num_classes"), "dataset": raw.get("dataset")}
    if "recorder" in raw:
        history = _history_from_recorder(raw["recorder"], path)
        result.update(history=history, best_acc=max(history["test_acc"], default=0.0), source="published")
        return result
    try:
        history = {key: [float(v) for v in values] for key, values in (raw.get("history") or {}).items()}
        for key in HISTORY_KEYS:
            history.setdefault(key, [])
        best_acc = float(raw.get("best_acc", max(history["test_acc"], default=0.0)))
    except (AttributeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has a malformed history or best_acc ({_one_line(err)}); expected lists "
                              f"of numbers under {', '.join(HISTORY_KEYS)}") from err
    result.update(history=history, best_acc=best_acc, source="ours")
    return result


def _history_from_recorder(recorder: Any, path: str) -> dict[str, list[float]]:
    """Per-epoch lists from the published RecorderMeter (rows up to current_epoch)."""
    try:
        done = int(recorder.current_epoch)
        losses = np.asarray(recorder.epoch_losses, dtype=np.float64)[:done]
        accs = np.asarray(recorder.epoch_accuracy, dtype=np.float64)[:done]
        if losses.ndim != 2 or losses.shape[1] != 2 or accs.shape != losses.shape:
            raise ValueError(f"recorder arrays of shapes {losses.shape} and {accs.shape}, expected (epochs, 2)")
    except (AttributeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has a recorder that is not the published RecorderMeter "
                              f"({_one_line(err)})") from err
    return {"train_loss": losses[:, 0].tolist(), "train_acc": accs[:, 0].tolist(),
            "test_loss": losses[:, 1].tolist(), "test_acc": accs[:, 1].tolist()}


def state_dict_mismatch(model_state: dict[str, Tensor], loaded: dict[str, Tensor],
                        limit: int = 3) -> str | None:
    """One line describing how ``loaded`` does not fit ``model_state`` (None when it fits):
    differing shapes first, then missing and unexpected keys, a few examples of each."""
    problems = []
    shapes = [f"{k} is {tuple(loaded[k].shape)} in the checkpoint but {tuple(v.shape)} in the model"
              for k, v in model_state.items() if k in loaded and loaded[k].shape != v.shape]
    missing = [k for k in model_state if k not in loaded]
    unexpected = [k for k in loaded if k not in model_state]
    if shapes:
        more = f" (and {len(shapes) - limit} more)" if len(shapes) > limit else ""
        problems.append("; ".join(shapes[:limit]) + more)
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            problems.append(f"{len(keys)} {what} keys (e.g. {', '.join(keys[:limit])})")
    return "; ".join(problems) if problems else None
