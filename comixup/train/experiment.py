"""The experiment folder of a run: created and proven writable before any heavy work, held by one
run at a time (:class:`FolderLock`), cleaned of what a killed run left, searched for the
checkpoint ``--resume auto`` continues from, and where a run stands (its last complete
checkpoint) for the one line of a run that stops early."""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
from dataclasses import dataclass

from comixup.core.files import remove_stale_temp_files
from comixup.core.lifecycle import EXIT_INPUT, RunError

__all__ = ["open_exp_dir", "RunProgress", "FolderLock", "LOCK_NAME", "auto_resume_path"]

LOCK_NAME = ".lock"
"""The lock file inside an experiment folder, while a run holds it; it names that run."""


class FolderLock:
    """An exclusive lock on an experiment folder for the life of a run.

    A POSIX record lock (``fcntl.lockf``) on ``<folder>/.lock``: the operating system drops it when
    the process ends, however it ends (SIGKILL, the OOM killer), so a killed run never leaves a
    stale lock (the file it leaves is taken over by the next run); unlike ``flock`` it is not
    inherited by the loader workers a run forks. The file holds ``host pid`` of the run that
    holds the folder, and is removed when the run ends. ``run_log.lock_is_held`` tells from
    another process whether a run holds a folder. :meth:`acquire` raises
    RunError (exit 2) naming the folder and the holder when another run has it.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 200).decode("utf-8", "replace").split()
                os.close(fd)
                who = f"host {holder[0]}, pid {holder[1]}" if len(holder) == 2 else "another process"
                raise RunError(f"the experiment folder {self.folder} is in use by another run ({who}); wait for it "
                               f"to end, or give this run another --root_dir or --tag", EXIT_INPUT) from None
            if self._still_the_file(fd):
                break
            os.close(fd)  # the holder removed it between our open and our lock: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _still_the_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order, so that a run that opened the
        file meanwhile sees it is gone and takes a new one)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.remove(self.path)
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def auto_resume_path(exp_dir: str, checkpoint_name: str) -> str | None:
    """The checkpoint ``--resume auto`` continues from: the folder's ``checkpoint_name`` when it
    exists (it is always complete: checkpoints are replaced atomically), else None (a fresh
    start)."""
    path = os.path.join(exp_dir, checkpoint_name)
    return path if os.path.isfile(path) else None


def open_exp_dir(exp_dir: str) -> tuple[FolderLock, list[str]]:
    """Create the experiment folder, lock it for this run (:class:`FolderLock`), prove it writable
    (a probe file written, fsynced and removed) and remove the temporary files that a killed run
    left in it, before anything heavy happens. Returns (the lock, the removed files' paths).
    RunError (exit 2) when the folder cannot be created or written, or another run holds it."""
    try:
        os.makedirs(exp_dir, exist_ok=True)
        lock = FolderLock(exp_dir).acquire()
    except OSError as err:
        raise _unwritable(exp_dir, err) from err
    try:
        fd, probe = tempfile.mkstemp(dir=exp_dir, prefix=".write-probe.", suffix=".tmp")
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.remove(probe)
        return lock, remove_stale_temp_files(exp_dir)
    except OSError as err:
        lock.release()
        raise _unwritable(exp_dir, err) from err
    except BaseException:
        lock.release()
        raise


def _unwritable(exp_dir: str, err: OSError) -> RunError:
    return RunError(f"cannot create or write the experiment folder {exp_dir} ({err.strerror or err}): "
                    f"--root_dir must be a folder this process can create and write into", EXIT_INPUT)


@dataclass
class RunProgress:
    """Where the run stands, for the one line of a run that stops early: the epoch in progress
    (0-based, None outside the epoch loop) and the last complete checkpoint (this run's, or the
    one it resumed from) with its finished epochs. Ranks other than 0 save nothing and say
    nothing about checkpoints."""

    exp_dir: str | None
    is_main: bool = True
    epoch: int | None = None
    checkpoint: str | None = None
    epochs_done: int = 0
    steps_done: int = 0

    def saved(self, path: str, epochs_done: int, steps_done: int = 0) -> None:
        """A complete checkpoint is at ``path``: ``epochs_done`` epochs and ``steps_done`` steps of the next."""
        self.checkpoint, self.epochs_done, self.steps_done = path, epochs_done, steps_done

    def where(self) -> str:
        return "before training started" if self.epoch is None else f"in epoch {self.epoch} (0-based, as in the log)"

    def last_checkpoint(self, resume_hint: bool) -> str:
        if not self.is_main:
            return ""
        if self.checkpoint is None:
            return "nothing was saved (--log_off)" if self.exp_dir is None else "no checkpoint was saved yet"
        done = f"{self.epochs_done} epoch{'' if self.epochs_done == 1 else 's'}"
        if self.steps_done:
            done += f" and {self.steps_done} step{'' if self.steps_done == 1 else 's'}"
        done += " done"
        hint = f": continue with --resume {self.checkpoint}" if resume_hint else ""
        return f"the last complete checkpoint is {self.checkpoint} ({done}){hint}"
