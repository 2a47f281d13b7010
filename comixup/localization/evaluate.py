"""Weakly supervised localization and background robustness of ImageNet classifiers (the published
``comix-localization`` evaluation), on CPU or GPU.

    python localization.py [--model_name NAME ...] [--checkpoint [NAME=]PATH ...]
                           [--data_name clean|rep|noise ...] [--data [NAME=]DIR ... --boxes FILE] [--th 0.25]
    python localization.py build --data DIR [--boxes FILE] --kind noise|rep|clean --out DIR [--seed 0]
    python localization.py tables [--root_dir result]
    python localization.py figure --model_name NAME ... --data_name clean --images 0 1 2 --out FIG.png

The first form evaluates every model on every data set, writes
``<root_dir>/<arch>@<model>@<data>/result.json`` and prints the published three tables (also
written as ``<root_dir>/tables.txt`` and ``tables.md``). Run from a folder laid out as the
published one, ``python localization.py --model_name comix-blk4 --data_name rep --th 0.25``
evaluates ``./pretrained/comix-blk4.pt`` on ``./data/rep``. Bad input: one ``error:`` line, exit 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from comixup import models
from comixup.core.files import atomic_write_bytes
from comixup.core.lifecycle import ArgumentParser, HelpFormatter
from comixup.data.datasets import DataError
from comixup.localization.cam import (
    IOU_MODES,
    LocalizationScores,
    box_from_gray,
    box_iou,
    class_activation_maps,
    logits_and_features,
    to_gray,
)
from comixup.localization.corrupt import CORRUPTIONS, Corruption, build_corrupted_set
from comixup.localization.datasets import CroppedSet, LocalizationSource, PickleSet, collate, open_source
from comixup.localization.report import PUBLISHED_MODELS, draw_figure, write_tables
from comixup.train import checkpoints, classifier
from comixup.train.checkpoints import CheckpointError

__all__ = ["main", "get_args_parser", "load_classifier", "evaluate", "Throughput"]

COMMANDS = ("eval", "build", "tables", "figure")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FOLDER_RESIZE = 256
"""Shorter side an ImageFolder's images are resized to before the crop (ImageNet's evaluation)."""
CAM_ARCHS = tuple(name for name in models.model_names() if name.startswith("resnet"))
"""Architectures whose logits are fc(avgpool(layer4)), so their CAM is defined."""


class UsageError(Exception):
    """Bad input found before any evaluation; one line for the user (exit 2)."""


# ---------------------------------------------------------------------------------------------
# Command lines
# ---------------------------------------------------------------------------------------------

def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def _threshold(text: str) -> float:
    """A CAM threshold: 0 <= th < 1 (the published code takes 0 too: every pixel above 0 takes part)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1 (0 <= th < 1), got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models")
    group.add_argument("--model_name", nargs="+", default=[], metavar="NAME",
                       help=f"published model names, read from <pretrained_dir>/<NAME>.pt "
                            f"({', '.join(PUBLISHED_MODELS)})")
    group.add_argument("--checkpoint", nargs="+", default=[], metavar="[NAME=]PATH",
                       help="any checkpoint (published .pt or main.py's checkpoint.pth.tar); NAME defaults to "
                            "the file name without extension")
    group.add_argument("--pretrained_dir", default="pretrained", help="folder of the published .pt files")
    group.add_argument("--arch", default=None, choices=CAM_ARCHS,
                       help="architecture; default: the one the checkpoint names, else resnet50")
    group.add_argument("--num_classes", type=_positive, default=1000, help="classes of the models and data")


