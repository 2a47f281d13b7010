"""Train an image classifier with Co-Mixup (or plain training), as the published ``main.py`` did.

    python main.py --dataset cifar100 --data_dir ./data/cifar100/ --labels_per_class 500 \\
        --arch preactresnet18 --learning_rate 0.2 --epochs 300 --schedule 100 200 --gammas 0.1 0.1

The flags, their defaults, the experiment folder name and the log lines are the published ones
(SPEC §4-5). ``--method`` also trains the baselines of SPEC §8 (vanilla, mixup, manifold, cutmix,
puzzle) with the same loop; see :func:`resolve_method` for how it and the published ``--comix``
combine, and :mod:`methods` for each method's step. Each epoch writes ``log.txt``, ``log.pkl``,
``loss.png``, ``acc.png``, ``checkpoint.pth.tar`` and, when the test accuracy improves,
``model_best.pth.tar`` to ``--root_dir/<experiment name>`` (nothing with ``--log_off``).
``--resume`` continues a run from our checkpoints bit-identically on the CPU, and also reads the
published checkpoint.
``python main.py --evaluate --resume FILE`` only evaluates on the test set.

Several GPUs or nodes: ``torchrun --nproc_per_node N main.py ...`` trains with
DistributedDataParallel, one process per GPU (see :mod:`distributed`): --batch_size is per
process (the step's batch is N x batch_size), each process mixes its own batch, the logged
metrics are those of all processes together, and only rank 0 prints and writes files.
``--amp bf16|fp16`` runs the forward passes under autocast; ``--data_on_device`` keeps CIFAR
on the training device and augments it there.

The command line itself (parser, checks, experiment name) lives in :mod:`options`; this module
re-exports its public functions.

Exit status (every failure prints one ``error: ...`` line on stderr, and also appends it to
log.txt once that exists):

====  ==========================================================================================
0     success (also: a resumed run that had nothing left to train)
1     an I/O failure during the run: a file could not be written or read (disk full, ...);
      what was already on disk is intact (every file is replaced atomically)
2     bad input, found before any training: arguments, data, checkpoint, an experiment folder
      that cannot be created or written (--root_dir), the torchrun environment
3     the training loss became NaN or infinite; nothing of that epoch was saved
130   stopped by SIGINT (Ctrl-C); 143: stopped by SIGTERM (128 + the signal's number). Loader
      workers and threads are joined, the process group left, files are intact; a second
      SIGINT or SIGTERM ends the process at once
====  ==========================================================================================

A process killed outright (SIGKILL, 137 in a shell) loses at most the epoch in progress:
``--resume <experiment folder>/checkpoint.pth.tar`` with the same arguments continues it, to
the same weights as an uninterrupted run on the CPU. Unexpected exceptions (bugs) keep their
traceback and exit 1.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import io
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

import distributed
import methods
import models
from load_data import (
    DataError,
    DeviceLoader,
    EpochSampler,
    check_data_dir,
    dataset_info,
    get_datasets,
    get_device_loaders,
    get_loaders,
    shutdown_workers,
)
from mixup_parallel import PartitionPool
from options import experiment_name, get_args_parser, resolve_method, validate_args
from utils import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    HISTORY_KEYS,
    AverageMeter,
    CheckpointError,
    LogPrinter,
    ScalarLog,
    accuracy,
    atomic_pickle_dump,
    capture_rng_state,
    convert_secs2time,
    load_checkpoint,
    plot_curves,
    remove_stale_temp_files,
    restore_rng_state,
    save_checkpoint,
    state_dict_mismatch,
    time_string,
    to_one_hot,
)

__all__ = ["get_args_parser", "resolve_method", "validate_args", "experiment_name", "adjust_learning_rate",
           "warmup_factor", "train_one_epoch", "evaluate", "main", "TrainingDiverged", "RunError", "Interrupted",
           "EXIT_OK", "EXIT_IO", "EXIT_INPUT", "EXIT_DIVERGED"]

EXIT_OK = 0
EXIT_IO = 1
"""An I/O failure during the run (a file could not be written or read)."""
EXIT_INPUT = 2
"""Bad arguments, data, checkpoint, experiment folder or torchrun environment, before training."""
EXIT_DIVERGED = 3
"""The training loss became NaN or infinite."""


class TrainingDiverged(ArithmeticError):
    """The training loss of a step was NaN or infinite (on any process of a distributed run).

    epoch and step are 0-based, as the log counts them; value is this process's loss, or None
    when only another process's was not finite."""

    def __init__(self, epoch: int, step: int, value: float | None) -> None:
        self.epoch, self.step, self.value = epoch, step, value
        what = f"became {value}" if value is not None else "became NaN or infinite on another process"
        super().__init__(f"the training loss {what} at epoch {epoch}, step {step} (0-based, as in the log)")


