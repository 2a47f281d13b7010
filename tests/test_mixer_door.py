"""The library's one mixer dialect: every mixer class takes keyword-only hyperparameters, class
indices or soft targets, refuses bad input at the door with one line naming the argument, the value
and what is allowed, and mixes exactly as the mixers did before the dialect was unified."""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from comixup.core.tensors import to_one_hot
from comixup.data.synthetic import blob_saliency
from comixup.mixing import baselines, comix, puzzlemix
from comixup.mixing.base import Mixer

FIXTURE = Path(__file__).parent / "data" / "mixing_before_refactor.pt"
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
K = 5

MIXERS = {
    "InputMixup": lambda **kw: baselines.InputMixup(**kw),
    "CutMix": lambda **kw: baselines.CutMix(**kw),
    "ManifoldMixup": lambda **kw: baselines.ManifoldMixup(**kw),
    "PuzzleMix": lambda **kw: puzzlemix.PuzzleMix(mean=MEAN, std=STD, block_num=4, **kw),
    "CoMixup": lambda **kw: comix.CoMixup(m_part=4, **kw),
}
CLASSES = {"InputMixup": baselines.InputMixup, "CutMix": baselines.CutMix, "ManifoldMixup": baselines.ManifoldMixup,
           "PuzzleMix": puzzlemix.PuzzleMix, "CoMixup": comix.CoMixup}


def batch(size: int = 16, count: int = 8):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(count, 3, size, size, generator=generator)
    labels = torch.randint(0, K, (count,), generator=generator)
    return x, labels, blob_saliency(count, size)


def call(mixer: Mixer, x, y, saliency):
    return mixer(x, y, saliency) if mixer.needs_saliency else mixer(x, y)


def mixed_images(result):
    """The mixed images of a call (manifold mixup: its draw's mixing of the input itself)."""
    first, _ = result
    return first.mix_fn if isinstance(first, baselines.ManifoldDraw) else first


# --------------------------------------------------------------------------- what comes in

@pytest.mark.parametrize("name", MIXERS)
def test_class_indices_and_their_one_hot_rows_mix_alike(name):
    x, labels, sal = batch()
    from_indices = call(MIXERS[name](num_classes=K, rng=np.random.default_rng(3)), x, labels, sal)
    from_rows = call(MIXERS[name](rng=np.random.default_rng(3)), x, to_one_hot(labels, K), sal)
    assert torch.equal(from_indices[1], from_rows[1])
    assert from_indices[1].dtype == torch.float32 and from_indices[1].shape == (8, K)
    assert torch.allclose(from_indices[1].sum(1), torch.ones(8))
    if name != "ManifoldMixup":
        assert torch.equal(from_indices[0], from_rows[0]) and from_indices[0].dtype == x.dtype


@pytest.mark.parametrize("name", MIXERS)
def test_bad_images_and_labels_get_one_line_naming_them(name):
    x, labels, sal = batch()
    mixer = MIXERS[name](num_classes=K)
    cases = [
        (x.mul(40).clamp(0, 255).to(torch.uint8), labels, TypeError,
         "x must hold floating-point images, got torch.uint8"),
        (x, labels.view(-1, 1), ValueError, "y has shape (8, 1): class indices are (B,)"),
        (x, labels.float() + 0.7, TypeError, "must hold class indices of an integer dtype, got torch.float32"),
        (x, torch.full((8, 10), 0.1), ValueError, "soft targets of 10 classes, but num_classes=5"),
        (x, labels.clone().index_fill_(0, torch.tensor([2]), K), ValueError,
         "class index 5, outside [0, 4] (num_classes=5)"),
        (x, labels.clone().index_fill_(0, torch.tensor([2]), -1), ValueError, "class index -1, outside [0, 4]"),
        (x, labels[:5], ValueError, "y holds 5 class indices for 8 images"),
        (x.to("meta"), labels, ValueError, "x is on the meta device"),
        (x[0], labels, ValueError, "x must be a non-empty batch of images (B, C, H, W), got shape (3, 16, 16)"),
    ]
    for images, y, error, message in cases:
        with pytest.raises(error) as caught:
            call(mixer, images, y, sal if images.shape == x.shape else sal)
        assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("name", MIXERS)
def test_soft_targets_must_be_rows_of_shares(name):
    x, labels, sal = batch()
    rows = to_one_hot(labels, K)
    rows[3] = 0
    with pytest.raises(ValueError, match=r"y soft-target rows must sum to 1, row 3 sums to 0"):
        call(MIXERS[name](), x, rows, sal)
    with pytest.raises(ValueError, match="finite and non-negative"):
        call(MIXERS[name](), x, to_one_hot(labels, K) * 2 - 0.5, sal)
    with pytest.raises(ValueError, match="give the mixer num_classes=K"):
        call(MIXERS[name](), x, labels, sal)


