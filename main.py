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

Exit status: 0 on success, 2 for bad arguments, data or checkpoints (one ``error:`` line on
stderr).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

import comix
import comix_solver
import distributed
import methods
import models
import puzzlemix
from load_data import (
    DATASETS,
    DataError,
    DeviceLoader,
    dataset_info,
    get_datasets,
    get_device_loaders,
    get_loaders,
)
from mixup_parallel import PartitionPool
from utils import (
    CHECKPOINT_FORMAT,
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
    restore_rng_state,
    save_checkpoint,
    state_dict_mismatch,
    str2bool,
    time_string,
    to_one_hot,
)

__all__ = ["get_args_parser", "resolve_method", "validate_args", "experiment_name", "adjust_learning_rate",
           "warmup_factor", "train_one_epoch", "evaluate", "main"]

_EPILOG = (
    "Several GPUs / nodes: torchrun --nproc_per_node N main.py ... (one process per GPU, "
    "DistributedDataParallel; several nodes: add --nnodes, --node_rank and --rdzv_endpoint HOST:PORT as "
    "torchrun documents). --batch_size is per process, so a step uses N x batch_size images in all; the "
    "learning rate is not rescaled for you. "
    "ImageNet as the published comix-imagenet run (ResNet-50, 100 epochs, DDP, fp16): --dataset imagenet "
    "--arch resnet50 --labels_per_class 0 --m_part 16 --m_niter 3 --m_block_num 4 --m_beta 0.32 --m_gamma 1.0 "
    "--m_eta 0.05 --m_thres 0.83 --m_omega 0.001 --mixup_alpha 1.0 (their Dirichlet prior is flat) --loss ce "
    "--clean_lam 500 (their clean loss is 1 x CE; ours is 2 clean_lam CE / 1000) --amp fp16; their batch "
    "was 1024 then 448 images in all, with a piecewise-linear learning rate (warm-up 0.5 to 1.0 over 8 "
    "epochs at 128 pixels, then linear decays), which --warmup_epochs only approximates."
)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

