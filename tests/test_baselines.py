"""Input mixup, CutMix and manifold mixup: mixing weights, targets, draws, dtypes, bad input."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comixup import models
from comixup.mixing import baselines

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def batch(size=6, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 3, 16, 16, generator=g)
    y = F.one_hot(torch.randint(0, classes, (size,), generator=g), classes).float()
    return x, y


def test_input_mixup_is_the_lam_weighted_pair_with_matching_targets():
    x, y = batch()
    soft = torch.softmax(torch.randn(6, 5), 1)
    for targets in (y, soft):
        mixed_x, mixed_y = baselines.input_mixup(x, targets, alpha=1.0, rng=np.random.default_rng(3))
        lam, perm = baselines.draw_pairing(6, 1.0, np.random.default_rng(3))
        assert 0 < lam < 1 and sorted(perm.tolist()) == list(range(6))
        torch.testing.assert_close(mixed_x, lam * x + (1 - lam) * x[perm])
        torch.testing.assert_close(mixed_y, lam * targets + (1 - lam) * targets[perm])
        torch.testing.assert_close(mixed_y.sum(1), torch.ones(6))
        assert mixed_y.dtype == torch.float32


def test_global_numpy_state_is_used_without_rng_in_the_published_order():
    x, y = batch()
    np.random.seed(11)
    mixed_x, mixed_y = baselines.input_mixup(x, y, alpha=2.0)
    np.random.seed(11)
    perm = np.random.permutation(6)  # the partner first, then lam, as the published code draws them
    lam = np.random.beta(2.0, 2.0)
    torch.testing.assert_close(mixed_x, lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(mixed_y, (lam * y + (1 - lam) * y[perm]).float())


def test_cutmix_pastes_the_partners_box_and_targets_follow_its_area():
    x, y = batch(size=8, classes=8)
    y = torch.eye(8)[torch.randperm(8, generator=torch.Generator().manual_seed(1))]  # distinct classes
    seen_clipped = False
    for seed in range(40):
        mixed_x, mixed_y = baselines.cutmix(x, y, alpha=1.0, rng=np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        lam, perm = baselines.draw_pairing(8, 1.0, rng)
        top, bottom, left, right = baselines.cutmix_box(16, 16, lam, rng)
        assert 0 <= top <= bottom <= 16 and 0 <= left <= right <= 16
        inside = torch.zeros(16, 16, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        assert torch.equal(mixed_x[:, :, inside], x[perm][:, :, inside])
        assert torch.equal(mixed_x[:, :, ~inside], x[:, :, ~inside])
        box_share = inside.float().mean().item()
        expected = torch.zeros(8, 8)
        for i in range(8):  # own class: the share outside the box; the partner's class: the box's share
            expected[i, y[i].argmax()] += 1 - box_share
            expected[i, y[perm[i]].argmax()] += box_share
        torch.testing.assert_close(mixed_y, expected)
        torch.testing.assert_close(mixed_y.sum(1), torch.ones(8))
        seen_clipped |= box_share < (1 - lam) - 0.1
    assert seen_clipped  # some boxes were cut by the border, and their targets still matched


def test_cutmix_box_follows_lam_away_from_the_border():
    rng = np.random.default_rng(0)
    for lam in (0.36, 0.75, 0.9):
        areas = []
        for _ in range(200):
            top, bottom, left, right = baselines.cutmix_box(100, 100, lam, rng)
            if top > 0 and bottom < 100 and left > 0 and right < 100:  # not clipped
                areas.append((bottom - top) * (right - left) / 1e4)
        assert len(areas) > 5 and np.allclose(areas, 1 - lam, atol=0.02)
    top, bottom, left, right = baselines.cutmix_box(32, 32, 1.0, rng)
    assert top == bottom and left == right  # lam 1: an empty box


def test_manifold_mix_fn_replaces_the_hidden_activation():
    torch.manual_seed(0)
    model = models.build_model("preactresnet18", 10, initial_channels=4).eval()
    x = torch.randn(4, 3, 16, 16)
    y = F.one_hot(torch.tensor([0, 1, 2, 3]), 10).float()
    with torch.no_grad():
        for layer in (0, 1, 2):
            mixer = baselines.ManifoldMix(2.0, layers=(layer,), rng=np.random.default_rng(layer + 2))
            drawn, mix_fn, mixed_y = mixer.draw(y)
            assert drawn == layer
            lam, perm = mix_fn.lam, mix_fn.perm
            assert (perm != np.arange(4)).any()  # seeds chosen so that the images do mix
            # run the network by hand, replacing h at depth `layer` by lam h + (1 - lam) h[perm]
            h = x
            if layer == 0:
                h = lam * h + (1 - lam) * h[perm]
            h = model.stem(h)
            for depth, stage in enumerate(model.stages(), start=1):
                h = stage(h)
                if depth == layer:
                    h = lam * h + (1 - lam) * h[perm]
            expected = model.head(h)
            torch.testing.assert_close(model(x, mix_layer=layer, mix_fn=mix_fn), expected)
            assert not torch.allclose(model(x), expected)  # the mixing changed something
            torch.testing.assert_close(mixed_y, lam * y + (1 - lam) * y[perm])
            torch.testing.assert_close(mixed_y.sum(1), torch.ones(4))


def test_manifold_layer_is_uniform_over_the_three_depths():
    mixer = baselines.ManifoldMix(2.0, rng=np.random.default_rng(0))
    counts = np.bincount([mixer.draw(torch.eye(3))[0] for _ in range(600)], minlength=3)
    assert counts.shape == (3,) and (counts > 150).all()


def test_manifold_draws_are_reproducible_and_respect_layers():
    y = torch.eye(4)
    a = baselines.ManifoldMix(1.0, layers=(1, 2), rng=np.random.default_rng(9))
    b = baselines.ManifoldMix(1.0, layers=(1, 2), rng=np.random.default_rng(9))
    for _ in range(10):
        la, fa, ya = a.draw(y)
        lb, fb, yb = b.draw(y)
        assert la == lb and la in (1, 2) and fa.lam == fb.lam and np.array_equal(fa.perm, fb.perm)
        assert torch.equal(ya, yb)
    with pytest.raises(ValueError, match="batch of 4"):
        fa(torch.randn(3, 2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_are_kept_and_seeds_reproduce(dtype):
    x, y = batch()
    x = x.to(dtype)
    for method in (baselines.input_mixup, baselines.cutmix):
        first = method(x, y, 1.0, rng=np.random.default_rng(4))
        again = method(x, y, 1.0, rng=np.random.default_rng(4))
        other = method(x, y, 1.0, rng=np.random.default_rng(5))
        assert first[0].dtype == dtype and first[1].dtype == torch.float32
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
        assert not torch.equal(first[1], other[1])
    lam, perm = baselines.draw_pairing(6, 1.0, np.random.default_rng(4))
    mixed, _ = baselines.input_mixup(x, y, 1.0, rng=np.random.default_rng(4))
    torch.testing.assert_close(mixed.float(), lam * x.float() + (1 - lam) * x.float()[perm],
                               atol=0.02, rtol=0.02)
    assert baselines.PairMix(lam, perm)(x).dtype == dtype


def test_bad_input_is_refused_with_a_clear_message():
    x, y = batch()
    with pytest.raises(ValueError, match="alpha must be"):
        baselines.input_mixup(x, y, alpha=0.0)
    with pytest.raises(ValueError, match="soft targets"):
        baselines.cutmix(x, y.argmax(1), alpha=1.0)
    with pytest.raises(ValueError, match="5 target rows for 6 images"):
        baselines.input_mixup(x, y[:5], alpha=1.0)
    with pytest.raises(TypeError, match="floating-point"):
        baselines.cutmix(x.long(), y, alpha=1.0)
    with pytest.raises(ValueError, match="layers must be"):
        baselines.ManifoldMix(1.0, layers=())
    with pytest.raises(ValueError, match="lam must lie"):
        baselines.cutmix_box(8, 8, 1.5)
