"""CoMixup.start / finish (the solve in flight while the caller works on): a self-consistency
check, the same mixed batch and targets as this project's own per-partition path (the functions
that keep the published names: get_onehot_matrix, mix_input), with or without threads, on the
CPU. Parity with the published solver's masks is tested in test_solver.py."""
import numpy as np
import pytest
import torch

from comixup.data.synthetic import blob_saliency
from comixup.mixing import comix
from comixup.mixing.parallel import PartitionPool


def per_partition_mix(x, targets, saliency, m_part, seed):
    """The batch mixed partition by partition, one get_onehot_matrix and mix_input call each,
    draws from seed."""
    np.random.seed(seed)
    a_dist = comix.saliency_peak_distance(saliency)
    costs = comix.block_cost(saliency, 4)
    mixed_x, mixed_y = [], []
    for start in range(0, x.shape[0], m_part):
        stop = min(start + m_part, x.shape[0])
        A = comix.compatibility(a_dist[start:stop, start:stop], 0.001)
        mask = comix.get_onehot_matrix(costs[start:stop], A, stop - start, thres=0.83, niter=4)
        part_x, part_y = comix.mix_input(mask, x[start:stop], targets[start:stop])
        mixed_x.append(part_x)
        mixed_y.append(part_y)
    return torch.cat(mixed_x), torch.cat(mixed_y)


@pytest.mark.parametrize("batch,m_part", [(60, 20), (47, 20)])
def test_overlapped_solve_mixes_exactly_as_the_per_partition_path(batch, m_part):
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    targets = torch.nn.functional.one_hot(torch.arange(batch) % 7, 7).float()
    saliency = blob_saliency(batch, seed=4) * torch.rand(batch, 1, 1)
    expected = per_partition_mix(x, targets, saliency, m_part, seed=11)
    model = torch.nn.Conv2d(3, 4, 3)
    with PartitionPool(2) as pool:
        mixer = comix.CoMixup(num_classes=7, executor=pool, m_part=m_part)
        np.random.seed(11)
        solve = mixer.start(saliency)
        unrelated = model(x)  # work that needs no mask, done while the partitions are solved
        overlapped = mixer.finish(solve, x, targets)
    np.random.seed(11)
    plain = comix.CoMixup(num_classes=7, m_part=m_part)(x, targets, saliency)
    assert unrelated.shape == (batch, 4, 30, 30)
    for got in (overlapped, plain):
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert not torch.equal(expected[0], x)  # it mixed


def test_submit_of_a_pooled_batch_equals_start():
    saliency = blob_saliency(40, seed=6)
    mixer = comix.CoMixup(num_classes=3, rng=np.random.default_rng(5))
    pooled = mixer.pool(saliency, n_block=4)
    assert pooled.shape == (40, 16 + 40) and pooled.dtype == torch.float64
    torch.testing.assert_close(pooled[:, :16].float(), comix.block_cost(saliency, 4).flatten(1))
    torch.testing.assert_close(pooled[:, 16:].float(), comix.saliency_peak_distance(saliency))
    first = mixer.submit(pooled).masks()
    mixer.rng = np.random.default_rng(5)
    again = mixer.start(saliency).masks()
    assert [m.shape for m in first] == [(20, 4, 4, 20)] * 2
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(m.device.type == "cpu" for m in comix.masks_to_device(first, torch.device("cpu")))


def test_finish_refuses_a_batch_of_another_size():
    mixer = comix.CoMixup(num_classes=3)
    solve = mixer.start(blob_saliency(20))
    with pytest.raises(ValueError, match="masks of 20 inputs"):
        mixer.finish(solve, torch.randn(10, 3, 32, 32), torch.zeros(10, dtype=torch.long))