class _ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one ``error: ...`` line on stderr (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones, whose help text says what they mean."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def _flag_bool(group: argparse._ArgumentGroup, name: str, help_text: str) -> None:
    """A boolean that works bare (``--log_off``) and with a value (``--log_off True``)."""
    group.add_argument(name, nargs="?", const=True, default=False, type=str2bool, metavar="BOOL", help=help_text)


def get_args_parser() -> argparse.ArgumentParser:
    """The published command line (SPEC §5), same names, defaults and meanings, plus --m_solver,
    --method, --loss and the Puzzle Mix flags under the Puzzle Mix repository's names.

    ``--data_dir`` defaults to ./data/<dataset> (resolved by :func:`main`). ``--method``,
    ``--comix``, ``--mixup_alpha`` and ``--clean_lam`` default to None, which
    :func:`resolve_method` turns into the method and its published values. Booleans accept
    true/false, yes/no, t/f, y/n, 1/0 in any case.
    """
    parser = _ArgumentParser(description="Train a classifier with Co-Mixup",
                             formatter_class=_HelpFormatter, epilog=_EPILOG)

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="cifar100", choices=DATASETS, help="data set")
    data.add_argument("--data_dir", default=None,
                      help="data set folder (CIFAR is downloaded there); default ./data/<dataset>")
    data.add_argument("--root_dir", default="experiments", help="folder where experiment folders are created")
    data.add_argument("--labels_per_class", type=int, default=500, metavar="NL",
                      help="training images kept per class (a class-balanced subset); 0: every image "
                           "(for data sets with unequal classes, e.g. ImageNet)")
    data.add_argument("--valid_labels_per_class", type=int, default=0, metavar="NL",
                      help="training images per class held out as a validation set (0: none)")

    model = parser.add_argument_group("model")
    model.add_argument("--arch", metavar="ARCH", default="preactresnet18", choices=models.model_names(),
                       help=f"architecture: {', '.join(models.model_names())}")
    model.add_argument("--initial_channels", type=int, default=64, choices=(16, 64),
                       help="width of the preactresnet models")
    model.add_argument("--dropout", type=str2bool, default=False, metavar="BOOL",
                       help="dropout before the final layer")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=300, help="number of epochs to train")
    optim.add_argument("--batch_size", type=int, default=100,
                       help="images per step and process: under torchrun with N processes a step uses "
                            "N x batch_size images in all, and each process mixes its own batch")
    optim.add_argument("--learning_rate", type=float, default=0.2)
    optim.add_argument("--momentum", type=float, default=0.9, help="Nesterov momentum of SGD")
    optim.add_argument("--decay", type=float, default=0.0001, help="weight decay (L2 penalty)")
    optim.add_argument("--schedule", type=int, nargs="+", default=[100, 200],
                       help="epochs at which the learning rate is multiplied by the matching gamma")
    optim.add_argument("--gammas", type=float, nargs="+", default=[0.1, 0.1],
                       help="learning-rate factors, one per --schedule epoch")
    optim.add_argument("--warmup_epochs", type=int, default=0,
                       help="linear learning-rate warm-up over the first W epochs, updated every step: step s "
                            "of the warm-up (0-based, of W x steps-per-epoch) uses the scheduled rate x "
                            "(f + (1 - f)(s + 1) / (W x steps-per-epoch)), f = --warmup_start_factor (0: none)")
    optim.add_argument("--warmup_start_factor", type=float, default=0.0, metavar="F",
                       help="fraction of the scheduled learning rate the warm-up starts from, in [0, 1)")

    method = parser.add_argument_group("method")
    method.add_argument("--method", default=None, choices=methods.METHODS,
                        help="mixing method: " + ", ".join(methods.METHODS) + ". Default: comix, or vanilla "
                             "with --comix False. An explicit --comix must agree with an explicit --method "
                             "(--comix True: comix only; --comix False: any other method)")
    method.add_argument("--loss", default="bce", choices=methods.LOSSES,
                        help="training loss against the (mixed) soft targets: bce = BCE on softmax "
                             "(published), ce = soft-target cross entropy")
    method.add_argument("--mixup_alpha", type=float, default=None,
                        help="mixing-weight concentration (Co-Mixup: Dirichlet prior; the others: Beta(a, a)). "
                             "Default: the method's published value: comix 2.0, mixup 1.0, manifold 2.0, "
                             "cutmix 1.0, puzzle 1.0 (vanilla: unused)")
    method.add_argument("--clean_lam", type=float, default=None,
                        help="weight of the clean-input loss of comix and puzzle (0: saliency only, in eval "
                             "mode, its loss discarded). Default: the published value: comix 1.0, puzzle 0.0 "
                             "(vanilla: 1.0, unused but part of the published folder name; mixup, manifold "
                             "and cutmix have no clean pass and take no value above 0)")
    method.add_argument("--parallel", type=str2bool, default=True, metavar="BOOL",
                        help="solve the Co-Mixup partitions / Puzzle Mix pairs of a batch concurrently (threads)")

    mix = parser.add_argument_group("Co-Mixup")
    mix.add_argument("--comix", type=str2bool, default=None, metavar="BOOL",
                     help="published switch: True = --method comix, False = --method vanilla (plain "
                          "training); default True when --method is not given")
    mix.add_argument("--m_block_num", type=int, default=4,
                     help="mask grid size n (n x n blocks; must divide the image size); -1: random per batch")
    mix.add_argument("--m_part", type=int, default=20, help="partition size (inputs mixed together)")
    mix.add_argument("--m_beta", type=float, default=0.32, help="label smoothness coefficient")
    mix.add_argument("--m_gamma", type=float, default=1.0, help="supermodular diversity coefficient")
    mix.add_argument("--m_thres", type=float, default=0.83, help="diversity threshold tau")
    mix.add_argument("--m_thres_type", default="hard", choices=("soft", "hard"), help="thresholding type")
    mix.add_argument("--m_eta", type=float, default=0.05, help="prior coefficient")
    mix.add_argument("--m_omega", type=float, default=0.001, help="input compatibility coefficient omega")
    mix.add_argument("--set_resolve", type=str2bool, default=True, metavar="BOOL",
                     help="resolve outputs that use the same set of inputs")
    mix.add_argument("--m_niter", type=int, default=4, help="outer iterations of the solver")
    mix.add_argument("--m_solver", default="fast", choices=comix_solver.SOLVERS,
                     help="labelling solver: fast (compiled swap moves), bkgco or gco (published GCO backend)")

    puzzle = parser.add_argument_group("Puzzle Mix (--method puzzle; the Puzzle Mix repository's names and "
                                       "CIFAR command)")
    puzzle.add_argument("--n_labels", type=int, default=3, help="mask levels per block")
    puzzle.add_argument("--beta", type=float, default=1.2, help="label smoothness")
    puzzle.add_argument("--gamma", type=float, default=0.5, help="data local smoothness")
    puzzle.add_argument("--eta", type=float, default=0.2, help="prior term")
    puzzle.add_argument("--neigh_size", type=int, default=4,
                        help="pooling size for the colour differences across block borders")
    puzzle.add_argument("--transport", type=str2bool, default=True, metavar="BOOL",
                        help="move each image's salient blocks to where its mask keeps it")
    puzzle.add_argument("--t_eps", type=float, default=0.8, help="transport distance cost")
    puzzle.add_argument("--t_size", type=int, default=4,
                        help="transport block side in pixels (-1: the mask's own blocks)")

    ckpt = parser.add_argument_group("checkpoints")
    ckpt.add_argument("--print_freq", type=int, default=100,
                      help="accepted for compatibility (the published script does not use it either); "
                           "running values show in the progress bar")
    ckpt.add_argument("--resume", default="", type=str, help="checkpoint to continue from (ours or the published)")
    ckpt.add_argument("--start_epoch", type=int, default=0,
                      help="first epoch when not resuming (a resumed run starts at the checkpoint's epoch)")
    _flag_bool(ckpt, "--evaluate", "only evaluate the (resumed) model on the test set")

    accel = parser.add_argument_group("acceleration")
    accel.add_argument("--ngpu", type=int, default=1,
                       help="GPUs to use (0: CPU; more than 1: DataParallel); CPU when CUDA is unavailable. "
                            "Under torchrun each process uses one GPU, cuda:LOCAL_RANK (--ngpu 1, the default), "
                            "or the CPU with gloo (--ngpu 0)")
    accel.add_argument("--workers", type=int, default=0,
                       help="data loader worker processes (per process under torchrun); kept alive across epochs")
    accel.add_argument("--amp", dest="mixed_precision", default="off", choices=methods.AMP_MODES,
                       help="mixed precision: forward passes (clean and mixed) under torch.autocast in bfloat16, "
                            "or float16 with a GradScaler (CUDA only); losses, masks and mixing stay float32")
    _flag_bool(accel, "--data_on_device",
               "CIFAR only: hold the uint8 training and test sets on the training device and crop, flip and "
               "normalise each batch there (no loader workers; works on the CPU too)")
    _flag_bool(accel, "--sync_bn",
               "under torchrun on GPUs: SyncBatchNorm, batch statistics over all processes' batches "
               "(no effect in a single process)")

    misc = parser.add_argument_group("misc")
    misc.add_argument("--seed", type=int, default=0, help="random seed")
    misc.add_argument("--tag", type=str, default="", help="suffix of the experiment folder name")
    _flag_bool(misc, "--log_off", "write no files (output is still printed)")
    return parser


