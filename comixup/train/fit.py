"""The epoch loop of ``main.py``: each epoch trains (:func:`~comixup.train.loop.train_one_epoch`),
evaluates (:func:`~comixup.train.loop.evaluate`), logs and saves a :class:`~comixup.train.engine.TrainingRun`."""
from __future__ import annotations

import time

from comixup.core import lifecycle
from comixup.core.logs import ScalarLog, convert_secs2time, time_string
from comixup.core.metrics import AverageMeter
from comixup.train import distributed
from comixup.train.engine import TrainingRun
from comixup.train.log_lines import calibration_line, eval_line, final_line, train_line
from comixup.train.loop import EvalResult, evaluate, train_one_epoch

__all__ = ["fit", "epoch_scalars"]


def fit(run: TrainingRun) -> None:
    """Train ``run`` from its start epoch to --epochs: each epoch trains, evaluates, logs and saves.

    A stop signal (SIGINT, SIGTERM, SIGUSR1) during an epoch is recorded, not acted on at once, and
    every process acts on it at the same point: after the step it arrived in (a mid-epoch
    checkpoint, :func:`~comixup.train.loop.train_one_epoch`), or, when it arrived while the epoch
    was being evaluated or saved, once the epoch's checkpoint is written. Under torchrun the signal
    reaches each rank at its own moment; a rank that stopped at once would leave the others waiting
    in a collective."""
    args, log = run.args, run.log
    if run.start_epoch >= args.epochs:
        log(f"=> nothing to train: the run starts at epoch {run.start_epoch} and --epochs is {args.epochs}")
    epoch_time = AverageMeter()
    with ScalarLog(run.exp_dir if run.dist.is_main else None) as scalars, lifecycle.graceful_stops():
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

            train_stats = train_one_epoch(run.net, run.train_loader, run.optimizer, run.method, epoch, plan=plan,
                                          dist_info=run.dist)
            log(train_line(train_stats))
            run.share_batchnorm_statistics()
            valid = None
            if run.valid_loader is not None:
                valid = evaluate(run.eval_net, run.valid_loader, run.num_classes, run.precision, run.dist)
                log(eval_line("Valid", valid))
            test = evaluate(run.eval_net, run.test_loader, run.num_classes, run.precision, run.dist,
                            ece_bins=args.ece_bins)
            log(eval_line("Test ", test))
            log(calibration_line(test))
            scalars.add(epoch, epoch_scalars(lr, train_stats, valid, test))

            is_best = run.record(train_stats, valid, test)
            run.save(epoch, is_best)
            epoch_time.update(time.time() - started)
            (stop,) = distributed.max_across_ranks([lifecycle.stop_requested()], run.dist)
            if stop:  # it arrived while the epoch was evaluated or saved: stop after its checkpoint
                raise lifecycle.Interrupted(int(stop))
        run.progress.epoch = None
    if run.history["test_acc"]:
        log(final_line(run.history["test_acc"]))


def epoch_scalars(lr: float, train_stats: dict, valid: EvalResult | None, test: EvalResult) -> dict[str, float]:
    """The TensorBoard scalars of one epoch."""
    scalars = {"train/loss": train_stats["loss"], "train/top1": train_stats["top1"], "learning_rate": lr,
               "mix_seconds_per_step": train_stats["mix_time"]}
    if valid is not None:
        scalars.update({"valid/loss": valid.loss, "valid/top1": valid.top1})
    scalars.update({"test/loss": test.loss, "test/top1": test.top1, "test/top5": test.top5, "test/ece": test.ece,
                    "test/nll": test.nll})
    return scalars