def _add_data_args(parser: argparse.ArgumentParser, several: bool = True) -> None:
    group = parser.add_argument_group("data")
    nargs = "+" if several else None
    group.add_argument("--data_name", nargs=nargs, default=[] if several else None, metavar="NAME",
                       help="published data set names, read from <data_root>/<NAME>/{input,label,bbox}.pkl "
                            "(clean, rep, noise)")
    group.add_argument("--data", nargs=nargs, default=[] if several else None, metavar="[NAME=]DIR",
                       help="a folder in the published pickle layout, or an ImageFolder of validation images "
                            "(with --boxes)")
    group.add_argument("--data_root", default="data", help="folder of the published data sets")
    group.add_argument("--boxes", default=None, metavar="FILE",
                       help="boxes of ImageFolder images: LOC_val_solution.csv, or the folder of the ILSVRC2012 "
                            "validation .xml files")
    group.add_argument("--crop", type=_positive, default=224, help="center crop side")
    group.add_argument("--resize", type=_non_negative, default=None,
                       help=f"shorter side before the crop (0: none); default {FOLDER_RESIZE} for an ImageFolder, "
                            f"0 for pickles (stored at their evaluation size)")


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument("--batch_size", type=_positive, default=64)
    group.add_argument("--workers", type=_non_negative, default=4, help="data loader processes")
    group.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    group.add_argument("--box_threads", type=_non_negative, default=0,
                       help="threads finding the boxes (0: one per core)")
    group.add_argument("--tqdm", type=int, default=None, choices=(0, 1),
                       help="progress bar with ETA (default: on a terminal)")


def get_args_parser() -> argparse.ArgumentParser:
    """The evaluation's command line (the published ``eval.py`` flags, several values allowed)."""
    parser = ArgumentParser(prog="localization.py", formatter_class=HelpFormatter,
                             description="CAM localization and background robustness of ImageNet classifiers. "
                                         "Other commands: build (corrupted sets), tables, figure "
                                         "(python localization.py COMMAND --help).")
    _add_model_args(parser)
    _add_data_args(parser)
    metrics = parser.add_argument_group("metrics")
    metrics.add_argument("--th", type=_threshold, default=0.25, help="CAM threshold of the box, 0 <= th < 1")
    metrics.add_argument("--iou", default="correct", choices=IOU_MODES,
                         help="correct: intersection clamped at 0, GT boxes as the crop shows them; published: "
                              "the published formula (two boxes apart on both axes can score 1.0) and its integer GT "
                              "boxes (computed in the stored dtype), to reproduce its numbers. The tables' 'published "
                              "IoU formula only' column of a correct run is that formula on the corrected boxes")
    metrics.add_argument("--cam_curve_interval", type=_fraction, default=0.01,
                         help="step of the CAM threshold sweep of MaxBoxAcc (thresholds 0, step, ..., < 1)")
    parser.add_argument("--root_dir", default="result",
                        help="results folder: <root_dir>/<arch>@<model>@<data>/result.json, tables.txt, tables.md")
    parser.add_argument("--debug", type=int, default=0, choices=(0, 1),
                        help="1: about 1,000 images, every (N // 1000)-th (as published)")
    parser.add_argument("--limit", type=_non_negative, default=0, help="only the first N images (0: all)")
    _add_run_args(parser)
    return parser


def get_build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="localization.py build", formatter_class=HelpFormatter,
                             description="Write a background-corrupted copy of a localization set in the published "
                                         "pickle layout: the inside of every GT box stays bit-identical.")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="clean source: ImageFolder of validation images (with --boxes) or a pickle folder")
    parser.add_argument("--boxes", default=None, metavar="FILE", help="LOC_val_solution.csv or the XML folder")
    parser.add_argument("--kind", required=True, choices=CORRUPTIONS,
                        help="noise: Gaussian noise on the background; rep: background from an image of another "
                             "class; clean: unchanged")
    parser.add_argument("--out", required=True, metavar="DIR", help="new folder to write (must not exist)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (image i uses the seed and i only)")
    parser.add_argument("--noise_std", type=float, default=50.0,
                        help="noise: standard deviation in 0-255 pixel units")
    parser.add_argument("--resize", type=_non_negative, default=FOLDER_RESIZE,
                        help="shorter side the images are stored at (0: as they are)")
    parser.add_argument("--tqdm", type=int, default=None, choices=(0, 1), help="progress bar")
    return parser


def get_tables_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="localization.py tables", formatter_class=HelpFormatter,
                             description="Print (and write tables.txt / tables.md) the tables of the results found.")
    parser.add_argument("--root_dir", default="result", help="results folder of the evaluations")
    parser.add_argument("--markdown", action="store_true", help="print the Markdown tables")
    return parser


