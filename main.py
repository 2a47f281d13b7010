"""Train an image classifier with Co-Mixup (or a baseline), as the published ``main.py`` did.

    python main.py --dataset cifar100 --data_dir ./data/cifar100/ --labels_per_class 500 \\
        --arch preactresnet18 --learning_rate 0.2 --epochs 300 --schedule 100 200 --gammas 0.1 0.1

The flags, their defaults, the experiment folder name and the log lines are the published ones;
``--method`` also trains the baselines (vanilla, mixup, manifold, cutmix, puzzle) with the same
loop. Each epoch writes ``log.txt``, ``log.pkl``, ``loss.png``, ``acc.png``,
``checkpoint.pth.tar`` and, when the test accuracy improves, ``model_best.pth.tar`` to
``--root_dir/<experiment name>`` (nothing with ``--log_off``). ``--resume`` continues a run from
our checkpoints bit-identically on the CPU, and also reads the published checkpoint;
``python main.py --evaluate --resume FILE`` only evaluates on the test set. After every Test
line a ``**Calib**`` line gives the test set's expected calibration error (--ece_bins bins);
with --evaluate, ``--fgsm EPS ...`` and ``--corruption_dir DIR`` add the FGSM and CIFAR-C errors
(:mod:`comixup.evaluation`).
``--config FILE.yml`` takes flag values from a YAML file, and its ``phases:`` and ``lr_points:``
a multi-phase run (the published ImageNet recipe: configs/imagenet_fast.yml).

Several GPUs or nodes: ``torchrun --nproc_per_node N main.py ...`` trains with
DistributedDataParallel, one process per GPU: --batch_size is per process, each process mixes its
own batch, the logged metrics are those of all processes together, and only rank 0 prints and
writes files.

Where things live (package ``comixup``): the command line in :mod:`comixup.train.options`, the
run's state in :class:`comixup.train.engine.TrainingRun`, checkpoints in
:mod:`comixup.train.checkpoints`, the methods' per-batch losses in :mod:`comixup.train.methods`,
exit statuses, signals and the one-line errors in :mod:`comixup.core.lifecycle` (its docstring
has the table).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import os
import signal
import sys
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from comixup.core import lifecycle
from comixup.core.calibration import DEFAULT_BINS, CalibrationMeter
from comixup.core.lifecycle import (EXIT_DIVERGED, EXIT_INPUT, EXIT_IO, EXIT_OK, RunError, error_line, os_error_text,
                                    report, stop_on_signals)
from comixup.core.logs import LogPrinter, ScalarLog, convert_secs2time, time_string
from comixup.core.metrics import AverageMeter, accuracy
from comixup.core.tensors import to_one_hot
from comixup.data.cifar_c import open_release
from comixup.data.datasets import DataError, check_data_dir, dataset_info
from comixup.data.device_loader import DeviceLoader
from comixup.evaluation.report import RobustnessRequest, report_robustness
from comixup.train import distributed, methods
from comixup.train.checkpoints import CHECKPOINT_NAME, CheckpointError, check_fits, load_checkpoint
from comixup.train.engine import EpochPlan, TrainingRun, log_run_header
from comixup.train.experiment import RunProgress, auto_resume_path, open_exp_dir
from comixup.train.options import (AUTO_RESUME, data_folders, experiment_name, get_args_parser, parse_command_line,
                                   resolve_method, validate_args)

__all__ = ["get_args_parser", "train_one_epoch", "evaluate", "train", "run", "main", "TrainingDiverged",
           "EXIT_OK", "EXIT_IO", "EXIT_INPUT", "EXIT_DIVERGED"]


class TrainingDiverged(ArithmeticError):
    """The training loss of a step was NaN or infinite (on any process of a distributed run).

    epoch and step are 0-based, as the log counts them; value is this process's loss, or None
    when only another process's was not finite."""

    def __init__(self, epoch: int, step: int, value: float | None) -> None:
        self.epoch, self.step, self.value = epoch, step, value
        what = f"became {value}" if value is not None else "became NaN or infinite on another process"
        super().__init__(f"the training loss {what} at epoch {epoch}, step {step} (0-based, as in the log)")


# ---------------------------------------------------------------------------------------------
# One epoch
# ---------------------------------------------------------------------------------------------

