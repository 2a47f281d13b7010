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
(:mod:`comixup.evaluation`; ``--corruption_average published``: Puzzle Mix's mean accuracy over
every file of the folder instead).
``--config FILE.yml`` takes flag values from a YAML file, and its ``phases:`` and ``lr_points:``
a multi-phase run (the published ImageNet recipe: configs/imagenet_fast.yml).

Several GPUs or nodes: ``torchrun --nproc_per_node N main.py ...`` trains with
DistributedDataParallel, one process per GPU: --batch_size is per process, each process mixes its
own batch, the logged metrics are those of all processes together, and only rank 0 prints and
writes files.

Where things live (package ``comixup``): the command line in :mod:`comixup.train.options`, the
run's state in :class:`comixup.train.engine.TrainingRun`, the epoch loop in
:mod:`comixup.train.fit`, one training epoch and the one evaluation pass in
:mod:`comixup.train.loop`, checkpoints in :mod:`comixup.train.checkpoints`, the methods' per-batch
losses in :mod:`comixup.train.methods`, exit statuses, signals and the one-line errors in
:mod:`comixup.core.lifecycle` (its docstring has the table). This file only parses, runs and
reports.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
from collections.abc import Sequence

import torch

from comixup.core.lifecycle import (
    EXIT_DIVERGED,
    EXIT_INPUT,
    EXIT_IO,
    EXIT_OK,
    RunError,
    error_line,
    os_error_text,
    report,
    stop_on_signals,
)
from comixup.core.logs import LogPrinter
from comixup.data.cifar_c import PUBLISHED_AVERAGE, open_release
from comixup.data.datasets import DataError, check_data_dir, dataset_info
from comixup.evaluation.report import RobustnessRequest, report_evaluation
from comixup.models import WIDTH_ARCHS
from comixup.train import distributed
from comixup.train.checkpoints import CHECKPOINT_NAME, CheckpointError, load_checkpoint
from comixup.train.classifier import classifier_spec
from comixup.train.engine import TrainingRun, log_run_header
from comixup.train.experiment import RunProgress, auto_resume_path, open_exp_dir
from comixup.train.fit import fit
from comixup.train.loop import TrainingDiverged, evaluate, train_one_epoch
from comixup.train.options import (
    AUTO_RESUME,
    data_folders,
    experiment_name,
    get_args_parser,
    parse_command_line,
    resolve_method,
    validate_args,
)

__all__ = ["get_args_parser", "train_one_epoch", "evaluate", "train", "run", "main", "TrainingDiverged",
           "EXIT_OK", "EXIT_IO", "EXIT_INPUT", "EXIT_DIVERGED"]

train = fit  # the published script's name for the epoch loop


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
    """The --resume checkpoint, checked against the flags (architecture, classes, width) before any
    data is read."""
    checkpoint = load_checkpoint(args.resume, map_location="cpu")
    width = args.initial_channels if args.arch in WIDTH_ARCHS else None
    classifier_spec(checkpoint, args.resume, arch=args.arch, num_classes=dataset_info(args.dataset).num_classes,
                    initial_channels=width, dataset=args.dataset)
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
                    report_evaluation(training.eval_net, training.test_loader, training.num_classes,
                                      RobustnessRequest.from_args(args), precision=training.precision,
                                      dist_info=dist_info, log=log)
                else:
                    fit(training)
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
            open_release(args.corruption_dir, dataset_info(args.dataset).num_classes,
                         check_every_file=args.corruption_average == PUBLISHED_AVERAGE)
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