@pytest.mark.parametrize("name", MIXERS)
def test_constructor_arguments_are_keyword_only_and_checked_at_construction(name):
    cls = CLASSES[name]
    with pytest.raises(TypeError, match="positional"):
        cls(10)
    with pytest.raises(TypeError, match=r"rng must be a numpy.random.Generator .* got int 42"):
        MIXERS[name](num_classes=10, rng=42)
    with pytest.raises(TypeError, match="num_classes must be an int, got str '10'"):
        MIXERS[name](num_classes="10")
    with pytest.raises(ValueError, match="num_classes must be an int >= 1, got 0"):
        MIXERS[name](num_classes=0)


def test_hyperparameters_of_the_wrong_type_are_refused_by_name():
    cases = [
        (lambda: comix.CoMixup(m_block_num="4"), TypeError, "m_block_num must be an int, got str '4'"),
        (lambda: comix.CoMixup(m_part=2.5), TypeError, "m_part must be an int, got float 2.5"),
        (lambda: comix.CoMixup(m_beta="0.3"), TypeError, "m_beta must be a number, got str '0.3'"),
        (lambda: comix.CoMixup(set_resolve="False"), TypeError, "set_resolve must be True or False, got str"),
        (lambda: comix.CoMixup(executor=4), TypeError, "executor must be a concurrent.futures.Executor"),
        (lambda: comix.CoMixup(m_part=0), ValueError, "m_part must be at least 1, got 0"),
        (lambda: puzzlemix.PuzzleMix(block_num=2.0), TypeError, "block_num must be an int, got float 2.0"),
        (lambda: puzzlemix.PuzzleMix(chunks=0), ValueError, "chunks must be an int >= 1, got 0"),
        (lambda: baselines.CutMix(alpha="1"), TypeError, "alpha must be a number, got str '1'"),
        (lambda: baselines.InputMixup(alpha=0), ValueError, "alpha must be a finite number > 0, got 0.0"),
        (lambda: baselines.ManifoldMixup(layers=(0, 0)), ValueError, "layers must be distinct"),
    ]
    for build, error, message in cases:
        with pytest.raises(error) as caught:
            build()
        assert message in str(caught.value)
    assert comix.CoMixup(m_block_num=np.int64(2)).config.m_block_num == 2  # numpy ints are ints


