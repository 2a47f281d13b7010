"""Checkpoints: what they hold, how they are written and read, and how they are applied to a run.

One owner for the checkpoint: ``main.py``, ``visualize.py`` and the evaluation commands go
through this module.

- Contents (:class:`TrainingState`): our format (version :data:`CHECKPOINT_FORMAT`) holds the
  model, the optimizer, finished epochs, best accuracy, per-epoch history, the arguments and
  every random state (one per process under torchrun), the fp16 GradScaler. The published
  ``checkpoint.pth.tar`` (DataParallel keys, a pickled ``logger.RecorderMeter``) and bare state
  dicts are read too.
- Writing (:func:`save_checkpoint`): atomically (temporary file, fsync, rename), so a kill or a
  full disk leaves the previous file complete; ``model_best.pth.tar`` is the same file under a
  second name (a hard link where the file system has them, else a copy).
- Reading (:func:`load_checkpoint`): ``torch.load(weights_only=True)`` only, with an allow-list
  for the published recorder; every part's CRC-32 is checked (a plain torch.load would load
  damaged weights silently). Failures are :class:`CheckpointError` with one line.
- Applying (:func:`load_weights`, :func:`load_optimizer`, :func:`restore_streams`) to the model,
  the optimizer and the random streams. Checking a checkpoint against a command's flags before any
  heavy work is :func:`comixup.train.classifier.classifier_spec`'s job.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import pickle
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from comixup.core.files import atomic_write_bytes
from comixup.train import distributed

__all__ = [
    "CHECKPOINT_NAME", "BEST_NAME", "CHECKPOINT_FORMAT", "HISTORY_KEYS", "CheckpointError", "TrainingState",
    "save_checkpoint", "load_checkpoint", "load_weights", "load_optimizer", "state_dict_mismatch",
    "capture_rng_state", "restore_rng_state", "capture_streams", "restore_streams", "seed_everything",
    "PublishedRecorder", "args_dict",
]

CHECKPOINT_NAME = "checkpoint.pth.tar"
BEST_NAME = "model_best.pth.tar"
CHECKPOINT_FORMAT = 1
"""Version of our checkpoint layout, stored under 'format' in every checkpoint we write."""

HISTORY_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")
"""The per-epoch lists of the published log.pkl (accuracies in percent)."""

_DATAPARALLEL_PREFIX = "module."


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line meant for the user."""


# ---------------------------------------------------------------------------------------------
# Contents
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainingState:
    """What one of our checkpoints holds (format :data:`CHECKPOINT_FORMAT`).

    epoch: finished epochs; arch, num_classes, dataset: what the model is for; state_dict: the
    plain model's weights (no 'module.' prefix, whatever wrapper trained it); optimizer: its
    state dict; best_acc and history (per-epoch lists, :data:`HISTORY_KEYS` and valid_* ones);
    args: the command line as a dict of plain values; rng: rank 0's random states
    (:func:`capture_rng_state`); rng_ranks and world_size: every rank's, under torchrun; scaler:
    the float16 GradScaler's state. A checkpoint written inside an epoch (every N steps, or on
    a pre-emption signal) also has step: the steps done of epoch ``epoch`` (0-based), and
    epoch_progress: that epoch's running sums so far (loss, top1, top5, count, mix_seconds,
    steps), so that the resumed epoch ends with the numbers an uninterrupted one would.
    """

    epoch: int
    arch: str
    state_dict: dict[str, Tensor]
    optimizer: dict | None
    best_acc: float
    history: dict[str, list[float]]
    args: dict[str, Any] | None
    rng: dict | None
    num_classes: int | None
    dataset: str | None
    rng_ranks: list[dict] | None = None
    world_size: int | None = None
    scaler: dict | None = field(default=None)
    step: int = 0
    epoch_progress: dict[str, float] | None = None

    def to_dict(self) -> dict:
        """The dict torch.save writes (optional entries only when present)."""
        saved = {"format": CHECKPOINT_FORMAT, "epoch": self.epoch, "arch": self.arch, "state_dict": self.state_dict,
                 "optimizer": self.optimizer, "best_acc": self.best_acc,
                 "history": {key: list(values) for key, values in self.history.items()}, "args": self.args,
                 "rng": self.rng, "num_classes": self.num_classes, "dataset": self.dataset}
        if self.rng_ranks is not None:
            saved.update(rng_ranks=self.rng_ranks, world_size=self.world_size)
        if self.scaler is not None:
            saved["scaler"] = self.scaler
        if self.step:
            saved.update(step=self.step, epoch_progress=dict(self.epoch_progress or {}))
        return saved


def args_dict(args: argparse.Namespace) -> dict[str, Any]:
    """The command line as plain values (lists for sequences), as a checkpoint stores it."""
    return {key: list(value) if isinstance(value, (list, tuple)) else value for key, value in vars(args).items()}


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def save_checkpoint(state: dict | TrainingState, is_best: bool, exp_dir: str | os.PathLike,
                    saved: Callable[[str], None] | None = None) -> None:
    """Write ``state`` to exp_dir/checkpoint.pth.tar atomically, call ``saved(path)`` once it is
    complete on disk, then, when ``is_best``, make exp_dir/model_best.pth.tar the same file.

    The best file is a hard link to the new checkpoint (no second write, no extra disk space),
    put in place by an atomic rename; where the file system has no hard links it is an atomic
    copy. Either way it is byte-identical to the checkpoint it was made from, and the next
    epoch's checkpoint (a new file renamed over the old name) leaves it alone."""
    if isinstance(state, TrainingState):
        state = state.to_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = os.path.join(exp_dir, CHECKPOINT_NAME)
    with buffer.getbuffer() as data:
        atomic_write_bytes(path, data)
        if saved is not None:
            saved(path)
        if is_best:
            _link_or_copy(path, os.path.join(exp_dir, BEST_NAME), data)


