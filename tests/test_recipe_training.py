"""main.py driven by a --config recipe on a small generated ImageFolder: phases rebuild the training
loader (crop, batch, folder), lr_points set every step's rate, the optimiser and init knobs, resume
inside a phase across the boundary, evaluation at 224 pixels, and two gloo processes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from torchvision.models.resnet import BasicBlock

from comixup import models
from comixup.core.logs import LogPrinter
from comixup.data.synthetic import write_image_folder
from comixup.train import distributed, engine, options
from comixup.train.experiment import RunProgress

import main
from tests.support.processes import torchrun
from tests.support.runs import HEADER_RE, TEST_RE, assert_one_error_line, only_experiment, read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
LR_EPOCHS = [0, 1, 2, 2, 3]
LR_VALUES = [0.05, 0.1, 0.02, 0.04, 0.004]
# the published script runs each phase with its own points: phase 1 ends at 2 with 0.02, phase 2 starts from 0.04
PHASE_LR_POINTS = {0: ([0, 1, 2], [0.05, 0.1, 0.02]), 1: ([0, 1, 2], [0.05, 0.1, 0.02]), 2: ([2, 3], [0.04, 0.004])}
# 12 training images (3 classes x 4): phase 1, 2 epochs of 2 steps of 6 images at 32 pixels;
# phase 2, 1 epoch of 3 steps of 4 images at 64 pixels.
PHASES = [{"epochs": [0, 2], "data_dir": "small", "crop": 32, "batch_size": 6, "min_scale": 0.35},
          {"epochs": [2, 3], "data_dir": "large", "crop": 64, "batch_size": 4, "min_scale": 0.35}]
STEPS = {0: 2, 1: 2, 2: 3}
CROPS = {0: 32, 1: 32, 2: 64}
BATCHES = {0: 6, 1: 6, 2: 4}


def _config_text(phases: list[dict], method: str = "vanilla") -> str:
    lines = ["dataset: imagenet", "arch: resnet18", "labels_per_class: 0", f"epochs: {phases[-1]['epochs'][1]}",
             f"method: {method}", "m_part: 3", "m_block_num: 4", "m_niter: 1", "m_peak_stride: 8",
             "nesterov: false", "bn_weight_decay: 0.0", "init: published_imagenet", "phases:"]
    lines += [f"  - {phase}" for phase in phases]
    lines.append(f"lr_points: {[list(p) for p in zip(LR_EPOCHS, LR_VALUES, strict=True)]}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory) -> Path:
    """small/ (40-pixel squares) and large/ (72x72 and 90x72 images), each with train/ (4 images
    per class) and val/ (large: 2 per class),
    and run.yml (vanilla) and comix.yml (Co-Mixup) describing the two phases."""
    base = tmp_path_factory.mktemp("recipe")
    write_image_folder(base / "data" / "small", num_classes=3, per_class=4, size=40, seed=0)
    write_image_folder(base / "data" / "large", num_classes=3, per_class=4, size=72, seed=1)
    for path in sorted((base / "data" / "large").rglob("*.png"))[::2]:
        with Image.open(path) as image:
            image.convert("RGB").resize((90, 72), Image.BICUBIC).save(path)
    for path in (base / "data" / "large" / "val").rglob("[23].png"):  # 2 per class: evaluation at 224 is slow
        path.unlink()
    (base / "run.yml").write_text(_config_text(PHASES))
    (base / "comix.yml").write_text(_config_text(PHASES, method="comix"))
    return base


def recipe_args(base: Path, root: Path, *extra: str, config: str | Path = "run.yml") -> list[str]:
    return ["--config", str(base / config), "--data_dir", str(base / "data"), "--root_dir", str(root),
            "--ngpu", "0", "--workers", "0", *extra]


@pytest.fixture
def recorder(monkeypatch):
    """Records the input shape of every forward of the built models (with their mode) and the
    learning rate of every parameter group at every optimiser step."""
    seen = {"forwards": [], "lrs": []}
    build = models.build_model

    def recording_build(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_pre_hook(lambda m, inputs: seen["forwards"].append((m.training,
                                                                                    tuple(inputs[0].shape))))
        return model

    step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        seen["lrs"].append([group["lr"] for group in self.param_groups])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(models, "build_model", recording_build)
    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    return seen


def train_shapes(seen: dict) -> list[tuple]:
    return [shape for training, shape in seen["forwards"] if training]


def eval_shapes(seen: dict) -> list[tuple]:
    return [shape for training, shape in seen["forwards"] if not training]


def expected_step_lrs(epochs) -> list[float]:
    """The published loop's np.interp(epoch + (i + 1) / len(loader), points, values) per step, over
    the running phase's own points."""
    return [float(np.interp(e + (i + 1) / STEPS[e], *PHASE_LR_POINTS[e])) for e in epochs for i in range(STEPS[e])]


