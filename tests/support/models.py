"""A tiny classifier for tests of the training steps: three depths, as every comixup model has, so
manifold mixup can mix at any of them; it records the mix_layer of every forward call."""
from __future__ import annotations

import torch.nn as nn

from comixup.models import MixableClassifier

NUM_CLASSES = 5


class TinyNet(MixableClassifier):
    """A three-depth MixableClassifier that records the mix_layer of every forward call."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.stage1 = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.stage2 = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1, stride=2))
        self.fc = nn.Linear(6, num_classes)
        self.mix_layers: list[int | None] = []

    def stem(self, x):
        return self.conv(x)

    def stages(self):
        return [self.stage1, self.stage2]

    def head(self, h):
        return self.fc(h.mean(dim=(2, 3)))

    def forward(self, x, mix_layer=None, mix_fn=None):
        self.mix_layers.append(mix_layer)
        return super().forward(x, mix_layer, mix_fn)
