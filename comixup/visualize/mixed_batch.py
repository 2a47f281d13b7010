"""Draw one batch mixed by Co-Mixup (or a baseline) as a three-row PNG.

    python visualize.py --dataset cifar10 --data_dir ./data/cifar10-images/test \\
        --resume experiments/<name>/model_best.pth.tar --num_images 8 --out images/figure.png

Row 1 shows the inputs (de-normalised), row 2 their input-gradient saliency maps as heat maps
(GuidedMixup-SR: the spectral residual it mixes by), row 3 the mixed outputs, each annotated with
the inputs it draws from and their shares (``#2 56% · #5 44%``, numbers as above the inputs): mask
areas for Co-Mixup and Puzzle Mix, the label weights of the others (the pasted box's area for
CutMix, SaliencyMix and ResizeMix, lam for mixup and FMix, the mean pixel ratio for GuidedMixup).
``--grid`` outlines the mask blocks (CutMix, SaliencyMix, ResizeMix: the box). The methods that
mix with a probability (SaliencyMix, GuidedMixup) always mix in the figure.

``--data_dir`` is either the data set's usual folder (read with ``comixup.data.datasets.get_datasets``,
never downloading; ``--split`` picks train or test) or one ImageFolder of images of the data
set's size (class folders of images, e.g. ``./data/cifar10-images/test``, see docs/data.md).
Either way the data set's test transform applies (no random augmentation). An ImageFolder's labels are its sorted folder
positions, as for the folder data sets in training; folders named after the CIFAR classes get
CIFAR's indices (both orders are alphabetical). The images come from distinct classes where
the data allows.

The saliency (the input gradient of the cross-entropy for the true label, model in eval mode)
comes from ``--resume``'s weights, or from a freshly initialised model when there is none (the
title says so); everything runs on the CPU. Co-Mixup mixes the shown inputs as one partition
(m_part = --num_images).

The same arguments and ``--seed`` draw the same figure. The PNG is written atomically.
Exit status: 0 on success, 2 for bad arguments, data or checkpoints (one ``error:`` line on
stderr, no file written).

Library use: :func:`mix_batch` mixes tensors and reports the shares; :func:`build_figure`
draws the figure from tensors and returns what it drew; :func:`write_png` saves it.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets

from comixup import models
from comixup.core import lifecycle
from comixup.core.files import atomic_write
from comixup.core.lifecycle import str2bool
from comixup.data.datasets import DATASETS, DataError, dataset_info, dataset_transforms, get_datasets
from comixup.mixing import comix, comix_solver
from comixup.mixing.saliency import input_gradient_saliency
from comixup.train import checkpoints, methods
from comixup.train.checkpoints import CheckpointError, load_checkpoint
from comixup.train.classifier import ClassifierSpec, classifier_spec, recorded_classes

__all__ = [
    "METHODS", "MixResult", "FigureResult", "Visualisation", "VisualizeError", "mix_batch", "denormalise",
    "format_shares", "figure_size_px", "wrap_title", "build_figure", "write_png", "get_args_parser", "make_figure",
    "main",
]

def drawable_methods() -> tuple[str, ...]:
    """The registered methods whose mixed batch can be drawn (input-space mixing), Co-Mixup first:
    read from the registry at each call, so a method registered later is drawn too."""
    drawable = [name for name, method in methods.REGISTRY.items() if method.drawable]
    return tuple(sorted(drawable, key=lambda name: name != "comix"))


METHODS = drawable_methods()
"""The methods drawable when this module was imported (:func:`drawable_methods` is current)."""
MAX_IMAGES = 32  # one row of panels; wider figures stop being readable
IMAGENET_CLASSES = 1000

# Layout in pixels at DPI. DPI is a power of two so that pixels / DPI * DPI is exact and the
# PNG has exactly the computed size.
DPI = 128
PANEL = 160  # 5x a CIFAR image
GAP = 24
LEFT = 40
RIGHT = 16
MIN_WIDTH = 640  # narrower figures centre their panels, so the title keeps room
TITLE_LINE = 25  # one title line (10 pt, spacing 1.4)
TITLE_CHARS_PX = 9.5  # an upper bound on the mean width of a title character
TITLE_PAD = 18
CAPTION = 30
ROW_GAP = 14
LINE = 21  # one annotation line (9 pt)
BELOW = 14
SOURCES_PER_LINE = 2

_CO_MIXUP_FLAGS = ("m_block_num", "m_beta", "m_gamma", "m_thres", "m_thres_type", "m_eta", "m_omega",
                   "set_resolve", "m_niter", "m_solver")


class VisualizeError(Exception):
    """Bad arguments for the figure; the message is one line meant for the user."""


# --------------------------------------------------------------------------- mixing

MixResult = methods.MixResult


@torch.no_grad()
def mix_batch(method: str, x: Tensor, labels: Tensor, saliency: Tensor, num_classes: int,
              rng: np.random.Generator, mixup_alpha: float | None = None,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
              comix_options: dict[str, Any] | None = None, puzzle_block_num: int = -1,
              method_options: Mapping[str, Any] | None = None) -> MixResult:
    """Mix the batch x (B, C, H, W) with labels (B,) and saliency (B, H, W) as the registered
    ``method`` draws it (:meth:`comixup.train.methods.Method.draw_mix`), every draw from ``rng``.

    comix: the whole batch is one partition (m_part = B) with ``comix_options`` (CoMixup keyword
    arguments) over the published defaults; shares are the mask areas. mixup / cutmix: a shuffled
    partner per image and lam ~ Beta(alpha, alpha); shares lam (CutMix: the kept area). puzzle:
    Puzzle Mix with its published defaults, ``puzzle_block_num`` (-1: drawn) and mean/std (the
    normalisation of x); shares the mask areas. saliencymix, fmix, resizemix, guided_ap,
    guided_sr: their own flags in ``method_options`` (by flag name, e.g. ``{"fmix_spectrum":
    "published"}``) over their published values, always mixing. Raises ValueError for a method that
    cannot be drawn and for settings the method rejects.
    """
    drawable = drawable_methods()
    if method not in drawable:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(drawable)}")
    options: dict[str, Any] = {}
    if method == "comix":
        options = dict(comix_options or {})
    elif method == "puzzle":
        options = {"block_num": puzzle_block_num}
    else:
        options = dict(method_options or {})
    settings = methods.FigureSettings(num_classes=num_classes, rng=rng, mixup_alpha=mixup_alpha, mean=mean, std=std,
                                      options=options)
    return methods.REGISTRY[method].draw_mix(x, labels, saliency, settings)


# --------------------------------------------------------------------------- drawing

@dataclass
class FigureResult:
    """The figure and exactly what it shows.

    title: as drawn (each line wrapped to the figure's width); inputs / outputs (N, H, W, 3) in
    [0, 1] (rows 1 and 3); saliency (N, H, W) in [0, 1] (row 2, each map divided by its maximum);
    annotations: the text under each output; panel_boxes[row][col]: (left, top, right, bottom)
    pixel bounds of each panel in the saved PNG; size_px: (width, height) of the PNG.
    """

    figure: Figure
    title: str
    inputs: np.ndarray
    saliency: np.ndarray
    outputs: np.ndarray
    annotations: list[str]
    panel_boxes: list[list[tuple[int, int, int, int]]]
    size_px: tuple[int, int]


def _title(method: str) -> str:
    return methods.REGISTRY[method].title


def denormalise(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised images (B, C, H, W) back to displayable pixels (B, H, W, C) in [0, 1]."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    pixels = (x.detach().float() * std_t + mean_t).clamp(0, 1)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def _rounded_percentages(values: np.ndarray) -> np.ndarray:
    """Whole percentages of shares that sum to 100 (largest remainder)."""
    exact = values / values.sum() * 100
    floors = np.floor(exact).astype(int)
    missing = 100 - floors.sum()
    order = np.argsort(-(exact - floors), kind="stable")
    floors[order[:missing]] += 1
    return floors


def format_shares(shares: np.ndarray, per_line: int = SOURCES_PER_LINE) -> str:
    """The annotation of one output: its inputs (1-based) with their shares, largest first,
    ``per_line`` to a line, e.g. ``#2 56% · #5 44%``. Inputs with share 0 are left out; a share
    below 0.5% shows as ``<1%``."""
    shares = np.asarray(shares, dtype=np.float64)
    used = np.flatnonzero(shares > 0)
    if used.size == 0:
        raise ValueError("an output must draw from at least one input (all shares are 0)")
    used = used[np.argsort(-shares[used], kind="stable")]
    percents = _rounded_percentages(shares[used])
    entries = [f"#{i + 1} {p}%" if p > 0 else f"#{i + 1} <1%" for i, p in zip(used, percents, strict=False)]
    return "\n".join(" · ".join(entries[k:k + per_line]) for k in range(0, len(entries), per_line))


def figure_size_px(num_images: int, max_sources: int, title_lines: int) -> tuple[int, int]:
    """(width, height) in pixels of the figure for num_images columns whose outputs draw from
    at most max_sources inputs each, under a title of title_lines lines (after wrapping)."""
    width = max(MIN_WIDTH, LEFT + num_images * PANEL + (num_images - 1) * GAP + RIGHT)
    lines = math.ceil(max_sources / SOURCES_PER_LINE)
    height = _title_height(title_lines) + CAPTION + 3 * PANEL + 2 * ROW_GAP + lines * LINE + BELOW
    return width, height


def _title_height(title_lines: int) -> int:
    return TITLE_PAD + title_lines * TITLE_LINE


def wrap_title(title: str, num_images: int) -> str:
    """The title with each of its lines wrapped to the width of a figure of num_images columns."""
    width = figure_size_px(num_images, 1, 1)[0]
    chars = max(20, int((width - 2 * RIGHT) / TITLE_CHARS_PX))
    lines = [piece for line in title.splitlines() for piece in (textwrap.wrap(line, chars) or [""])]
    return "\n".join(lines)


def build_figure(inputs: Tensor, saliency: Tensor, mix: MixResult, mean: Sequence[float], std: Sequence[float],
                 title: str = "", input_names: Sequence[str] | None = None, grid: bool = False) -> FigureResult:
    """Draw the three-row figure from tensors: inputs (N, C, H, W) normalised by mean/std,
    saliency (N, H, W), and their mix (N outputs). input_names label the inputs (``#k name``);
    grid outlines the mask blocks (or the pasted box) on the outputs. Row 2 shows ``mix.saliency``
    instead of ``saliency`` when the method mixed by maps of its own. Uses matplotlib's Agg
    canvas directly, so pyplot's state is untouched. Nothing is written to disk."""
    count = inputs.shape[0]
    if saliency.shape[0] != count or mix.mixed.shape[0] != count or mix.shares.shape != (count, count):
        raise ValueError(f"build_figure needs as many saliency maps, outputs and share rows as inputs ({count}); "
                         f"got {saliency.shape[0]}, {mix.mixed.shape[0]} and {mix.shares.shape}")
    if input_names is not None and len(input_names) != count:
        raise ValueError(f"got {len(input_names)} input names for {count} inputs")
    if grid and mix.grid_size is None and mix.box is None:
        raise ValueError(f"{_title(mix.method)} has no mask grid or box to draw")
    shown_inputs = denormalise(inputs, mean, std)
    shown_outputs = denormalise(mix.mixed, mean, std)
    sal = (saliency if mix.saliency is None else mix.saliency).detach().float().cpu()
    peak = sal.flatten(1).amax(1).clamp_min(torch.finfo(torch.float32).tiny).view(-1, 1, 1)
    shown_saliency = (sal / peak).numpy()
    annotations = [format_shares(row) for row in mix.shares]

    title = wrap_title(title, count) if title else ""
    title_lines = len(title.splitlines())
    width, height = figure_size_px(count, max(mix.max_sources, max(a.count("#") for a in annotations)),
                                   title_lines)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    figure.text(0.5, 1 - 10 / height, title, ha="center", va="top", fontsize=10, linespacing=1.4)

    first_top = _title_height(title_lines) + CAPTION
    row_tops = [first_top, first_top + PANEL + ROW_GAP, first_top + 2 * (PANEL + ROW_GAP)]
    # Columns start after the row labels; a figure widened to MIN_WIDTH centres them.
    columns_left = LEFT + (width - (LEFT + count * PANEL + (count - 1) * GAP + RIGHT)) // 2
    row_names = ["inputs", "saliency", _title(mix.method)]
    boxes: list[list[tuple[int, int, int, int]]] = [[], [], []]
    image_height, image_width = shown_inputs.shape[1:3]
    # Nearest-neighbour shows small images as crisp pixels; larger ones need antialiasing.
    interpolation = "nearest" if max(image_height, image_width) <= PANEL else "antialiased"
    for row, top in enumerate(row_tops):
        figure.text((columns_left - LEFT / 2) / width, 1 - (top + PANEL / 2) / height, row_names[row], rotation=90,
                    ha="center", va="center", fontsize=10)
        for col in range(count):
            left = columns_left + col * (PANEL + GAP)
            boxes[row].append((left, top, left + PANEL, top + PANEL))
            axes = figure.add_axes((left / width, 1 - (top + PANEL) / height, PANEL / width, PANEL / height))
            axes.set_axis_off()
            if row == 0:
                axes.imshow(shown_inputs[col], interpolation=interpolation, aspect="auto")
            elif row == 1:
                axes.imshow(shown_saliency[col], cmap="inferno", vmin=0, vmax=1, interpolation=interpolation,
                            aspect="auto")
            else:
                axes.imshow(shown_outputs[col], interpolation=interpolation, aspect="auto")
                if grid:
                    _draw_grid(axes, mix, image_height, image_width)
    for col in range(count):
        centre = columns_left + col * (PANEL + GAP) + PANEL / 2
        name = f" {input_names[col][:14]}" if input_names is not None else ""
        figure.text(centre / width, 1 - (row_tops[0] - 6) / height, f"#{col + 1}{name}", ha="center",
                    va="bottom", fontsize=9)
        figure.text(centre / width, 1 - (row_tops[2] + PANEL + 5) / height, annotations[col], ha="center",
                    va="top", fontsize=9, linespacing=1.25)
    return FigureResult(figure, title, shown_inputs, shown_saliency, shown_outputs, annotations, boxes,
                        (width, height))


def _draw_grid(axes: Any, mix: MixResult, image_height: int, image_width: int) -> None:
    """Block boundaries of the mask grid (or the pasted box) over an output panel."""
    style = dict(color="white", linewidth=1.2, alpha=0.9)
    if mix.grid_size is not None:
        for k in range(1, mix.grid_size):
            axes.axhline(k * image_height / mix.grid_size - 0.5, **style)
            axes.axvline(k * image_width / mix.grid_size - 0.5, **style)
    if mix.box is not None:
        top, bottom, left, right = mix.box
        if bottom > top and right > left:
            axes.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, **style))