class RunError(Exception):
    """A run that cannot go on: ``str(err)`` is the one line for the user, ``exit_code`` the
    process's exit status (see the module docstring)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived (``signum``); raised in the main thread by :func:`main`'s handler,
    a KeyboardInterrupt so that everything that cleans up after Ctrl-C does so for SIGTERM too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

# ---------------------------------------------------------------------------------------------
# Training pieces
# ---------------------------------------------------------------------------------------------

def adjust_learning_rate(optimizer: torch.optim.Optimizer, epoch: int, learning_rate: float,
                         schedule: Sequence[int], gammas: Sequence[float]) -> float:
    """Set and return lr = learning_rate x the gammas of every schedule epoch <= epoch."""
    lr = learning_rate
    for gamma, step in zip(gammas, schedule, strict=True):
        if epoch < step:
            break
        lr *= gamma
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def warmup_factor(step: int, warmup_steps: int, start_factor: float = 0.0) -> float:
    """The learning-rate factor of training step ``step`` (0-based, counted from the run's first
    epoch) under a linear warm-up of ``warmup_steps`` steps: ``start_factor + (1 - start_factor)
    (step + 1) / warmup_steps`` during the warm-up, reaching exactly 1 at its last step, and 1
    afterwards (or with no warm-up)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return start_factor + (1.0 - start_factor) * (step + 1) / warmup_steps


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of an epoch's training order (and loader-worker seeds): a function of (seed, epoch)
    only, distinct across pairs; ranks other than 0 of a distributed run get their own."""
    entropy = [seed, epoch] if rank == 0 else [seed, epoch, rank]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def set_train_epoch(loader: DataLoader | DeviceLoader, seed: int, epoch: int, rank: int = 0) -> None:
    """Make this epoch's training order and augmentation depend on (seed, epoch) alone, not on how
    many epochs this process ran before, so a resumed run sees the batches an uninterrupted one
    would.

    A loader of load_data.get_loaders has an :class:`load_data.EpochSampler` (order and loader
    workers' per-image seeds from its seed and the epoch), which takes the epoch; its generator
    (used only for the workers' start-up seeds) is re-seeded from (seed, epoch, rank). A
    DeviceLoader takes the epoch. ValueError for any other loader.
    """
    if isinstance(loader, DeviceLoader):
        loader.set_epoch(epoch)
        return
    if not isinstance(loader.sampler, EpochSampler) or loader.generator is None:
        raise ValueError("the training loader needs an EpochSampler and its own generator "
                         "(build it with load_data.get_loaders)")
    loader.sampler.set_epoch(epoch)
    loader.generator.manual_seed(epoch_seed(seed, epoch, rank))


def _bce_on_softmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The published loss: binary cross-entropy between softmax(logits) and (soft) targets, mean."""
    return methods.bce_on_probabilities(F.softmax(logits.float(), dim=1), targets)


def train_one_epoch(model: nn.Module, loader: DataLoader | DeviceLoader, optimizer: torch.optim.Optimizer,
                    method: methods.Method, args: argparse.Namespace, device: torch.device,
                    epoch: int, num_classes: int, lr_at_step: Callable[[int], float] | None = None,
                    dist_info: distributed.DistInfo | None = None) -> dict[str, float]:
    """One epoch of training steps over ``loader``: per batch, ``method`` (a :class:`methods.Method`)
    gives the loss, then one backward and one SGD step (SPEC §4 for comix, §8 for the others).

    With a float16 GradScaler (``method.precision.scaler``) the loss is scaled for the backward
    and the step goes through the scaler. ``lr_at_step(i)``, when given, sets the learning rate
    of the epoch's step i (the warm-up). Under DDP (``dist_info``) ``model`` is the DDP module,
    and the returned numbers are those of all processes together (sums and counts all-reduced);
    only rank 0 shows a progress bar.

    A NaN or infinite loss raises :class:`TrainingDiverged` right after its step (whose update is
    garbage and must not be saved); under DDP the ranks agree on it every step, so all of them
    stop at the same step.

    Returns loss (mean per image of the training loss, without the clean-input loss), top1, top5
    (percent; on the logits the method returns: clean images for vanilla, comix and puzzle,
    mixed images against each one's own label for mixup, manifold and cutmix), mix_time (mean
    seconds per step spent mixing), steps (per process) and images (trained on, all processes).
    """
    scaler = method.precision.scaler
    dist_info = dist_info or distributed.DistInfo(device=device)
    model.train()
    losses, top1, top5 = AverageMeter(), AverageMeter(), AverageMeter()
    mix_seconds = 0.0
    steps = 0
    # disable=None: the bar shows only when stderr is a terminal (not in logs, pipes or tests).
    progress = tqdm(loader, desc=f"Epoch {epoch:03d}/{args.epochs:03d}", leave=False,
                    disable=None if dist_info.is_main else True, dynamic_ncols=True)
    for images, target in progress:
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True).long()
        if lr_at_step is not None:
            lr = lr_at_step(steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        step = method(model, images, target)
        if scaler is not None:
            scaler.scale(step.loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            step.loss.backward()
            optimizer.step()
        mix_seconds += step.mix_time

        loss_value = step.loss.item()
        finite = math.isfinite(loss_value)
        if dist_info.distributed:
            finite = distributed.all_true(finite, dist_info)
        if not finite:
            progress.close()
            raise TrainingDiverged(epoch, steps, None if math.isfinite(loss_value) else loss_value)
        prec1, prec5 = accuracy(step.logits, target, topk=(1, 5))
        batch = images.shape[0]
        losses.update(loss_value, batch)
        top1.update(prec1, batch)
        top5.update(prec5, batch)
        steps += 1
        progress.set_postfix(loss=f"{losses.avg:.4f}", acc=f"{top1.avg:.2f}", refresh=False)
    progress.close()
    loss_sum, top1_sum, top5_sum, count, seconds, all_steps = distributed.sum_across_ranks(
        [losses.sum, top1.sum, top5.sum, losses.count, mix_seconds, steps], dist_info)
    return {"loss": loss_sum / count if count else 0.0, "top1": top1_sum / count if count else 0.0,
            "top5": top5_sum / count if count else 0.0, "mix_time": seconds / all_steps if all_steps else 0.0,
            "steps": steps, "images": int(count)}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader | DeviceLoader, device: torch.device, num_classes: int,
             precision: methods.Precision | None = None,
             dist_info: distributed.DistInfo | None = None) -> dict[str, float]:
    """Top-1/top-5 accuracy (percent) and the published loss, BCE(softmax(logits), one-hot)
    averaged over images, of ``model`` in eval mode on ``loader``; the model's mode is restored.

    Forwards run under ``precision``'s autocast (the loss in float32). Under DDP each rank
    evaluates its shard of the set with the plain (unwrapped) model, and the sums and counts are
    all-reduced, so every rank returns the whole set's numbers; ``images`` is their count.
    """
    precision = precision or methods.FLOAT32
    dist_info = dist_info or distributed.DistInfo(device=device)
    was_training = model.training
    model.eval()
    losses, top1, top5 = AverageMeter(), AverageMeter(), AverageMeter()
    try:
        for images, target in loader:
            images = images.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True).long()
            with precision.autocast():
                logits = model(images)
            loss = _bce_on_softmax(logits, to_one_hot(target, num_classes))
            prec1, prec5 = accuracy(logits, target, topk=(1, 5))
            batch = images.shape[0]
            losses.update(loss.item(), batch)
            top1.update(prec1, batch)
            top5.update(prec5, batch)
    finally:
        model.train(was_training)
    loss_sum, top1_sum, top5_sum, count = distributed.sum_across_ranks(
        [losses.sum, top1.sum, top5.sum, losses.count], dist_info)
    if not count:
        return {"top1": 0.0, "top5": 0.0, "loss": 0.0, "images": 0}
    return {"top1": top1_sum / count, "top5": top5_sum / count, "loss": loss_sum / count, "images": int(count)}


def _train_line(stats: dict[str, float]) -> str:
    return (f"**Train** Prec@1 {stats['top1']:.2f} Prec@5 {stats['top5']:.2f} "
            f"Error@1 {100 - stats['top1']:.2f}")


def _eval_line(label: str, stats: dict[str, float]) -> str:
    # label is 5 characters wide ("Test ", "Valid") like the published "**Test **"; trailing space kept.
    return (f"**{label}** Prec@1 {stats['top1']:.2f} Prec@5 {stats['top5']:.2f} "
            f"Error@1 {100 - stats['top1']:.2f} Loss: {stats['loss']:.3f} ")


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # CoMixup draws from numpy's global state
    torch.manual_seed(seed)  # also seeds every CUDA device


def _apply_checkpoint(checkpoint: dict, path: str, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                      args: argparse.Namespace, num_classes: int) -> None:
    """Load the checkpoint's weights (and optimizer state when ``optimizer``) into the plain model;
    CheckpointError naming the mismatch when they do not fit."""
    mismatch = state_dict_mismatch(model.state_dict(), checkpoint["state_dict"])
    if mismatch:
        saved = ", ".join(str(v) for v in (checkpoint["arch"], checkpoint["dataset"]) if v)
        saved = f" (saved for {saved})" if saved else ""
        raise CheckpointError(f"checkpoint {path}{saved} does not fit {args.arch} with {num_classes} classes "
                              f"for {args.dataset}: {mismatch}")
    model.load_state_dict(checkpoint["state_dict"])
    if optimizer is None or checkpoint["optimizer"] is None:
        return
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"the optimizer state in {path} does not fit {args.arch}: "
                              f"{' '.join(str(err).split())}") from err
    # The command line, not the checkpoint, decides the SGD settings (lr is set every epoch).
    for group in optimizer.param_groups:
        group.update(momentum=args.momentum, weight_decay=args.decay, nesterov=True)


