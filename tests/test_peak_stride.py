"""comix m_peak_stride: the saliency peak found on a grid of pooling windows every `stride`
pixels (published ImageNet code: 8x8 windows at stride 8; CIFAR code: stride 1)."""
from __future__ import annotations

from argparse import Namespace

import numpy as np
import pytest
import torch

from comixup.data.synthetic import blob_saliency
from comixup.mixing import comix


def test_stride_8_finds_the_8x8_cell_of_each_blob():
    sal = torch.zeros(3, 32, 32)
    sal[0, 2:6, 2:6] = 1  # cell (0, 0)
    sal[1, 20:24, 10:14] = 1  # rows 16-23, columns 8-15: cell (2, 1)
    sal[2, 26:30, 26:30] = 1  # cell (3, 3)
    dist = comix.saliency_peak_distance(sal, stride=8)
    assert dist.tolist() == [[0, 3, 6], [3, 0, 3], [6, 3, 0]]
    # stride 1 (the default) gives positions in pixels: other distances
    assert comix.saliency_peak_distance(sal).tolist() == [[0, 22, 44], [22, 0, 22], [44, 22, 0]]


def test_stride_8_peak_is_the_arg_max_of_the_cell_means():
    sal = torch.rand(5, 224, 224, generator=torch.Generator().manual_seed(0)) ** 4
    cells = sal.numpy().reshape(5, 28, 8, 28, 8).mean(axis=(2, 4)).reshape(5, -1)
    flat = cells.argmax(axis=1)
    points = np.stack([flat // 28, flat % 28], axis=1)
    expected = np.abs(points[:, None, :] - points[None, :, :]).sum(-1)
    assert expected.max() > 0
    np.testing.assert_array_equal(comix.saliency_peak_distance(sal, stride=8).numpy(), expected)


def test_the_mixer_uses_its_stride_and_the_namespace_carries_it():
    sal, x = blob_saliency(8), torch.randn(8, 3, 32, 32)
    y = torch.arange(8) % 4
    mixer = comix.CoMixup(num_classes=4, m_part=4, m_peak_stride=8, m_omega=0.5, rng=np.random.default_rng(0))
    masks = mixer.masks(sal)
    mixer.rng = np.random.default_rng(0)
    explicit = mixer.masks(sal, comix.saliency_peak_distance(sal, stride=8))
    assert all(torch.equal(a, b) for a, b in zip(masks, explicit, strict=True))
    mixer.rng = np.random.default_rng(0)
    stride_1 = mixer.masks(sal, comix.saliency_peak_distance(sal))
    assert not all(torch.equal(a, b) for a, b in zip(masks, stride_1, strict=True))  # so the stride mattered here
    assert comix.CoMixupConfig.from_namespace(Namespace(m_peak_stride=8)).m_peak_stride == 8
    assert comix.CoMixupConfig().m_peak_stride == 1
    with pytest.raises(ValueError, match="m_peak_stride must be at least 1, got 0"):
        comix.CoMixup(m_peak_stride=0)
    out, targets = mixer(x, y, sal)
    assert out.shape == x.shape and torch.allclose(targets.sum(1), torch.ones(8))
