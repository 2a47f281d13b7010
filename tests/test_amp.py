"""--amp: autocast around every forward pass, the float16 GradScaler plumbing, and saliency that
stays meaningful in reduced precision, all on the CPU (bfloat16; a CPU GradScaler stands in for
the CUDA one)."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn

from comixup import models
from comixup.data.datasets import get_datasets
from comixup.data.loaders import get_loaders
from comixup.mixing import comix
from comixup.train import methods
from comixup.train.methods import base as methods_base

import main
from tests.support.runs import TEST_RE, TRAIN_PER_CLASS, TRAIN_RE, assert_one_error_line, base_args, only_experiment

pytestmark = pytest.mark.usefixtures("one_thread")

BF16 = methods.Precision(device_type="cpu", dtype=torch.bfloat16)


@pytest.fixture
def real_batch(cifar10_dir):
    train_set, _, _, _ = get_datasets("cifar10", str(cifar10_dir), labels_per_class=TRAIN_PER_CLASS)
    images = torch.stack([train_set[i][0] for i in range(16)])
    labels = torch.tensor([train_set[i][1] for i in range(16)])
    return images, labels


def _correlations(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a, b = a.flatten(1).double().numpy(), b.flatten(1).double().numpy()
    return np.array([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b, strict=True)])


@pytest.mark.parametrize("clean_lam", [1.0, 0.0], ids=["train-mode", "eval-mode"])
def test_bf16_saliency_is_finite_non_zero_and_close_to_fp32(real_batch, clean_lam):
    images, labels = real_batch
    torch.manual_seed(0)
    model = models.build_model("preactresnet18", 10, initial_channels=16)
    reference, _, _ = comix.saliency_and_clean_loss(copy.deepcopy(model), images, labels, clean_lam, 10)
    low, loss, logits = comix.saliency_and_clean_loss(methods_base._AutocastForward(model, BF16), images, labels,
                                                      clean_lam, 10)
    assert logits.dtype == torch.bfloat16  # the forward really ran in bfloat16
    assert low.dtype == torch.float32 and low.shape == reference.shape
    assert torch.isfinite(low).all() and torch.isfinite(loss)
    assert (low.flatten(1).amax(dim=1) > 0).all()  # no map underflowed to zero
    pixels = _correlations(low, reference)
    assert pixels.min() > 0.8 and pixels.mean() > 0.9, pixels
    # what Co-Mixup uses: the per-block costs
    blocks = _correlations(comix.block_cost(low, 4), comix.block_cost(reference, 4))
    assert blocks.min() > 0.9, blocks


class RecordingNet(nn.Module):
    """A small classifier that records, per forward, the input dtype and the autocast state."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
        self.calls: list[tuple[torch.dtype, bool, bool]] = []

    def forward(self, x):
        self.calls.append((x.dtype, torch.is_autocast_enabled("cpu"), self.training))
        return self.body(x)


@pytest.mark.parametrize("clean_lam", [1.0, 0.0])
def test_every_forward_of_a_comix_step_runs_under_autocast(real_batch, clean_lam):
    images, labels = real_batch
    torch.manual_seed(0)
    net = RecordingNet()
    method = methods.CoMixupMethod(10, comix.CoMixup(num_classes=10, m_part=8), clean_lam=clean_lam)
    method.precision = BF16
    np.random.seed(3)
    step = method(net, images, labels)
    # clean pass (eval mode when clean_lam = 0), then the mixed pass: both autocast, inputs kept float32
    assert net.calls == [(torch.float32, True, clean_lam > 0), (torch.float32, True, True)]
    assert step.loss.dtype == torch.float32 and torch.isfinite(step.loss)
    assert step.logits.dtype == torch.bfloat16
    torch.testing.assert_close(step.targets.sum(1), torch.ones(16))
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the step


@pytest.mark.parametrize("name", ["vanilla", "mixup", "cutmix", "manifold", "puzzle"])
def test_other_methods_forward_under_autocast(real_batch, name):
    images, labels = real_batch
    torch.manual_seed(0)
    net = models.build_model("preactresnet18", 10, initial_channels=16)
    args = main.get_args_parser().parse_args(["--method", name])
    main.resolve_method(args)
    from comixup.data.datasets import dataset_info

    np.random.seed(0)
    method = methods.build_method(args, 10, dataset_info("cifar10"), precision=BF16)
    assert method.precision is BF16
    step = method(net, images[:8], labels[:8])
    assert step.logits.dtype == torch.bfloat16 and step.loss.dtype == torch.float32
    assert torch.isfinite(step.loss)