def _link_or_copy(source: str, target: str, data: memoryview) -> None:
    """Make ``target`` hold ``source``'s bytes (``data``) atomically: a hard link renamed into
    place, or, where links fail, an atomic write of ``data``."""
    folder = os.path.dirname(os.path.abspath(target))
    link = os.path.join(folder, f".{os.path.basename(target)}.{os.getpid()}.link.tmp")
    try:
        if os.path.lexists(link):
            os.remove(link)
        os.link(source, link)
    except OSError:
        atomic_write_bytes(target, data)
        return
    try:
        os.replace(link, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(link)
        raise

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
# Reading
# ---------------------------------------------------------------------------------------------

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

    Accepts our checkpoints, the published ``checkpoint.pth.tar`` (DataParallel keys,
    a pickled ``logger.RecorderMeter``) and a bare state dict. Everything is read with
    ``torch.load(weights_only=True)``; the published recorder resolves to a stand-in class.

    Returns a dict with: epoch (finished epochs), arch (or None), state_dict (keys without the
    'module.' prefix), optimizer (state dict or None), best_acc, history (train_loss, train_acc,
    test_loss, test_acc and any valid_* lists), rng (rank 0's random states, or None),
    rng_ranks (every rank's states of a distributed run, or None), scaler (the float16
    GradScaler's state, or None), args (dict or None), num_classes (or None), dataset (or None),
    step and epoch_progress (the position inside epoch ``epoch`` of a mid-epoch checkpoint; 0
    and None at an epoch's end) and source ('ours', 'published' or 'state_dict').
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
                "num_classes": None, "dataset": None, "step": 0, "epoch_progress": None, "source": "state_dict"}
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
    step = raw.get("step", 0)
    progress = raw.get("epoch_progress")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0 or (step and not isinstance(progress, dict)):
        raise CheckpointError(f"{path} has an invalid mid-epoch position (step {step!r}); use another checkpoint")
    result = {"epoch": epoch, "arch": raw.get("arch"), "state_dict": _strip_prefix(raw["state_dict"]),
              "optimizer": raw.get("optimizer"), "rng": raw.get("rng"), "rng_ranks": raw.get("rng_ranks"),
              "scaler": raw.get("scaler"), "args": raw.get("args"),
              "num_classes": raw.get("num_classes"), "dataset": raw.get("dataset"), "step": step,
              "epoch_progress": progress if step else None}
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


# ---------------------------------------------------------------------------------------------
# Checking against a run, and applying
# ---------------------------------------------------------------------------------------------

def load_weights(model: nn.Module, checkpoint: dict, path: str, describe: str) -> None:
    """Load the checkpoint's weights into the plain ``model``; CheckpointError naming the
    mismatch when they do not fit (``describe``: the model the run built, e.g. "preactresnet18
    with 10 classes for cifar10")."""
    mismatch = state_dict_mismatch(model.state_dict(), checkpoint["state_dict"])
    if mismatch:
        saved = ", ".join(str(v) for v in (checkpoint.get("arch"), checkpoint.get("dataset")) if v)
        saved = f" (saved for {saved})" if saved else ""
        raise CheckpointError(f"checkpoint {path}{saved} does not fit {describe}: {mismatch}")
    model.load_state_dict(checkpoint["state_dict"])


def load_optimizer(optimizer: torch.optim.Optimizer, checkpoint: dict, path: str, arch: str) -> bool:
    """Load the checkpoint's optimizer state (momenta); False when it has none. CheckpointError
    when it does not fit the model's parameters."""
    if checkpoint.get("optimizer") is None:
        return False
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"the optimizer state in {path} does not fit {arch}: "
                              f"{' '.join(str(err).split())}") from err
    return True


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's (which the mixers draw from) and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _cuda_index(dist_info: distributed.DistInfo) -> int | None:
    """The one GPU whose random state a distributed process saves and restores (None otherwise)."""
    return dist_info.device.index if dist_info.distributed and dist_info.device.type == "cuda" else None


def capture_streams(dist_info: distributed.DistInfo) -> tuple[dict, list[dict] | None]:
    """This process's random states, and under torchrun every rank's (gathered on every rank,
    a collective call); the second item is None in a single process."""
    rng = capture_rng_state(include_cuda=dist_info.device.type == "cuda", cuda_device=_cuda_index(dist_info))
    rng_ranks = distributed.gather_objects(rng, dist_info) if dist_info.distributed else None
    return rng, rng_ranks


def restore_streams(checkpoint: dict, seed: int, dist_info: distributed.DistInfo, start_epoch: int) -> None:
    """Continue the saved random streams (``checkpoint``: at least the loaded checkpoint's "rng"
    and "rng_ranks"): each rank its own when the checkpoint holds one per rank of this world
    size, else rank 0 the saved (rank 0's) one and the other ranks fresh streams from (seed,
    rank, start_epoch). A checkpoint without states (the published one) changes nothing."""
    per_rank = checkpoint.get("rng_ranks")
    if not dist_info.distributed:
        if checkpoint["rng"] is not None:
            restore_rng_state(checkpoint["rng"])
    elif per_rank and len(per_rank) == dist_info.world_size:
        restore_rng_state(per_rank[dist_info.rank], cuda_device=_cuda_index(dist_info))
    elif dist_info.is_main:
        if checkpoint["rng"] is not None:
            restore_rng_state(checkpoint["rng"], cuda_device=_cuda_index(dist_info))
    else:
        fresh = np.random.SeedSequence([seed, dist_info.rank, start_epoch]).generate_state(1, dtype=np.uint32)[0]
        seed_everything(int(fresh))