# --------------------------------------------------------------------------- one process

@pytest.mark.slow  # a long run (four phases)
def test_phases_change_crop_and_batch_and_the_lr_follows_the_points(recipe_dir, tmp_path, recorder, capsys):
    root = tmp_path / "exp"
    assert main.main(recipe_args(recipe_dir, root)) == 0
    out = capsys.readouterr().out.splitlines()

    # every training step, in order: the phase's per-process batch and crop
    assert train_shapes(recorder) == [(BATCHES[e], 3, CROPS[e], CROPS[e]) for e in range(3) for _ in range(STEPS[e])]
    # evaluation after every epoch reads the last phase's val/ (6 images) at Resize 256 / CenterCrop 224,
    # in the last phase's batches
    assert eval_shapes(recorder) == [(4, 3, 224, 224), (2, 3, 224, 224)] * 3
    # the rate of every step, in both parameter groups, is np.interp's value at epoch + (i + 1) / steps
    # over the phase's own points
    expected = expected_step_lrs(range(3))
    assert [lrs[0] for lrs in recorder["lrs"]] == expected
    assert all(len(lrs) == 2 and lrs[0] == lrs[1] for lrs in recorder["lrs"])
    # the last step of phase 1 (x = 2) before the jump at 2, the first of phase 2 after it, then the decay
    assert expected[3] == 0.02 and expected[4] == pytest.approx(0.028)
    headers = [HEADER_RE.match(line) for line in out if HEADER_RE.match(line)]
    assert [float(m.group(3)) for m in headers] == [round(expected[0], 4), round(expected[2], 4),
                                                    round(expected[4], 4)]
    phase_lines = [line for line in out if line.startswith("=> phase ")]
    assert len(phase_lines) == 2
    assert "32-pixel crops" in phase_lines[0] and "(6 per process x 1)" in phase_lines[0]
    assert "64-pixel crops" in phase_lines[1] and "(4 per process x 1)" in phase_lines[1]
    assert phase_lines[1].endswith(str(recipe_dir / "data" / "large"))

    exp = only_experiment(root)
    assert exp.name.endswith("_cfg_run_seed_0")
    ckpt = read_checkpoint(exp / "checkpoint.pth.tar")
    assert ckpt["epoch"] == 3
    assert ckpt["args"]["phases"] == PHASES
    assert ckpt["args"]["lr_points"] == [list(p) for p in zip(LR_EPOCHS, LR_VALUES, strict=True)]
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == expected[-1]


def _built_run(base: Path, *extra: str, config: str | Path = "run.yml") -> engine.TrainingRun:
    args = options.parse_command_line(recipe_args(base, base / "unused", "--log_off", *extra, config=config))
    options.resolve_method(args)
    options.validate_args(args)
    progress = RunProgress(exp_dir=None)
    return engine.TrainingRun.build(args, distributed.DistInfo(device=torch.device("cpu")),
                                    LogPrinter(None, echo=False), progress, None)