@pytest.mark.parametrize("name", ["PuzzleMix", "CoMixup"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_saliency_that_is_not_finite_is_refused(name, bad):
    x, labels, sal = batch()
    sal[2, 5, 5] = bad
    with pytest.raises(ValueError, match="saliency of image 2 holds NaN or infinite values"):
        MIXERS[name](num_classes=K)(x, labels, sal)


@pytest.mark.parametrize("name", ["PuzzleMix", "CoMixup"])
def test_negative_saliency_counts_as_zero_and_no_saliency_as_uniform(name):
    x, labels, sal = batch()
    negative = sal.clone()
    negative[:, :6, :6] = -3.0
    with_negatives = MIXERS[name](num_classes=K, rng=np.random.default_rng(1))(x, labels, negative)
    clamped = MIXERS[name](num_classes=K, rng=np.random.default_rng(1))(x, labels, negative.clamp_min(0))
    assert torch.equal(with_negatives[0], clamped[0]) and torch.equal(with_negatives[1], clamped[1])
    all_negative = MIXERS[name](num_classes=K, rng=np.random.default_rng(2))(x, labels, -sal)
    flat = MIXERS[name](num_classes=K, rng=np.random.default_rng(2))(x, labels, torch.ones_like(sal))
    assert torch.equal(all_negative[0], flat[0]) and torch.equal(all_negative[1], flat[1])


@pytest.mark.parametrize("name", MIXERS)
def test_saliency_goes_to_the_saliency_mixers_only(name):
    x, labels, sal = batch()
    mixer = MIXERS[name](num_classes=K)
    if mixer.needs_saliency:
        with pytest.raises(TypeError, match="missing 1 required positional argument: 'saliency'"):
            mixer(x, labels)
        with pytest.raises(ValueError, match=r"mixes by saliency: call it as mixer\(x, y, saliency\)"):
            mixer(x, labels, None)
        with pytest.raises(ValueError, match=r"saliency must be \(B, H, W\) = \(8, 16, 16\)"):
            mixer(x, labels, sal[:, :8])
    else:
        with pytest.raises(ValueError, match=r"takes no saliency: call it as mixer\(x, y\)"):
            mixer(x, labels, sal)


def test_a_random_grid_that_may_not_divide_the_images_is_refused_before_any_draw():
    x, labels, _ = batch(size=28)
    state = np.random.get_state()[1].copy()
    for _ in range(6):  # every call, not only those that would draw 8 or 16
        with pytest.raises(ValueError) as caught:
            comix.CoMixup(num_classes=K, m_block_num=-1)(x, labels, torch.rand(8, 28, 28))
        assert str(caught.value).startswith("m_block_num=-1 draws grids of 2, 4, 8, 16 blocks, and 8, 16 do not "
                                            "divide the 28x28 images; use a grid size that does: 1, 2, 4, 7, 14, 28")
    with pytest.raises(ValueError, match="block_num=-1 draws grids"):
        puzzlemix.PuzzleMix(num_classes=K)(x, labels, torch.rand(8, 28, 28))
    assert np.array_equal(np.random.get_state()[1], state)  # nothing was drawn


# --------------------------------------------------------------------------- the same mixing as before

def test_the_mixers_mix_as_they_did_before_the_dialect_was_unified():
    """Each mixer, given the draws the mixers took before (same generator seeds), returns the very
    images and targets they returned then (tests/data/make_mixing_fixture.py wrote them)."""
    before = torch.load(FIXTURE)
    x, labels, sal, classes = before["x"], before["labels"], before["saliency"], before["num_classes"]
    mean, std = tuple(before["mean"]), tuple(before["std"])
    now = {
        "mixup": baselines.InputMixup(num_classes=classes, alpha=1.0, rng=np.random.default_rng(1))(x, labels),
        "cutmix": baselines.CutMix(num_classes=classes, alpha=1.0, rng=np.random.default_rng(2))(x, labels),
        "puzzle": puzzlemix.PuzzleMix(num_classes=classes, mean=mean, std=std, rng=np.random.default_rng(4))(
            x, labels, sal),
        "comix": comix.CoMixup(num_classes=classes, m_part=3, rng=np.random.default_rng(5))(x, labels, sal),
        "comix_grid_drawn": comix.CoMixup(num_classes=classes, m_block_num=-1, m_part=8,
                                          rng=np.random.default_rng(6))(x, labels, sal),
    }
    for name, (mixed, targets) in now.items():
        assert torch.equal(mixed, before[name][0]), name
        assert torch.equal(targets, before[name][1]), name
    drawn, targets = baselines.ManifoldMixup(num_classes=classes, alpha=2.0, rng=np.random.default_rng(3))(x, labels)
    layer, mixed_input, old_targets = before["manifold"]
    assert drawn.mix_layer == int(layer) and torch.equal(drawn.mix_fn(x), mixed_input)
    assert torch.equal(targets, old_targets)
    # the earlier spellings are the same mixers
    assert torch.equal(baselines.input_mixup(x, to_one_hot(labels, classes), 1.0, np.random.default_rng(1))[0],
                       before["mixup"][0])
    assert torch.equal(baselines.cutmix(x, to_one_hot(labels, classes), 1.0, np.random.default_rng(2))[0],
                       before["cutmix"][0])


# --------------------------------------------------------------------------- what a reader sees

@pytest.mark.parametrize("name", MIXERS)
def test_signatures_show_every_hyperparameter_with_its_type_and_default(name):
    cls = CLASSES[name]
    parameters = list(inspect.signature(cls).parameters.values())
    assert parameters and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)
    assert all(p.annotation is not inspect.Parameter.empty and p.default is not inspect.Parameter.empty
               for p in parameters)
    assert {"num_classes", "rng"} <= {p.name for p in parameters}
    for documented in (cls, cls.__call__):
        assert documented.__doc__ and "Args:" in documented.__doc__
    assert "Returns:" in cls.__call__.__doc__


@pytest.mark.parametrize("cls, config", [(comix.CoMixup, comix.CoMixupConfig),
                                         (puzzlemix.PuzzleMix, puzzlemix.PuzzleMixConfig)])
def test_the_signature_defaults_are_the_published_settings(cls, config):
    defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items()}
    for field in dataclasses.fields(config):
        assert defaults[field.name] == field.default, field.name


def test_input_gradient_saliency_leaves_the_parameters_gradients_alone():
    from comixup import build_model, input_gradient_saliency, saliency_and_clean_loss

    torch.manual_seed(0)
    model = build_model("preactresnet18", K, initial_channels=16).train()
    x, labels, _ = batch(size=32)
    saliency = input_gradient_saliency(model, x, labels)
    assert all(p.grad is None for p in model.parameters()) and model.training
    published, _, _ = saliency_and_clean_loss(model, x, labels, clean_lam=0.0, num_classes=K)
    assert torch.equal(saliency, published) and saliency.shape == (8, 32, 32) and saliency.dtype == torch.float32
    assert all(p.grad is None for p in model.parameters())
    saliency_and_clean_loss(model, x, labels, clean_lam=1.0, num_classes=K)  # its backward() fills .grad
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