def resolve_method(args: argparse.Namespace) -> None:
    """Settle ``args.method``, ``args.comix``, ``args.mixup_alpha`` and ``args.clean_lam`` in place.

    Rule: an explicit --method wins. Without it, --comix picks: True (or absent) = comix,
    False = vanilla, as in the published script. Given both, --comix must agree: --comix True
    only with --method comix, --comix False only with another method; a contradiction raises
    ValueError (one line). Afterwards ``args.comix`` is ``args.method == "comix"``, and a None
    --mixup_alpha / --clean_lam becomes the method's published value
    (:data:`methods.PUBLISHED_MIXUP_ALPHA`, :data:`methods.PUBLISHED_CLEAN_LAM`). Idempotent.
    """
    if args.method is None:
        args.method = "vanilla" if args.comix is False else "comix"
    elif args.comix is True and args.method != "comix":
        raise ValueError(f"--comix True contradicts --method {args.method} (--comix True means --method comix); "
                         f"drop --comix")
    elif args.comix is False and args.method == "comix":
        raise ValueError("--comix False contradicts --method comix (--comix False means --method vanilla); "
                         "drop one of them")
    args.comix = args.method == "comix"
    methods.fill_published_defaults(args)


def validate_args(args: argparse.Namespace) -> None:
    """Check the parsed arguments (after :func:`resolve_method`) before any heavy work; ValueError
    with every problem found (what is wrong and what is allowed), joined into one line."""
    if getattr(args, "method", None) not in methods.METHODS:
        raise ValueError(f"--method must be one of {', '.join(methods.METHODS)} (call resolve_method first), "
                         f"got {getattr(args, 'method', None)!r}")
    problems = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    def finite(value: float) -> bool:
        return math.isfinite(value)

    need(args.batch_size >= 1, f"--batch_size must be at least 1, got {args.batch_size}")
    need(args.epochs >= 0, f"--epochs must be 0 or more, got {args.epochs}")
    need(args.start_epoch >= 0, f"--start_epoch must be 0 or more, got {args.start_epoch}")
    need(finite(args.learning_rate) and args.learning_rate > 0,
         f"--learning_rate must be a positive number, got {args.learning_rate}")
    need(finite(args.momentum) and args.momentum >= 0, f"--momentum must be 0 or more, got {args.momentum}")
    need(finite(args.decay) and args.decay >= 0, f"--decay must be 0 or more, got {args.decay}")
    if len(args.schedule) != len(args.gammas):
        problems.append(f"--schedule and --gammas must have the same length, got {len(args.schedule)} "
                        f"epochs ({' '.join(map(str, args.schedule))}) and {len(args.gammas)} factors "
                        f"({' '.join(map(str, args.gammas))})")
    need(all(step >= 0 for step in args.schedule) and list(args.schedule) == sorted(args.schedule),
         f"--schedule must list epochs >= 0 in increasing order, got {' '.join(map(str, args.schedule))}")
    need(all(finite(g) and g > 0 for g in args.gammas),
         f"--gammas must be positive numbers, got {' '.join(map(str, args.gammas))}")
    need(args.labels_per_class >= 0,
         f"--labels_per_class must be 0 (every image) or a positive count, got {args.labels_per_class}")
    need(args.warmup_epochs >= 0, f"--warmup_epochs must be 0 or more, got {args.warmup_epochs}")
    need(finite(args.warmup_start_factor) and 0 <= args.warmup_start_factor < 1,
         f"--warmup_start_factor must lie in [0, 1), got {args.warmup_start_factor}")
    need(args.valid_labels_per_class >= 0,
         f"--valid_labels_per_class must be 0 or more, got {args.valid_labels_per_class}")
    need(finite(args.clean_lam) and args.clean_lam >= 0, f"--clean_lam must be 0 or more, got {args.clean_lam}")
    if args.method in ("mixup", "manifold", "cutmix") and args.clean_lam > 0:
        problems.append(f"--clean_lam {args.clean_lam}: --method {args.method} has no clean-input pass "
                        f"(only comix and puzzle do); leave it out")
    if args.method not in ("comix", "puzzle") and args.mixup_alpha is not None:  # their configs check it
        need(finite(args.mixup_alpha) and args.mixup_alpha > 0,
             f"--mixup_alpha must be a finite number > 0, got {args.mixup_alpha}")
    if args.method == "manifold" and args.ngpu > 1:
        problems.append(f"--method manifold mixes hidden features across the whole batch, which --ngpu "
                        f"{args.ngpu} (DataParallel) splits; use --ngpu 1")
    need(args.print_freq >= 1, f"--print_freq must be at least 1, got {args.print_freq}")
    need(args.workers >= 0, f"--workers must be 0 or more, got {args.workers}")
    need(0 <= args.seed < 2**32, f"--seed must lie in [0, 2**32 - 1], got {args.seed}")
    need(os.sep not in args.tag and (os.altsep is None or os.altsep not in args.tag),
         f"--tag becomes part of a folder name and must not contain a path separator, got {args.tag!r}")
    _distributed_problems(args, problems)
    if args.ngpu < 0:
        problems.append(f"--ngpu must be 0 (CPU) or more, got {args.ngpu}")
    elif args.ngpu > 1 and torch.cuda.is_available() and args.ngpu > torch.cuda.device_count():
        problems.append(f"--ngpu {args.ngpu} asks for more GPUs than the {torch.cuda.device_count()} visible")
    if args.arch not in models.WIDTH_ARCHS and args.initial_channels != models.DEFAULT_INITIAL_CHANNELS:
        problems.append(f"--initial_channels applies only to the preactresnet models; {args.arch} has a "
                        f"fixed width (leave it at {models.DEFAULT_INITIAL_CHANNELS})")
    if args.method == "comix":
        try:
            comix.CoMixupConfig.from_namespace(args)
        except ValueError as err:
            problems.append(str(err))
        size = dataset_info(args.dataset).image_size
        if args.m_block_num >= 1 and size % args.m_block_num:
            divisors = [n for n in range(1, size + 1) if size % n == 0]
            problems.append(f"--m_block_num {args.m_block_num} does not divide the {size}x{size} images of "
                            f"{args.dataset}; use -1 (random) or one of {', '.join(map(str, divisors))}")
    if args.method == "puzzle":
        try:
            puzzlemix.PuzzleMixConfig.from_namespace(args)
        except ValueError as err:
            problems.append(str(err))
        else:
            geometry = methods.puzzle_geometry_problem(dataset_info(args.dataset).image_size, args.neigh_size,
                                                       args.t_size)
            if geometry is not None:
                problems.append(geometry)
    if args.resume and not os.path.isfile(args.resume):
        problems.append(f"--resume {args.resume}: no such checkpoint file")
    if problems:
        raise ValueError("; ".join(problems))