def test_built_optimiser_init_and_loaders(recipe_dir):
    torch.manual_seed(0)
    with _built_run(recipe_dir, "--workers", "1") as run:
        model, groups = run.model, run.optimizer.param_groups
        batch_norm = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
        assert len(groups) == 2 and len(batch_norm) == 2 * sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        by_decay = {group["weight_decay"]: {id(p) for p in group["params"]} for group in groups}
        assert by_decay[0.0] == batch_norm
        assert by_decay[1e-4] == {id(p) for p in model.parameters()} - batch_norm
        assert all(g["nesterov"] is False and g["momentum"] == 0.9 for g in groups)

        # the published init: the last BN gamma of every residual block 0, fc N(0, 0.01), He-normal convs
        blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
        assert len(blocks) == 8 and all(torch.all(b.bn2.weight == 0) for b in blocks)
        assert all(torch.all(b.bn1.weight == 1) and torch.all(b.bn1.bias == 0) for b in blocks)
        assert model.fc.weight.std().item() == pytest.approx(0.01, abs=1e-3)
        assert model.fc.weight.mean().abs().item() < 1e-3
        assert model.conv1.weight.std().item() == pytest.approx((2 / (7 * 7 * 64)) ** 0.5, rel=0.05)

        # the loaders: built for the phase of the epoch, the previous one's workers ended
        assert run.train_loader is None and run.test_loader.dataset.transform.transforms[1].size == (224, 224)
        run.begin_epoch(0)
        first = run.train_loader
        images, _ = next(iter(first))
        assert images.shape == (6, 3, 32, 32)
        workers = list(first._iterator._workers)
        assert workers and all(w.is_alive() for w in workers)
        run.begin_epoch(1)
        assert run.train_loader is first  # same phase: the same loader and workers
        run.begin_epoch(2)
        assert run.train_loader is not first and run.train_loader.batch_size == 4
        assert first._iterator is None and not any(w.is_alive() for w in workers)
        assert next(iter(run.train_loader))[0].shape == (4, 3, 64, 64)

    # without those flags: one group with --decay, Nesterov, the model's own init (as before)
    with _built_run(recipe_dir, "--nesterov", "true", "--bn_weight_decay", "0.0001", "--init", "default") as run:
        assert [(g["weight_decay"], g["nesterov"]) for g in run.optimizer.param_groups] == [(1e-4, True)]
        assert len(run.optimizer.param_groups[0]["params"]) == len(list(run.model.parameters()))
        assert all(torch.all(b.bn2.weight == 1) for b in run.model.modules() if isinstance(b, BasicBlock))