def write_png(figure: Figure, path: str | os.PathLike) -> None:
    """Save the figure as a PNG at ``path`` atomically (a temporary file renamed over it), at the
    figure's own size, so FigureResult.panel_boxes locate the panels in the file."""
    atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=DPI))


# --------------------------------------------------------------------------- data

@dataclass
class _Batch:
    images: Tensor
    labels: Tensor
    names: list[str]
    num_classes: int | None  # classes the data set has (None: unknown, e.g. a lone ImageFolder)
    description: str


def _direct_image_folder(folder: Path) -> bool:
    """Whether a class sub-folder of ``folder`` holds image files directly (an ImageFolder root)."""
    extensions = tv_datasets.folder.IMG_EXTENSIONS
    try:
        subfolders = [d for d in folder.iterdir() if d.is_dir()]
        return any(f.is_file() and f.suffix.lower() in extensions for d in subfolders for f in d.iterdir())
    except OSError:
        return False


def _usual_layout(dataset: str, root: Path) -> bool:
    info = dataset_info(dataset)
    if info.archive_folder is not None:
        return (root / info.archive_folder).is_dir()
    test_dir = root / "val" / "images" if dataset == "tiny-imagenet-200" else root / "val"
    return (root / "train").is_dir() and test_dir.is_dir()


