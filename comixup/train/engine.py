"""One run's state, built once: :class:`TrainingRun` holds the model, its DDP wrapper, the
optimizer, the method, the loaders, the history, the best accuracy, the log and the precision;
``main.py`` trains it epoch by epoch, evaluates it and saves it.

Also here: the learning rate of an epoch and of each warm-up step, and the per-epoch seeding of
the training loader that makes a resumed run see the batches an uninterrupted one would. A run
of several phases (``--config`` with ``phases:``) rebuilds its training loader when it enters a
phase; ``lr_points`` set the rate of every step (recipe.py). ImageNet training leaves out each
epoch's last partial batch, as the published ImageNet loader does, so its steps per epoch (what
the learning rate, the warm-up and a mid-epoch resume count) are the full batches. Co-Mixup runs
log a ``warning:`` line when --m_part does not divide the per-process batch.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from comixup.core.files import atomic_pickle_dump
from comixup.core.logs import LogPrinter, plot_curves
from comixup.core.precision import Precision
from comixup.data.datasets import dataset_info, get_datasets, get_folder_test_set, get_resized_crop_train_set
from comixup.data.device_loader import DeviceLoader, get_device_loaders
from comixup.data.loaders import EpochSampler, get_loaders, get_test_loader, get_train_loader, shutdown_workers
from comixup.mixing.parallel import PartitionPool
from comixup.models.init import apply_init
from comixup.train import checkpoints, distributed, methods
from comixup.train.classifier import ClassifierSpec
from comixup.train.experiment import RunProgress
from comixup.train.loop import EpochPlan, EpochProgress, EvalResult
from comixup.train.recipe import Phase, Recipe, param_groups, partition_warning

__all__ = ["TrainingRun", "EpochProgress", "EpochPlan", "adjust_learning_rate", "warmup_factor", "epoch_seed",
           "set_train_epoch"]

Loader = DataLoader | DeviceLoader


# ---------------------------------------------------------------------------------------------
# Learning rate and epoch seeding
# ---------------------------------------------------------------------------------------------

def adjust_learning_rate(optimizer: torch.optim.Optimizer, epoch: int, learning_rate: float,
                         schedule: Sequence[int], gammas: Sequence[float]) -> float:
    """Set and return lr = learning_rate x the gammas of every schedule epoch <= epoch."""
    lr = learning_rate
    for gamma, step in zip(gammas, schedule, strict=True):
        if epoch < step:
            break
        lr *= gamma
    set_learning_rate(optimizer, lr)
    return lr


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


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


def set_train_epoch(loader: Loader, seed: int, epoch: int, rank: int = 0, skip_batches: int = 0) -> None:
    """Make this epoch's training order and augmentation depend on (seed, epoch) alone, not on how
    many epochs this process ran before, so a resumed run sees the batches an uninterrupted one
    would.

    A loader of :func:`comixup.data.loaders.get_loaders` has an
    :class:`~comixup.data.loaders.EpochSampler` (order and loader workers' per-image seeds from its
    seed and the epoch), which takes the epoch; its generator (used only for the workers' start-up
    seeds) is re-seeded from (seed, epoch, rank). A DeviceLoader takes the epoch. ``skip_batches``:
    the epoch's first batches already trained on (a mid-epoch resume), left out without loading them.
    ValueError for any other loader.
    """
    if isinstance(loader, DeviceLoader):
        loader.set_epoch(epoch, skip_batches)
        return
    if not isinstance(loader.sampler, EpochSampler) or loader.generator is None:
        raise ValueError("the training loader needs an EpochSampler and its own generator "
                         "(build it with comixup.data.loaders.get_loaders)")
    loader.sampler.set_epoch(epoch, skip=skip_batches * loader.batch_size)
    loader.generator.manual_seed(epoch_seed(seed, epoch, rank))


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

class TrainingRun:
    """Everything one run trains with, built once by :meth:`build` from validated arguments.

    model: the plain model (what is saved); net: what trains (the DDP or DataParallel wrapper,
    or the model); eval_net: what evaluates (the plain model under DDP, where each rank
    evaluates its shard without collectives). history, best_acc and start_epoch come from the
    resumed checkpoint or start empty. Only rank 0 logs and writes; every rank takes part in
    the collective calls. :meth:`close` (or leaving the ``with`` block) joins the mixing
    threads and the loader workers.
    """

    def __init__(self, args: argparse.Namespace, dist_info: distributed.DistInfo, log: LogPrinter,
                 progress: RunProgress) -> None:
        self.args = args
        self.dist = dist_info
        self.device = dist_info.device
        self.log = log
        self.progress = progress
        self.exp_dir = progress.exp_dir
        self.info = dataset_info(args.dataset)
        self.train_loader: Loader | None = None
        self.valid_loader: Loader | None = None
        self.test_loader: Loader | None = None
        self.pool: PartitionPool | None = None
        self.method: methods.Method | None = None
        self.history: dict[str, list[float]] = {key: [] for key in checkpoints.HISTORY_KEYS}
        self.best_acc = 0.0
        self.start_epoch = args.start_epoch
        self.resume_progress: EpochProgress | None = None  # the position of a mid-epoch checkpoint
        self._last_checkpoint_time = time.monotonic()
        self.recipe = Recipe.from_args(args)  # no phases and no lr_points: the flags alone
        self._phase: Phase | None = None  # the phase the training loader was built for
        self._partitions_checked: int | None = None  # the per-process batch last checked against --m_part

    @classmethod
    def build(cls, args: argparse.Namespace, dist_info: distributed.DistInfo, log: LogPrinter,
              progress: RunProgress, checkpoint: dict | None) -> TrainingRun:
        """Data, model, optimizer, resumed state, wrappers and (unless --evaluate) the method; the
        resumed random streams come back last, so that nothing built here shifts them."""
        run = cls(args, dist_info, log, progress)
        try:
            # Rank 0 draws as a single process does; the others get their own streams.
            checkpoints.seed_everything(distributed.rank_seed(args.seed, dist_info.rank))
            if run.device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            run._build_data()
            run._build_model()
            if checkpoint is not None:
                run._resume(checkpoint)
            else:
                log(f"=> do not use any checkpoint for {args.arch} model")
            run._wrap()
            if not args.evaluate:
                workers = methods.pool_workers(run._largest_batch_args(), processes_per_node=dist_info.local_world_size)
                run.pool = PartitionPool(workers) if workers else None
                run.method = methods.build_method(args, run.num_classes, run.info, executor=run.pool,
                                                  precision=run.precision)
                if not run.recipe.phases:  # a run of phases checks each phase's batch when it enters it
                    run._check_partitions(args.batch_size)
                if checkpoint is not None:
                    checkpoints.restore_streams(checkpoint, args.seed, dist_info, run.start_epoch)
        except BaseException:
            run.close()
            raise
        finally:
            if checkpoint is not None:
                checkpoint.clear()  # its copy of the weights and momenta is not needed any more
        return run

    def _build_data(self) -> None:
        if self.recipe.phases:
            self._build_phase_test_data()
            return
        args, dist_info = self.args, self.dist
        # Evaluation reads the test split only: no class-balanced subset of the training set to draw.
        labels_per_class = None if args.evaluate else args.labels_per_class or None
        valid_per_class = 0 if args.evaluate else args.valid_labels_per_class
        train_set, valid_set, test_set, self.num_classes = get_datasets(
            args.dataset, args.data_dir, labels_per_class=labels_per_class,
            valid_labels_per_class=valid_per_class, seed=args.seed)
        if args.data_on_device:
            self.train_loader, self.valid_loader, self.test_loader = get_device_loaders(
                args.dataset, train_set, valid_set, test_set, args.batch_size, self.device, seed=args.seed,
                rank=dist_info.rank, world_size=dist_info.world_size)
            self.log(f"=> data on {self.device}: {len(train_set)} training and {len(test_set)} test images as uint8")
        else:
            self.train_loader, self.valid_loader, self.test_loader = get_loaders(
                train_set, valid_set, test_set, args.batch_size, args.workers, seed=args.seed,
                distributed=dist_info.distributed, pin_memory=self.device.type == "cuda",
                drop_last=_drops_last_batch(args))
        if self.valid_loader is not None:
            self.history.update(valid_loss=[], valid_acc=[])

    def _build_model(self) -> None:
        args = self.args
        self.log(f"=> creating model '{args.arch}'")
        model = ClassifierSpec(arch=args.arch, num_classes=self.num_classes, initial_channels=args.initial_channels,
                               dropout=args.dropout, stride=self.info.stride).build()
        apply_init(model, args.init)
        if args.sync_bn:
            if self.dist.distributed:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                self.log("=> --sync_bn has no effect in a single process")
        self.model = model.to(self.device)
        self.optimizer = torch.optim.SGD(self._param_groups(), lr=args.learning_rate, momentum=args.momentum,
                                         nesterov=args.nesterov)
        self.precision = Precision.from_flag(args.mixed_precision, self.device)

    def _resume(self, checkpoint: dict) -> None:
        args, path = self.args, self.args.resume
        self.log(f"\n=> loading checkpoint '{path}'")
        # the flags were checked against the checkpoint when it was read (classifier.classifier_spec)
        checkpoints.load_weights(self.model, checkpoint, path,
                                 f"{args.arch} with {self.num_classes} classes for {args.dataset}")
        if not args.evaluate and checkpoints.load_optimizer(self.optimizer, checkpoint, path, args.arch):
            # The command line, not the checkpoint, decides the SGD settings (lr is set every epoch).
            for group, wanted in zip(self.optimizer.param_groups, self._param_groups(), strict=True):
                group.update(momentum=args.momentum, weight_decay=wanted["weight_decay"], nesterov=args.nesterov)
        for key, values in checkpoint["history"].items():
            self.history[key] = list(values)
        self.best_acc = checkpoint["best_acc"]
        self.start_epoch = checkpoint["epoch"]
        if checkpoint.get("step"):
            self.resume_progress = EpochProgress.from_dict(checkpoint["epoch_progress"])
        if self.precision.scaler is not None and checkpoint.get("scaler"):
            self.precision.scaler.load_state_dict(checkpoint["scaler"])
        within = f", step {checkpoint['step']} of epoch {checkpoint['epoch']}" if checkpoint.get("step") else ""
        self.log(f"=> loaded checkpoint '{path}' (epoch {checkpoint['epoch']}{within})")

    def _wrap(self) -> None:
        self.net: nn.Module = self.model
        if self.dist.distributed:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        elif self.device.type == "cuda" and self.args.ngpu > 1:
            self.net = nn.DataParallel(self.model, device_ids=list(range(self.args.ngpu)))
        # Under DDP each rank evaluates its shard with the plain model (no collectives in its forward).
        self.eval_net = self.model if self.dist.distributed else self.net

    # ----------------------------------------------------------------------- epoch by epoch

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def begin_epoch(self, epoch: int) -> tuple[float, EpochPlan]:
        """Set the epoch's learning rate and training order; returns (the rate of its first step,
        the plan of the epoch: per-step rates during a warm-up, the steps a mid-epoch checkpoint
        already did, when to checkpoint inside the epoch)."""
        self.progress.epoch = epoch
        if self.recipe.phases:
            self._enter_phase(self.recipe.phase_at(epoch))
        start = EpochProgress()
        if self.resume_progress is not None and epoch == self.start_epoch:
            start, self.resume_progress = self.resume_progress, None
        set_train_epoch(self.train_loader, self.args.seed, epoch, self.dist.rank, skip_batches=start.steps)
        args = self.args
        plan = EpochPlan(start=start, checkpoint_due=lambda steps: self._checkpoint_due(epoch, steps),
                         write_checkpoint=lambda progress: self.save_mid_epoch(epoch, progress))
        if self.recipe.lr_points:
            plan.lr_at_step = self._recipe_lr_at_step(epoch)
            first = plan.lr_at_step(start.steps)
            set_learning_rate(self.optimizer, first)
            return first, plan
        lr = adjust_learning_rate(self.optimizer, epoch, args.learning_rate, args.schedule, args.gammas)
        if epoch >= args.warmup_epochs:
            return lr, plan
        steps = self.steps_per_epoch
        warmup_steps = args.warmup_epochs * steps

        def lr_at_step(step: int) -> float:
            return lr * warmup_factor(epoch * steps + step, warmup_steps, args.warmup_start_factor)

        plan.lr_at_step = lr_at_step
        first = lr_at_step(start.steps)
        set_learning_rate(self.optimizer, first)
        return first, plan

    def _checkpoint_due(self, epoch: int, steps: int) -> bool:
        """--checkpoint_steps / --checkpoint_minutes: a mid-epoch checkpoint after the epoch's step
        ``steps`` (1-based; never at its last step, which the epoch's own checkpoint follows)."""
        args = self.args
        if self.exp_dir is None or steps >= self.steps_per_epoch:
            return False
        every = args.checkpoint_steps
        if every and (epoch * self.steps_per_epoch + steps) % every == 0:
            return True
        minutes = args.checkpoint_minutes
        return bool(minutes) and time.monotonic() - self._last_checkpoint_time >= 60 * minutes

    # ----------------------------------------------------------------------- the recipe (--config)

    def _param_groups(self) -> list[dict]:
        """The SGD parameter groups: --bn_weight_decay for BatchNorm (one group when it is --decay)."""
        args = self.args
        bn_decay = args.decay if args.bn_weight_decay is None else args.bn_weight_decay
        return param_groups(self.model, args.decay, bn_decay)

    def _largest_batch_args(self) -> argparse.Namespace:
        """The arguments with --batch_size the largest per-process batch of any phase (what the
        mixing thread pool is sized for); the arguments themselves without phases."""
        if not self.recipe.phases:
            return self.args
        largest = max(phase.per_process_batch(self.dist.world_size) for phase in self.recipe.phases)
        return argparse.Namespace(**{**vars(self.args), "batch_size": largest})

    def _build_phase_test_data(self) -> None:
        """Evaluation of a run of phases: the last phase's test split (ImageNet: Resize 256,
        CenterCrop 224, whatever the phase trained on). The training loader comes with the phase."""
        args = self.args
        test_set = get_folder_test_set(args.dataset, self.recipe.eval_data_dir)
        self.classes = test_set.classes
        self.num_classes = len(self.classes)
        batch = self.recipe.phases[-1].per_process_batch(self.dist.world_size)
        self.test_loader = get_test_loader(test_set, batch, args.workers, distributed=self.dist.distributed,
                                           pin_memory=self.device.type == "cuda")

    def _enter_phase(self, phase: Phase) -> None:
        """Train on ``phase``'s data, crop and batch from now on: a new training loader, the old
        one's workers ended first (none when the loader is already the phase's, or when the phase
        continues the previous one's data, crop and batch). Building it draws no random numbers, so
        a run resumed inside a phase trains as an uninterrupted one."""
        if phase == self._phase:
            return
        number = self.recipe.phases.index(phase) + 1
        if self._phase is not None and _loader_settings(phase) == _loader_settings(self._phase):
            self._phase = phase  # e.g. the published phases 2 and 3: the loader (and its workers) stay
            self.log(f"=> phase {number}/{len(self.recipe.phases)}: epochs [{phase.start}, {phase.end}), "
                     f"the same data, crop and batch")
            return
        args, world_size = self.args, self.dist.world_size
        shutdown_workers(self.train_loader)
        self.train_loader = None
        train_set = get_resized_crop_train_set(args.dataset, phase.data_dir, phase.crop, phase.min_scale,
                                               self.classes, args.labels_per_class or None, seed=args.seed)
        batch = phase.per_process_batch(world_size)
        self.train_loader = get_train_loader(train_set, batch, args.workers, seed=args.seed,
                                             distributed=self.dist.distributed,
                                             pin_memory=self.device.type == "cuda", drop_last=_drops_last_batch(args))
        self._phase = phase
        self.log(f"=> phase {number}/{len(self.recipe.phases)}: epochs [{phase.start}, {phase.end}), "
                 f"{phase.crop}-pixel crops (min scale {phase.min_scale:g}), {phase.batch_size} images per step "
                 f"({batch} per process x {world_size}), {len(train_set)} images from {phase.data_dir}")
        self._check_partitions(batch, f" in phase {number}/{len(self.recipe.phases)} ({phase.batch_size} over "
                                      f"{world_size} process{'es' if world_size > 1 else ''})")

    def _check_partitions(self, batch: int, where: str = "") -> None:
        """Co-Mixup: log a ``warning:`` line when --m_part does not divide the per-process batch
        ``batch`` (recipe.partition_warning), once per change of that batch."""
        if self.args.method != "comix" or batch == self._partitions_checked:
            return
        self._partitions_checked = batch
        warning = partition_warning(batch, self.args.m_part, where)
        if warning is not None:
            self.log(warning)

    def _recipe_lr_at_step(self, epoch: int) -> Callable[[int], float]:
        """lr_points: the rate of every step of ``epoch`` (recipe.Recipe.step_lr)."""
        steps = self.steps_per_epoch

        def lr_at_step(step: int) -> float:
            return self.recipe.step_lr(epoch, step, steps)

        return lr_at_step

    def share_batchnorm_statistics(self) -> None:
        """Rank 0's BatchNorm statistics, which it saves, for every rank's shard of the evaluation."""
        distributed.broadcast_buffers(self.model, self.dist)

    def record(self, train: dict[str, float], valid: EvalResult | None, test: EvalResult) -> bool:
        """Add an epoch's numbers to the history; returns whether its test accuracy is the best so far
        (the first evaluated epoch always is, even at 0% accuracy). The test ECE goes to
        ``test_ece``, one entry per ``test_acc`` entry: NaN for the epochs of a resumed checkpoint
        that predates it."""
        is_best = not self.history["test_acc"] or test.top1 > self.best_acc
        self.best_acc = test.top1 if is_best else self.best_acc
        test_ece = self.history.setdefault("test_ece", [])
        test_ece += [float("nan")] * (len(self.history["test_acc"]) - len(test_ece))
        test_ece.append(test.ece)
        if valid is not None:
            self.history["valid_loss"].append(valid.loss)
            self.history["valid_acc"].append(valid.top1)
        self.history["train_loss"].append(train["loss"])
        self.history["train_acc"].append(train["top1"])
        self.history["test_loss"].append(test.loss)
        self.history["test_acc"].append(test.top1)
        return is_best

    def save(self, epoch: int, is_best: bool) -> None:
        """The files of a finished epoch (rank 0; every rank takes part in gathering the random
        states): the checkpoint first (what --resume needs), then log.pkl and the curves, then
        the epoch's lines in log.txt. Each file is replaced atomically, so a failure (a full
        disk) or a kill leaves every file either as it was or complete. Nothing with --log_off."""
        if self.exp_dir is not None:
            state = self._state(epoch + 1)
            if state is not None:
                checkpoints.save_checkpoint(state, is_best, self.exp_dir,
                                            saved=lambda path: self.progress.saved(path, epoch + 1))
                atomic_pickle_dump({key: list(values) for key, values in self.history.items()},
                                   os.path.join(self.exp_dir, "log.pkl"))
                plot_curves(self.history, self.exp_dir)
        self._last_checkpoint_time = time.monotonic()
        self.log.commit()

    def save_mid_epoch(self, epoch: int, progress: EpochProgress) -> None:
        """A checkpoint after step ``progress.steps`` of epoch ``epoch`` (0-based), written over
        checkpoint.pth.tar: resuming from it continues at the next step, to the weights an
        uninterrupted run reaches (bit-identical on the CPU). The per-epoch files (log.pkl, the
        curves, model_best.pth.tar) are left alone; the epoch's lines so far go to log.txt."""
        if self.exp_dir is not None:
            state = self._state(epoch)
            if state is not None:
                state.step, state.epoch_progress = progress.steps, progress.to_dict()
                checkpoints.save_checkpoint(state, False, self.exp_dir,
                                            saved=lambda path: self.progress.saved(path, epoch, progress.steps))
        self._last_checkpoint_time = time.monotonic()
        self.log.commit(keep_holding=True)

    def _state(self, epochs_done: int) -> checkpoints.TrainingState | None:
        """What a checkpoint holds now (None on ranks other than 0, which only help gather the
        random states)."""
        rng, rng_ranks = checkpoints.capture_streams(self.dist)
        if not self.dist.is_main:
            return None
        args = self.args
        return checkpoints.TrainingState(
            epoch=epochs_done, arch=args.arch, state_dict=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(), best_acc=self.best_acc, history=self.history,
            args=checkpoints.args_dict(args), rng=rng, num_classes=self.num_classes, dataset=args.dataset,
            rng_ranks=rng_ranks, world_size=self.dist.world_size if rng_ranks is not None else None,
            scaler=self.precision.scaler.state_dict() if self.precision.scaler is not None else None)

    def close(self) -> None:
        """Join the mixing threads and the loader workers (idempotent)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        shutdown_workers(self.train_loader, self.valid_loader, self.test_loader)

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _loader_settings(phase: Phase) -> tuple:
    """What a phase's training loader depends on (not its epochs)."""
    return phase.data_dir, phase.crop, phase.min_scale, phase.batch_size


def _drops_last_batch(args: argparse.Namespace) -> bool:
    """Whether training leaves out each epoch's last partial batch: ImageNet training, as the
    published ImageNet loader does (the CIFAR and Tiny-ImageNet loaders keep it, as theirs do).
    Evaluation never does, nor does a run that only evaluates need a full training batch."""
    return args.dataset == "imagenet" and not args.evaluate

def log_run_header(log: LogPrinter, args: argparse.Namespace, dist_info: distributed.DistInfo,
                   notes: Sequence[str]) -> None:
    """The published opening lines of log.txt (save path, arguments, versions), ``notes`` (what
    this run found in its folder: leftovers removed, the checkpoint --resume auto chose), and
    what it found about its device and processes."""
    is_main = dist_info.is_main
    blank_line = print if is_main else (lambda: None)
    if log.path is not None:
        log(f"save path : {os.path.dirname(log.path)}")
    blank_line()
    log(dict(sorted(vars(args).items())))
    blank_line()
    log(f"Random Seed: {args.seed}")
    log("python version : {}".format(sys.version.replace("\n", " ")))
    log(f"torch  version : {torch.__version__}")
    log(f"cudnn  version : {torch.backends.cudnn.version()}")
    for note in notes:
        log(note)
    if args.ngpu > 0 and dist_info.device.type == "cpu":
        log("=> CUDA is not available: running on the CPU")
    if dist_info.distributed and getattr(args, "phases", None):
        log(f"=> distributed: {dist_info.world_size} processes ({dist_info.backend}), each phase's images per "
            f"step shared by them")
    elif dist_info.distributed:
        log(f"=> distributed: {dist_info.world_size} processes ({dist_info.backend}), {args.batch_size} images "
            f"per process and step, {dist_info.world_size * args.batch_size} in all")
