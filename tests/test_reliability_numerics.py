"""A NaN or infinite training loss stops the run at once, naming epoch and step, with the last good
checkpoint untouched; all-zero saliency maps still mix validly (Co-Mixup and Puzzle Mix)."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn

import engine
import comix
import main
import methods
import puzzlemix
from runs import base_args, only_experiment, poisoned_builder, read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

SAVED_FILES = ("checkpoint.pth.tar", "model_best.pth.tar", "log.pkl", "loss.png", "acc.png")
STEPS_PER_EPOCH = 3  # 60 generated images in batches of 20


def poison_step(monkeypatch, at_call: int, value: float, on_poison=None) -> None:
    """Poison the training loss of one step of the method main builds (see runs.poisoned_builder)."""
    monkeypatch.setattr(methods, "build_method", poisoned_builder(methods.build_method, at_call, value, on_poison))


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(cifar10_dir, tmp_path, capsys,
                                                                        monkeypatch, value):
    root = tmp_path / "exp"
    snapshot: dict[str, bytes] = {}

    def take_snapshot():
        exp = only_experiment(root)
        snapshot.update({name: (exp / name).read_bytes() for name in SAVED_FILES})

    poison_step(monkeypatch, at_call=STEPS_PER_EPOCH + 1, value=value, on_poison=take_snapshot)  # epoch 1, step 1
    rc = main.main(base_args(cifar10_dir, root, "--epochs", "3", "--comix", "False"))
    captured = capsys.readouterr()
    assert rc == main.EXIT_DIVERGED == 3

    exp = only_experiment(root)
    checkpoint = exp / "checkpoint.pth.tar"
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    expected = "nan" if math.isnan(value) else "inf"
    assert lines[0] == (f"error: the training loss became {expected} at epoch 1, step 1 (0-based, as in the log); "
                        f"nothing of that epoch was saved; the last complete checkpoint is {checkpoint} "
                        f"(1 epoch done)")
    # nothing of epoch 1 reached the disk; epoch 2 never started
    assert {name: (exp / name).read_bytes() for name in SAVED_FILES} == snapshot
    assert read_checkpoint(checkpoint)["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in read_checkpoint(checkpoint)["state_dict"].values()
               if v.is_floating_point())
    with open(exp / "log.pkl", "rb") as f:
        assert len(pickle.load(f)["train_loss"]) == 1
    assert "[Epoch=002/003]" not in captured.out
    assert not list(exp.glob(".*.tmp"))
    assert (exp / "log.txt").read_text().splitlines()[-1] == lines[0]


def test_a_non_finite_loss_in_the_first_epoch_says_nothing_was_saved(cifar10_dir, tmp_path, capsys, monkeypatch):
    poison_step(monkeypatch, at_call=2, value=math.nan)
    assert main.main(base_args(cifar10_dir, tmp_path / "exp", "--epochs", "2", "--comix", "False")) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the training loss became nan at epoch 0, step 2 ")
    assert err.endswith("no checkpoint was saved yet")
    assert {p.name for p in only_experiment(tmp_path / "exp").iterdir()} <= {"log.txt"} | {
        p.name for p in only_experiment(tmp_path / "exp").glob("events.out.tfevents.*")}


def test_train_one_epoch_raises_on_the_bad_step(cifar10_dir):
    from load_data import get_datasets, get_loaders

    train_set, _, test_set, classes = get_datasets("cifar10", str(cifar10_dir), labels_per_class=6)
    loader, _, _ = get_loaders(train_set, None, test_set, batch_size=20, workers=0)
    engine.set_train_epoch(loader, 0, 4)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        model[1].bias[3] = math.inf
    with pytest.raises(main.TrainingDiverged) as raised:
        main.train_one_epoch(model, loader, optimizer, methods.VanillaMethod(classes), 4)
    assert (raised.value.epoch, raised.value.step) == (4, 0) and math.isnan(raised.value.value)


# --------------------------------------------------------------------------- all-zero saliency

def _constant_model(classes: int) -> nn.Module:
    """Logits that do not depend on the input: every input gradient, hence every saliency map, is 0."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, classes))
    with torch.no_grad():
        model[1].weight.zero_()
    return model


@pytest.mark.parametrize("name", ["comix", "puzzle"])
@pytest.mark.parametrize("clean_lam", [0.0, 1.0])
def test_all_zero_saliency_still_mixes_validly_through_the_method(name, clean_lam):
    np.random.seed(0)
    torch.manual_seed(0)
    images, labels = torch.randn(20, 3, 32, 32), torch.randint(0, 4, (20,))
    model = _constant_model(4)
    saliency, _, _ = comix.saliency_and_clean_loss(model, images, labels, clean_lam, 4)
    assert torch.count_nonzero(saliency) == 0
    if name == "comix":
        method = methods.CoMixupMethod(4, comix.CoMixup(num_classes=4, m_part=10), clean_lam=clean_lam)
    else:
        method = methods.PuzzleMixMethod(4, puzzlemix.PuzzleMix(), clean_lam=clean_lam)
    step = method(model, images, labels)
    assert torch.isfinite(step.loss) and torch.isfinite(step.logits).all()
    torch.testing.assert_close(step.targets.sum(1), torch.ones(20))
    assert (step.targets >= 0).all()


@pytest.mark.parametrize("block_num", [2, 4, 8, 16])
@pytest.mark.parametrize("transport", [True, False])
def test_all_zero_saliency_puzzle_mix(block_num, transport):
    rng = np.random.default_rng(block_num)
    x = torch.randn(8, 3, 32, 32)
    y = comix.to_one_hot(torch.arange(8) % 3, 3)
    mixer = puzzlemix.PuzzleMix(block_num=block_num, transport=transport, rng=rng)
    mixed_x, mixed_y = mixer(x, y, torch.zeros(8, 32, 32))
    assert mixed_x.shape == x.shape and torch.isfinite(mixed_x).all()
    assert torch.isfinite(mixed_y).all() and (mixed_y >= 0).all()
    torch.testing.assert_close(mixed_y.sum(1), torch.ones(8))
    assert mixed_x.abs().max() <= x.abs().max() + 1e-5  # convex combinations of (moved) input pixels


@pytest.mark.parametrize("block_num", [2, 4, -1])
def test_all_zero_saliency_co_mixup(block_num):
    np.random.seed(block_num + 5)
    x, labels = torch.randn(20, 3, 32, 32), torch.randint(0, 4, (20,))
    mixed_x, mixed_y = comix.CoMixup(num_classes=4, m_block_num=block_num, m_part=10)(x, labels,
                                                                                      torch.zeros(20, 32, 32))
    assert torch.isfinite(mixed_x).all() and torch.isfinite(mixed_y).all()
    torch.testing.assert_close(mixed_y.sum(1), torch.ones(20))