def _json_args(args: argparse.Namespace) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, (list, tuple)) else value for key, value in vars(args).items()}


def _final_line(test_acc: list[float]) -> str:
    last = np.asarray(test_acc[-10:], dtype=np.float64)
    median = float(np.median(last))
    spread = max(last.max() - median, median - last.min())
    return f"\nfinal 10 epoch acc (median) : {median:.2f} (+- {spread:.2f})"


@dataclass
class _Runtime:
    """What the epoch loop needs besides the model: the process's place, the precision, the
    model to evaluate (the plain one under DDP) and the checkpoint extras of this run."""

    dist: distributed.DistInfo
    precision: methods.Precision
    eval_net: nn.Module
    steps_per_epoch: int


def _pick_device(args: argparse.Namespace) -> bool:
    return args.ngpu > 0 and torch.cuda.is_available()


@dataclass
class _Progress:
    """Where the run stands, for the one line of a run that stops early: the epoch in progress
    (0-based, None outside the epoch loop) and the last complete checkpoint (this run's, or the
    one it resumed from) with its finished epochs. Ranks other than 0 save nothing and say
    nothing about checkpoints."""

    exp_dir: str | None
    is_main: bool = True
    epoch: int | None = None
    checkpoint: str | None = None
    epochs_done: int = 0

    def saved(self, path: str, epochs_done: int) -> None:
        self.checkpoint, self.epochs_done = path, epochs_done

    def where(self) -> str:
        return "before training started" if self.epoch is None else f"in epoch {self.epoch} (0-based, as in the log)"

    def last_checkpoint(self, resume_hint: bool) -> str:
        if not self.is_main:
            return ""
        if self.checkpoint is None:
            return "nothing was saved (--log_off)" if self.exp_dir is None else "no checkpoint was saved yet"
        done = f"{self.epochs_done} epoch{'' if self.epochs_done == 1 else 's'} done"
        hint = f": continue with --resume {self.checkpoint}" if resume_hint else ""
        return f"the last complete checkpoint is {self.checkpoint} ({done}){hint}"


