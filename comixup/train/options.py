"""The command line of ``main.py``: the parser, how --method and --comix combine, the checks
run before any heavy work, and the experiment folder name.

``main.py`` re-exports :func:`get_args_parser`, :func:`resolve_method`, :func:`validate_args`
and :func:`experiment_name`, so ``from main import get_args_parser`` keeps working.
"""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from comixup import models
from comixup.core import lifecycle
from comixup.core.lifecycle import str2bool
from comixup.data.cifar_c import CORRUPTION_AVERAGES, PUBLISHED_AVERAGE, STANDARD_AVERAGE
from comixup.data.datasets import DATASETS, dataset_info
from comixup.mixing import comix_solver
from comixup.models.init import INITS
from comixup.train import distributed, methods
from comixup.train.config_file import parse_args_with_config
from comixup.train.recipe import Recipe, RecipeError

__all__ = ["AUTO_RESUME", "experiment_name", "get_args_parser", "parse_command_line", "resolve_method",
           "validate_args", "data_folders"]

AUTO_RESUME = "auto"
"""``--resume auto``: continue from the experiment folder's checkpoint if it has one."""

_EPILOG = (
    "Several GPUs / nodes: torchrun --nproc_per_node N main.py ... (one process per GPU, "
    "DistributedDataParallel; several nodes: add --nnodes, --node_rank and --rdzv_endpoint HOST:PORT as "
    "torchrun documents). --batch_size is per process, so a step uses N x batch_size images in all; the "
    "learning rate is not rescaled for you. "
    "ImageNet as the published comix-imagenet run (ResNet-50, 100 epochs, three phases of progressive "
    "resizing, piecewise-linear learning rate, plain momentum, no weight decay on BatchNorm, fp16): "
    "python prepare_imagenet.py --src IMAGENET --dst DIR --sizes 160 352, then "
    "torchrun --nproc_per_node 4 main.py --config configs/imagenet_fast.yml --data_dir DIR "
    "(the file's phases give global batch sizes, split over the processes: 1, 2 or 4 keep whole partitions "
    "of 16 per process as published; see docs/imagenet.md). Its Co-Mixup "
    "settings as flags: --dataset imagenet --arch resnet50 --labels_per_class 0 --m_part 16 --m_niter 3 "
    "--m_block_num 4 --m_peak_stride 8 --mixup_alpha 1.0 (flat Dirichlet prior) --loss ce --clean_lam 500 (their "
    "clean loss is 1 x CE; ours is 2 clean_lam CE / 1000) --amp fp16."
)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def get_args_parser() -> argparse.ArgumentParser:
    """The published command line, same names, defaults and meanings, plus --m_solver,
    --method, --loss, the Puzzle Mix flags under the Puzzle Mix repository's names and the
    successors' flags (:func:`comixup.train.methods.add_method_flags`; unset unless given).

    ``--data_dir`` defaults to ./data/<dataset> (resolved by :func:`main`). ``--method``,
    ``--comix``, ``--mixup_alpha`` and ``--clean_lam`` default to None, which
    :func:`resolve_method` turns into the method and its published values. Booleans accept
    true/false, yes/no, t/f, y/n, 1/0 in any case.
    """
    parser = lifecycle.ArgumentParser(description="Train a classifier with Co-Mixup",
                                      formatter_class=lifecycle.HelpFormatter, epilog=_EPILOG)

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
    optim.add_argument("--momentum", type=float, default=0.9, help="momentum of SGD (Nesterov: see --nesterov)")
    optim.add_argument("--decay", type=float, default=0.0001, help="weight decay (L2 penalty)")
    optim.add_argument("--nesterov", type=str2bool, default=True, metavar="BOOL",
                       help="Nesterov momentum (the published CIFAR code) or plain momentum (False: the "
                            "published ImageNet recipe)")
    optim.add_argument("--bn_weight_decay", type=float, default=None, metavar="WD",
                       help="weight decay of the BatchNorm weights and biases (the ImageNet recipe: 0); "
                            "default: --decay, one parameter group as the published CIFAR code")
    optim.add_argument("--init", default="default", choices=INITS,
                       help="weight initialisation: the model's own, or published_imagenet (He-normal fan-out "
                            "convolutions, BatchNorm 1/0 with the last gamma of every residual block 0, fc "
                            "weights N(0, 0.01); torchvision ResNets only)")
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
                        help="mixing-weight concentration (Co-Mixup: Dirichlet prior; the others: Beta(a, a), "
                             "SaliencyMix's beta, ResizeMix's with --resizemix_use_alpha True). Default: the "
                             "method's published value: " + ", ".join(
                                 f"{name} {alpha}" for name, alpha in methods.PUBLISHED_MIXUP_ALPHA.items()
                                 if alpha is not None) + ", resizemix 1.0 with --resizemix_use_alpha True "
                             "(vanilla: unused; guided_ap and guided_sr draw no mixing weight and take none)")
    method.add_argument("--clean_lam", type=float, default=None,
                        help="weight of the clean-input loss of comix, puzzle and guided_ap (0: saliency only, in "
                             "eval mode, its loss discarded). Default: the published value: comix 1.0, puzzle 0.0, "
                             "guided_ap 0.0 (vanilla: 1.0, unused but part of the published folder name; the other "
                             "methods have no clean pass and take no value above 0)")
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
    mix.add_argument("--m_peak_stride", type=int, default=1, metavar="S",
                     help="stride of the 8x8 average pool that finds each input's saliency peak for the "
                          "compatibility term (published CIFAR code 1, ImageNet code 8)")

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
    # the successors' flags: unset (None) unless given, the method's published value then
    methods.add_method_flags(parser)

    ckpt = parser.add_argument_group("checkpoints")
    ckpt.add_argument("--print_freq", type=int, default=100,
                      help="accepted for compatibility (the published script does not use it either); "
                           "running values show in the progress bar")
    ckpt.add_argument("--resume", default="", type=str,
                      help="checkpoint to continue from (ours or the published), or 'auto': the experiment folder's "
                           "checkpoint.pth.tar when there is one, else a fresh start (for requeued cluster jobs)")
    ckpt.add_argument("--checkpoint_steps", type=int, default=0, metavar="N",
                      help="also write checkpoint.pth.tar inside an epoch, after every N training steps (0: only at "
                           "the end of each epoch); resuming from it continues at the next step")
    ckpt.add_argument("--checkpoint_minutes", type=float, default=0.0, metavar="M",
                      help="also write checkpoint.pth.tar inside an epoch when M minutes passed since the last one "
                           "(0: never)")
    ckpt.add_argument("--start_epoch", type=int, default=0,
                      help="first epoch when not resuming (a resumed run starts at the checkpoint's epoch)")
    lifecycle.flag_bool(ckpt, "--evaluate", "only evaluate the (resumed) model on the test set")

    evaluation = parser.add_argument_group("calibration and robustness")
    evaluation.add_argument("--ece_bins", type=int, default=15, metavar="B",
                            help="equal-width confidence bins of the expected calibration error logged after "
                                 "every Test line (Guo et al. 2017)")
    evaluation.add_argument("--fgsm", type=float, nargs="+", default=None, metavar="EPS",
                            help="with --evaluate: also the top-1 error under one-step FGSM of each EPS, in 1/255 "
                                 "units of the [0, 1] image (e.g. --fgsm 4 8)")
    evaluation.add_argument("--corruption_dir", default="", metavar="DIR",
                            help="with --evaluate, CIFAR only: also the top-1 error on CIFAR-10-C / CIFAR-100-C, "
                                 "the release's folder of <corruption>.npy files and labels.npy")
    evaluation.add_argument("--corruption_average", default=STANDARD_AVERAGE, choices=CORRUPTION_AVERAGES,
                            help="the mean of --corruption_dir: standard = the mean top-1 error over the 15 standard "
                                 "corruptions; published = Puzzle Mix's test_robust.py, the mean top-1 accuracy over "
                                 "every .npy file of the folder (19 in the release), which it labels 'mCE'")

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
    lifecycle.flag_bool(accel, "--data_on_device",
               "CIFAR only: hold the uint8 training and test sets on the training device and crop, flip and "
               "normalise each batch there (no loader workers; works on the CPU too)")
    lifecycle.flag_bool(accel, "--sync_bn",
               "under torchrun on GPUs: SyncBatchNorm, batch statistics over all processes' batches "
               "(no effect in a single process)")

    misc = parser.add_argument_group("misc")
    # read first by config_file.parse_args_with_config, which also sets phases and lr_points (no
    # attribute at all when this parser alone reads a command line)
    misc.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                      help="YAML file of flag values (every top-level key a flag; flags given here override "
                           "it) and of a multi-phase recipe: phases (epochs, data_dir, crop, global batch_size, "
                           "min_scale) and lr_points ([epoch, lr] pairs, linear in between, set every step); "
                           "e.g. configs/imagenet_fast.yml")
    misc.add_argument("--seed", type=int, default=0, help="random seed")
    misc.add_argument("--tag", type=str, default="", help="suffix of the experiment folder name")
    lifecycle.flag_bool(misc, "--log_off", "write no files (output is still printed)")
    return parser


