"""Co-Mixup (Kim et al., ICLR 2021): saliency-guided joint mixup with supermodular diversity, the
mixup baselines it is compared with, and its successors (SaliencyMix, FMix, ResizeMix, GuidedMixup),
as a library.

    from comixup import CoMixup, CutMix, saliency_and_clean_loss

    mixer = CoMixup(num_classes=100)                 # every mixer: keyword-only hyperparameters
    saliency, clean_loss, logits = saliency_and_clean_loss(model, x, y, clean_lam=1.0, num_classes=100)
    mixed_x, mixed_y = mixer(x, y, saliency)         # y: class indices (B,) or soft targets (B, K)
    mixed_x, mixed_y = CutMix(num_classes=100)(x, y)

Subpackages, lower layers first (a layer imports only the ones before it):

- :mod:`comixup.core`: atomic files, run logs, metrics, calibration, tables, tensor helpers, exit
  statuses;
- :mod:`comixup.models`, :mod:`comixup.mixing`, :mod:`comixup.data`: the classifiers, the mixing
  methods with their solvers, the data sets and loaders;
- :mod:`comixup.train`: the training run behind ``main.py``;
- :mod:`comixup.localization`, :mod:`comixup.compare`, :mod:`comixup.visualize`,
  :mod:`comixup.evaluation`: the localization, comparison, drawing, and calibration and robustness
  commands.

The names below are loaded on first use, so ``import comixup`` itself loads nothing heavy.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "1.0.0"

_EXPORTS = {
    # the mixers, one dialect (comixup.mixing.base)
    "Mixer": "comixup.mixing.base",
    "CoMixup": "comixup.mixing.comix",
    "CoMixupConfig": "comixup.mixing.comix",
    "PuzzleMix": "comixup.mixing.puzzlemix",
    "PuzzleMixConfig": "comixup.mixing.puzzlemix",
    "InputMixup": "comixup.mixing.baselines",
    "CutMix": "comixup.mixing.baselines",
    "ManifoldMixup": "comixup.mixing.baselines",
    "ManifoldDraw": "comixup.mixing.baselines",
    "PartitionPool": "comixup.mixing.parallel",
    # saliency: only the map, or the published clean pass (which also back-propagates the clean loss)
    "input_gradient_saliency": "comixup.mixing.saliency",
    "saliency_and_clean_loss": "comixup.mixing.saliency",
    # the earlier spellings of the baselines
    "input_mixup": "comixup.mixing.baselines",
    "cutmix": "comixup.mixing.baselines",
    "ManifoldMix": "comixup.mixing.baselines",
    "PairMix": "comixup.mixing.baselines",
    # the successors (SaliencyMix needs the [saliencymix] extra when built)
    "SaliencyMix": "comixup.mixing.saliencymix",
    "FMix": "comixup.mixing.fmix",
    "ResizeMix": "comixup.mixing.resizemix",
    "GuidedMixupAP": "comixup.mixing.guided",
    "GuidedMixupSR": "comixup.mixing.guided",
    # saliency pooled into blocks, shared by Co-Mixup and Puzzle Mix
    "block_saliency": "comixup.mixing.saliency_blocks",
    # models
    "build_model": "comixup.models",
    "model_names": "comixup.models",
    "MixableClassifier": "comixup.models",
    # the per-batch training loss of every method, as main.py trains them, and the loops
    "build_method": "comixup.train.methods",
    "METHODS": "comixup.train.methods",
    "train_one_epoch": "comixup.train.loop",
    "evaluate": "comixup.train.loop",
    "EvalResult": "comixup.train.loop",
    # helpers
    "to_one_hot": "comixup.core.tensors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'comixup' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
