"""recipe.py: phases, the piecewise-linear learning rate against np.interp, the global batch
split, and the BatchNorm-free weight decay groups."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from comixup import models
from comixup.train.recipe import (
    Phase,
    Recipe,
    RecipeError,
    param_groups,
    partition_sizes,
    partition_warning,
    per_process_batch,
    piecewise_linear,
)

SHIPPED = Path(__file__).resolve().parents[1] / "configs" / "imagenet_fast.yml"
PUBLISHED_EPOCHS = [0, 8, 15, 15, 40, 40, 65, 90, 100]
PUBLISHED_LRS = [0.5, 1.0, 0.125, 0.2, 0.02, 0.02, 0.002, 2e-4, 2e-5]
# The published script runs each phase on its own with its own points: (first epoch, end epoch,
# epochs, learning rates) of its three phase configs.
PUBLISHED_PHASE_POINTS = [(0, 15, [0, 8, 15], [0.5, 1.0, 0.125]),
                          (15, 40, [15, 40], [0.2, 0.02]),
                          (40, 100, [40, 65, 90, 100], [0.02, 0.002, 2e-4, 2e-5])]


def published_step_lr(epoch: int, i: int, steps: int) -> float:
    """The published loop's rate of step i: np.interp over the running phase's own points."""
    xs, ys = next((xs, ys) for start, end, xs, ys in PUBLISHED_PHASE_POINTS if start <= epoch < end)
    return float(np.interp(epoch + (i + 1) / steps, xs, ys))


def _phase(start, end, **changes):
    entry = {"epochs": [start, end], "data_dir": "160", "crop": 128, "batch_size": 1024, "min_scale": 0.08}
    entry.update(changes)
    return entry


@pytest.fixture(scope="module")
def published():
    raw = yaml.safe_load(SHIPPED.read_text())
    return Recipe.from_config(raw["phases"], raw["lr_points"], epochs=raw["epochs"], data_dir="/data/in")


def test_shipped_recipe_is_the_published_one(published):
    assert [(p.start, p.end, p.crop, p.batch_size, p.min_scale) for p in published.phases] == [
        (0, 15, 128, 1024, 0.08), (15, 40, 224, 448, 0.087), (40, 100, 224, 448, 0.087)]
    assert [p.data_dir for p in published.phases] == ["/data/in/160", "/data/in/352", "/data/in/352"]
    assert published.lr_points == tuple(zip(map(float, PUBLISHED_EPOCHS), PUBLISHED_LRS, strict=True))
    assert published.eval_data_dir == "/data/in/352"


@pytest.mark.parametrize("steps_per_epoch", [1, 7, 1251, 2859])  # 2859: 1.28M images / 448
def test_step_lr_equals_the_published_per_phase_np_interp_at_every_step(published, steps_per_epoch):
    epochs = range(100) if steps_per_epoch < 1000 else (0, 7, 8, 14, 15, 39, 40, 64, 89, 99)
    for epoch in epochs:
        for i in range(steps_per_epoch):
            expected = published_step_lr(epoch, i, steps_per_epoch)
            assert published.step_lr(epoch, i, steps_per_epoch) == expected, (epoch, i)
    # the last step of phase 1 keeps the value before the jump, the first of phase 2 starts after it
    assert published.step_lr(14, steps_per_epoch - 1, steps_per_epoch) == 0.125
    assert published.step_lr(15, 0, steps_per_epoch) == pytest.approx(0.2 - 0.18 / steps_per_epoch / 25)


def test_lr_values_at_chosen_steps(published):
    n = 10
    assert published.step_lr(0, 0, n) == pytest.approx(0.5 + 0.5 * 0.1 / 8)
    assert published.step_lr(3, 9, n) == pytest.approx(0.5 + 0.5 * 4 / 8)  # end of epoch 3: x = 4
    assert published.step_lr(14, 8, n) == pytest.approx(1.0 - 0.875 * 6.9 / 7)  # just before the jump
    assert published.step_lr(14, 9, n) == 0.125  # x = 15 exactly, phase 1's last step: before the jump
    assert np.interp(15.0, PUBLISHED_EPOCHS, PUBLISHED_LRS) == 0.2  # what one np.interp over all points gives
    assert published.step_lr(15, 0, n) == pytest.approx(0.2 - 0.18 * 0.1 / 25)
    assert published.step_lr(39, 9, n) == pytest.approx(0.02)
    assert published.step_lr(99, 9, n) == 2e-5
    assert published.lr_at(150.0) == 2e-5 and published.lr_at(-1.0) == 0.5


def test_piecewise_linear_matches_np_interp_except_at_a_jump_where_the_first_value_holds():
    rng = np.random.default_rng(0)
    jumps_seen = 0
    for _ in range(50):
        xs = np.sort(rng.integers(0, 20, 8)).astype(float)  # repeated epochs included
        xs = np.array([x for k, x in enumerate(xs) if k < 2 or not xs[k] == xs[k - 1] == xs[k - 2]])
        ys = rng.random(len(xs))
        queries = np.concatenate([rng.uniform(-2, 22, 40), xs, np.nextafter(xs, np.inf)])
        for x in queries:
            at = np.flatnonzero(xs == x)
            if len(at) == 2:  # a jump: the first point's value, which the line reaches from the left
                jumps_seen += 1
                expected = ys[at[0]]
                assert expected == pytest.approx(np.interp(np.nextafter(x, -np.inf), xs, ys))
            else:
                expected = np.interp(x, xs, ys)
            assert piecewise_linear(float(x), list(xs), list(ys)) == expected, (x, xs, ys)
    assert jumps_seen > 20


def test_a_jump_at_the_end_of_an_epoch_is_taken_after_it():
    """One phase (or none) with a jump at epoch 1: the last step of epoch 0 still uses 0.125."""
    recipe = Recipe.from_config(None, [[0, 0.5], [1, 0.125], [1, 0.2], [2, 0.02]], epochs=2)
    assert [recipe.step_lr(0, i, 4) for i in range(4)] == [0.5 - 0.375 * k / 4 for k in (1, 2, 3, 4)]
    assert recipe.step_lr(0, 3, 4) == 0.125
    assert recipe.step_lr(1, 0, 4) == pytest.approx(0.2 - 0.18 / 4)
    assert recipe.step_lr(1, 3, 4) == recipe.lr_at(2.0) == recipe.lr_at(3.0) == 0.02
    # a jump at the very first point: its first value holds up to it, the second one right after
    assert piecewise_linear(1.0, [1.0, 1.0, 2.0], [0.3, 0.1, 0.0]) == 0.3
    assert piecewise_linear(0.5, [1.0, 1.0, 2.0], [0.3, 0.1, 0.0]) == 0.3
    assert piecewise_linear(1.5, [1.0, 1.0, 2.0], [0.3, 0.1, 0.0]) == pytest.approx(0.05)


def test_phase_at_and_membership(published):
    assert [published.phase_index(e) for e in (0, 14, 15, 39, 40, 99)] == [0, 0, 1, 1, 2, 2]
    assert published.phase_at(14).crop == 128 and published.phase_at(15).crop == 224
    assert 15 not in published.phases[0] and 15 in published.phases[1]
    with pytest.raises(ValueError, match="epoch 100 lies in no phase"):
        published.phase_at(100)


def test_absolute_phase_folders_and_no_data_dir_stay_as_given():
    recipe = Recipe.from_config([_phase(0, 2, data_dir="/abs/160"), _phase(2, 4, data_dir="rel")], None, 4,
                                data_dir="/root")
    assert [p.data_dir for p in recipe.phases] == ["/abs/160", "/root/rel"]
    assert Recipe.from_config([_phase(0, 4)], None, 4).phases[0].data_dir == "160"
    assert Recipe.from_config(None, [[0, 1.0]], 4).phases == ()


@pytest.mark.parametrize("phases, lr_points, epochs, messages", [
    ([_phase(0, 10), _phase(12, 20)], None, 20, ["phases[1]: epochs [12, 20] must start at epoch 10"]),
    ([_phase(0, 10), _phase(8, 20)], None, 20, ["phases[1]: epochs [8, 20] must start at epoch 10"]),
    ([_phase(1, 20)], None, 20, ["phases[0]: epochs [1, 20] must start at epoch 0 (the first epoch)"]),
    ([_phase(0, 10)], None, 20, ["the last phase must end at --epochs 20, got 10"]),
    ([_phase(0, 10, crop=0, batch_size=2.5, min_scale=0)], None, 10,
     ["crop must be a positive", "batch_size (global) must be a positive whole number",
      "min_scale must lie in (0, 1]"]),
    ([_phase(0, 10, min_scale=1.5)], None, 10, ["min_scale must lie in (0, 1], got 1.5"]),
    ([{"epochs": [0, 10], "crop": 128}], None, 10, ["unknown or missing: batch_size, data_dir, min_scale"]),
    ([_phase(0, 10, bs=3)], None, 10, ["unknown or missing: bs"]),
    ([_phase(10, 10)], None, 10, ["epochs must be [start, end], whole numbers with start < end"]),
    ([], None, 10, ["phases must be a non-empty list"]),
    (None, [[0, 1.0], [5, 0.5], [3, 0.1]], 10, ["lr_points[2] at epoch 3 comes after epoch 5"]),
    (None, [[0, 1.0], [5, 0.5], [5, 0.4], [5, 0.3]], 10, ["at most two lr_points may share an epoch"]),
    (None, [[0, 1.0], [5, -0.5]], 10, ["lr_points[1] must be [epoch, learning rate]"]),
    (None, [[0, 1.0], [5]], 10, ["lr_points[1] must be [epoch, learning rate]"]),
    # several problems: one line holding all of them
    ([_phase(0, 10, crop=-1), _phase(11, 20)], [[3, 1], [1, 2]], 30,
     ["crop must be", "must start at epoch 10", "must end at --epochs 30", "lr_points must be in epoch order"]),
])
def test_invalid_recipes_are_refused_in_one_line(phases, lr_points, epochs, messages):
    with pytest.raises(RecipeError) as err:
        Recipe.from_config(phases, lr_points, epochs)
    text = str(err.value)
    assert "\n" not in text
    for message in messages:
        assert message in text, text


def test_global_batch_split_over_processes(published):
    assert per_process_batch(1024, 8) == 128 and per_process_batch(448, 8) == 56
    assert [p.per_process_batch(8) for p in published.phases] == [128, 56, 56]
    with pytest.raises(ValueError, match="448 images cannot be split evenly over 3 processes"):
        per_process_batch(448, 3)
    published.check_world_size(16)
    with pytest.raises(RecipeError, match="phases\\[1\\]: batch_size 448 is not divisible by the 6 processes"):
        published.check_world_size(6)
    assert Phase(0, 1, "d", 32, 6, 0.5) == Phase(0, 1, "d", 32, 6, 0.5)  # frozen, comparable


def test_partition_sizes_and_the_warning_when_m_part_does_not_divide_the_batch():
    assert partition_sizes(56, 16) == [16, 16, 16, 8] and partition_sizes(112, 16) == [16] * 7
    assert partition_sizes(16, 5) == [5, 5, 5, 1] and partition_sizes(12, 20) == [12]
    assert partition_warning(112, 16) is None and partition_warning(16, 4) is None and partition_warning(3, 1) is None
    line = partition_warning(56, 16, " in phase 2/3 (448 over 8 processes)")
    assert line.startswith("warning: --m_part 16 does not divide the 56 images per process and step in phase 2/3 "
                           "(448 over 8 processes), so Co-Mixup mixes partitions of 16, 16, 16 and 8;")
    assert "\n" not in line
    assert "one partition of 12;" in partition_warning(12, 20)
    assert "25 partitions of 5 and one of 3;" in partition_warning(128, 5)


def test_the_shipped_process_count_keeps_whole_partitions(published):
    raw = yaml.safe_load(SHIPPED.read_text())
    processes = int(re.search(r"--nproc_per_node (\d+)", SHIPPED.read_text()).group(1))
    assert processes == 4
    for world_size in (1, 2, 4):  # the counts the file recommends: whole partitions of 16 in every phase
        assert all(partition_warning(p.per_process_batch(world_size), raw["m_part"]) is None for p in published.phases)
    # 8 processes: 56 images per process in phases 2 and 3, partitions of 16, 16, 16 and 8
    eight = [partition_sizes(p.per_process_batch(8), raw["m_part"]) for p in published.phases]
    assert eight == [[16] * 8, [16, 16, 16, 8], [16, 16, 16, 8]]


def test_batchnorm_parameters_get_no_weight_decay():
    torch.manual_seed(0)
    model = models.build_model("resnet18", 10)
    groups = param_groups(model, weight_decay=1e-4, bn_weight_decay=0.0)
    by_name = {id(p): name for name, p in model.named_parameters()}
    decayed = {by_name[id(p)] for p in groups[0]["params"]}
    free = {by_name[id(p)] for p in groups[1]["params"]}
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    assert decayed | free == set(by_name.values()) and not decayed & free
    bn_names = {f"{m}.{kind}" for m, mod in model.named_modules() if isinstance(mod, torch.nn.BatchNorm2d)
                for kind in ("weight", "bias")}
    assert free == bn_names and len(free) == 2 * 20  # resnet18: 20 BatchNorm layers
    assert {"fc.weight", "fc.bias", "conv1.weight", "layer4.1.conv2.weight"} <= decayed
    # the effect: a step with zero gradients shrinks only the non-BatchNorm parameters
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    torch.optim.SGD(groups, lr=0.5, momentum=0.9).step()
    for name, p in model.named_parameters():
        factor = 1.0 if name in bn_names else 1 - 0.5 * 1e-4
        torch.testing.assert_close(p.detach(), before[name] * factor, rtol=0, atol=1e-7)


def test_equal_decays_give_one_group_in_parameter_order():
    model = models.build_model("resnet18", 10)
    groups = param_groups(model, weight_decay=1e-4, bn_weight_decay=1e-4)
    assert len(groups) == 1 and [id(p) for p in groups[0]["params"]] == [id(p) for p in model.parameters()]