def parse_command_line(argv: Sequence[str] | None) -> argparse.Namespace | int:
    """main.py's command line, ``--config FILE`` read first (its values become the defaults, the
    other flags override them); the exit status when parsing ended the command (0 after --help,
    2 after a usage error or a bad config file, its line already printed)."""
    return lifecycle.parse_args(get_args_parser(), argv, parse=parse_args_with_config)


def resolve_method(args: argparse.Namespace) -> None:
    """Settle ``args.method``, ``args.comix``, ``args.mixup_alpha`` and ``args.clean_lam`` in place.

    Rule: an explicit --method wins. Without it, --comix picks: True (or absent) = comix,
    False = vanilla, as in the published script. Given both, --comix must agree: --comix True
    only with --method comix, --comix False only with another method; a contradiction raises
    ValueError (one line). Afterwards ``args.comix`` is ``args.method == "comix"``, and a None
    --mixup_alpha / --clean_lam becomes the method's published value
    (:data:`methods.PUBLISHED_MIXUP_ALPHA`, :data:`methods.PUBLISHED_CLEAN_LAM`), and the method's
    own unset flags its published values (:func:`methods.fill_published_defaults`). Idempotent.
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
    with every problem found (what is wrong and what is allowed), joined into one line; each
    problem names its flag.

    Covered: ranges of every number (finite where a float), the combinations (--schedule and
    --gammas of equal length; --start_epoch below --epochs for a new run; --labels_per_class
    plus --valid_labels_per_class within the images per class of the data set, where it is
    fixed: CIFAR-10 5000, CIFAR-100 and Tiny-ImageNet 500, ImageNet checked once its folders
    are read; --m_part at most --batch_size and --m_block_num dividing the image size for
    comix; the Puzzle Mix grid for puzzle; each method's own flags, a method-specific flag given
    with another method, SaliencyMix without OpenCV's contrib modules; the torchrun, --amp,
    --sync_bn and --data_on_device combinations; --ece_bins, --fgsm and --corruption_dir (the
    last two with --evaluate); the --config recipe's phases and lr_points, their global batches
    against the number of processes, and --m_block_num against every phase's crop) and an
    existing --resume file. Unknown names (dataset, arch, method, solver, ...) are refused by the parser itself. The
    data folders (:func:`data_folders`) are checked by comixup.data.datasets.check_data_dir, the experiment
    folder by main when it creates it.
    """
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
    if not args.resume and not args.evaluate and 0 <= args.start_epoch and args.epochs >= 0:
        need(args.start_epoch < args.epochs,
             f"--epochs {args.epochs} leaves nothing to train from --start_epoch {args.start_epoch}; "
             f"--epochs must be larger than --start_epoch")
    need(finite(args.learning_rate) and args.learning_rate > 0,
         f"--learning_rate must be a positive number, got {args.learning_rate}")
    need(finite(args.momentum) and args.momentum >= 0, f"--momentum must be 0 or more, got {args.momentum}")
    need(finite(args.decay) and args.decay >= 0, f"--decay must be 0 or more, got {args.decay}")
    _optimiser_problems(args, problems)
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
    if not args.evaluate:  # evaluation reads only the test split
        _labels_problems(args, problems)
    need(finite(args.clean_lam) and args.clean_lam >= 0, f"--clean_lam must be 0 or more, got {args.clean_lam}")
    problems += methods.foreign_flag_problems(args)
    for image_size in _train_image_sizes(args):
        problems += [problem for problem in methods.method_class(args.method).arg_problems(args, image_size, problems)
                     if problem not in problems]
    need(args.print_freq >= 1, f"--print_freq must be at least 1, got {args.print_freq}")
    need(args.workers >= 0, f"--workers must be 0 or more, got {args.workers}")
    need(0 <= args.seed < 2**32, f"--seed must lie in [0, 2**32 - 1], got {args.seed}")
    need(os.sep not in args.tag and (os.altsep is None or os.altsep not in args.tag),
         f"--tag becomes part of a folder name and must not contain a path separator, got {args.tag!r}")
    _distributed_problems(args, problems)
    _recipe_problems(args, problems)
    _evaluation_problems(args, problems)
    if args.ngpu < 0:
        problems.append(f"--ngpu must be 0 (CPU) or more, got {args.ngpu}")
    elif args.ngpu > 1 and torch.cuda.is_available() and args.ngpu > torch.cuda.device_count():
        problems.append(f"--ngpu {args.ngpu} asks for more GPUs than the {torch.cuda.device_count()} visible")
    if args.arch not in models.WIDTH_ARCHS and args.initial_channels != models.DEFAULT_INITIAL_CHANNELS:
        problems.append(f"--initial_channels applies only to the preactresnet models; {args.arch} has a "
                        f"fixed width (leave it at {models.DEFAULT_INITIAL_CHANNELS})")
    need(args.checkpoint_steps >= 0, f"--checkpoint_steps must be 0 (off) or more, got {args.checkpoint_steps}")
    need(finite(args.checkpoint_minutes) and args.checkpoint_minutes >= 0,
         f"--checkpoint_minutes must be 0 (off) or more, got {args.checkpoint_minutes}")
    if args.resume == AUTO_RESUME:
        pass  # resolved in the experiment folder once it is held (main.run)
    elif args.resume and os.path.isdir(args.resume):
        problems.append(f"--resume {args.resume} is a folder; give the checkpoint file in it, e.g. "
                        f"{os.path.join(args.resume, 'checkpoint.pth.tar')}")
    elif args.resume and not os.path.isfile(args.resume):
        problems.append(f"--resume {args.resume}: no such checkpoint file")
    if problems:
        raise ValueError("; ".join(problems))


