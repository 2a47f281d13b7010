"""The Co-Mixup API: masks, mixing, saliency, published functions, edge cases, parallel runs."""
from argparse import Namespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from comixup.data.synthetic import blob_saliency
from comixup.mixing import comix
from comixup.mixing.parallel import MixupProcessParallel, PartitionPool


def check_masks(masks):
    for mask in masks:
        assert torch.isfinite(mask).all()
        assert set(mask.unique().tolist()) <= {0.0, 0.5, 1.0}
        torch.testing.assert_close(mask.sum(-1), torch.ones(mask.shape[:-1]))


def test_masks_are_complete_and_targets_are_area_shares():
    torch.manual_seed(0)
    np.random.seed(0)
    x, y, sal = torch.randn(40, 3, 32, 32), torch.randint(0, 7, (40,)), blob_saliency(40)
    mixer = comix.CoMixup(num_classes=7, m_part=20)
    np.random.seed(1)
    masks = mixer.masks(sal)
    check_masks(masks)
    assert [m.shape for m in masks] == [(20, 4, 4, 20)] * 2
    assert any((m == 0.5).any() for m in masks) and any((m.amax((1, 2)) < 1).any() for m in masks)  # it mixes
    np.random.seed(1)
    mixed_x, mixed_y = mixer(x, y, sal)
    onehot = F.one_hot(y, 7).float()
    for k, mask in enumerate(masks):
        part = slice(20 * k, 20 * k + 20)
        share = mask.sum((1, 2)) / 16  # area of each input in each output
        torch.testing.assert_close(mixed_y[part], share @ onehot[part])
        # each pixel is the mask-weighted sum of the inputs (nearest-neighbour upsampled mask)
        up = F.interpolate(mask.permute(0, 3, 1, 2), size=32, mode="nearest")
        expected = (up.unsqueeze(2) * x[part].unsqueeze(0)).sum(1)
        torch.testing.assert_close(mixed_x[part], expected)
    torch.testing.assert_close(mixed_y.sum(1), torch.ones(40))


def test_soft_targets_are_mixed_and_renormalised():
    torch.manual_seed(0)
    soft = torch.softmax(torch.randn(20, 5), 1)
    _, mixed = comix.CoMixup()(torch.randn(20, 3, 32, 32), soft, blob_saliency(20))
    torch.testing.assert_close(mixed.sum(1), torch.ones(20))


@pytest.mark.parametrize("batch,m_part", [(1, 20), (7, 20), (21, 20), (5, 1)])
def test_small_batches_and_partitions(batch, m_part):
    np.random.seed(0)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 3, (batch,))
    mixer = comix.CoMixup(num_classes=3, m_part=m_part)
    mixed_x, mixed_y = mixer(x, y, blob_saliency(batch))
    assert mixed_x.shape == x.shape and mixed_y.shape == (batch, 3)
    assert torch.isfinite(mixed_x).all() and torch.isfinite(mixed_y).all()
    check_masks(mixer.masks(blob_saliency(batch)))
    if m_part == 1 or batch == 1:  # a partition of one input can only copy it
        torch.testing.assert_close(mixed_x, x)


@pytest.mark.parametrize("saliency", ["zero", "constant"])
def test_degenerate_saliency_mixes_validly(saliency):
    np.random.seed(0)
    x, y = torch.randn(20, 3, 32, 32), torch.randint(0, 4, (20,))
    sal = torch.zeros(20, 32, 32) if saliency == "zero" else torch.full((20, 32, 32), 3.0)
    mixed_x, mixed_y = comix.CoMixup(num_classes=4)(x, y, sal)
    assert torch.isfinite(mixed_x).all() and torch.isfinite(mixed_y).all()
    torch.testing.assert_close(mixed_y.sum(1), torch.ones(20))
    torch.testing.assert_close(comix.block_cost(sal, 4), torch.full((20, 4, 4), -1 / 16))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_input_dtype_is_kept(dtype):
    np.random.seed(0)
    x = torch.randn(10, 3, 16, 16).to(dtype)
    mixer = comix.CoMixup(num_classes=2, m_part=5)
    mixed_x, mixed_y = mixer(x, torch.randint(0, 2, (10,)), blob_saliency(10, 16).to(dtype))
    assert mixed_x.dtype == dtype and mixed_y.dtype == torch.float32
    assert torch.isfinite(mixed_x.float()).all()