def test_grad_scaler_scales_the_clean_pass_and_unscales_the_saliency(real_batch):
    """With a GradScaler, the step sees the same saliency (hence the same masks and targets) as
    without, and the accumulated parameter gradients are the unscaled ones times the scale."""
    images, labels = real_batch
    images, labels = images[:8], labels[:8]  # one partition: bf16 convolutions are slow on most CPUs
    torch.manual_seed(0)
    model = models.build_model("preactresnet18", 10, initial_channels=16)
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)):
        net = copy.deepcopy(model)
        method = methods.CoMixupMethod(10, comix.CoMixup(num_classes=10, m_part=8), clean_lam=1.0)
        method.precision = methods.Precision(device_type="cpu", dtype=torch.bfloat16, scaler=scaler)
        np.random.seed(5)
        step = method(net, images, labels)
        (scaler.scale(step.loss) if scaler is not None else step.loss).backward()
        if scaler is not None:
            optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
            scaler.unscale_(optimizer)
        results.append((step, [p.grad.clone() for p in net.parameters()]))
    (plain, plain_grads), (scaled, scaled_grads) = results
    assert torch.equal(plain.targets, scaled.targets)  # a power-of-2 scale is exact: same saliency, same masks
    for a, b in zip(plain_grads, scaled_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_non_finite_saliency_maps_become_uniform():
    saliency = torch.rand(3, 4, 4) + 0.1
    saliency[1, 2, 3] = float("inf")
    saliency[2, 0, 0] = float("nan")
    cleaned = methods_base._zero_non_finite(saliency)
    assert torch.equal(cleaned[0], saliency[0])
    assert cleaned[1].eq(0).all() and cleaned[2].eq(0).all()
    # the mixer then sees uniform block costs for those images
    costs = comix.block_cost(cleaned, 2)
    assert torch.allclose(costs[1], torch.full((2, 2), -0.25))


def test_precision_from_the_flag():
    cpu = torch.device("cpu")
    off = methods.Precision.from_flag("off", cpu)
    assert not off.enabled and off.scaler is None
    with off.autocast():
        assert not torch.is_autocast_enabled("cpu")
    bf16 = methods.Precision.from_flag("bf16", cpu)
    assert bf16.dtype == torch.bfloat16 and bf16.scaler is None
    with bf16.autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="--amp fp16 needs a CUDA device"):
        methods.Precision.from_flag("fp16", cpu)
    with pytest.raises(ValueError, match="amp must be one of off, bf16, fp16"):
        methods.Precision.from_flag("fp8", cpu)


def test_train_one_epoch_steps_through_the_grad_scaler(cifar10_dir):
    # 10 images in batches of 4: bf16 convolutions are slow on most CPUs
    train_set, _, test_set, num_classes = get_datasets("cifar10", str(cifar10_dir), labels_per_class=1)
    loader, _, _ = get_loaders(train_set, None, test_set, batch_size=4, workers=0, seed=0)
    torch.manual_seed(0)
    np.random.seed(0)
    model = models.build_model("preactresnet18", num_classes, initial_channels=16)
    before = model.linear.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    args = main.get_args_parser().parse_args(["--epochs", "1", "--comix", "False"])
    main.resolve_method(args)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    method = methods.build_method(args, num_classes, None,
                                  precision=methods.Precision("cpu", torch.bfloat16, scaler))
    stats = main.train_one_epoch(model, loader, optimizer, method, 0)
    assert stats["steps"] == 3 and stats["images"] == 10 and np.isfinite(stats["loss"])
    assert not torch.equal(before, model.linear.weight)
    # three scaled steps without overflow went through scaler.step / scaler.update
    assert scaler.state_dict()["_growth_tracker"] == 3 and scaler.get_scale() == 2.0 ** 10


@pytest.mark.slow  # a run in bf16, which CPUs without bf16 instructions run slowly
def test_bf16_training_runs_end_to_end(cifar10_dir, tmp_path, capsys):
    root = tmp_path / "exp"
    # 20 training images, one step: bf16 convolutions are slow on most CPUs
    assert main.main(base_args(cifar10_dir, root, "--amp", "bf16", "--labels_per_class", "2")) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(bool(TRAIN_RE.match(line)) for line in out) == 1
    assert sum(bool(TEST_RE.match(line)) for line in out) == 1
    exp = only_experiment(root)
    assert exp.name.endswith("_clean_1.0_amp_bf16_seed_0")
    with open(exp / "log.pkl", "rb") as f:
        log = pickle.load(f)
    assert all(np.isfinite(v) and v > 0 for v in log["train_loss"] + log["test_loss"])
    # the checkpoint is a plain float32 one
    state = torch.load(exp / "checkpoint.pth.tar", weights_only=True)["state_dict"]
    assert state["linear.weight"].dtype == torch.float32


def test_fp16_on_the_cpu_exits_2_with_one_line(cifar10_dir, tmp_path, capsys):
    assert main.main(base_args(cifar10_dir, tmp_path / "exp", "--amp", "fp16")) == 2
    assert_one_error_line(capsys, "--amp fp16 needs CUDA", "--amp bf16")
    assert not (tmp_path / "exp").exists()