def _evaluation_problems(args: argparse.Namespace, problems: list[str]) -> None:
    """--ece_bins, --fgsm, --corruption_dir and --corruption_average (the folder's files are checked
    by main with comixup.data.cifar_c.open_release, before any heavy work)."""
    bins, fgsm = getattr(args, "ece_bins", 15), getattr(args, "fgsm", None) or []
    corruption_dir = getattr(args, "corruption_dir", "")
    if getattr(args, "corruption_average", STANDARD_AVERAGE) == PUBLISHED_AVERAGE and not corruption_dir:
        problems.append("--corruption_average published averages the files of a CIFAR-C folder: give "
                        "--corruption_dir DIR (with --evaluate)")
    if bins < 1:
        problems.append(f"--ece_bins must be 1 or more, got {bins}")
    if fgsm and not args.evaluate:
        problems.append("--fgsm measures a trained model: use it with --evaluate --resume CHECKPOINT")
    bad = [eps for eps in fgsm if not (math.isfinite(eps) and 0 <= eps <= 255)]
    if bad:
        problems.append(f"--fgsm takes strengths in 1/255 units of the [0, 1] image, from 0 to 255, got "
                        f"{' '.join(f'{eps:g}' for eps in bad)}")
    if corruption_dir and not args.evaluate:
        problems.append("--corruption_dir measures a trained model: use it with --evaluate --resume CHECKPOINT")
    if corruption_dir and args.dataset not in ("cifar10", "cifar100"):
        problems.append(f"--corruption_dir reads CIFAR-10-C / CIFAR-100-C: use it with --dataset cifar10 or "
                        f"cifar100, not {args.dataset}")