def _prepare_exp_dir(exp_dir: str) -> list[str]:
    """Create the experiment folder and prove it writable (a probe file written, fsynced and
    removed) before anything heavy happens; remove the temporary files that a killed run left in
    it, returning their paths. RunError (EXIT_INPUT) when it cannot be created or written."""
    try:
        os.makedirs(exp_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=exp_dir, prefix=".write-probe.", suffix=".tmp")
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.remove(probe)
        return remove_stale_temp_files(exp_dir)
    except OSError as err:
        raise RunError(f"cannot create or write the experiment folder {exp_dir} ({err.strerror or err}): "
                       f"--root_dir must be a folder this process can create and write into", EXIT_INPUT) from err


def _check_checkpoint_fits(checkpoint: dict, path: str, args: argparse.Namespace) -> None:
    """What a checkpoint says about itself (architecture, class count; ours record both) against
    the command line, before any heavy work; the weights themselves are checked once the model
    exists (:func:`_apply_checkpoint`)."""
    saved_arch = checkpoint.get("arch")
    if saved_arch and saved_arch != args.arch:
        raise CheckpointError(f"checkpoint {path} holds a {saved_arch} model but this run asks for --arch "
                              f"{args.arch}; use --arch {saved_arch} or another checkpoint")
    saved_classes = checkpoint.get("num_classes")
    classes = dataset_info(args.dataset).num_classes
    if isinstance(saved_classes, int) and classes is not None and saved_classes != classes:
        trained_on = f" ({checkpoint['dataset']})" if checkpoint.get("dataset") else ""
        raise CheckpointError(f"checkpoint {path} was trained for {saved_classes} classes{trained_on} but --dataset "
                              f"{args.dataset} has {classes}; use another checkpoint or --dataset")


def _os_error_text(err: OSError) -> str:
    """'No space left on device (ENOSPC): /path' from an OSError (its message when it has no errno)."""
    if err.errno is None:
        return " ".join(str(err).split()) or type(err).__name__
    text = f"{err.strerror or os.strerror(err.errno)} ({errno.errorcode.get(err.errno, err.errno)})"
    return f"{text}: {err.filename}" if err.filename else text


def _record(log: LogPrinter, line: str) -> None:
    """Append ``line`` to the log file only, if it can still be written (it may be the full disk
    that stopped the run)."""
    try:
        log.record(line)
    except OSError:
        pass