def _distributed_problems(args: argparse.Namespace, problems: list[str]) -> None:
    """The checks of the torchrun, --amp, --sync_bn and --data_on_device flags."""
    try:
        world_size = distributed.env_world()[0]
    except distributed.LaunchError as err:
        problems.append(str(err))
        world_size = 1
    cuda = args.ngpu > 0 and torch.cuda.is_available()
    if world_size > 1 and args.ngpu > 1:
        problems.append(f"--ngpu {args.ngpu} (DataParallel) cannot run under torchrun, where each of the "
                        f"{world_size} processes uses one GPU; use --ngpu 1 and torchrun's --nproc_per_node")
    mode = getattr(args, "mixed_precision", "off")
    if mode == "fp16" and not cuda:
        problems.append("--amp fp16 needs CUDA (float16 autocast on the CPU is slow or unsupported); use "
                        "--amp bf16 on the CPU")
    if getattr(args, "sync_bn", False) and not cuda:
        problems.append("--sync_bn needs CUDA (SyncBatchNorm runs on GPUs only); leave it out on the CPU")
    if getattr(args, "data_on_device", False):
        if args.dataset not in ("cifar10", "cifar100"):
            problems.append(f"--data_on_device supports cifar10 and cifar100 (held in memory as uint8), "
                            f"not {args.dataset}; leave it out and use --workers")
        if args.workers > 0:
            problems.append(f"--data_on_device makes its batches on the device without loader workers; "
                            f"drop --workers {args.workers}")


