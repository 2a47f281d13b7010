"""Atomic files: a path holds either its old content or the complete new one, even when the process
is killed or the disk fills up mid-write. Every file the commands write (checkpoints, logs, plots,
tables, prepared data) goes through :func:`atomic_write_bytes`."""
from __future__ import annotations

import errno
import functools
import glob
import io
import os
import pickle
import tempfile
from collections.abc import Callable
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_pickle_dump", "remove_stale_temp_files"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file so that ``path`` holds either its old content or the complete new one.

    ``write(f)`` fills an in-memory buffer, which :func:`atomic_write_bytes` then writes. On any
    error nothing on disk changes and the error propagates (see there).
    """
    buffer = io.BytesIO()
    write(buffer)
    # release the view even on error: a live export keeps the buffer from being freed or resized
    with buffer.getbuffer() as data:
        atomic_write_bytes(path, data)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically: into a temporary file in the same folder (named
    ``.<name>.<random>.tmp``), fsynced, then renamed over ``path`` with os.replace, so ``path``
    holds either its old content or the complete new one, even if the process is killed.

    On any error (a full disk, an interruption) the temporary file is removed and the error
    propagates; an OSError with an errno comes back as the same kind of OSError naming ``path``
    ("[Errno 28] No space left on device: '.../checkpoint.pth.tar'"). A process killed
    outright leaves its temporary file behind (:func:`remove_stale_temp_files`).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp_path = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    except OSError as err:
        raise _naming(err, path) from err
    try:
        try:
            # mkstemp creates the file 0600; give it the mode a plain open() would have.
            os.fchmod(fd, _new_file_mode())
            _write_fully(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_path, path)
    except BaseException as err:
        try:
            os.remove(tmp_path)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError):
            raise _naming(err, path) from err
        raise
    _fsync_folder(folder)


def _write_fully(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written (a write may take only part of it).

    Every view is released on the way out, error or not: a traceback that kept one alive would
    keep the caller's buffer exported, and an io.BytesIO cannot be freed cleanly then.
    """
    with memoryview(data) as raw, raw.cast("B") as view:
        offset = 0
        while offset < len(view):
            with view[offset:] as rest:
                written = os.write(fd, rest)
            if written <= 0:
                raise OSError(errno.EIO, "the write made no progress")
            offset += written


def _naming(err: OSError, path: str) -> OSError:
    """``err`` as an OSError of the same kind that names ``path`` (unchanged without an errno)."""
    if err.errno is None:
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), path)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files that :func:`atomic_write_bytes` leaves in ``folder`` when a
    process is killed mid-write (``.<name>.<random>.tmp``); returns their paths. Call it only
    when no other process writes into ``folder``."""
    removed = []
    for path in sorted(glob.glob(os.path.join(glob.escape(os.fspath(folder)), ".*.tmp"))):
        if os.path.isfile(path):
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


@functools.cache
def _new_file_mode() -> int:
    """0o666 less the process umask (read once; os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable where the platform allows opening a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_pickle_dump(obj: Any, path: str | os.PathLike) -> None:
    """Pickle ``obj`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: pickle.dump(obj, f))