def run(args: argparse.Namespace, dist_info: distributed.DistInfo | None = None) -> int:
    """Train (or, with --evaluate, evaluate) as the validated ``args`` say; returns the exit status.

    Raises DataError / CheckpointError for problems the user must fix (found before training),
    and RunError, with its exit status and one line, for the rest: an experiment folder that
    cannot be written (checked before the data is read), a NaN/Inf loss, an I/O failure, SIGINT
    or SIGTERM (an :class:`Interrupted` or KeyboardInterrupt). That line is also appended to
    log.txt. Whatever ends the run, the mixing threads and the loader workers are joined first.

    ``dist_info`` (from :func:`distributed.session`) says where this process stands; None: a
    single process on the device --ngpu asks for. Under DDP only rank 0 prints and writes.
    """
    if dist_info is None:
        dist_info = distributed.DistInfo(device=torch.device("cuda") if _pick_device(args) else torch.device("cpu"))
    args.use_cuda = dist_info.device.type == "cuda"
    checkpoint = None
    if args.resume:
        checkpoint = load_checkpoint(args.resume, map_location="cpu")
        _check_checkpoint_fits(checkpoint, args.resume, args)
    exp_dir = None if args.log_off else os.path.join(args.root_dir, experiment_name(args))
    stale: list[str] = []
    if exp_dir is not None and dist_info.is_main:
        stale = _prepare_exp_dir(exp_dir)
    progress = _Progress(exp_dir=exp_dir, is_main=dist_info.is_main)
    if checkpoint is not None:
        progress.saved(args.resume, checkpoint["epoch"])
    log_path = os.path.join(exp_dir, "log.txt") if exp_dir is not None and dist_info.is_main else None
    with LogPrinter(log_path, echo=dist_info.is_main) as log:
        try:
            return _run(args, dist_info, checkpoint, exp_dir, stale, log, progress)
        except TrainingDiverged as err:
            failure = RunError(f"{err}; nothing of that epoch was saved; {progress.last_checkpoint(False)}",
                               EXIT_DIVERGED)
        except KeyboardInterrupt as stop:
            signum = getattr(stop, "signum", signal.SIGINT)
            parts = [f"stopped by {signal.Signals(signum).name} {progress.where()}", progress.last_checkpoint(True)]
            failure = RunError("; ".join(part for part in parts if part), 128 + signum)
        except OSError as err:
            parts = [f"I/O failure {progress.where()}: {_os_error_text(err)}", progress.last_checkpoint(True)]
            failure = RunError("; ".join(part for part in parts if part), EXIT_IO)
        _record(log, f"error: {failure}")
        raise failure