def get_figure_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="localization.py figure", formatter_class=HelpFormatter,
                             description="Draw images with each model's CAM, the GT boxes and the predicted box.")
    _add_model_args(parser)
    _add_data_args(parser, several=False)
    parser.add_argument("--images", type=_non_negative, nargs="+", default=[0, 1, 2, 3], help="image indices")
    parser.add_argument("--th", type=_threshold, default=0.25, help="CAM threshold of the box, 0 <= th < 1")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="images/localization.png", help="PNG to write")
    return parser


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

def load_classifier(path: str | os.PathLike, num_classes: int, arch: str | None = None) -> tuple[nn.Module, str]:
    """A CAM-capable classifier (eval mode, CPU) from a published ``.pt`` or a ``main.py`` checkpoint,
    and its architecture, rebuilt as every command rebuilds one
    (:func:`comixup.train.classifier.load_classifier`: weights_only, ``module.`` prefix removed; the
    published ImageNet file's extra entries, a tensor ``best_prec1`` and the optimizer, load as
    plain tensors and are ignored). The published files record no class count: their fc layer
    gives it; they record no architecture either: resnet50, the published localization model,
    unless --arch says. Raises CheckpointError (one line) for a file of another architecture,
    class count or model."""
    path = os.fspath(path)
    checkpoint = checkpoints.load_checkpoint(path, map_location="cpu")
    if not checkpoint.get("arch") and not arch:
        arch = "resnet50"
    spec = classifier.classifier_spec(checkpoint, path, arch=arch, num_classes=num_classes)
    if spec.arch not in CAM_ARCHS:
        raise CheckpointError(f"checkpoint {path} holds a {spec.arch} model; the CAM evaluation needs a "
                              f"torchvision-style ResNet ({', '.join(CAM_ARCHS)})")
    model, _ = classifier.load_classifier(path, checkpoint, arch=arch, num_classes=num_classes)
    return model, spec.arch


def _named(specs: Sequence[str]) -> list[tuple[str, str]]:
    """'NAME=PATH' or 'PATH' (NAME: the file or folder name without extension; for main.py's
    checkpoint.pth.tar / model_best.pth.tar, the experiment folder's name)."""
    named = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            path = spec
            name = Path(spec.rstrip("/")).name.split(".")[0]
            if name in ("checkpoint", "model_best") and Path(spec).parent.name:
                name = Path(spec).parent.name
        named.append((name, path))
    return named


def _model_specs(args: argparse.Namespace) -> list[tuple[str, str]]:
    specs = [(name, str(Path(args.pretrained_dir) / f"{name}.pt")) for name in args.model_name]
    specs += _named(args.checkpoint)
    return specs or [("vanilla", str(Path(args.pretrained_dir) / "vanilla.pt"))]  # the published default


def _device(text: str) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device {text} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text}: no CUDA device is available here; use --device cpu")
    return device


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def _progress(total: int, enabled: bool | None, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not (sys.stderr.isatty() if enabled is None else enabled),
                dynamic_ncols=True)