def _usual_layout_name(dataset: str, root: Path) -> str:
    info = dataset_info(dataset)
    if info.archive_folder is not None:
        return f"a {info.title} folder ({root / info.archive_folder})"
    test_dir = "val/images" if dataset == "tiny-imagenet-200" else "val"
    return f"a {info.title} folder (train/ and {test_dir}/)"


def _open_source(dataset: str, data_dir: str, split: str | None) -> tuple[Dataset, int | None, str]:
    """(data set read with the test transform, its class count or None, a description)."""
    root = Path(os.path.expanduser(data_dir))
    if not root.is_dir():
        raise DataError(f"--data_dir {data_dir}: no such folder")
    if _usual_layout(dataset, root):
        train_set, _, test_set, num_classes = get_datasets(dataset, str(root), download=False)
        chosen = split or "test"
        if chosen == "test":
            return test_set, num_classes, f"{chosen} split"
        # The figure shows the images as they are: the training split without its random augmentation.
        shown = copy.copy(train_set)
        shown.transform = test_set.transform
        return shown, num_classes, f"{chosen} split"
    if _direct_image_folder(root):
        if split is not None:
            raise DataError(f"--split picks a split of {_usual_layout_name(dataset, root)}; {root} is a single "
                            f"ImageFolder, whose images are all used (leave --split out)")
        test_transform = dataset_transforms(dataset_info(dataset))[1]
        try:
            folder = tv_datasets.ImageFolder(str(root), transform=test_transform)
        except (FileNotFoundError, OSError) as err:
            raise DataError(f"cannot read images from {root}: {' '.join(str(err).split())}") from err
        shown_name = f"{root.parent.name}/{root.name}" if root.parent.name else str(root)
        return folder, None, f"images from {shown_name}"
    try:
        hints = [d for d in sorted(root.iterdir()) if d.is_dir() and _direct_image_folder(d)]
    except OSError:
        hints = []
    hint = f" (did you mean --data_dir {hints[0]}?)" if hints else ""
    raise DataError(f"--data_dir {data_dir} is neither {_usual_layout_name(dataset, root)} nor an ImageFolder "
                    f"(class folders of images){hint}")


