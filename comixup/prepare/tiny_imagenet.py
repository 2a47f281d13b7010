"""The one-off Tiny-ImageNet-200 validation re-layout (``python load_data.py --data_dir
./data/tiny-imagenet-200``): ``val/images/<file>`` moved to ``val/images/<wnid>/<file>`` so that
``ImageFolder`` reads the validation set."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from comixup.data.datasets import DEFAULT_TINY_DIR, DataError, flat_images, nested_tiny_hint


def relayout_tiny_imagenet_val(data_dir: str) -> int:
    """Move ``val/images/<file>`` to ``val/images/<wnid>/<file>`` as ``val/val_annotations.txt`` says.

    Returns how many files were moved (0 when already laid out). Every annotated file is checked
    before anything moves; files move one by one with os.replace, so an interrupted run loses
    nothing and running again finishes the job. Raises DataError when the folder is not a raw (or
    partly / fully re-laid-out) Tiny-ImageNet-200 folder, or when a move fails.
    """
    base = Path(os.path.expanduser(data_dir))
    moves = _plan_relayout(base)
    for count, (source, target) in enumerate(moves):
        try:
            target.parent.mkdir(exist_ok=True)
            os.replace(source, target)
        except OSError as err:
            raise DataError(f"could not move {source} to {target} ({err.strerror or err}); "
                            f"{count} images were moved, run again to finish") from err
    return len(moves)


def _plan_relayout(base: Path) -> list[tuple[Path, Path]]:
    """(source, target) of each file still to move; DataError if the folder is not as expected."""
    annotations = base / "val" / "val_annotations.txt"
    images_dir = base / "val" / "images"
    if not annotations.is_file() or not images_dir.is_dir():
        lacks = annotations if not annotations.is_file() else images_dir
        raise DataError(f"{base} is not an unzipped Tiny-ImageNet-200 folder: {lacks} is missing"
                        f"{nested_tiny_hint(base)}")
    moves = []
    for line_no, (name, wnid) in enumerate(_read_annotations(annotations), start=1):
        flat, placed = images_dir / name, images_dir / wnid / name
        if placed.is_file() and flat.exists():
            raise DataError(f"{name} is both in {images_dir} and in {placed.parent}; remove one copy")
        if placed.is_file():
            continue
        if not flat.is_file():
            raise DataError(f"{name} (line {line_no} of {annotations}) is neither in {images_dir} "
                            f"nor in {placed.parent}")
        moves.append((flat, placed))
    return moves


def _read_annotations(path: Path) -> list[tuple[str, str]]:
    """(file name, wnid) per line of val_annotations.txt (tab-separated: file, wnid, box)."""
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not _plain_name(fields[0]) or not _plain_name(fields[1]):
            raise DataError(f"line {line_no} of {path} is not 'file<TAB>wnid<TAB>box': {line[:80]!r}")
        rows.append((fields[0], fields[1]))
    if not rows:
        raise DataError(f"{path} lists no images")
    return rows


def _plain_name(name: str) -> bool:
    """A bare file or folder name, so an annotation can never move a file outside val/images."""
    return bool(name) and name not in (".", "..") and "/" not in name and os.sep not in name


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: re-lay out a Tiny-ImageNet-200 validation folder; 0 on success, 2 on bad data."""
    parser = argparse.ArgumentParser(
        description="Move the Tiny-ImageNet-200 validation images into one folder per class "
                    "(run once after unzipping tiny-imagenet-200.zip).")
    parser.add_argument("--data_dir", default=DEFAULT_TINY_DIR,
                        help=f"the unzipped tiny-imagenet-200 folder (default {DEFAULT_TINY_DIR})")
    args = parser.parse_args(argv)
    try:
        moved = relayout_tiny_imagenet_val(args.data_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    images_dir = Path(os.path.expanduser(args.data_dir)) / "val" / "images"
    class_dirs = [d for d in images_dir.iterdir() if d.is_dir()]
    if moved:
        print(f"moved {moved} validation images into {len(class_dirs)} class folders under {images_dir}")
    else:
        images = sum(len(flat_images(d)) for d in class_dirs)
        print(f"already laid out: {images_dir} holds {images} images in {len(class_dirs)} class folders")
    return 0
