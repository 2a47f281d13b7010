"""Resize an ImageNet copy for progressive-resizing training:
``python prepare_imagenet.py --src DIR --dst DIR --sizes 160 352``.

Reads ``SRC/{train,val}/<class>/<file>`` (the ImageFolder layout; deeper folders are kept too) and
writes ``DST/<size>/{train,val}/<class>/<file>`` for every size: resized (bicubic) by the factor
that takes the short side to ``size``, each side truncated to whole pixels as the published
recipe's resize step does (``int(w / ratio), int(h / ratio)`` with ``ratio = short side / size``:
the long side is rounded down, and for some shapes the floating-point quotient leaves the short
side at ``size - 1``, e.g. 100x101 at 352 gives 351x355), saved as an RGB JPEG of ``--quality``
(default 75, the quality of the published data: PIL's default) under the same file name (whatever
its extension, the content is JPEG). Images whose short side is already ``size`` or less are
enlarged, as the published step does.

Each source image is decoded once for all sizes, in worker processes (``--workers``, default:
every core), with a progress bar on a terminal. Each output is written to a temporary file
(``.<name>.prep.tmp`` next to it), then renamed: a killed run leaves only temporary files, which
the next run removes before it starts. Running the command again skips every finished output and
completes the rest; an output counts as finished when it is a whole JPEG (it starts with the JPEG
start marker and ends with the end marker), so a file cut short some other way (a power loss
before the system wrote it out, a copy interrupted) is written again. There is no fsync per
file: on a small virtual machine it cost more than all the image work. Run one preparation of a
``DST`` at a time.

Files with an image extension that cannot be decoded are reported one by one on stderr at the end
(``error: cannot read image PATH (reason)``), the others are still written, and the exit status
is 1. A write failure (a full disk) stops the run with exit 1. Bad arguments: one ``error:`` line,
exit 2.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import TYPE_CHECKING

from comixup.core import lifecycle

if TYPE_CHECKING:
    from PIL import Image

SPLITS = ("train", "val")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""torchvision ImageFolder's extensions (any case): other files are not images to it, nor here."""
TEMP_SUFFIX = ".prep.tmp"
DEFAULT_QUALITY = 75
"""PIL's default JPEG quality, which the published resize step saved with."""
CHUNK = 32  # images per task sent to a worker: large enough to amortise the messaging


class PrepareError(Exception):
    """A problem with the arguments or the source folder, found before any image is written."""


class WriteError(Exception):
    """An output could not be written (full disk, permissions): the run stops."""


@dataclass(frozen=True)
class Job:
    """What every worker needs to know besides the image."""

    src: Path
    dst: Path
    sizes: tuple[int, ...]
    quality: int


def resized_shape(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) scaled by the factor that takes the short side to ``short_side``, in the
    published arithmetic: ``ratio = min(height, width) / short_side``, then ``int(width / ratio),
    int(height / ratio)`` (truncated; the short side may come out one pixel less, e.g. (100, 101)
    at 352 gives (351, 355)). Each side is at least 1."""
    ratio = min(height / short_side, width / short_side)
    return max(1, int(width / ratio)), max(1, int(height / ratio))


def output_path(dst: Path, size: int, relative: str) -> Path:
    """Where the ``size`` version of the source image ``relative`` (split/class/file) goes."""
    return dst / str(size) / relative


def temp_path(path: Path) -> Path:
    """The temporary name an output is written under before it is renamed to ``path``."""
    return path.with_name("." + path.name + TEMP_SUFFIX)


def list_images(src: Path) -> list[str]:
    """Paths of the images under SRC/train and SRC/val, relative to SRC, sorted."""
    found = []
    for split in SPLITS:
        for folder, _dirs, files in os.walk(src / split):
            for name in files:
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(os.path.relpath(os.path.join(folder, name), src))
    found.sort()
    return found


def remove_stale_temps(dst: Path, sizes: Sequence[int]) -> int:
    """Delete the temporary files a killed run left under DST/<size>; returns how many."""
    removed = 0
    for size in sizes:
        for folder, _dirs, files in os.walk(dst / str(size)):
            for name in files:
                if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                    os.remove(os.path.join(folder, name))
                    removed += 1
    return removed


def is_whole_jpeg(path: Path) -> bool:
    """Whether ``path`` exists and holds a JPEG from its start marker to its end marker."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(-2, os.SEEK_END)
            return head == b"\xff\xd8" and f.read(2) == b"\xff\xd9"
    except OSError:  # missing, or shorter than two bytes
        return False


def _write_jpeg(image: Image.Image, path: Path, quality: int) -> None:
    """Save ``image`` as ``path`` through a temporary file and a rename."""
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp, format="JPEG", quality=quality)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from err


def prepare_one(job: Job, relative: str) -> tuple[str, str | None]:
    """Write every missing size of one source image. Returns (status, reason): status is
    "skipped" (all sizes existed), "done", or "unreadable" with the decoder's reason."""
    from PIL import Image

    todo = [size for size in job.sizes if not is_whole_jpeg(output_path(job.dst, size, relative))]
    if not todo:
        return "skipped", None
    try:
        with Image.open(job.src / relative) as opened:
            image = opened.convert("RGB")
    # PIL raises OSError (UnidentifiedImageError, truncated data), ValueError, SyntaxError,
    # DecompressionBombError or struct.error on bad files: all of them mean "cannot decode"
    except Exception as err:  # noqa: BLE001
        return "unreadable", " ".join(str(err).split()) or type(err).__name__
    for size in todo:
        shape = resized_shape(image.width, image.height, size)
        _write_jpeg(image.resize(shape, Image.Resampling.BICUBIC), output_path(job.dst, size, relative),
                    job.quality)
    return "done", None