def experiment_name(args: argparse.Namespace) -> str:
    """The experiment folder name of resolved ``args`` (:func:`resolve_method`).

    comix and vanilla: the published name, e.g. ``cifar100_per_500_arch_preactresnet18_eph_300_lr_0.2_
    mblock_4_mbeta_0.32_mgamma_1.0_mthres_hard0.83_meta_0.05_m_alpha_2.0_mpart_20_niter_4_omega_0.001_
    set_clean_1.0_seed_0_test`` (vanilla has no m_* part; a non-default --m_solver adds
    ``_solver_<name>`` after it). The other methods put ``_method_<name>_m_alpha_<a>`` after the
    learning rate, puzzle then ``_n_labels_<L>_beta_<b>_gamma_<g>_neigh_<s>_eta_<e>`` and, with
    transport, ``_transport_eps_<t_eps>_size_<t_size>`` (the Puzzle Mix repository's order). Any
    method: ``--loss ce`` adds ``_loss_ce`` before ``_clean_<clean_lam>`` (present when it is > 0);
    after it, a warm-up adds ``_warmup_<W>`` and ``--amp bf16/fp16`` adds ``_amp_<mode>``. The
    number of processes is not part of the name.
    """
    name = (f"{args.dataset}_per_{args.labels_per_class}_arch_{args.arch}_eph_{args.epochs}"
            f"_lr_{args.learning_rate}")
    if args.method not in ("comix", "vanilla"):
        name += f"_method_{args.method}_m_alpha_{args.mixup_alpha}"
    if args.method == "puzzle":
        name += (f"_n_labels_{args.n_labels}_beta_{args.beta}_gamma_{args.gamma}_neigh_{args.neigh_size}"
                 f"_eta_{args.eta}")
        if args.transport:
            name += f"_transport_eps_{args.t_eps}_size_{args.t_size}"
    if args.method == "comix":
        name += (f"_mblock_{args.m_block_num}_mbeta_{args.m_beta}_mgamma_{args.m_gamma}"
                 f"_mthres_{args.m_thres_type}{args.m_thres}_meta_{args.m_eta}_m_alpha_{args.mixup_alpha}"
                 f"_mpart_{args.m_part}_niter_{args.m_niter}_omega_{args.m_omega}")
        if args.set_resolve:
            name += "_set"
        if args.m_solver != "fast":
            name += f"_solver_{args.m_solver}"
    if args.loss != "bce":
        name += f"_loss_{args.loss}"
    if args.clean_lam > 0:
        name += f"_clean_{args.clean_lam}"
    if getattr(args, "warmup_epochs", 0) > 0:
        name += f"_warmup_{args.warmup_epochs}"
        if args.warmup_start_factor > 0:
            name += f"_from_{args.warmup_start_factor}"
    if getattr(args, "mixed_precision", "off") != "off":
        name += f"_amp_{args.mixed_precision}"
    name += f"_seed_{args.seed}"
    if args.tag:
        name += f"_{args.tag}"
    return name


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
    """Make this epoch's training order depend on (seed, epoch) alone, not on how many epochs
    this process ran before, so a resumed run sees the batches an uninterrupted one would.

    get_loaders gives the training loader its own generator (shared with its RandomSampler, and
    the source of worker seeds); it is re-seeded here, from (seed, epoch, rank) so that the
    ranks' loader workers augment differently. A DistributedSampler (the same order on every
    rank, from seed and epoch) and a DeviceLoader take the epoch.
    """
    if isinstance(loader, DeviceLoader):
        loader.set_epoch(epoch)
        return
    if loader.generator is None:
        raise ValueError("the training loader needs its own generator (build it with load_data.get_loaders)")
    loader.generator.manual_seed(epoch_seed(seed, epoch, rank))
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