def _normalise(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = images.to(device, non_blocking=True).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


@dataclasses.dataclass(frozen=True)
class Throughput:
    """How an evaluation is spread: images per forward pass, loader processes, and the threads
    finding boxes on the CPU (0: one per core; OpenCV and numpy release the GIL)."""
    batch_size: int = 64
    workers: int = 0
    box_threads: int = 0


def evaluate(model: nn.Module, dataset: CroppedSet, scores: LocalizationScores, device: torch.device,
             throughput: Throughput = Throughput(), progress: Any = None) -> dict:
    """Run ``model`` over ``dataset`` once per image (logits and CAM from the same pass), feed
    ``scores``; returns its summary. CAMs are computed on ``device``, boxes on the CPU;
    ``progress`` (a tqdm bar) is advanced by each batch."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=throughput.batch_size, num_workers=throughput.workers,
                                         collate_fn=collate, pin_memory=device.type == "cuda")
    crop = (dataset.crop, dataset.crop)
    threads = throughput.box_threads or os.cpu_count() or 1
    with torch.inference_mode(), ThreadPoolExecutor(threads) as pool:
        for images, labels, boxes, _indices in loader:
            logits, features = logits_and_features(model, _normalise(images, device))
            labels = labels.to(logits.device)
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 = (top[:, 0] == labels).cpu().numpy()
            top5 = (top == labels[:, None]).any(dim=1).cpu().numpy()
            # the CAM of the true class: the predicted class's CAM whenever top-1 is right, and
            # top-1 localization fails otherwise, so one map serves every metric
            gray = to_gray(class_activation_maps(features, model.fc.weight, labels, crop)).cpu().numpy()
            for k, result in enumerate(pool.map(scores.measure, gray, boxes)):
                scores.record(bool(top1[k]), bool(top5[k]), result)
            if progress is not None:
                progress.update(len(gray))
    return scores.summary()


def _subset(count: int, debug: int, limit: int) -> list[int] | None:
    if debug:
        return list(range(0, count, max(count // 1000, 1)))
    if limit:
        return list(range(min(limit, count)))
    return None


def _resize_for(source: LocalizationSource, resize: int | None) -> int:
    """--resize, or its default: none for the published pickles (stored at their evaluation size),
    the ImageNet evaluation's shorter side of 256 for an ImageFolder."""
    if resize is not None:
        return resize
    return 0 if isinstance(source, PickleSet) else FOLDER_RESIZE


def _open_data(args: argparse.Namespace) -> list[tuple[str, LocalizationSource, int]]:
    """(name, source, resize) of every data set asked for, each checked (DataError)."""
    specs = [(name, str(Path(args.data_root) / name)) for name in args.data_name] + _named(args.data)
    specs = specs or [("clean", str(Path(args.data_root) / "clean"))]  # the published default
    opened = []
    for name, path in specs:
        source = open_source(path, args.boxes, name)
        resize = _resize_for(source, args.resize)
        if getattr(source, "flat", False) and len(source.classes) != args.num_classes:
            raise DataError(f"{path} has no class folders, so its classes are the sorted wnids of --boxes, which "
                            f"names {len(source.classes)} classes, not {args.num_classes} (--num_classes); for a "
                            f"subset of the validation images, lay them out in class folders")
        if len(source.labels) and source.labels.max() >= args.num_classes:
            raise DataError(f"data set {name} ({path}) has class index {source.labels.max()}, but the models have "
                            f"{args.num_classes} classes (--num_classes)")
        opened.append((name, source, resize))
    return opened


def _check_names(pairs: Sequence[tuple[str, Any]], what: str) -> None:
    names = [name for name, *_ in pairs]
    for name in names:
        if not name or names.count(name) > 1 or any(c in name for c in "/\\@"):
            raise UsageError(f"{what} name {name!r} is empty, repeated or holds / \\ @; give NAME=PATH with distinct "
                             f"names")


def _prepare_root(root: str) -> Path:
    folder = Path(root)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / ".probe", b"")
        os.remove(folder / ".probe")
    except OSError as err:
        raise UsageError(f"cannot write into --root_dir {root}: {err.strerror or err}") from err
    return folder


def run_eval(args: argparse.Namespace) -> int:
    device = _device(args.device)
    model_specs = _model_specs(args)
    _check_names(model_specs, "model")
    data = _open_data(args)
    _check_names(data, "data set")
    loaded = [(name, *load_classifier(path, args.num_classes, args.arch)) for name, path in model_specs]
    root = _prepare_root(args.root_dir)
    sweep = np.arange(0.0, 1.0, args.cam_curve_interval)
    published = args.iou == "published"
    for model_name, model, arch in loaded:
        model.to(device)
        for data_name, source, resize in data:
            dataset = CroppedSet(source, args.crop, resize, published, _subset(len(source), args.debug, args.limit))
            started = time.perf_counter()
            show = None if args.tqdm is None else bool(args.tqdm)
            with _progress(len(dataset), show, f"{model_name}@{data_name}") as bar:
                summary = evaluate(model, dataset, LocalizationScores(args.th, sweep, args.iou), device,
                                   Throughput(args.batch_size, args.workers, args.box_threads), bar)
            seconds = time.perf_counter() - started
            result = {"model": model_name, "data": data_name, "arch": arch, **summary, "crop": args.crop,
                      "resize": resize, "seconds": round(seconds, 3), "device": str(device)}
            folder = root / f"{arch}@{model_name}@{data_name}"
            folder.mkdir(exist_ok=True)
            atomic_write_bytes(folder / "result.json", (json.dumps(result, indent=2) + "\n").encode("utf-8"))
            print(f"{model_name} on {data_name}: top1 {summary['top1']:.2f} top5 {summary['top5']:.2f} "
                  f"top1-loc {summary['top1_loc']:.2f} GT-known {summary['gt_known_loc']:.2f} "
                  f"MaxBoxAcc {summary['max_box_acc']:.2f} ({summary['images']} images, {seconds:.1f} s)", flush=True)
        model.to("cpu")
    print(write_tables(root), end="")
    return 0