def train_one_epoch(model: nn.Module, loader: DataLoader | DeviceLoader, optimizer: torch.optim.Optimizer,
                    method: methods.Method, epoch: int, *, plan: EpochPlan | None = None,
                    dist_info: distributed.DistInfo | None = None) -> dict[str, float]:
    """One epoch of training steps over ``loader``: per batch, ``method`` gives the loss, then one
    backward and one SGD step (through the float16 GradScaler of ``method.precision`` if any).

    ``plan`` (:class:`engine.EpochPlan`): the per-step learning rate (the warm-up), the steps a
    mid-epoch checkpoint already did (``loader`` skips their batches), when to write a mid-epoch
    checkpoint. Under DDP (``dist_info``) ``model`` is the DDP module, the returned numbers are
    those of all processes together, and only rank 0 shows a progress bar. Batches go to
    ``dist_info``'s device (default: the model's).

    After every step the processes agree (one all-reduce) on three things: a NaN or infinite
    loss raises :class:`TrainingDiverged` (that step's update is garbage and must not be saved);
    a due mid-epoch checkpoint is written; a stop signal received during the epoch
    (:func:`lifecycle.stop_requested`) writes one and raises :class:`lifecycle.Interrupted`. So
    every process stops at the same step.

    Returns loss (mean per image, without the clean-input loss), top1, top5 (percent; clean
    images' logits for vanilla, comix and puzzle, mixed images against each one's own label for
    mixup, manifold and cutmix), mix_time (mean seconds per step spent mixing), steps (per
    process) and images (trained on, all processes).
    """
    plan = plan or EpochPlan()
    dist_info = dist_info or distributed.DistInfo(device=next(model.parameters()).device)
    device, scaler = dist_info.device, method.precision.scaler
    done = dataclasses.replace(plan.start)
    model.train()
    # disable=None: the bar shows only when stderr is a terminal (not in logs, pipes or tests).
    progress = tqdm(loader, desc=f"Epoch {epoch:03d}", leave=False, disable=None if dist_info.is_main else True,
                    dynamic_ncols=True)
    for images, target in progress:
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True).long()
        if plan.lr_at_step is not None:
            for group in optimizer.param_groups:
                group["lr"] = plan.lr_at_step(done.steps)
        optimizer.zero_grad(set_to_none=True)
        step = method(model, images, target)
        if scaler is not None:
            scaler.scale(step.loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            step.loss.backward()
            optimizer.step()

        loss_value = step.loss.item()
        diverged, stop, save = distributed.max_across_ranks(
            [not math.isfinite(loss_value), lifecycle.stop_requested(), plan.checkpoint_due(done.steps + 1)],
            dist_info)
        if diverged:
            progress.close()
            raise TrainingDiverged(epoch, done.steps, None if math.isfinite(loss_value) else loss_value)
        prec1, prec5 = accuracy(step.logits, target, topk=(1, 5))
        batch = images.shape[0]
        done.loss += loss_value * batch
        done.top1 += prec1 * batch
        done.top5 += prec5 * batch
        done.images += batch
        done.mix_seconds += step.mix_time
        done.steps += 1
        progress.set_postfix(loss=f"{done.loss / done.images:.4f}", acc=f"{done.top1 / done.images:.2f}",
                             refresh=False)
        if save or stop:
            plan.write_checkpoint(done)
        if stop:
            progress.close()
            raise lifecycle.Interrupted(int(stop))
    progress.close()
    (stop,) = distributed.max_across_ranks([lifecycle.stop_requested()], dist_info)
    if stop:  # after the last step: save the finished steps, evaluate after the resume
        plan.write_checkpoint(done)
        raise lifecycle.Interrupted(int(stop))
    loss_sum, top1_sum, top5_sum, count, seconds, all_steps = distributed.sum_across_ranks(
        [done.loss, done.top1, done.top5, done.images, done.mix_seconds, done.steps], dist_info)
    return {"loss": loss_sum / count if count else 0.0, "top1": top1_sum / count if count else 0.0,
            "top5": top5_sum / count if count else 0.0, "mix_time": seconds / all_steps if all_steps else 0.0,
            "steps": done.steps, "images": int(count)}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader | DeviceLoader, num_classes: int,
             precision: methods.Precision | None = None,
             dist_info: distributed.DistInfo | None = None, ece_bins: int = DEFAULT_BINS) -> dict[str, float]:
    """Top-1/top-5 accuracy (percent) and the published loss, BCE(softmax(logits), one-hot)
    averaged over images, of ``model`` in eval mode on ``loader``; the model's mode is restored.
    Also its calibration (:mod:`comixup.core.calibration`): ece (percent, ``ece_bins`` bins), nll
    (mean, nats) and confidence (mean top-1 softmax probability, percent).

    Forwards run under ``precision``'s autocast (the loss in float32). Under DDP each rank
    evaluates its shard of the set with the plain (unwrapped) model, and the sums and counts are
    all-reduced, so every rank returns the whole set's numbers; ``images`` is their count.
    """
    precision = precision or methods.FLOAT32
    dist_info = dist_info or distributed.DistInfo(device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    losses, top1, top5 = AverageMeter(), AverageMeter(), AverageMeter()
    calibration = CalibrationMeter(ece_bins)
    try:
        for images, target in loader:
            images = images.to(dist_info.device, non_blocking=True)
            target = target.to(dist_info.device, non_blocking=True).long()
            with precision.autocast():
                logits = model(images)
            probs = F.softmax(logits.float(), dim=1)
            loss = methods.bce_on_probabilities(probs, to_one_hot(target, num_classes))
            prec1, prec5 = accuracy(logits, target, topk=(1, 5))
            losses.update(loss.item(), images.shape[0])
            top1.update(prec1, images.shape[0])
            top5.update(prec5, images.shape[0])
            calibration.update(logits, target)
    finally:
        model.train(was_training)
    # one all-reduce: the published sums first, then the calibration's raw sums (never averages)
    loss_sum, top1_sum, top5_sum, count, *calibration_sums = distributed.sum_across_ranks(
        [losses.sum, top1.sum, top5.sum, losses.count, *calibration.sums()], dist_info)
    calibration = CalibrationMeter.from_sums(calibration_sums)
    if not count:
        return {"top1": 0.0, "top5": 0.0, "loss": 0.0, "images": 0, "ece": 0.0, "nll": 0.0, "confidence": 0.0}
    return {"top1": top1_sum / count, "top5": top5_sum / count, "loss": loss_sum / count, "images": int(count),
            "ece": calibration.ece, "nll": calibration.nll, "confidence": calibration.mean_confidence}


def _train_line(stats: dict[str, float]) -> str:
    return (f"**Train** Prec@1 {stats['top1']:.2f} Prec@5 {stats['top5']:.2f} "
            f"Error@1 {100 - stats['top1']:.2f}")


def _eval_line(label: str, stats: dict[str, float]) -> str:
    # label is 5 characters wide ("Test ", "Valid") like the published "**Test **"; trailing space kept.
    return (f"**{label}** Prec@1 {stats['top1']:.2f} Prec@5 {stats['top5']:.2f} "
            f"Error@1 {100 - stats['top1']:.2f} Loss: {stats['loss']:.3f} ")


def _calibration_line(stats: dict[str, float], bins: int) -> str:
    return (f"**Calib** ECE {stats['ece']:.2f} NLL {stats['nll']:.4f} Conf {stats['confidence']:.2f} "
            f"({bins} bins)")


def _final_line(test_acc: list[float]) -> str:
    last = np.asarray(test_acc[-10:], dtype=np.float64)
    median = float(np.median(last))
    spread = max(last.max() - median, median - last.min())
    return f"\nfinal 10 epoch acc (median) : {median:.2f} (+- {spread:.2f})"


# ---------------------------------------------------------------------------------------------
# The epoch loop
# ---------------------------------------------------------------------------------------------

def train(run: TrainingRun) -> None:
    """Train ``run`` from its start epoch to --epochs: each epoch trains, evaluates, logs and saves."""
    args, log = run.args, run.log
    if run.start_epoch >= args.epochs:
        log(f"=> nothing to train: the run starts at epoch {run.start_epoch} and --epochs is {args.epochs}")
    epoch_time = AverageMeter()
    with ScalarLog(run.exp_dir if run.dist.is_main else None) as scalars:
        for epoch in range(run.start_epoch, args.epochs):
            started = time.time()
            log.hold()  # the epoch's lines reach log.txt with the checkpoint that holds the epoch
            lr, plan = run.begin_epoch(epoch)
            if plan.start.steps:
                log(f"=> continuing epoch {epoch:03d}/{args.epochs:03d} at step {plan.start.steps} of "
                    f"{run.steps_per_epoch} (a mid-epoch checkpoint)")
            else:
                hours, minutes, seconds = convert_secs2time(epoch_time.avg * (args.epochs - epoch))
                log(f"\n==>>{time_string()} [Epoch={epoch:03d}/{args.epochs:03d}] "
                    f"[Need: {hours:02d}:{minutes:02d}:{seconds:02d}] [learning_rate={lr:6.4f}] "
                    f"[Best : Accuracy={run.best_acc:.2f}, Error={100 - run.best_acc:.2f}]")

            with lifecycle.graceful_stops():
                train_stats = train_one_epoch(run.net, run.train_loader, run.optimizer, run.method, epoch, plan=plan,
                                              dist_info=run.dist)
            log(_train_line(train_stats))
            run.share_batchnorm_statistics()
            valid_stats = None
            if run.valid_loader is not None:
                valid_stats = evaluate(run.eval_net, run.valid_loader, run.num_classes, run.precision, run.dist)
                log(_eval_line("Valid", valid_stats))
            test_stats = evaluate(run.eval_net, run.test_loader, run.num_classes, run.precision, run.dist,
                                  ece_bins=args.ece_bins)
            log(_eval_line("Test ", test_stats))
            log(_calibration_line(test_stats, args.ece_bins))
            scalars.add(epoch, _epoch_scalars(lr, train_stats, valid_stats, test_stats))

            is_best = run.record(train_stats, valid_stats, test_stats)
            run.save(epoch, is_best)
            epoch_time.update(time.time() - started)
        run.progress.epoch = None
    if run.history["test_acc"]:
        log(_final_line(run.history["test_acc"]))


def _epoch_scalars(lr: float, train_stats: dict, valid_stats: dict | None, test_stats: dict) -> dict[str, float]:
    scalars = {"train/loss": train_stats["loss"], "train/top1": train_stats["top1"], "learning_rate": lr,
               "mix_seconds_per_step": train_stats["mix_time"]}
    if valid_stats is not None:
        scalars.update({"valid/loss": valid_stats["loss"], "valid/top1": valid_stats["top1"]})
    scalars.update({"test/loss": test_stats["loss"], "test/top1": test_stats["top1"],
                    "test/top5": test_stats["top5"], "test/ece": test_stats["ece"], "test/nll": test_stats["nll"]})
    return scalars


# ---------------------------------------------------------------------------------------------
# The run and the command
# ---------------------------------------------------------------------------------------------

def run(args: argparse.Namespace, dist_info: distributed.DistInfo | None = None) -> int:
    """Train (or, with --evaluate, evaluate) as the validated ``args`` say; returns the exit status.

    An explicit checkpoint to resume is read and checked first; then the experiment folder is
    created, locked for this run (a second run into it stops here, exit 2) and proven writable;
    then ``--resume auto`` looks for the folder's checkpoint; all before any data is read.
    Raises DataError / CheckpointError for problems the user must fix, and RunError (exit status
    and one line, also appended to log.txt) for a NaN/Inf loss, an I/O failure or a signal.
    Whatever ends the run, the mixing threads and the loader workers are joined and the folder
    is released. ``dist_info``: where this process stands (None: a single process on the device
    --ngpu asks for); under torchrun only rank 0 locks and writes.
    """
    if dist_info is None:
        dist_info = distributed.DistInfo(device=torch.device("cuda") if _use_cuda(args) else torch.device("cpu"))
    exp_dir = None if args.log_off else os.path.join(args.root_dir, experiment_name(args))
    auto = args.resume == AUTO_RESUME
    checkpoint = _read_checkpoint(args) if args.resume and not auto else None
    with contextlib.ExitStack() as held:
        stale: list[str] = []
        if exp_dir is not None and dist_info.is_main:
            lock, stale = open_exp_dir(exp_dir)
            held.callback(lock.release)
        notes = [f"=> removed {len(stale)} temporary file(s) of an interrupted earlier run: "
                 f"{', '.join(os.path.basename(p) for p in stale)}"] if stale else []
        if auto:
            args.resume = (auto_resume_path(exp_dir, CHECKPOINT_NAME) if exp_dir is not None else None) or ""
            checkpoint = _read_checkpoint(args) if args.resume else None
            notes.append(f"=> --resume auto: continuing from {args.resume}" if args.resume else
                         f"=> --resume auto: no checkpoint in {exp_dir or 'any folder (--log_off)'}, starting fresh")
        return _train_or_evaluate(args, dist_info, checkpoint, RunProgress(exp_dir, dist_info.is_main), notes)


def _read_checkpoint(args: argparse.Namespace) -> dict:
    checkpoint = load_checkpoint(args.resume, map_location="cpu")
    check_fits(checkpoint, args.resume, args.arch, dataset_info(args.dataset).num_classes, args.dataset)
    return checkpoint


def _train_or_evaluate(args: argparse.Namespace, dist_info: distributed.DistInfo, checkpoint: dict | None,
                       progress: RunProgress, notes: list[str]) -> int:
    """The body of :func:`run` once the folder is held: log, build, train or evaluate, and turn what
    stops the run into a RunError with its one line."""
    exp_dir = progress.exp_dir
    if checkpoint is not None:
        progress.saved(args.resume, checkpoint["epoch"], checkpoint["step"])
    log_path = os.path.join(exp_dir, "log.txt") if exp_dir is not None and dist_info.is_main else None
    with LogPrinter(log_path, echo=dist_info.is_main) as log:
        try:
            log_run_header(log, args, dist_info, notes)
            with TrainingRun.build(args, dist_info, log, progress, checkpoint) as training:
                if args.evaluate:
                    training.share_batchnorm_statistics()
                    test_stats = evaluate(training.eval_net, training.test_loader, training.num_classes,
                                          training.precision, dist_info, ece_bins=args.ece_bins)
                    log(_eval_line("Test ", test_stats))
                    log(_calibration_line(test_stats, args.ece_bins))
                    report_robustness(training.eval_net, training.test_loader, RobustnessRequest.from_args(args),
                                      precision=training.precision, dist_info=dist_info, log=log)
                else:
                    train(training)
            return EXIT_OK
        except TrainingDiverged as err:
            failure = RunError(f"{err}; nothing of that epoch was saved; {progress.last_checkpoint(False)}",
                               EXIT_DIVERGED)
        except KeyboardInterrupt as stop:
            signum = getattr(stop, "signum", signal.SIGINT)
            parts = [f"stopped by {signal.Signals(signum).name} {progress.where()}", progress.last_checkpoint(True)]
            failure = RunError("; ".join(part for part in parts if part), 128 + signum)
        except OSError as err:
            parts = [f"I/O failure {progress.where()}: {os_error_text(err)}", progress.last_checkpoint(True)]
            failure = RunError("; ".join(part for part in parts if part), EXIT_IO)
        with contextlib.suppress(OSError):  # it may be the full disk that stopped the run
            log.record(f"error: {failure}")
        raise failure


def _use_cuda(args: argparse.Namespace) -> bool:
    return args.ngpu > 0 and torch.cuda.is_available()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]), validate, and run; returns the exit status of
    :mod:`lifecycle`'s table, every failure with one ``error:`` line on stderr.

    Arguments and the data folder are checked before anything is created or read; SIGINT and
    SIGTERM are handled for the rest of the call. Under torchrun the process joins the process
    group for the run and leaves it at the end, on an error or on a signal. Errors that every
    rank finds alike (arguments, a NaN/Inf loss, rank 0's files) are printed by rank 0 only; a
    data, checkpoint, launch error or a signal by every rank that meets it, prefixed with its
    rank on the others.
    """
    rank = distributed.env_rank()
    # The other ranks would repeat rank 0's usage message or --help word for word.
    with contextlib.redirect_stdout(io.StringIO()) if rank else contextlib.nullcontext(), \
            contextlib.redirect_stderr(io.StringIO()) if rank else contextlib.nullcontext():
        args = parse_command_line(argv)
    if isinstance(args, int):
        return args
    if args.data_dir is None:
        args.data_dir = f"./data/{args.dataset}"
    try:
        resolve_method(args)
        validate_args(args)
        for folder in data_folders(args):
            check_data_dir(args.dataset, folder)
        if args.corruption_dir:  # its file headers and labels: the images are read after the test set
            open_release(args.corruption_dir, dataset_info(args.dataset).num_classes)
    except (ValueError, DataError) as err:
        if rank == 0:
            report(f"error: {err}")
        return EXIT_INPUT
    with stop_on_signals() as stops:
        try:
            with distributed.session(use_cuda=_use_cuda(args)) as dist_info:
                try:
                    return run(args, dist_info)
                finally:
                    # e.g. torchrun's SIGTERM after another rank failed first must not replace this report
                    stops.defer()
        except RunError as err:
            if rank == 0 or err.exit_code > 128:
                report(error_line(err, rank))
            return err.exit_code
        except (DataError, CheckpointError, distributed.LaunchError) as err:
            report(error_line(err, rank))
            return EXIT_INPUT
        except KeyboardInterrupt as stop:  # before run() took over, e.g. while joining the process group
            signum = getattr(stop, "signum", signal.SIGINT)
            report(error_line(f"stopped by {signal.Signals(signum).name} before training started", rank))
            return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