def _bce_on_softmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The published loss: binary cross-entropy between softmax(logits) and (soft) targets, mean."""
    return F.binary_cross_entropy(F.softmax(logits.float(), dim=1), targets)


def _as_method(method: methods.Method | comix.CoMixup | None, args: argparse.Namespace,
               num_classes: int) -> methods.Method:
    if isinstance(method, methods.Method):
        return method
    settings = argparse.Namespace(**vars(args))
    settings.method = "vanilla" if method is None else "comix"
    methods.fill_published_defaults(settings)
    loss = getattr(settings, "loss", "bce")
    if method is None:
        return methods.VanillaMethod(num_classes, loss)
    if isinstance(method, comix.CoMixup):
        return methods.CoMixupMethod(num_classes, method, settings.clean_lam, loss)
    raise TypeError(f"method must be a methods.Method (or, as before, a comix.CoMixup or None), "
                    f"got {type(method).__name__}")


def train_one_epoch(model: nn.Module, loader: DataLoader | DeviceLoader, optimizer: torch.optim.Optimizer,
                    method: methods.Method | comix.CoMixup | None, args: argparse.Namespace, device: torch.device,
                    epoch: int, num_classes: int, lr_at_step: Callable[[int], float] | None = None,
                    dist_info: distributed.DistInfo | None = None) -> dict[str, float]:
    """One epoch of training steps over ``loader``: per batch, ``method`` (a :class:`methods.Method`)
    gives the loss, then one backward and one SGD step (SPEC §4 for comix, §8 for the others).

    For code written before :mod:`methods`, ``method`` may also be a comix.CoMixup (the Co-Mixup
    step with args.clean_lam, or its published 1.0 when None) or None (vanilla), with args.loss.
    With a float16 GradScaler (``method.precision.scaler``) the loss is scaled for the backward
    and the step goes through the scaler. ``lr_at_step(i)``, when given, sets the learning rate
    of the epoch's step i (the warm-up). Under DDP (``dist_info``) ``model`` is the DDP module,
    and the returned numbers are those of all processes together (sums and counts all-reduced);
    only rank 0 shows a progress bar.

    Returns loss (mean per image of the training loss, without the clean-input loss), top1, top5
    (percent; on the logits the method returns: clean images for vanilla, comix and puzzle,
    mixed images against each one's own label for mixup, manifold and cutmix), mix_time (mean
    seconds per step spent mixing), steps (per process) and images (trained on, all processes).
    """
    method = _as_method(method, args, num_classes)
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

        prec1, prec5 = accuracy(step.logits, target, topk=(1, 5))
        batch = images.shape[0]
        losses.update(step.loss.item(), batch)
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


def run(args: argparse.Namespace, dist_info: distributed.DistInfo | None = None) -> int:
    """Train (or, with --evaluate, evaluate) as the validated ``args`` say; returns the exit status.
    Raises DataError / CheckpointError for problems the user must fix.

    ``dist_info`` (from :func:`distributed.session`) says where this process stands; None: a
    single process on the device --ngpu asks for. Under DDP only rank 0 prints and writes.
    """
    if dist_info is None:
        dist_info = distributed.DistInfo(device=torch.device("cuda") if _pick_device(args) else torch.device("cpu"))
    device = dist_info.device
    is_main = dist_info.is_main
    args.use_cuda = device.type == "cuda"
    exp_dir = None if args.log_off else os.path.join(args.root_dir, experiment_name(args))
    if exp_dir is not None and is_main:
        os.makedirs(exp_dir, exist_ok=True)
    log_path = os.path.join(exp_dir, "log.txt") if exp_dir is not None and is_main else None
    blank_line = print if is_main else (lambda: None)
    with LogPrinter(log_path, echo=is_main) as log:
        if exp_dir is not None:
            log(f"save path : {exp_dir}")
        blank_line()
        log(dict(sorted(vars(args).items())))
        blank_line()
        log(f"Random Seed: {args.seed}")
        log("python version : {}".format(sys.version.replace("\n", " ")))
        log(f"torch  version : {torch.__version__}")
        log(f"cudnn  version : {torch.backends.cudnn.version()}")
        if args.ngpu > 0 and device.type == "cpu":
            log("=> CUDA is not available: running on the CPU")
        if dist_info.distributed:
            log(f"=> distributed: {dist_info.world_size} processes ({dist_info.backend}), {args.batch_size} images "
                f"per process and step, {dist_info.world_size * args.batch_size} in all")

        # Rank 0 draws as a single process does; the others get their own streams.
        _seed_everything(distributed.rank_seed(args.seed, dist_info.rank))
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

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
        checkpoint = None
        if args.resume:
            log(f"\n=> loading checkpoint '{args.resume}'")
            checkpoint = load_checkpoint(args.resume, map_location="cpu")
            _apply_checkpoint(checkpoint, args.resume, model, None if args.evaluate else optimizer, args, num_classes)
            for key, values in checkpoint["history"].items():
                history[key] = list(values)
            best_acc = checkpoint["best_acc"]
            start_epoch = checkpoint["epoch"]
            if precision.scaler is not None and checkpoint.get("scaler"):
                precision.scaler.load_state_dict(checkpoint["scaler"])
            log(f"=> loaded checkpoint '{args.resume}' (epoch {checkpoint['epoch']})")
        else:
            log(f"=> do not use any checkpoint for {args.arch} model")

        net: nn.Module = model
        if dist_info.distributed:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        elif device.type == "cuda" and args.ngpu > 1:
            net = nn.DataParallel(model, device_ids=list(range(args.ngpu)))
        # Under DDP each rank evaluates its shard with the plain model (no collectives in its forward).
        runtime = _Runtime(dist=dist_info, precision=precision, eval_net=model if dist_info.distributed else net,
                           steps_per_epoch=len(train_loader))

        if args.evaluate:
            distributed.broadcast_buffers(model, dist_info)
            log(_eval_line("Test ", evaluate(runtime.eval_net, test_loader, device, num_classes, precision, dist_info)))
            return 0

        workers = methods.pool_workers(args, processes_per_node=dist_info.local_world_size)
        pool = PartitionPool(workers) if workers else None
        try:
            method = methods.build_method(args, num_classes, info, executor=pool, precision=precision)
            # Last, so that nothing above (model init, data subset) shifts the resumed random streams.
            if checkpoint is not None:
                _restore_random_streams(checkpoint, args, dist_info, start_epoch)
            _train(args, net, model, optimizer, method, device, num_classes, train_loader, valid_loader,
                   test_loader, history, best_acc, start_epoch, exp_dir, log, runtime)
        finally:
            if pool is not None:
                pool.close()
    return 0


def _cuda_index(dist_info: distributed.DistInfo) -> int | None:
    """The one GPU whose random state a distributed process saves and restores (None otherwise)."""
    return dist_info.device.index if dist_info.distributed and dist_info.device.type == "cuda" else None


def _restore_random_streams(checkpoint: dict, args: argparse.Namespace, dist_info: distributed.DistInfo,
                            start_epoch: int) -> None:
    """Continue the saved random streams: each rank its own when the checkpoint holds one per rank
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
           log: LogPrinter, runtime: _Runtime) -> None:
    """The epoch loop: train, evaluate, log and save each epoch (net: what runs, model: what is saved;
    only rank 0 logs and saves, every rank takes part in the reductions)."""
    dist_info = runtime.dist
    if start_epoch >= args.epochs:
        log(f"=> nothing to train: the run starts at epoch {start_epoch} and --epochs is {args.epochs}")
    epoch_time = AverageMeter()
    with ScalarLog(exp_dir if dist_info.is_main else None) as scalars:
        for epoch in range(start_epoch, args.epochs):
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
                                num_classes, exp_dir)
            epoch_time.update(time.time() - started)

    if history["test_acc"]:
        log(_final_line(history["test_acc"]))