def _run(args: argparse.Namespace, dist_info: distributed.DistInfo, checkpoint: dict | None, exp_dir: str | None,
         stale: list[str], log: LogPrinter, progress: _Progress) -> int:
    """The body of :func:`run`, inside the open log."""
    device = dist_info.device
    is_main = dist_info.is_main
    blank_line = print if is_main else (lambda: None)
    if exp_dir is not None:
        log(f"save path : {exp_dir}")
    blank_line()
    log(dict(sorted(vars(args).items())))
    blank_line()
    log(f"Random Seed: {args.seed}")
    log("python version : {}".format(sys.version.replace("\n", " ")))
    log(f"torch  version : {torch.__version__}")
    log(f"cudnn  version : {torch.backends.cudnn.version()}")
    if stale:
        log(f"=> removed {len(stale)} temporary file(s) of an interrupted earlier run: "
            f"{', '.join(os.path.basename(p) for p in stale)}")
    if args.ngpu > 0 and device.type == "cpu":
        log("=> CUDA is not available: running on the CPU")
    if dist_info.distributed:
        log(f"=> distributed: {dist_info.world_size} processes ({dist_info.backend}), {args.batch_size} images "
            f"per process and step, {dist_info.world_size * args.batch_size} in all")

    # Rank 0 draws as a single process does; the others get their own streams.
    _seed_everything(distributed.rank_seed(args.seed, dist_info.rank))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    train_loader = valid_loader = test_loader = None
    pool = None
    try:
        info = dataset_info(args.dataset)
        train_set, valid_set, test_set, num_classes = get_datasets(
            args.dataset, args.data_dir, labels_per_class=args.labels_per_class or None,
            valid_labels_per_class=args.valid_labels_per_class, seed=args.seed)
        if args.data_on_device:
            train_loader, valid_loader, test_loader = get_device_loaders(
                args.dataset, train_set, valid_set, test_set, args.batch_size, device, seed=args.seed,
                rank=dist_info.rank, world_size=dist_info.world_size)
            log(f"=> data on {device}: {len(train_set)} training and {len(test_set)} test images as uint8")
        else:
            train_loader, valid_loader, test_loader = get_loaders(
                train_set, valid_set, test_set, args.batch_size, args.workers, seed=args.seed,
                distributed=dist_info.distributed, pin_memory=device.type == "cuda")

        log(f"=> creating model '{args.arch}'")
        model = models.build_model(args.arch, num_classes, args.dropout, stride=info.stride,
                                   initial_channels=args.initial_channels)
        if args.sync_bn:
            if dist_info.distributed:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                log("=> --sync_bn has no effect in a single process")
        model = model.to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate, momentum=args.momentum,
                                    weight_decay=args.decay, nesterov=True)
        precision = methods.Precision.from_flag(args.mixed_precision, device)

        history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
        if valid_loader is not None:
            history.update(valid_loss=[], valid_acc=[])
        best_acc = 0.0
        start_epoch = args.start_epoch
        resume_rng = None
        if checkpoint is not None:
            log(f"\n=> loading checkpoint '{args.resume}'")
            _apply_checkpoint(checkpoint, args.resume, model, None if args.evaluate else optimizer, args, num_classes)
            for key, values in checkpoint["history"].items():
                history[key] = list(values)
            best_acc = checkpoint["best_acc"]
            start_epoch = checkpoint["epoch"]
            if precision.scaler is not None and checkpoint.get("scaler"):
                precision.scaler.load_state_dict(checkpoint["scaler"])
            log(f"=> loaded checkpoint '{args.resume}' (epoch {checkpoint['epoch']})")
            resume_rng = {"rng": checkpoint["rng"], "rng_ranks": checkpoint.get("rng_ranks")}
            checkpoint.clear()  # its copy of the weights and momenta is not needed any more
        else:
            log(f"=> do not use any checkpoint for {args.arch} model")

        net: nn.Module = model
        if dist_info.distributed:
            net = nn.parallel.DistributedDataParallel(model,
                                                      device_ids=[device.index] if device.type == "cuda" else None)
        elif device.type == "cuda" and args.ngpu > 1:
            net = nn.DataParallel(model, device_ids=list(range(args.ngpu)))
        # Under DDP each rank evaluates its shard with the plain model (no collectives in its forward).
        runtime = _Runtime(dist=dist_info, precision=precision, eval_net=model if dist_info.distributed else net,
                           steps_per_epoch=len(train_loader))

        if args.evaluate:
            distributed.broadcast_buffers(model, dist_info)
            log(_eval_line("Test ", evaluate(runtime.eval_net, test_loader, device, num_classes, precision, dist_info)))
            return EXIT_OK

        workers = methods.pool_workers(args, processes_per_node=dist_info.local_world_size)
        pool = PartitionPool(workers) if workers else None
        method = methods.build_method(args, num_classes, info, executor=pool, precision=precision)
        # Last, so that nothing above (model init, data subset) shifts the resumed random streams.
        if resume_rng is not None:
            _restore_random_streams(resume_rng, args, dist_info, start_epoch)
        _train(args, net, model, optimizer, method, device, num_classes, train_loader, valid_loader,
               test_loader, history, best_acc, start_epoch, exp_dir, log, runtime, progress)
    finally:
        # Joined here, before the caller reports anything: no thread or worker process outlives the run.
        if pool is not None:
            pool.close()
        shutdown_workers(train_loader, valid_loader, test_loader)
    return EXIT_OK


def _cuda_index(dist_info: distributed.DistInfo) -> int | None:
    """The one GPU whose random state a distributed process saves and restores (None otherwise)."""
    return dist_info.device.index if dist_info.distributed and dist_info.device.type == "cuda" else None


def _restore_random_streams(checkpoint: dict, args: argparse.Namespace, dist_info: distributed.DistInfo,
                            start_epoch: int) -> None:
    """Continue the saved random streams (``checkpoint``: at least the loaded checkpoint's "rng"
    and "rng_ranks"): each rank its own when the checkpoint holds one per rank
    of this world size, else rank 0 the saved (rank 0's) one and the other ranks fresh streams
    from (seed, rank, start_epoch). A checkpoint without states (the published one) changes nothing."""
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
        seed = np.random.SeedSequence([args.seed, dist_info.rank, start_epoch]).generate_state(1, dtype=np.uint32)[0]
        _seed_everything(int(seed))


def _epoch_lr(args: argparse.Namespace, optimizer: torch.optim.Optimizer, epoch: int,
              steps_per_epoch: int) -> tuple[float, Callable[[int], float] | None]:
    """Set the epoch's learning rate; returns (the rate of its first step, the per-step rate during
    a warm-up epoch or None)."""
    lr = adjust_learning_rate(optimizer, epoch, args.learning_rate, args.schedule, args.gammas)
    if epoch >= args.warmup_epochs:
        return lr, None
    warmup_steps = args.warmup_epochs * steps_per_epoch

    def lr_at_step(step: int) -> float:
        return lr * warmup_factor(epoch * steps_per_epoch + step, warmup_steps, args.warmup_start_factor)

    first = lr_at_step(0)
    for group in optimizer.param_groups:
        group["lr"] = first
    return first, lr_at_step


