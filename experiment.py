"""The experiment folder of a run: created and proven writable before any heavy work, cleaned of
what a killed run left, and where a run stands (its last complete checkpoint) for the one line
of a run that stops early."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from lifecycle import EXIT_INPUT, RunError
from utils import remove_stale_temp_files

__all__ = ["prepare_exp_dir", "RunProgress"]


def prepare_exp_dir(exp_dir: str) -> list[str]:
    """Create the experiment folder and prove it writable (a probe file written, fsynced and
    removed) before anything heavy happens; remove the temporary files that a killed run left in
    it, returning their paths. RunError (exit 2) when it cannot be created or written."""
    try:
        os.makedirs(exp_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=exp_dir, prefix=".write-probe.", suffix=".tmp")
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.remove(probe)
        return remove_stale_temp_files(exp_dir)
    except OSError as err:
        raise RunError(f"cannot create or write the experiment folder {exp_dir} ({err.strerror or err}): "
                       f"--root_dir must be a folder this process can create and write into", EXIT_INPUT) from err


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

    def saved(self, path: str, epochs_done: int) -> None:
        self.checkpoint, self.epochs_done = path, epochs_done

    def where(self) -> str:
        return "before training started" if self.epoch is None else f"in epoch {self.epoch} (0-based, as in the log)"

    def last_checkpoint(self, resume_hint: bool) -> str:
        if not self.is_main:
            return ""
        if self.checkpoint is None:
            return "nothing was saved (--log_off)" if self.exp_dir is None else "no checkpoint was saved yet"
        done = f"{self.epochs_done} epoch{'' if self.epochs_done == 1 else 's'} done"
        hint = f": continue with --resume {self.checkpoint}" if resume_hint else ""
        return f"the last complete checkpoint is {self.checkpoint} ({done}){hint}"