def _save_epoch(args: argparse.Namespace, model: nn.Module, optimizer: torch.optim.Optimizer, runtime: _Runtime,
                history: dict[str, list[float]], best_acc: float, is_best: bool, epoch: int, rng: dict,
                rng_ranks: list[dict] | None, num_classes: int, exp_dir: str) -> None:
    """Rank 0's files of a finished epoch: log.pkl, the curves and the checkpoint(s)."""
    atomic_pickle_dump({key: list(values) for key, values in history.items()}, os.path.join(exp_dir, "log.pkl"))
    plot_curves(history, exp_dir)
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


def _error_line(err: BaseException, rank: int) -> str:
    return f"error: {err}" if rank == 0 else f"error: [rank {rank}] {err}"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]), validate, and run; returns the exit status
    (0 success, 2 bad arguments/data/checkpoint with one ``error:`` line on stderr).

    Under torchrun (WORLD_SIZE > 1 in the environment) the process joins the process group for
    the run and leaves it at the end or on an error. Argument errors are printed by rank 0 only
    (every rank finds the same); a data, checkpoint or launch error by every rank that meets it,
    prefixed with its rank on the others.
    """
    rank = distributed.env_rank()
    parser = get_args_parser()
    try:
        # The other ranks would repeat rank 0's usage message or --help word for word.
        with contextlib.redirect_stdout(io.StringIO()) if rank else contextlib.nullcontext(), \
                contextlib.redirect_stderr(io.StringIO()) if rank else contextlib.nullcontext():
            args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error already printed (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.data_dir is None:
        args.data_dir = f"./data/{args.dataset}"
    try:
        resolve_method(args)
        validate_args(args)
    except ValueError as err:
        if rank == 0:
            print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        with distributed.session(use_cuda=_pick_device(args)) as dist_info:
            return run(args, dist_info)
    except (DataError, CheckpointError, distributed.LaunchError) as err:
        print(_error_line(err, rank), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