def _pick_indices(targets: Sequence[int], count: int, rng: np.random.Generator) -> list[int]:
    """count random indices, from distinct classes as far as the data set allows."""
    order = rng.permutation(len(targets))
    labels = np.asarray(targets)[order]
    _, first = np.unique(labels, return_index=True)
    distinct = order[np.sort(first)][:count].tolist()
    if len(distinct) < count:
        taken = set(distinct)
        distinct += [int(i) for i in order if int(i) not in taken][:count - len(distinct)]
    return [int(i) for i in distinct]


def _load_batch(dataset: str, data_dir: str, split: str | None, count: int, rng: np.random.Generator) -> _Batch:
    source, num_classes, description = _open_source(dataset, data_dir, split)
    if len(source) < count:
        raise DataError(f"--num_images {count} asks for more images than the {len(source)} in {data_dir}")
    targets = source.targets
    classes = list(source.classes)
    info = dataset_info(dataset)
    images, labels, names = [], [], []
    for index in _pick_indices(targets, count, rng):
        try:
            image, label = source[index]
        except OSError as err:  # includes PIL's UnidentifiedImageError
            raise DataError(f"cannot read image {index} of {data_dir}: {' '.join(str(err).split())}") from err
        expected = (3, info.image_size, info.image_size)
        if tuple(image.shape) != expected:
            raise DataError(f"images in {data_dir} are {'x'.join(map(str, image.shape))} after the {dataset} test "
                            f"transform, but {dataset} images are {'x'.join(map(str, expected))}; pick the "
                            f"--dataset these images belong to")
        images.append(image)
        labels.append(int(label))
        names.append(str(classes[label]))
    return _Batch(torch.stack(images), torch.tensor(labels), names, num_classes, description)