def _train(args: argparse.Namespace, net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer,
           method: methods.Method, device: torch.device, num_classes: int, train_loader: DataLoader | DeviceLoader,
           valid_loader: DataLoader | DeviceLoader | None, test_loader: DataLoader | DeviceLoader,
           history: dict[str, list[float]], best_acc: float, start_epoch: int, exp_dir: str | None,
           log: LogPrinter, runtime: _Runtime, progress: _Progress) -> None:
    """The epoch loop: train, evaluate, log and save each epoch (net: what runs, model: what is saved;
    only rank 0 logs and saves, every rank takes part in the reductions); ``progress`` follows it."""
    dist_info = runtime.dist
    if start_epoch >= args.epochs:
        log(f"=> nothing to train: the run starts at epoch {start_epoch} and --epochs is {args.epochs}")
    epoch_time = AverageMeter()
    with ScalarLog(exp_dir if dist_info.is_main else None) as scalars:
        for epoch in range(start_epoch, args.epochs):
            progress.epoch = epoch
            started = time.time()
            lr, lr_at_step = _epoch_lr(args, optimizer, epoch, runtime.steps_per_epoch)
            set_train_epoch(train_loader, args.seed, epoch, dist_info.rank)
            hours, minutes, seconds = convert_secs2time(epoch_time.avg * (args.epochs - epoch))
            log(f"\n==>>{time_string()} [Epoch={epoch:03d}/{args.epochs:03d}] "
                f"[Need: {hours:02d}:{minutes:02d}:{seconds:02d}] [learning_rate={lr:6.4f}] "
                f"[Best : Accuracy={best_acc:.2f}, Error={100 - best_acc:.2f}]")

            train_stats = train_one_epoch(net, train_loader, optimizer, method, args, device, epoch, num_classes,
                                          lr_at_step=lr_at_step, dist_info=dist_info)
            log(_train_line(train_stats))
            epoch_scalars = {"train/loss": train_stats["loss"], "train/top1": train_stats["top1"],
                             "learning_rate": lr, "mix_seconds_per_step": train_stats["mix_time"]}
            # Rank 0's BatchNorm statistics, which it saves, for every rank's shard of the evaluation.
            distributed.broadcast_buffers(model, dist_info)
            if valid_loader is not None:
                valid_stats = evaluate(runtime.eval_net, valid_loader, device, num_classes, runtime.precision,
                                       dist_info)
                log(_eval_line("Valid", valid_stats))
                history["valid_loss"].append(valid_stats["loss"])
                history["valid_acc"].append(valid_stats["top1"])
                epoch_scalars.update({"valid/loss": valid_stats["loss"], "valid/top1": valid_stats["top1"]})
            test_stats = evaluate(runtime.eval_net, test_loader, device, num_classes, runtime.precision, dist_info)
            log(_eval_line("Test ", test_stats))
            epoch_scalars.update({"test/loss": test_stats["loss"], "test/top1": test_stats["top1"],
                                  "test/top5": test_stats["top5"]})
            scalars.add(epoch, epoch_scalars)

            # The first evaluated epoch is always the best so far, even at 0% accuracy.
            is_best = not history["test_acc"] or test_stats["top1"] > best_acc
            best_acc = test_stats["top1"] if is_best else best_acc
            history["train_loss"].append(train_stats["loss"])
            history["train_acc"].append(train_stats["top1"])
            history["test_loss"].append(test_stats["loss"])
            history["test_acc"].append(test_stats["top1"])

            if exp_dir is not None:
                rng = capture_rng_state(include_cuda=device.type == "cuda", cuda_device=_cuda_index(dist_info))
                rng_ranks = distributed.gather_objects(rng, dist_info) if dist_info.distributed else None
                if dist_info.is_main:
                    _save_epoch(args, model, optimizer, runtime, history, best_acc, is_best, epoch, rng, rng_ranks,
                                num_classes, exp_dir, progress)
            epoch_time.update(time.time() - started)
        progress.epoch = None

    if history["test_acc"]:
        log(_final_line(history["test_acc"]))