@pytest.mark.slow  # three long runs
def test_resume_inside_a_phase_across_its_boundary_is_bit_identical(recipe_dir, tmp_path, monkeypatch, recorder,
                                                                    capsys):
    """Co-Mixup (numpy's and torch's streams both matter): 3 epochs in one go == stopped after
    epoch 0 (inside phase 1), then resumed: epoch 1 at 32 pixels, the boundary, epoch 2 at 64."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main.main(recipe_args(recipe_dir, straight, config="comix.yml")) == 0
    # --m_part 3 divides phase 1's 6 images per process but not phase 2's 4: one warning, when phase 2 starts
    out = capsys.readouterr().out.splitlines()
    warnings = [line for line in out if line.startswith("warning:")]
    assert len(warnings) == 1 and "--m_part 3" in warnings[0] and "in phase 2/2" in warnings[0]
    assert "partitions of 3 and 1" in warnings[0]
    assert out.index(warnings[0]) == out.index(next(line for line in out if line.startswith("=> phase 2/2"))) + 1

    save = engine.TrainingRun.save

    def save_then_stop(self, epoch, is_best):
        save(self, epoch, is_best)
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine.TrainingRun, "save", save_then_stop)
    assert main.main(recipe_args(recipe_dir, stopped, config="comix.yml")) == 130
    monkeypatch.setattr(engine.TrainingRun, "save", save)
    first_ckpt = only_experiment(stopped) / "checkpoint.pth.tar"
    assert read_checkpoint(first_ckpt)["epoch"] == 1
    capsys.readouterr()
    recorder["forwards"].clear()
    recorder["lrs"].clear()

    assert main.main(recipe_args(recipe_dir, tmp_path / "resumed", "--resume", str(first_ckpt),
                                 config="comix.yml")) == 0
    out = capsys.readouterr().out
    shapes = train_shapes(recorder)  # Co-Mixup: the clean and the mixed forward of each step
    assert shapes == [(6, 3, 32, 32)] * 4 + [(4, 3, 64, 64)] * 6
    assert [lrs[0] for lrs in recorder["lrs"]] == expected_step_lrs([1, 2])
    assert "[Epoch=001/003]" in out and "[Epoch=000/003]" not in out

    a = read_checkpoint(only_experiment(straight) / "checkpoint.pth.tar")
    b = read_checkpoint(only_experiment(tmp_path / "resumed") / "checkpoint.pth.tar")
    assert a["epoch"] == b["epoch"] == 3
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][index]["momentum_buffer"])
    assert a["history"] == b["history"]
    assert not torch.equal(read_checkpoint(first_ckpt)["state_dict"]["fc.weight"], b["state_dict"]["fc.weight"])

    # the checkpoint of phase 1 evaluates on the last phase's data at 224 pixels
    recorder["forwards"].clear()
    assert main.main(recipe_args(recipe_dir, tmp_path / "eval", "--evaluate", "--log_off", "--resume",
                                 str(first_ckpt), config="comix.yml")) == 0
    assert eval_shapes(recorder) == [(4, 3, 224, 224), (2, 3, 224, 224)] and not train_shapes(recorder)
    assert sum(bool(TEST_RE.match(line)) for line in capsys.readouterr().out.splitlines()) == 1


def test_a_phase_that_continues_the_previous_ones_settings_keeps_its_loader(recipe_dir, tmp_path):
    """The published phases 2 and 3 differ only in their epochs (and learning rate)."""
    phases = [dict(PHASES[0], epochs=[0, 1]), dict(PHASES[1], epochs=[1, 2]), dict(PHASES[1], epochs=[2, 3])]
    config = tmp_path / "three.yml"
    config.write_text(_config_text(phases))
    with _built_run(recipe_dir, config=config) as run:
        run.begin_epoch(0)
        first = run.train_loader
        run.begin_epoch(1)
        second = run.train_loader
        run.begin_epoch(2)
        assert second is not first and run.train_loader is second and second.batch_size == 4


# --------------------------------------------------------------------------- batches of 16, partitions, drop_last

ONE_PHASE_LR_POINTS = [[0, 0.5], [1, 0.125], [1, 0.2], [2, 0.02]]


@pytest.fixture(scope="module")
def sixteen_dir(tmp_path_factory) -> Path:
    """data/ with train/ of 18 images (3 classes x 6) and val/ of 3, and one.yml: one phase of one
    epoch, 32-pixel crops, 16 images per step, Co-Mixup with --m_part 5, a jump at the end of the epoch."""
    base = tmp_path_factory.mktemp("sixteen")
    write_image_folder(base / "data", num_classes=3, per_class=6, size=40, seed=2)
    for path in (base / "data" / "val").rglob("[1-5].png"):
        path.unlink()
    phase = {"epochs": [0, 1], "data_dir": ".", "crop": 32, "batch_size": 16, "min_scale": 0.35}
    lines = ["dataset: imagenet", "arch: resnet18", "labels_per_class: 0", "epochs: 1", "method: comix",
             "m_part: 5", "m_block_num: 4", "m_niter: 1", "m_peak_stride: 8", "phases:", f"  - {phase}",
             f"lr_points: {ONE_PHASE_LR_POINTS}"]
    (base / "one.yml").write_text("\n".join(lines) + "\n")
    return base


@pytest.mark.slow  # a multi-phase recipe run: a long run
def test_a_jump_at_the_last_step_partition_warnings_and_the_dropped_partial_batch(sixteen_dir, tmp_path, recorder,
                                                                                   capsys):
    """lr_points [[0, 0.5], [1, 0.125], [1, 0.2], [2, 0.02]] and one epoch: the last step runs at
    0.125 (the value before the jump at 1). 16 images per process: a warning with --m_part 5
    (partitions of 5, 5, 5 and 1), none with --m_part 4. 18 images: one step of 16, the last 2 left out."""
    assert main.main(recipe_args(sixteen_dir, tmp_path / "five", config="one.yml")) == 0
    out = capsys.readouterr().out.splitlines()
    warnings = [line for line in out if line.startswith("warning:")]
    assert len(warnings) == 1, warnings
    assert "--m_part 5" in warnings[0] and "16 images per process" in warnings[0]
    assert "partitions of 5, 5, 5 and 1" in warnings[0] and "in phase 1/1 (16 over 1 process)" in warnings[0]
    assert train_shapes(recorder) == [(16, 3, 32, 32)] * 2  # one step (its clean and its mixed forward)
    assert recorder["lrs"] == [[0.125]]
    ckpt = read_checkpoint(only_experiment(tmp_path / "five") / "checkpoint.pth.tar")
    assert ckpt["epoch"] == 1 and [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [0.125]

    assert main.main(recipe_args(sixteen_dir, tmp_path / "four", "--m_part", "4", config="one.yml")) == 0
    out = capsys.readouterr().out
    assert "warning" not in out and "--m_part" not in out
    assert "[learning_rate=0.1250]" in out


def test_imagenet_without_phases_drops_the_last_partial_batch_and_resumes_inside_the_epoch(sixteen_dir):
    argv = ["--dataset", "imagenet", "--data_dir", str(sixteen_dir / "data"), "--arch", "resnet18",
            "--labels_per_class", "0", "--batch_size", "8", "--method", "vanilla", "--epochs", "1",
            "--ngpu", "0", "--workers", "0", "--log_off"]
    args = options.parse_command_line(argv)
    options.resolve_method(args)
    options.validate_args(args)
    with engine.TrainingRun.build(args, distributed.DistInfo(device=torch.device("cpu")),
                                  LogPrinter(None, echo=False), RunProgress(exp_dir=None), None) as run:
        assert run.steps_per_epoch == 2  # 18 images: 8 + 8, the last 2 left out
        run.begin_epoch(0)
        whole = [target.tolist() for _, target in run.train_loader]
        assert [len(t) for t in whole] == [8, 8]
        # a mid-epoch checkpoint after step 1: the rest of the epoch is the uninterrupted epoch's step 2
        engine.set_train_epoch(run.train_loader, args.seed, 0, skip_batches=1)
        assert [target.tolist() for _, target in run.train_loader] == whole[1:]
        # every epoch leaves out other images
        engine.set_train_epoch(run.train_loader, args.seed, 1)
        assert [target.tolist() for _, target in run.train_loader] != whole


def test_a_batch_larger_than_the_imagenet_training_set_is_refused(sixteen_dir, tmp_path, capsys):
    config = tmp_path / "big.yml"
    config.write_text((sixteen_dir / "one.yml").read_text().replace("'batch_size': 16", "'batch_size': 24"))
    assert main.main(recipe_args(sixteen_dir, tmp_path / "exp", "--log_off", config=config)) == 2
    assert_one_error_line(capsys, "the 18 training images fill no batch of 24 images per process")


@pytest.mark.parametrize("extra, env, fragments", [
    (["--epochs", "5"], {}, ["the last phase must end at --epochs 5, got 3"]),
    ([], {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0"},
     ["phases[0]: batch_size 6 is not divisible by the 4 processes"]),
    (["--dataset", "tiny-imagenet-200"], {}, ["use --dataset imagenet, not tiny-imagenet-200"]),
    (["--arch", "preactresnet18"], {}, ["--init published_imagenet is for torchvision's ResNets"]),
    (["--warmup_epochs", "1"], {}, ["--warmup_epochs 1 does not combine with lr_points"]),
    (["--m_block_num", "3"], {}, ["--m_block_num 3 does not divide the 32x32"]),
    (["--data_dir", "/nonexistent/recipe"], {}, ["/nonexistent/recipe/small lacks"]),
])
def test_bad_recipes_exit_2_with_one_line(recipe_dir, tmp_path, monkeypatch, capsys, extra, env, fragments):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "exp"
    assert main.main(recipe_args(recipe_dir, root, *extra, config="comix.yml")) == 2
    assert_one_error_line(capsys, *fragments)
    assert not root.exists()


# --------------------------------------------------------------------------- torchrun, 2 processes

@pytest.mark.slow  # torchrun
def test_two_processes_cross_a_phase_boundary(recipe_dir, tmp_path):
    """Global batches 6 then 4: 3 then 2 images per process and step."""
    phases = [dict(PHASES[0], epochs=[0, 1]), dict(PHASES[1], epochs=[1, 2])]
    config = tmp_path / "two.yml"
    config.write_text(_config_text(phases))
    root = tmp_path / "ddp"
    result = torchrun(recipe_args(recipe_dir, root, config=config), tmp_path, script=ROOT / "main.py")
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout.splitlines()
    phase_lines = [line for line in out if line.startswith("=> phase ")]
    assert len(phase_lines) == 2  # rank 0 only
    assert "32-pixel crops" in phase_lines[0] and "6 images per step (3 per process x 2)" in phase_lines[0]
    assert "64-pixel crops" in phase_lines[1] and "4 images per step (2 per process x 2)" in phase_lines[1]
    assert len([line for line in out if HEADER_RE.match(line)]) == 2
    ckpt = read_checkpoint(only_experiment(root) / "checkpoint.pth.tar")
    assert ckpt["epoch"] == 2 and ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2
    assert ckpt["history"]["test_acc"] and len(ckpt["history"]["test_acc"]) == 2