# --------------------------------------------------------------------------- model

def _load_model(args: argparse.Namespace, checkpoint: dict | None, num_classes: int) -> tuple[nn.Module, str]:
    """(model in eval mode with the checkpoint's weights, a description for the title). The
    checkpoint's architecture, width and classes win (:func:`comixup.train.classifier.classifier_spec`);
    a fresh model is ``--arch`` (default preactresnet18) of ``--initial_channels`` (default 64)."""
    info = dataset_info(args.dataset)
    if checkpoint is not None:
        spec = classifier_spec(checkpoint, args.resume, arch=args.arch, num_classes=num_classes,
                               initial_channels=args.initial_channels, dataset=args.dataset, same_dataset=True)
    else:
        spec = ClassifierSpec(arch=args.arch or "preactresnet18", num_classes=num_classes,
                              initial_channels=args.initial_channels or models.DEFAULT_INITIAL_CHANNELS,
                              stride=info.stride)
    try:
        # A fresh model's weights come from --seed, without disturbing the caller's torch RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            model = spec.build()
    except ValueError as err:
        raise VisualizeError(str(err)) from err
    if checkpoint is None:
        return model.eval(), f"{spec.arch}, fresh model (untrained, seed {args.seed})"
    checkpoints.load_weights(model, checkpoint, args.resume, f"{spec.describe()} for {args.dataset}")
    epochs = f", epoch {checkpoint['epoch']}" if checkpoint["epoch"] else ""
    return model.eval(), f"{spec.arch} from {os.path.basename(args.resume)}{epochs}"