def _prepare_chunk(args: tuple[Job, list[str]]) -> list[tuple[str, str, str | None]]:
    job, chunk = args
    return [(relative, *prepare_one(job, relative)) for relative in chunk]


def _ignore_sigint() -> None:
    # Ctrl-C reaches every process of the group: only the parent handles it (it stops the pool)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _chunks(job: Job, images: list[str]) -> Iterator[tuple[Job, list[str]]]:
    for start in range(0, len(images), CHUNK):
        yield job, images[start:start + CHUNK]


@dataclass
class Summary:
    """Counts of one run and the images that could not be read, (path, reason)."""

    done: int = 0
    skipped: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def add(self, relative: str, status: str, reason: str | None) -> None:
        if status == "done":
            self.done += 1
        elif status == "skipped":
            self.skipped += 1
        else:
            self.unreadable.append((relative, reason or ""))


def prepare(job: Job, workers: int, progress: bool | None = None) -> Summary:
    """Resize every image of SRC/{train,val} into DST/<size>/... with ``workers`` processes
    (1: in this process). ``progress``: tqdm's ``disable`` rule (None: only on a terminal)."""
    from tqdm import tqdm

    remove_stale_temps(job.dst, job.sizes)
    images = list_images(job.src)
    summary = Summary()
    # the worker processes start before the progress bar's monitor thread, so none is forked
    pool = Pool(workers, initializer=_ignore_sigint) if workers > 1 else None
    try:
        results = (pool.imap_unordered if pool else map)(_prepare_chunk, _chunks(job, images))
        with tqdm(total=len(images), unit="img", desc="resizing",
                  disable=None if progress is None else not progress) as bar:
            for chunk in results:
                for item in chunk:
                    summary.add(*item)
                bar.update(len(chunk))
    finally:
        if pool is not None:
            pool.terminate()  # all done, or an error: stop the workers either way
            pool.join()
    summary.unreadable.sort()
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = lifecycle.ArgumentParser(description="Resize SRC/{train,val}/<class>/<image> so that the short side is "
                                                  "each "
                                               "of --sizes (sides truncated to whole pixels as published, so a short "
                                               "side can come out one pixel less), into "
                                               "DST/<size>/{train,val}/<class>/<image> (JPEG). "
                                               "Run it again to finish an interrupted preparation.",
                                      formatter_class=lifecycle.HelpFormatter)
    parser.add_argument("--src", required=True, help="ImageNet folder holding train/ and val/ (class folders)")
    parser.add_argument("--dst", required=True, help="output folder; DST/<size>/ is created for each size")
    parser.add_argument("--sizes", type=int, nargs="+", required=True, help="short sides in pixels, e.g. 160 352")
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY,
                        help="JPEG quality, 1 to 100; 75 is PIL's default, what the published data was saved with")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: every core)")
    return parser


def _job_from_args(args: argparse.Namespace) -> Job:
    """Check the arguments; PrepareError naming what is wrong and what is allowed."""
    if any(size < 1 for size in args.sizes):
        raise PrepareError(f"--sizes must be positive pixel counts, got {' '.join(map(str, args.sizes))}")
    if not 1 <= args.quality <= 100:
        raise PrepareError(f"--quality must lie in 1..100, got {args.quality}")
    if args.workers < 1:
        raise PrepareError(f"--workers must be at least 1, got {args.workers}")
    src = Path(os.path.expanduser(args.src)).resolve()
    dst = Path(os.path.expanduser(args.dst)).resolve()
    missing = [split for split in SPLITS if not (src / split).is_dir()]
    if missing:
        raise PrepareError(f"--src {args.src} must hold the folders train/ and val/ (one sub-folder per class); "
                           f"missing: {', '.join(missing)}")
    for split in SPLITS:
        if dst == src / split or (src / split) in dst.parents:
            raise PrepareError(f"--dst {args.dst} lies inside --src {args.src}/{split}, whose images it would "
                               f"then read; choose a folder outside it")
    if dst.exists() and not dst.is_dir():
        raise PrepareError(f"--dst {args.dst} exists and is not a folder")
    return Job(src=src, dst=dst, sizes=tuple(sorted(set(args.sizes))), quality=args.quality)


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns the exit status: 0 all written, 1 some images unreadable or a write
    failure, 2 bad arguments, 130 interrupted."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        job = _job_from_args(args)
    except PrepareError as err:
        parser.error(str(err))
    try:
        summary = prepare(job, args.workers)
    except WriteError as err:
        print(f"error: {err}; free space or fix permissions, then run the same command again to finish",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to finish", file=sys.stderr)
        return 130
    sizes = ", ".join(str(job.dst / str(size)) for size in job.sizes)
    print(f"{summary.done} images resized, {summary.skipped} already done, into {sizes}")
    if summary.unreadable:
        for relative, reason in summary.unreadable:
            print(f"error: cannot read image {job.src / relative} ({reason})", file=sys.stderr)
        print(f"error: {len(summary.unreadable)} images could not be read and were not written; replace or "
              f"remove them, then run the same command again", file=sys.stderr)
        return 1
    return 0