# ---------------------------------------------------------------------------------------------
# The other commands
# ---------------------------------------------------------------------------------------------

def run_build(args: argparse.Namespace) -> int:
    source = open_source(args.data, args.boxes)
    if not math.isfinite(args.noise_std) or args.noise_std < 0:
        raise UsageError(f"--noise_std must be a finite number >= 0, got {args.noise_std}")
    enabled = sys.stderr.isatty() if args.tqdm is None else bool(args.tqdm)

    def progress(items: range) -> Any:
        from tqdm import tqdm

        return tqdm(items, desc=f"build {args.kind}", unit="img", disable=not enabled)

    out = build_corrupted_set(source, Corruption(args.kind, args.seed, args.noise_std, args.resize), args.out, progress)
    print(f"wrote {len(source)} images ({args.kind}) to {out}")
    return 0


def run_tables(args: argparse.Namespace) -> int:
    if not Path(args.root_dir).is_dir():
        raise UsageError(f"no results folder {args.root_dir}; run the evaluation first (python localization.py ...)")
    text = write_tables(args.root_dir)
    if args.markdown:
        text = (Path(args.root_dir) / "tables.md").read_text(encoding="utf-8")
    print(text, end="")
    return 0


def run_figure(args: argparse.Namespace) -> int:
    device = _device(args.device)
    model_specs = _model_specs(args)
    _check_names(model_specs, "model")
    if args.data_name and args.data:
        raise UsageError("give one data set: --data_name or --data")
    path = args.data or str(Path(args.data_root) / (args.data_name or "clean"))
    source = open_source(path, args.boxes)
    bad = [i for i in args.images if i >= len(source)]
    if bad:
        raise UsageError(f"--images {bad[0]} is past the {len(source)} images of {path}")
    resize = _resize_for(source, args.resize)
    loaded = [(name, *load_classifier(p, args.num_classes, args.arch)) for name, p in model_specs]
    dataset = CroppedSet(source, args.crop, resize, indices=args.images)
    images, labels, boxes, _ = collate([dataset[k] for k in range(len(dataset))])
    panels = []
    with torch.inference_mode():
        for _name, model, _arch in loaded:
            model.to(device)
            logits, features = logits_and_features(model, _normalise(images, device))
            predicted = logits.argmax(dim=1)
            cams = class_activation_maps(features, model.fc.weight, predicted, (args.crop, args.crop))
            gray = to_gray(cams).cpu().numpy()
            column = []
            for k in range(len(gray)):
                box = box_from_gray(gray[k], args.th)
                iou = float(box_iou(np.asarray([box]), boxes[k]).max()) if len(boxes[k]) else 0.0
                column.append({"cam": cams[k].cpu().numpy(), "box": box, "pred": int(predicted[k]),
                               "correct": bool(predicted[k].item() == labels[k].item()), "iou": iou})
            panels.append(column)
            model.to("cpu")
    pictures = [img.permute(1, 2, 0).numpy() for img in images]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    draw_figure(pictures, boxes, [name for name, *_ in loaded], panels, args.out)
    print(f"wrote {args.out}")
    return 0


_COMMANDS = {"eval": (get_args_parser, run_eval), "build": (get_build_parser, run_build),
             "tables": (get_tables_parser, run_tables), "figure": (get_figure_parser, run_figure)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ``argv`` (default sys.argv[1:]; no command word: eval); returns the exit
    status: 0 done, 2 bad input (one ``error:`` line), 1 an I/O failure, 130 interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "eval"
    parser_of, run = _COMMANDS[command]
    try:
        args = parser_of().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error already printed (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return run(args)
    except (UsageError, DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130