# --------------------------------------------------------------------------- command line

def get_args_parser() -> argparse.ArgumentParser:
    """The command line of visualize.py. Method-specific flags default to None (unset) so that
    setting one for another method is an error rather than silently ignored."""
    parser = lifecycle.ArgumentParser(description="Draw one batch, its saliency and its Co-Mixup (or baseline) mix "
                                         "as a PNG.", formatter_class=lifecycle.HelpFormatter)
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="data set (normalisation, image size)")
    parser.add_argument("--data_dir", required=True,
                        help="the data set's folder (as for main.py) or an ImageFolder of its images")
    parser.add_argument("--split", choices=("train", "test"), default=None,
                        help="split of the data set's folder (default test); not for an ImageFolder")
    parser.add_argument("--resume", default="", help="checkpoint whose model gives the saliency (default: a "
                                                     "fresh model)")
    parser.add_argument("--arch", default=None, choices=models.model_names(),
                        help="architecture (default: the checkpoint's, else preactresnet18)")
    parser.add_argument("--initial_channels", type=int, default=None,
                        help="preactresnet width (default: the checkpoint's, else 64)")
    parser.add_argument("--method", default="comix", choices=drawable_methods(), help="mixing method")
    parser.add_argument("--out", default="images/figure.png", help="PNG file to write")
    parser.add_argument("--grid", action="store_true",
                        help="outline the mask blocks (cutmix, saliencymix, resizemix: the box) on the outputs")
    parser.add_argument("--num_images", type=int, default=8,
                        help="inputs shown; Co-Mixup mixes them as one partition (m_part = num_images)")
    parser.add_argument("--seed", type=int, default=0, help="picks the images, the fresh model and the mixing")
    parser.add_argument("--mixup_alpha", type=float, default=None,
                        help="Dirichlet (Co-Mixup, default 2.0) or Beta (others, default 1.0; ResizeMix only with "
                             "--resizemix_use_alpha True; GuidedMixup draws no weight) concentration")
    comix_group = parser.add_argument_group("Co-Mixup (defaults: the published ones)")
    comix_group.add_argument("--m_block_num", type=int, default=None, help="mask grid size n; -1: random (default 4)")
    comix_group.add_argument("--m_beta", type=float, default=None, help="label smoothness (default 0.32)")
    comix_group.add_argument("--m_gamma", type=float, default=None, help="supermodular diversity (default 1.0)")
    comix_group.add_argument("--m_thres", type=float, default=None, help="diversity threshold (default 0.83)")
    comix_group.add_argument("--m_thres_type", default=None, choices=("soft", "hard"), help="(default hard)")
    comix_group.add_argument("--m_eta", type=float, default=None, help="prior coefficient (default 0.05)")
    comix_group.add_argument("--m_omega", type=float, default=None, help="compatibility coefficient (default 0.001)")
    comix_group.add_argument("--set_resolve", type=str2bool, default=None, metavar="BOOL", help="(default True)")
    comix_group.add_argument("--m_niter", type=int, default=None, help="solver iterations (default 4)")
    comix_group.add_argument("--m_solver", default=None, choices=comix_solver.SOLVERS, help="(default fast)")
    puzzle_group = parser.add_argument_group("Puzzle Mix")
    puzzle_group.add_argument("--block_num", type=int, default=None,
                              help="mask grid size; -1: drawn from 2, 4, 8, 16 (default -1, as published)")
    methods.add_method_flags(parser, figure=True)
    return parser


