"""The one way every command rebuilds a classifier from a checkpoint.

What the checkpoint records wins: its architecture, its class count (recorded, or read off its final
layer's weights) and the preactresnet width (recorded in its arguments, or read off its first
convolution). A flag fills in only what the checkpoint does not record; a flag that disagrees with
what it records is refused with one line naming both values, before any weights are loaded.
``main.py`` (resuming), ``evaluate.py``, ``visualize.py`` and ``localization.py`` all use
:func:`classifier_spec` and :func:`load_classifier`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from comixup import models
from comixup.core.lifecycle import str2bool
from comixup.data.datasets import dataset_info
from comixup.train.checkpoints import CheckpointError, load_checkpoint, load_weights

__all__ = ["ClassifierSpec", "classifier_spec", "load_classifier", "recorded_width", "recorded_classes"]

_HEAD_WEIGHTS = ("linear.weight", "fc.weight", "classifier.weight")  # the final layer of each family


@dataclass(frozen=True)
class ClassifierSpec:
    """What to build: architecture, classes, preactresnet width, head dropout, stride of the first
    stage (2 for 64x64 images)."""

    arch: str
    num_classes: int
    initial_channels: int = models.DEFAULT_INITIAL_CHANNELS
    dropout: bool = False
    stride: int = 1

    def build(self) -> nn.Module:
        """A freshly initialised model of this spec."""
        return models.build_model(self.arch, self.num_classes, self.dropout, stride=self.stride,
                                  initial_channels=self.initial_channels)

    def describe(self) -> str:
        """e.g. "preactresnet18 (width 16) with 10 classes"."""
        width = f" (width {self.initial_channels})" if self.arch in models.WIDTH_ARCHS else ""
        return f"{self.arch}{width} with {self.num_classes} classes"


def recorded_width(checkpoint: dict) -> int | None:
    """The preactresnet width a checkpoint was trained with: its arguments' initial_channels, else the
    output channels of its first convolution; None when neither says."""
    saved_args = checkpoint.get("args") or {}
    if isinstance(saved_args, dict) and isinstance(saved_args.get("initial_channels"), int):
        return saved_args["initial_channels"]
    conv = checkpoint["state_dict"].get("conv1.weight")
    return int(conv.shape[0]) if conv is not None and conv.dim() == 4 else None


def recorded_classes(checkpoint: dict) -> int | None:
    """The class count a checkpoint records, else the output width of its final layer."""
    if isinstance(checkpoint.get("num_classes"), int):
        return checkpoint["num_classes"]
    for key in _HEAD_WEIGHTS:
        weight = checkpoint["state_dict"].get(key)
        if weight is not None and weight.dim() == 2:
            return int(weight.shape[0])
    return None


def classifier_spec(checkpoint: dict, path: str, *, arch: str | None = None, num_classes: int | None = None,
                    initial_channels: int | None = None, dropout: bool | None = None, dataset: str | None = None,
                    same_dataset: bool = False) -> ClassifierSpec:
    """The classifier a checkpoint (:func:`comixup.train.checkpoints.load_checkpoint`) holds.

    Args:
        checkpoint, path: the read checkpoint and its file (for the messages).
        arch, num_classes, initial_channels, dropout: what the command's flags say (None: not
            given); each must agree with what the checkpoint records, and fills in what it does not.
        dataset: the data set the command uses: its class count is ``num_classes``, its image size
            the stride. With ``same_dataset`` a checkpoint that records another data set is refused.

    Raises:
        CheckpointError: one line, naming the flag, its value and the checkpoint's.
    """
    saved_dataset = checkpoint.get("dataset")
    if same_dataset and saved_dataset and dataset and saved_dataset != dataset:
        raise CheckpointError(f"{path} was trained on {saved_dataset}, not {dataset} (pass --dataset {saved_dataset})")
    saved_arch = checkpoint.get("arch")
    if arch and saved_arch and saved_arch != arch:
        raise CheckpointError(f"checkpoint {path} holds a {saved_arch} model but this run asks for --arch {arch}; "
                              f"use --arch {saved_arch} or another checkpoint")
    arch = saved_arch or arch
    if not arch:
        raise CheckpointError(f"{path} does not record its architecture (a bare state dict): give --arch")
    if arch not in models.model_names():
        raise CheckpointError(f"{path} holds a {arch} model, which this code does not build "
                              f"({', '.join(models.model_names())})")
    saved_classes = recorded_classes(checkpoint)
    if saved_classes is not None and num_classes is not None and saved_classes != num_classes:
        trained_on = f" ({saved_dataset})" if saved_dataset else ""
        wanted = f"--dataset {dataset} has" if dataset else "--num_classes is"
        raise CheckpointError(f"checkpoint {path} was trained for {saved_classes} classes{trained_on} but {wanted} "
                              f"{num_classes}; use a checkpoint of this data set")
    classes = saved_classes or num_classes
    if classes is None:
        raise CheckpointError(f"{path} does not record its class count; give the data set it was trained on")
    width = models.DEFAULT_INITIAL_CHANNELS
    if arch in models.WIDTH_ARCHS:
        saved_width = recorded_width(checkpoint)
        if saved_width is not None and initial_channels is not None and saved_width != initial_channels:
            raise CheckpointError(f"checkpoint {path} holds a {arch} of width {saved_width} but this run asks for "
                                  f"--initial_channels {initial_channels}; use --initial_channels {saved_width}")
        width = saved_width or initial_channels or width
    saved_args = checkpoint.get("args") or {}
    if dropout is None:
        dropout = bool(str2bool(saved_args.get("dropout", False))) if isinstance(saved_args, dict) else False
    stride_from = dataset or saved_dataset
    stride = dataset_info(stride_from).stride if stride_from else 1
    return ClassifierSpec(arch=arch, num_classes=classes, initial_channels=width, dropout=dropout, stride=stride)


def load_classifier(path: str, checkpoint: dict | None = None, **flags: Any) -> tuple[nn.Module, ClassifierSpec]:
    """The checkpoint's model (built by :func:`classifier_spec` with ``flags``, weights loaded, on the
    CPU, in eval mode) and its spec. ``checkpoint``: the file already read (default: read ``path``)."""
    checkpoint = load_checkpoint(path, map_location="cpu") if checkpoint is None else checkpoint
    spec = classifier_spec(checkpoint, path, **flags)
    model = spec.build()
    load_weights(model, checkpoint, path, spec.describe())
    return model.eval(), spec