def _optimiser_problems(args: argparse.Namespace, problems: list[str]) -> None:
    """--nesterov, --bn_weight_decay and --init."""
    if args.nesterov and math.isfinite(args.momentum) and args.momentum <= 0:
        problems.append(f"--nesterov True needs a --momentum above 0, got {args.momentum}; use --nesterov False "
                        f"for plain SGD")
    wd = args.bn_weight_decay
    if wd is not None and not (math.isfinite(wd) and wd >= 0):
        problems.append(f"--bn_weight_decay must be 0 or more, got {wd}")
    if args.init == "published_imagenet" and args.arch not in models.TORCHVISION_RESNETS:
        problems.append(f"--init published_imagenet is for torchvision's ResNets "
                        f"({', '.join(models.TORCHVISION_RESNETS)}), not {args.arch}; use --init default")


def _recipe_problems(args: argparse.Namespace, problems: list[str]) -> None:
    """The phases and lr_points of --config: their own checks (recipe.Recipe), the data set they
    apply to, the flags they replace, and the number of processes sharing each global batch."""
    phases, lr_points = getattr(args, "phases", None), getattr(args, "lr_points", None)
    if phases is None and lr_points is None:
        return
    source = f"--config {getattr(args, 'config', None) or '(none)'}"
    try:
        recipe = Recipe.from_args(args)
    except RecipeError as err:
        problems.append(f"{source}: {err}")
        return
    if recipe.lr_points and args.warmup_epochs > 0:
        problems.append(f"--warmup_epochs {args.warmup_epochs} does not combine with lr_points (they set the rate "
                        f"of every step, warm-up included); drop --warmup_epochs")
    if not recipe.phases:
        return
    if args.dataset != "imagenet":
        problems.append(f"phases ({source}) train on ImageNet-style folders with random resized "
                        f"crops: use --dataset imagenet, not {args.dataset}")
    if args.valid_labels_per_class > 0:
        problems.append(f"--valid_labels_per_class {args.valid_labels_per_class} does not combine with phases "
                        f"(each phase reads its own training folder); leave it at 0")
    try:
        world_size = distributed.env_world()[0]
    except distributed.LaunchError:  # reported by _distributed_problems
        return
    try:
        recipe.check_world_size(world_size)
    except RecipeError as err:
        problems.append(f"{source}: {err}")