def test_same_seed_same_result_and_parallel_equals_sequential():
    x, y, sal = torch.randn(60, 3, 32, 32), torch.randint(0, 5, (60,)), blob_saliency(60, seed=2)
    np.random.seed(3)
    first = comix.CoMixup(num_classes=5)(x, y, sal)
    np.random.seed(3)
    again = comix.CoMixup(num_classes=5)(x, y, sal)
    with PartitionPool(2) as pool:
        np.random.seed(3)
        parallel = comix.CoMixup(num_classes=5, executor=pool)(x, y, sal)
    assert pool._shutdown
    for a, b, c in zip(first, again, parallel, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    # a private generator makes the draws independent of numpy's global state
    runs = [comix.CoMixup(num_classes=5, rng=np.random.default_rng(9))(x, y, sal)[1] for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_random_grid_size_is_drawn_per_batch():
    mixer = comix.CoMixup(num_classes=2, m_block_num=-1, m_part=4, rng=np.random.default_rng(0))
    sizes = {mixer.masks(blob_saliency(8))[0].shape[1] for _ in range(30)}
    assert sizes == {2, 4, 8, 16}


def test_hard_and_soft_thresholds_differ():
    sal = blob_saliency(20, seed=5) ** 3
    np.random.seed(0)
    hard = comix.CoMixup(m_thres_type="hard").masks(sal)[0]
    np.random.seed(0)
    soft = comix.CoMixup(m_thres_type="soft").masks(sal)[0]
    check_masks([hard, soft])
    assert not torch.equal(hard, soft)


def test_set_resolve_separates_identical_outputs():
    # Two inputs salient on opposite halves: both outputs want left-of-0 + right-of-1, the same
    # input set. Resolution (computed after iteration m_niter - 2) charges input 0 to the first
    # output and input 1 to the second, which then part ways.
    sal = torch.zeros(2, 32, 32)
    sal[0, :, :16] = 1
    sal[1, :, 16:] = 1

    def input_sets(set_resolve):
        np.random.seed(0)
        mixer = comix.CoMixup(set_resolve=set_resolve, m_gamma=4.0, m_eta=0.0, m_niter=2)
        mask = mixer.masks(sal, torch.zeros(2, 2))[0]
        return [torch.nonzero(mask[j].sum((0, 1))).flatten().tolist() for j in range(2)]

    assert input_sets(False) == [[0, 1], [0, 1]]
    assert input_sets(True) == [[1], [0]]


def test_bad_input_is_refused_clearly():
    mixer = comix.CoMixup(num_classes=3)
    with pytest.raises(ValueError, match="m_block_num=4 does not divide the 30x30 images"):
        mixer(torch.randn(4, 3, 30, 30), torch.zeros(4, dtype=torch.long), torch.rand(4, 30, 30))
    with pytest.raises(ValueError, match="saliency must be"):
        mixer(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long), torch.rand(4, 16, 16))
    with pytest.raises(ValueError, match="num_classes"):
        comix.CoMixup()(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long), torch.rand(4, 32, 32))
    with pytest.raises(ValueError, match="m_thres_type"):
        comix.CoMixup(m_thres_type="medium")
    with pytest.raises(ValueError, match="m_part"):
        comix.CoMixup(m_part=0)
    with pytest.raises(ValueError, match="m_solver"):
        comix.CoMixup(m_solver="pygco")


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_saliency_and_clean_loss_with_clean_lam():
    torch.manual_seed(0)
    net, x, y = TinyNet(), torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    saliency, loss, logits = comix.saliency_and_clean_loss(net, x, y, clean_lam=1.0, num_classes=5)
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}

    reference = TinyNet()
    reference.load_state_dict(net.state_dict())
    xr = x.clone().requires_grad_(True)
    ref_loss = 2 * 1.0 * F.cross_entropy(reference(xr), y) / 5
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss.detach())
    torch.testing.assert_close(saliency, xr.grad.pow(2).mean(1).sqrt())
    for n, p in reference.named_parameters():
        torch.testing.assert_close(grads[n], p.grad)  # the clean regulariser's gradients accumulate
    assert net.training and logits.shape == (6, 5)


def test_saliency_with_clean_lam_zero_leaves_parameters_alone():
    torch.manual_seed(0)
    net, x, y = TinyNet(), torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    running = net.bn.running_mean.clone()
    saliency, _, _ = comix.saliency_and_clean_loss(net, x, y, clean_lam=0.0)
    assert all(p.grad is None for p in net.parameters())
    assert net.training  # mode restored
    torch.testing.assert_close(net.bn.running_mean, running)  # eval-mode forward: BN stats untouched
    assert saliency.shape == (6, 8, 8) and (saliency > 0).any()


