"""How the forward passes of a step or an evaluation run: float32, or autocast to bfloat16 / float16.

:class:`Precision` is ``--amp`` of ``main.py`` and ``evaluate.py``. It sits with the shared helpers
(not with the training methods) so that evaluation code can use it without loading any mixing code.
"""
from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

__all__ = ["AMP_MODES", "Precision", "FLOAT32"]

AMP_MODES = ("off", "bf16", "fp16")
"""The --amp choices: float32, bfloat16 autocast, float16 autocast with a GradScaler."""

_AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """How forward passes run.

    dtype None: float32, no autocast (the default; nothing is wrapped). Otherwise every forward
    runs under ``torch.autocast(device_type, dtype)``. scaler: the GradScaler of float16
    training (None otherwise); the caller scales the mixed loss with it and steps through it.
    """

    device_type: str = "cpu"
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def from_flag(cls, amp: str, device: torch.device) -> Precision:
        """The precision of ``--amp`` (one of AMP_MODES) on ``device``: fp16 gets a GradScaler
        and needs CUDA (float16 autocast on the CPU is slow or unsupported): ValueError there,
        as for an unknown mode."""
        if amp not in _AMP_DTYPES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
        dtype = _AMP_DTYPES[amp]
        if dtype is None:
            return cls(device_type=device.type)
        if amp == "fp16":
            if device.type != "cuda":
                raise ValueError(f"--amp fp16 needs a CUDA device (got {device.type}); use --amp bf16 on the CPU")
            return cls(device_type="cuda", dtype=dtype, scaler=torch.amp.GradScaler("cuda"))
        return cls(device_type=device.type, dtype=dtype)

    @property
    def enabled(self) -> bool:
        """True when forwards run under autocast."""
        return self.dtype is not None

    def autocast(self) -> AbstractContextManager:
        """The context for a forward pass: autocast, or nothing at float32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


FLOAT32 = Precision()