def _check_args(args: argparse.Namespace) -> dict[str, Any]:
    """Check the arguments; returns the options of --method given (Co-Mixup's, or a successor's
    flags), by flag name. VisualizeError with every problem."""
    problems = []
    if not 2 <= args.num_images <= MAX_IMAGES:
        problems.append(f"--num_images must lie in [2, {MAX_IMAGES}] (mixing needs two inputs), got {args.num_images}")
    if not 0 <= args.seed < 2**32:
        problems.append(f"--seed must lie in [0, 2**32 - 1], got {args.seed}")
    if Path(args.out).suffix.lower() != ".png":
        problems.append(f"--out must name a .png file, got {args.out}")
    if args.resume and not os.path.isfile(args.resume):
        problems.append(f"--resume {args.resume}: no such checkpoint file")
    method = methods.REGISTRY[args.method]
    unused_alpha = method.unused_mixup_alpha(args) if args.mixup_alpha is not None else None
    if unused_alpha is not None:
        problems.append(f"--mixup_alpha {args.mixup_alpha}: --method {args.method} {unused_alpha}; leave it out")
    elif args.mixup_alpha is not None and not (math.isfinite(args.mixup_alpha) and args.mixup_alpha > 0):
        problems.append(f"--mixup_alpha must be a positive number, got {args.mixup_alpha}")
    comix_options = {name: getattr(args, name) for name in _CO_MIXUP_FLAGS if getattr(args, name) is not None}
    size = dataset_info(args.dataset).image_size
    if args.method != "comix" and comix_options:
        problems.append(f"{', '.join('--' + k for k in comix_options)} applies only to --method comix")
    if args.method != "puzzle" and args.block_num is not None:
        problems.append("--block_num applies only to --method puzzle (Co-Mixup's grid is --m_block_num)")
    problems += methods.foreign_flag_problems(args)
    problems += method.flag_problems(args)
    missing = method.missing_requirement()
    if missing is not None:
        problems.append(f"--method {args.method}: {missing}")
    if args.grid and method.figure_outline is None:
        outlined = [name for name in drawable_methods() if methods.REGISTRY[name].figure_outline is not None]
        problems.append(f"--grid: {method.title} has no mask grid or box to outline (use it with "
                        f"{', '.join(outlined)})")
    if args.method == "comix":
        try:
            comix.CoMixupConfig(**comix_options)
        except (TypeError, ValueError) as err:
            problems.append(str(err))
        n_block = comix_options.get("m_block_num", comix.CoMixupConfig.m_block_num)
        if n_block >= 1 and size % n_block:
            problems.append(f"--m_block_num {n_block} does not divide the {size}x{size} images of {args.dataset}")
    if args.method == "puzzle" and args.block_num is not None:
        if args.block_num != -1 and (args.block_num < 1 or size % args.block_num):
            problems.append(f"--block_num must be -1 or divide the {size}x{size} images of {args.dataset}, "
                            f"got {args.block_num}")
    if problems:
        raise VisualizeError("; ".join(problems))
    if args.method == "comix":
        return comix_options
    return {flag.dest: getattr(args, flag.dest) for flag in method.flags if getattr(args, flag.dest, None) is not None}


