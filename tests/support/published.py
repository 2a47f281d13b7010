"""A checkpoint as the published main.py wrote it (torch.save of a dict with DataParallel keys and a
pickled ``logger.RecorderMeter``), of a model trained here; and CIFAR splits read with torchvision
directly, for recomputing what main.py prints."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torchvision.datasets import CIFAR10

from comixup import models

CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
PUBLISHED_EPOCHS = 3
RECORDED_TEST_ACC = [21.5, 34.25, 30.0]


def cifar_split(data_dir: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The split as normalised tensors, read with torchvision directly (not through load_data)."""
    dataset = CIFAR10(str(data_dir), train=train, download=False,
                      transform=T.Compose([T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)]))
    images, labels = zip(*[dataset[i] for i in range(len(dataset))], strict=True)
    return torch.stack(images), torch.tensor(labels)


def trained_model(data_dir: Path) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A model main.py could not produce by itself (other seed, trained), with its optimizer."""
    torch.manual_seed(1234)
    model = models.build_model("preactresnet18", 10, initial_channels=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=True)
    images, labels = cifar_split(data_dir, train=True)
    model.train()
    for _ in range(6):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model, optimizer


def save_published_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """torch.save a dict as the published main.py did, with a RecorderMeter from a module `logger`
    that exists only while saving (as on the authors' machine)."""
    assert "logger" not in sys.modules
    logger = types.ModuleType("logger")

    class RecorderMeter:
        def __init__(self, total_epoch: int) -> None:
            self.total_epoch = total_epoch
            self.current_epoch = 0
            self.epoch_losses = np.zeros((total_epoch, 2), dtype=np.float32) - 1
            self.epoch_accuracy = np.zeros((total_epoch, 2), dtype=np.float32)

        def update(self, idx, train_loss, train_acc, val_loss, val_acc):
            self.epoch_losses[idx] = (train_loss, val_loss)
            self.epoch_accuracy[idx] = (train_acc, val_acc)
            self.current_epoch = idx + 1

    RecorderMeter.__module__ = "logger"
    RecorderMeter.__qualname__ = "RecorderMeter"
    logger.RecorderMeter = RecorderMeter
    recorder = RecorderMeter(10)
    for epoch, test_acc in enumerate(RECORDED_TEST_ACC):
        recorder.update(epoch, 0.05 - 0.01 * epoch, 20.0 + 10 * epoch, 0.04 - 0.005 * epoch, test_acc)

    optimizer_state = optimizer.state_dict()
    for group in optimizer_state["param_groups"]:  # torch 1.7's SGD groups had only these keys
        for key in list(group):
            if key not in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "params"):
                del group[key]
    sys.modules["logger"] = logger
    try:
        torch.save({"epoch": PUBLISHED_EPOCHS, "arch": "preactresnet18",
                    "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
                    "recorder": recorder, "optimizer": optimizer_state}, path)
    finally:
        del sys.modules["logger"]