def test_saliency_survives_float16_loss_scaling():
    torch.manual_seed(0)
    net, x, y = TinyNet(), torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    plain, _, _ = comix.saliency_and_clean_loss(net, x, y, 1.0, 5)
    net.zero_grad()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    scaled, _, _ = comix.saliency_and_clean_loss(net, x, y, 1.0, 5, scaler=scaler)
    torch.testing.assert_close(scaled, plain)


def test_peak_distance_finds_the_blobs():
    sal = torch.zeros(3, 32, 32)
    sal[0, 2:6, 2:6] = 1  # peak window starts at (0..2, 0..2)
    sal[1, 20:24, 10:14] = 1
    sal[2, 26:30, 26:30] = 1
    dist = comix.saliency_peak_distance(sal)
    assert dist.shape == (3, 3) and torch.equal(dist, dist.T) and (dist.diagonal() == 0).all()
    # peaks: first arg-max of the 8x8 window average, (0, 0), (16, 6), (22, 22)
    assert dist.tolist() == [[0, 22, 44], [22, 0, 22], [44, 22, 0]]


def test_published_functions_keep_their_meaning():
    torch.manual_seed(0)
    cost = comix.block_cost(blob_saliency(6), 4)
    A = comix.compatibility(comix.saliency_peak_distance(blob_saliency(6)), 0.001)
    np.random.seed(0)
    mask = comix.get_onehot_matrix(cost, A, 6, beta=0.32, gamma=1.0, eta=0.05, thres=0.83, niter=4)
    check_masks([mask])
    assert mask.shape == (6, 4, 4, 6) and torch.equal(cost, comix.block_cost(blob_saliency(6), 4))  # input untouched
    x, target = torch.randn(6, 3, 32, 32), torch.eye(6)
    out, mixed = comix.mix_input(mask, x, target)
    torch.testing.assert_close(mixed, mask.sum((1, 2)) / 16)
    # saliency-weighted targets (published option sc)
    _, weighted = comix.mix_input(mask, x, target, sc=-cost)
    torch.testing.assert_close(weighted.sum(1), torch.ones(6))
    # thresholded objective: only over-threshold usage counts
    assert comix.obj_fn_thres(cost, mask, 0.02, 1 / 16, 1e9) <= comix.obj_fn(cost, mask, 0.02, 1 / 16)
    # to_one_hot and distance
    assert torch.equal(comix.to_one_hot(torch.tensor([2, 0]), 3), torch.tensor([[0, 0, 1.0], [1.0, 0, 0]]))
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert comix.distance(points, "l1")[0, 1] == 7 and comix.distance(points, "l2")[0, 1] == 5
    with pytest.raises(ValueError):
        comix.distance(points, "cosine")


def test_mixup_process_and_the_parallel_class_take_a_namespace():
    x, sal = torch.randn(30, 3, 32, 32), blob_saliency(30)
    target = comix.to_one_hot(torch.randint(0, 4, (30,)), 4)
    args = Namespace(m_block_num=2, m_part=10, mixup_alpha=1.0)  # missing fields take the defaults
    a_dist = comix.saliency_peak_distance(sal)
    np.random.seed(0)
    out, mixed = comix.mixup_process(x, target, args=args, sc=sal, A_dist=a_dist)
    with MixupProcessParallel(10, 30, 1) as mpp:
        np.random.seed(0)
        out_p, mixed_p = mpp(x, target, args=args, sc=sal, A_dist=a_dist)
    assert torch.equal(out, out_p) and torch.equal(mixed, mixed_p)
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="saliency"):
        comix.mixup_process(x, target, args=args)


# --------------------------------------------------------------------------- all-zero saliency

@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("block_num", [2, 4, -1])
def test_all_zero_saliency_co_mixup(block_num):
    np.random.seed(block_num + 5)
    x, labels = torch.randn(20, 3, 32, 32), torch.randint(0, 4, (20,))
    mixed_x, mixed_y = comix.CoMixup(num_classes=4, m_block_num=block_num, m_part=10)(x, labels,
                                                                                      torch.zeros(20, 32, 32))
    assert torch.isfinite(mixed_x).all() and torch.isfinite(mixed_y).all()
    torch.testing.assert_close(mixed_y.sum(1), torch.ones(20))