@dataclass
class Visualisation:
    """What :func:`make_figure` computed: the figure, the batch (images normalised, labels), the
    saliency it drew (B, H, W; GuidedMixup-SR: its spectral residual) and the mix."""

    figure: FigureResult
    images: Tensor
    labels: Tensor
    saliency: Tensor
    mix: MixResult


def make_figure(args: argparse.Namespace) -> Visualisation:
    """Load the batch and the model, compute saliency, mix and draw, as parsed ``args`` say.
    Raises VisualizeError, DataError or CheckpointError (one line each) for bad input."""
    options = _check_args(args)
    info = dataset_info(args.dataset)
    select_seq, mix_seq = np.random.SeedSequence(args.seed).spawn(2)
    batch = _load_batch(args.dataset, args.data_dir, args.split, args.num_images, np.random.default_rng(select_seq))
    checkpoint = load_checkpoint(args.resume, map_location="cpu") if args.resume else None
    num_classes = batch.num_classes or info.num_classes
    if num_classes is None:  # an ImageNet ImageFolder: the checkpoint's class count, else ImageNet's
        num_classes = (recorded_classes(checkpoint) if checkpoint is not None else None) or IMAGENET_CLASSES
    if int(batch.labels.max()) >= num_classes:
        raise DataError(f"{args.data_dir} has class index {int(batch.labels.max())}, but {args.dataset} models "
                        f"have {num_classes} classes")
    model, model_text = _load_model(args, checkpoint, num_classes)
    saliency = input_gradient_saliency(model, batch.images, batch.labels)
    try:
        mix = mix_batch(args.method, batch.images, batch.labels, saliency, num_classes,
                        np.random.default_rng(mix_seq), mixup_alpha=args.mixup_alpha, mean=info.mean, std=info.std,
                        comix_options=options if args.method == "comix" else None,
                        puzzle_block_num=-1 if args.block_num is None else args.block_num,
                        method_options=None if args.method == "comix" else options)
    except ValueError as err:
        raise VisualizeError(str(err)) from err
    method = methods.REGISTRY[args.method]
    alpha = method.default_mixup_alpha(options) if args.mixup_alpha is None else args.mixup_alpha
    settings = [] if alpha is None else [f"alpha {alpha:g}"]
    if mix.grid_size is not None:
        settings.append(f"{mix.grid_size}x{mix.grid_size} grid")
    if args.method == "comix":
        settings.append(f"one partition of {args.num_images}")
    else:
        settings += [f"--{dest} {methods.format_flag_value(value)}" for dest, value in options.items()]
    shown_saliency = model_text if mix.saliency is None else "spectral residual of the images"
    title = (f"{_title(args.method)} on {info.title} ({batch.description}), seed {args.seed}\n"
             f"saliency: {shown_saliency}\n{' · '.join(settings)}")
    result = build_figure(batch.images, saliency, mix, info.mean, info.std, title=title, input_names=batch.names,
                          grid=args.grid)
    return Visualisation(result, batch.images, batch.labels, saliency if mix.saliency is None else mix.saliency,
                         mix)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default sys.argv[1:]), draw the figure and write it to --out; returns the
    exit status (0 success, 2 bad arguments/data/checkpoint with one ``error:`` line on stderr)."""
    parser = get_args_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error already printed (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        drawn = make_figure(args)
    except (VisualizeError, DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_png(drawn.figure.figure, args.out)
    except OSError as err:
        print(f"error: cannot write {args.out}: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    width, height = drawn.figure.size_px
    print(f"wrote {args.out} ({width}x{height} px)")
    return 0