def _save_epoch(args: argparse.Namespace, model: nn.Module, optimizer: torch.optim.Optimizer, runtime: _Runtime,
                history: dict[str, list[float]], best_acc: float, is_best: bool, epoch: int, rng: dict,
                rng_ranks: list[dict] | None, num_classes: int, exp_dir: str, progress: _Progress) -> None:
    """Rank 0's files of a finished epoch: the checkpoint(s) first (what --resume needs), then
    log.pkl and the curves. Each file is replaced atomically, so a failure (a full disk) or a
    kill leaves every file either as it was or complete."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch + 1,
        "arch": args.arch,
        "state_dict": model.state_dict(),  # the plain model's: no 'module.' prefix, whatever the wrapper
        "optimizer": optimizer.state_dict(),
        "best_acc": best_acc,
        "history": {key: list(values) for key, values in history.items()},
        "args": _json_args(args),
        "rng": rng,
        "num_classes": num_classes,
        "dataset": args.dataset,
    }
    if rng_ranks is not None:
        state.update(rng_ranks=rng_ranks, world_size=runtime.dist.world_size)
    if runtime.precision.scaler is not None:
        state["scaler"] = runtime.precision.scaler.state_dict()
    save_checkpoint(state, is_best, exp_dir)
    progress.saved(os.path.join(exp_dir, CHECKPOINT_NAME), epoch + 1)
    atomic_pickle_dump({key: list(values) for key, values in history.items()}, os.path.join(exp_dir, "log.pkl"))
    plot_curves(history, exp_dir)


def _report(line: str) -> None:
    """Write one line to stderr in a single write, so that the lines of several ranks sharing a
    terminal or pipe (torchrun) do not interleave, even with PYTHONUNBUFFERED."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _error_line(err: BaseException | str, rank: int) -> str:
    return f"error: {err}" if rank == 0 else f"error: [rank {rank}] {err}"


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _SignalStops:
    """The state of :func:`_stop_on_signals`: the signals received, and whether the next one
    still interrupts (until :meth:`defer`)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.deferred = False

    def defer(self) -> None:
        """The run is over (done or failing, its report decided): a signal from now on is only
        recorded, so that it cannot replace that report while the process group is left."""
        self.deferred = True

    def handle(self, signum: int, frame: object) -> None:
        if self.received:  # a second signal: end at once, as without a handler
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received.append(signum)
        if not self.deferred:
            raise Interrupted(signum)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_SignalStops]:
    """While the body runs, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread, so
    that every ``finally`` runs (threads and loader workers joined, process group left, logs
    closed) and :func:`main` exits 128 + the signal's number; after :meth:`_SignalStops.defer`
    they are only recorded. A second signal of either kind ends the process at once, as without
    a handler. The previous handlers come back on exit. Outside the main thread (where handlers
    cannot be set) nothing changes."""
    stops = _SignalStops()
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return
    previous = {signum: signal.signal(signum, stops.handle) for signum in _STOP_SIGNALS}
    try:
        yield stops
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]), validate, and run; returns the exit status of the
    module docstring's table (0 success, 1 I/O failure, 2 bad input, 3 NaN/Inf loss, 130/143
    SIGINT/SIGTERM), every failure with one ``error:`` line on stderr.

    Arguments and the data folder are checked before anything is created or read; SIGINT and
    SIGTERM are handled (:func:`_stop_on_signals`) for the rest of the call. Under torchrun
    (WORLD_SIZE > 1 in the environment) the process joins the process group for the run and
    leaves it at the end, on an error or on a signal. Errors that every rank finds alike
    (arguments, a NaN/Inf loss, rank 0's files) are printed by rank 0 only; a data, checkpoint,
    launch error or a signal by every rank that meets it, prefixed with its rank on the others.
    """
    rank = distributed.env_rank()
    parser = get_args_parser()
    try:
        # The other ranks would repeat rank 0's usage message or --help word for word.
        with contextlib.redirect_stdout(io.StringIO()) if rank else contextlib.nullcontext(), \
                contextlib.redirect_stderr(io.StringIO()) if rank else contextlib.nullcontext():
            args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error already printed (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_INPUT
    if args.data_dir is None:
        args.data_dir = f"./data/{args.dataset}"
    try:
        resolve_method(args)
        validate_args(args)
        check_data_dir(args.dataset, args.data_dir)
    except (ValueError, DataError) as err:
        if rank == 0:
            _report(f"error: {err}")
        return EXIT_INPUT
    with _stop_on_signals() as stops:
        try:
            with distributed.session(use_cuda=_pick_device(args)) as dist_info:
                try:
                    return run(args, dist_info)
                finally:
                    # e.g. torchrun's SIGTERM after another rank failed first must not replace this report
                    stops.defer()
        except RunError as err:
            if rank == 0 or err.exit_code > 128:
                _report(_error_line(err, rank))
            return err.exit_code
        except (DataError, CheckpointError, distributed.LaunchError) as err:
            _report(_error_line(err, rank))
            return EXIT_INPUT
        except KeyboardInterrupt as stop:  # before run() took over, e.g. while joining the process group
            signum = getattr(stop, "signum", signal.SIGINT)
            _report(_error_line(f"stopped by {signal.Signals(signum).name} before training started", rank))
            return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