def _train_image_sizes(args: argparse.Namespace) -> list[int]:
    """The sides of the training images: every phase's crop, or the data set's image size."""
    try:
        phases = Recipe.from_args(args).phases
    except RecipeError:  # reported by _recipe_problems
        phases = ()
    return sorted({phase.crop for phase in phases}) or [dataset_info(args.dataset).image_size]


def data_folders(args: argparse.Namespace) -> list[str]:
    """The data folders a validated run reads, for comixup.data.datasets.check_data_dir before any heavy
    work: --data_dir, or with phases every phase's folder (--evaluate: only the last phase's,
    the one evaluation reads)."""
    recipe = Recipe.from_args(args)
    if not recipe.phases:
        return [args.data_dir]
    if args.evaluate:
        return [recipe.eval_data_dir]
    return list(dict.fromkeys(phase.data_dir for phase in recipe.phases))


def _labels_problems(args: argparse.Namespace, problems: list[str]) -> None:
    """--labels_per_class and --valid_labels_per_class against the images per class of the data
    set, where it is fixed (ImageNet's classes differ: checked when its folders are read)."""
    per_class = dataset_info(args.dataset).train_per_class
    if per_class is None or args.labels_per_class < 0 or args.valid_labels_per_class < 0:
        return
    title = dataset_info(args.dataset).title
    if args.labels_per_class > per_class:
        problems.append(f"--labels_per_class {args.labels_per_class} is more than the {per_class} training images "
                        f"per class of {title}; use 1 to {per_class}, or 0 for every image")
    elif args.labels_per_class == 0 and args.valid_labels_per_class >= per_class:
        problems.append(f"--valid_labels_per_class {args.valid_labels_per_class} leaves no training image of the "
                        f"{per_class} per class of {title} (--labels_per_class 0 trains on the rest); use at most "
                        f"{per_class - 1}")
    elif args.labels_per_class + args.valid_labels_per_class > per_class:
        problems.append(f"--valid_labels_per_class {args.valid_labels_per_class} plus --labels_per_class "
                        f"{args.labels_per_class} is more than the {per_class} training images per class of "
                        f"{title}; their sum must be at most {per_class}")


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
    transport, ``_transport_eps_<t_eps>_size_<t_size>`` (the Puzzle Mix repository's order);
    saliencymix then ``_prob_<p>``, fmix ``_decay_<d>``, each official-code option it departs to
    when given (``_detector_normalised``, ``_soft_<s>``, ``_spectrum_published``). resizemix puts
    ``_method_resizemix_scope_<low>_<high>`` (``_use_alpha_<a>`` with --resizemix_use_alpha True),
    guided_ap and guided_sr ``_method_<name>_mix_prob_<p>`` (``_pairing_random`` when given). Any
    method: ``--loss ce`` adds ``_loss_ce`` before ``_clean_<clean_lam>`` (present when it is > 0);
    after it, a warm-up adds ``_warmup_<W>``, ``--amp bf16/fp16`` adds ``_amp_<mode>`` and
    ``--config FILE`` adds ``_cfg_<FILE's stem>`` (what the file sets besides the named flags,
    its phases and learning-rate points, is known by the file's name). The number of processes
    is not part of the name.
    """
    name = (f"{args.dataset}_per_{args.labels_per_class}_arch_{args.arch}_eph_{args.epochs}"
            f"_lr_{args.learning_rate}")
    name += methods.method_class(args.method).name_part(args)
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
    if getattr(args, "config", None):
        name += f"_cfg_{Path(args.config).stem}"
    name += f"_seed_{args.seed}"
    if args.tag:
        name += f"_{args.tag}"
    return name
