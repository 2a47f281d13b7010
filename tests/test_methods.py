"""methods.py and main.py's --method: each method's step (loss, targets, logits), the flags and
their precedence, one epoch of every method through main.main, and bit-identical resumes."""
from __future__ import annotations

import argparse
import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from comixup.data.datasets import dataset_info
from comixup.mixing import baselines, comix, puzzlemix
from comixup.train import methods

import main
from tests.support.models import TinyNet
from tests.support.runs import (
    TEST_RE,
    TRAIN_PER_CLASS,
    TRAIN_RE,
    assert_one_error_line,
    base_args,
    only_experiment,
    read_checkpoint,
)

NUM_CLASSES = 5
BATCH = 8

pytestmark = pytest.mark.usefixtures("one_thread")



# --------------------------------------------------------------------------- a tiny model and batch



@pytest.fixture
def model():
    torch.manual_seed(0)
    net = TinyNet()
    net.train()
    return net


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, 32, 32, generator=generator)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    return images, labels


def one_hot(labels):
    return F.one_hot(labels, NUM_CLASSES).float()


def bce(logits, targets):
    return F.binary_cross_entropy(F.softmax(logits, dim=1), targets)


def assert_rows_sum_to_one(targets):
    assert targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(1), torch.ones(targets.shape[0]))
    assert (targets >= 0).all()


# --------------------------------------------------------------------------- each method's step

def test_vanilla_is_the_published_bce_on_clean_images(model, batch):
    images, labels = batch
    step = methods.VanillaMethod(NUM_CLASSES)(copy.deepcopy(model), images, labels)
    logits = model(images)
    torch.testing.assert_close(step.logits, logits.detach())
    torch.testing.assert_close(step.targets, one_hot(labels))
    torch.testing.assert_close(step.loss, bce(logits, one_hot(labels)))
    assert step.mix_time == 0.0 and methods.VanillaMethod.clean_logits
    assert step.loss.requires_grad and not step.logits.requires_grad


def test_input_mixup_mixes_inputs_and_targets_by_lambda(model, batch):
    images, labels = batch
    np.random.seed(3)
    lam, perm = baselines.draw_pairing(BATCH, 1.0)
    np.random.seed(3)
    step = methods.InputMixupMethod(NUM_CLASSES, alpha=1.0)(copy.deepcopy(model), images, labels)
    assert 0 < lam < 1 and not np.array_equal(perm, np.arange(BATCH))
    expected_targets = lam * one_hot(labels) + (1 - lam) * one_hot(labels)[perm]
    torch.testing.assert_close(step.targets, expected_targets)
    assert_rows_sum_to_one(step.targets)
    logits = model(lam * images + (1 - lam) * images[perm])
    torch.testing.assert_close(step.logits, logits.detach())
    torch.testing.assert_close(step.loss, bce(logits, expected_targets))
    assert step.mix_time > 0 and not methods.InputMixupMethod.clean_logits


def test_cutmix_targets_are_the_box_areas(model, batch):
    images, labels = batch
    seed = 5
    np.random.seed(seed)
    lam, perm = baselines.draw_pairing(BATCH, 1.0)
    top, bottom, left, right = baselines.cutmix_box(32, 32, lam)
    area = (bottom - top) * (right - left) / (32 * 32)
    assert 0 < area < 1
    np.random.seed(seed)
    step = methods.CutMixMethod(NUM_CLASSES, alpha=1.0)(copy.deepcopy(model), images, labels)
    torch.testing.assert_close(step.targets, (1 - area) * one_hot(labels) + area * one_hot(labels)[perm])
    assert_rows_sum_to_one(step.targets)
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images[perm][:, :, top:bottom, left:right]
    torch.testing.assert_close(step.loss, bce(model(mixed), step.targets))


@pytest.mark.parametrize("seed", range(6))
def test_manifold_mixes_at_the_drawn_layer(model, batch, seed):
    images, labels = batch
    np.random.seed(seed)
    layer = (0, 1, 2)[np.random.randint(3)]
    lam, perm = baselines.draw_pairing(BATCH, 2.0)
    np.random.seed(seed)
    stepped = copy.deepcopy(model)
    step = methods.ManifoldMixMethod(NUM_CLASSES, alpha=2.0)(stepped, images, labels)
    assert stepped.mix_layers == [layer]
    expected_targets = lam * one_hot(labels) + (1 - lam) * one_hot(labels)[perm]
    torch.testing.assert_close(step.targets, expected_targets)
    logits = model(images, mix_layer=layer, mix_fn=baselines.PairMix(lam, perm))
    torch.testing.assert_close(step.loss, bce(logits, expected_targets))
    if layer > 0:  # mixing elsewhere gives another loss: the layer really is the drawn one
        other = model(images, mix_layer=0, mix_fn=baselines.PairMix(lam, perm))
        assert not torch.allclose(bce(other, expected_targets), step.loss)
    assert step.mix_time > 0


def test_manifold_draws_every_layer():
    np.random.seed(0)
    method = methods.ManifoldMixMethod(NUM_CLASSES, alpha=2.0)
    net = TinyNet()
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    for _ in range(20):
        method(net, images, labels)
    assert set(net.mix_layers) == {0, 1, 2}


@pytest.mark.parametrize("clean_lam", [0.0, 1.0])
def test_puzzle_step_matches_an_independent_puzzle_mix(model, batch, clean_lam):
    images, labels = batch
    info = dataset_info("cifar10")
    mixer = puzzlemix.PuzzleMix(mean=info.mean, std=info.std)
    reference = copy.deepcopy(model)
    np.random.seed(7)
    stepped = copy.deepcopy(model)
    step = methods.PuzzleMixMethod(NUM_CLASSES, mixer, clean_lam=clean_lam)(stepped, images, labels)
    grads = [p.grad for p in stepped.parameters()]
    if clean_lam == 0:  # the Puzzle Mix repository's default: the saliency pass's loss is discarded
        assert all(g is None for g in grads)
    else:  # kept as a regulariser, applied by the coming optimiser step
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert stepped.training

    saliency, _, clean_logits = comix.saliency_and_clean_loss(reference, images, labels, clean_lam, NUM_CLASSES)
    np.random.seed(7)
    plan = mixer.plan(images, saliency)
    mixed, targets = mixer.apply(plan, images, one_hot(labels))
    shares = torch.as_tensor(plan.shares(), dtype=torch.float32).view(-1, 1)
    torch.testing.assert_close(step.targets, shares * one_hot(labels) + (1 - shares) * one_hot(labels)[plan.perm])
    assert_rows_sum_to_one(step.targets)
    torch.testing.assert_close(step.logits, clean_logits)
    torch.testing.assert_close(step.loss, bce(reference(mixed), targets))
    assert step.mix_time > 0 and methods.PuzzleMixMethod.clean_logits


def test_comix_step_is_the_published_path(model, batch):
    images, labels = batch
    mixer = comix.CoMixup(num_classes=NUM_CLASSES, m_part=4)
    reference = copy.deepcopy(model)
    np.random.seed(11)
    stepped = copy.deepcopy(model)
    step = methods.CoMixupMethod(NUM_CLASSES, mixer, clean_lam=1.0)(stepped, images, labels)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stepped.parameters())

    saliency, _, clean_logits = comix.saliency_and_clean_loss(reference, images, labels, 1.0, NUM_CLASSES)
    np.random.seed(11)
    masks = mixer.masks(saliency)
    np.random.seed(11)
    mixed, targets = mixer(images, labels, saliency)
    # the targets are the inputs' area shares in each output
    areas = torch.cat([mask.flatten(1, 2).sum(1) / (mask.shape[1] * mask.shape[2]) for mask in masks])
    parts = torch.cat([one_hot(labels[i:i + 4]).unsqueeze(0).expand(4, -1, -1) for i in range(0, BATCH, 4)])
    torch.testing.assert_close(step.targets, torch.einsum("oi,oik->ok", areas, parts))
    torch.testing.assert_close(step.targets, targets)
    assert_rows_sum_to_one(step.targets)
    torch.testing.assert_close(step.logits, clean_logits)
    torch.testing.assert_close(step.loss, bce(reference(mixed), targets))


@pytest.mark.parametrize("name", ["vanilla", "mixup", "cutmix", "manifold", "puzzle", "comix"])
def test_ce_loss_is_the_soft_target_cross_entropy(model, batch, name):
    images, labels = batch
    args = argparse.Namespace(**vars(main.get_args_parser().parse_args(["--method", name, "--m_part", "4"])))
    main.resolve_method(args)
    results = {}
    for loss in ("bce", "ce"):
        args.loss = loss
        method = methods.build_method(args, NUM_CLASSES, dataset_info("cifar10"))
        assert method.loss == loss
        np.random.seed(2)
        stepped = copy.deepcopy(model)
        results[loss] = method(stepped, images, labels)
    bce_step, ce_step = results["bce"], results["ce"]
    torch.testing.assert_close(ce_step.targets, bce_step.targets)  # same draws, same mixing
    assert not torch.allclose(ce_step.loss, bce_step.loss)
    # the logits the loss saw: rerun the same step on another copy and capture its last forward
    np.random.seed(2)
    twin = copy.deepcopy(model)
    captured = []
    twin.register_forward_hook(lambda module, inputs, output: captured.append(output.detach()))
    methods.build_method(args, NUM_CLASSES, dataset_info("cifar10"))(twin, images, labels)
    mixed_logits = captured[-1]  # the last forward of every method is the one its loss uses
    torch.testing.assert_close(ce_step.loss, F.cross_entropy(mixed_logits, ce_step.targets))
    torch.testing.assert_close(ce_step.loss, -(ce_step.targets * F.log_softmax(mixed_logits, 1)).sum(1).mean())


def test_soft_target_loss_values():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    targets = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]])
    probs = F.softmax(logits, 1)
    expected_bce = -(targets * probs.log() + (1 - targets) * (1 - probs).log()).mean()
    torch.testing.assert_close(methods.soft_target_loss(logits, targets, "bce"), expected_bce)
    expected_ce = -(targets * probs.log()).sum(1).mean()
    torch.testing.assert_close(methods.soft_target_loss(logits, targets, "ce"), expected_ce)
    with pytest.raises(ValueError, match="loss must be one of bce, ce"):
        methods.soft_target_loss(logits, targets, "mse")


def test_bad_method_arguments_raise():
    with pytest.raises(ValueError, match="num_classes"):
        methods.VanillaMethod(0)
    with pytest.raises(ValueError, match="loss must be one of"):
        methods.VanillaMethod(3, loss="l2")
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        methods.InputMixupMethod(3, alpha=0.0)
    with pytest.raises(ValueError, match="clean_lam"):
        methods.PuzzleMixMethod(3, puzzlemix.PuzzleMix(), clean_lam=-1.0)
    with pytest.raises(ValueError, match="labels must be class indices"):
        methods.VanillaMethod(3)(TinyNet(3), torch.randn(2, 3, 32, 32), torch.tensor([[0], [1]]))


# --------------------------------------------------------------------------- flags

def parse(*argv: str) -> argparse.Namespace:
    args = main.get_args_parser().parse_args(list(argv))
    main.resolve_method(args)
    return args


@pytest.mark.parametrize("argv, method", [
    ([], "comix"),
    (["--comix", "True"], "comix"),
    (["--comix", "False"], "vanilla"),
    (["--method", "mixup"], "mixup"),
    (["--method", "puzzle", "--comix", "False"], "puzzle"),
    (["--method", "comix", "--comix", "True"], "comix"),
    (["--method", "vanilla", "--comix", "False"], "vanilla"),
])
def test_method_precedence(argv, method):
    args = parse(*argv)
    assert args.method == method
    assert args.comix is (method == "comix")


@pytest.mark.parametrize("name, alpha, clean_lam", [
    ("comix", 2.0, 1.0), ("vanilla", None, 1.0), ("mixup", 1.0, 0.0), ("manifold", 2.0, 0.0),
    ("cutmix", 1.0, 0.0), ("puzzle", 1.0, 0.0), ("saliencymix", 1.0, 0.0), ("fmix", 1.0, 0.0),
    ("resizemix", None, 0.0), ("guided_ap", None, 0.0), ("guided_sr", None, 0.0),
])
def test_published_defaults_per_method(name, alpha, clean_lam):
    args = parse("--method", name)
    assert (args.mixup_alpha, args.clean_lam) == (alpha, clean_lam)
    explicit = parse("--method", name, "--mixup_alpha", "0.5", "--clean_lam", "0")
    assert (explicit.mixup_alpha, explicit.clean_lam) == (0.5, 0.0)


def test_build_method_reads_the_flags():
    info = dataset_info("cifar100")
    built = {name: methods.build_method(parse("--method", name), 100, info) for name in methods.METHODS}
    assert {name: type(m).__name__ for name, m in built.items()} == {
        "vanilla": "VanillaMethod", "mixup": "InputMixupMethod", "manifold": "ManifoldMixMethod",
        "cutmix": "CutMixMethod", "puzzle": "PuzzleMixMethod", "comix": "CoMixupMethod",
        "saliencymix": "SaliencyMixMethod", "fmix": "FMixMethod", "resizemix": "ResizeMixMethod",
        "guided_ap": "GuidedMixupAPMethod", "guided_sr": "GuidedMixupSRMethod"}
    assert built["mixup"].alpha == 1.0 and built["cutmix"].alpha == 1.0 and built["manifold"].mixer.alpha == 2.0
    assert built["puzzle"].clean_lam == 0.0 and built["comix"].clean_lam == 1.0
    assert built["puzzle"].mixer.config == puzzlemix.PuzzleMixConfig(
        mixup_alpha=1.0, n_labels=3, beta=1.2, gamma=0.5, eta=0.2, neigh_size=4, transport=True, t_eps=0.8,
        t_size=4, block_num=-1)
    torch.testing.assert_close(built["puzzle"].mixer.mean, torch.tensor(info.mean))
    assert built["comix"].mixer.config == comix.CoMixupConfig()
    custom = methods.build_method(parse("--method", "puzzle", "--n_labels", "2", "--beta", "0.8", "--gamma", "0",
                                        "--eta", "0.1", "--neigh_size", "2", "--transport", "False",
                                        "--t_eps", "0.5", "--t_size", "-1", "--mixup_alpha", "0.3",
                                        "--clean_lam", "0.5", "--loss", "ce"), 100, info)
    assert custom.mixer.config == puzzlemix.PuzzleMixConfig(
        mixup_alpha=0.3, n_labels=2, beta=0.8, gamma=0.0, eta=0.1, neigh_size=2, transport=False, t_eps=0.5,
        t_size=-1, block_num=-1)
    assert custom.clean_lam == 0.5 and custom.loss == "ce"


# --------------------------------------------------------------------------- through main.main






PREFIX = "cifar10_per_6_arch_preactresnet18_eph_1_lr_0.2"
COMIX_PART = "_mblock_4_mbeta_0.32_mgamma_1.0_mthres_hard0.83_meta_0.05_m_alpha_2.0_mpart_10_niter_4_omega_0.001_set"
PUZZLE_PART = "_n_labels_3_beta_1.2_gamma_0.5_neigh_4_eta_0.2_transport_eps_0.8_size_4"


@pytest.mark.parametrize("name, folder, alpha, clean_lam", [
    ("vanilla", PREFIX + "_clean_1.0_seed_0", None, 1.0),
    ("mixup", PREFIX + "_method_mixup_m_alpha_1.0_seed_0", 1.0, 0.0),
    ("manifold", PREFIX + "_method_manifold_m_alpha_2.0_seed_0", 2.0, 0.0),
    ("cutmix", PREFIX + "_method_cutmix_m_alpha_1.0_seed_0", 1.0, 0.0),
    ("puzzle", PREFIX + "_method_puzzle_m_alpha_1.0" + PUZZLE_PART + "_seed_0", 1.0, 0.0),
    ("comix", PREFIX + COMIX_PART + "_clean_1.0_seed_0", 2.0, 1.0),
], ids=["vanilla", "mixup", "manifold", "cutmix", "puzzle", "comix"])
def test_one_epoch_of_each_method_writes_its_files(cifar10_dir, tmp_path, capsys, name, folder, alpha, clean_lam):
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, "--method", name)) == 0
    out = capsys.readouterr().out.splitlines()
    exp = only_experiment(root)
    assert exp.name == folder
    written = {p.name for p in exp.iterdir() if not p.name.startswith("events.out")}  # TensorBoard's aside
    assert written == {"log.txt", "log.pkl", "loss.png", "acc.png", "checkpoint.pth.tar", "model_best.pth.tar"}
    lines = (exp / "log.txt").read_text().splitlines()
    assert f"'method': '{name}'" in lines[1] and f"'mixup_alpha': {alpha}," in lines[1]
    assert f"'clean_lam': {clean_lam}," in lines[1] and f"'comix': {name == 'comix'}," in lines[1]
    trains = [m for m in map(TRAIN_RE.match, lines) if m]
    assert len(trains) == 1 and sum(bool(TEST_RE.match(line)) for line in out) == 1
    with open(exp / "log.pkl", "rb") as f:
        log = pickle.load(f)
    assert np.isfinite(log["train_loss"][0]) and log["train_loss"][0] > 0
    assert f"{log['train_acc'][0]:.2f}" == trains[0].group(1)
    checkpoint = read_checkpoint(exp / "checkpoint.pth.tar")
    assert checkpoint["args"]["method"] == name and checkpoint["args"]["mixup_alpha"] == alpha
    assert checkpoint["epoch"] == 1

    if name == "vanilla":  # the published --comix False still means vanilla: the same folder name and weights
        published = tmp_path / "published"
        assert main.main(base_args(cifar10_dir, published, "--comix", "False")) == 0
        a = read_checkpoint(only_experiment(published) / "checkpoint.pth.tar")
        assert only_experiment(published).name == exp.name == PREFIX + "_clean_1.0_seed_0"
        assert a["args"]["method"] == "vanilla" and a["args"]["comix"] is False
        for key in a["state_dict"]:
            assert torch.equal(a["state_dict"][key], checkpoint["state_dict"][key]), key


def test_loss_and_settings_name_the_folder(cifar10_dir, tmp_path):
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, "--method", "puzzle", "--loss", "ce", "--transport", "False",
                               "--clean_lam", "0.5", "--mixup_alpha", "0.4", "--tag", "x")) == 0
    assert only_experiment(root).name == (PREFIX + "_method_puzzle_m_alpha_0.4_n_labels_3_beta_1.2_gamma_0.5_neigh_4"
                                          "_eta_0.2_loss_ce_clean_0.5_seed_0_x")


def test_train_one_epoch_reports_mix_time(cifar10_dir):
    from comixup.data.datasets import get_datasets
    from comixup.data.loaders import get_loaders

    train_set, _, test_set, num_classes = get_datasets("cifar10", str(cifar10_dir), labels_per_class=TRAIN_PER_CLASS)
    loader, _, _ = get_loaders(train_set, None, test_set, batch_size=20, workers=0, seed=0)
    args = parse("--method", "cutmix", "--epochs", "1")
    np.random.seed(0)
    torch.manual_seed(0)
    net = TinyNet(num_classes)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    stats = main.train_one_epoch(net, loader, optimizer, methods.build_method(args, num_classes, None), 0)
    assert stats["steps"] == 3 and stats["mix_time"] > 0 and 0 <= stats["top1"] <= 100


@pytest.mark.slow  # three runs per method
@pytest.mark.parametrize("name", ["mixup", "puzzle", "manifold", "cutmix"])
def test_resume_is_bit_identical(cifar10_dir, tmp_path, monkeypatch, name):
    """2 epochs in one go == 1 epoch, then --resume to 2: numpy's state (the mixing draws) is restored.
    The test has teeth: with numpy's saved state ignored, the second epoch differs (mixup)."""
    straight, first, resumed = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    assert main.main(base_args(cifar10_dir, straight, "--method", name, "--epochs", "2")) == 0
    assert main.main(base_args(cifar10_dir, first, "--method", name, "--epochs", "1")) == 0
    first_ckpt = only_experiment(first) / "checkpoint.pth.tar"
    resume = ["--method", name, "--epochs", "2", "--resume", str(first_ckpt)]
    assert main.main(base_args(cifar10_dir, resumed, *resume)) == 0
    a = read_checkpoint(only_experiment(straight) / "checkpoint.pth.tar")
    b = read_checkpoint(only_experiment(resumed) / "checkpoint.pth.tar")
    assert a["epoch"] == b["epoch"] == 2
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["history"] == b["history"]
    c = read_checkpoint(first_ckpt)
    assert not torch.equal(c["state_dict"]["linear.weight"], b["state_dict"]["linear.weight"])

    if name == "mixup":
        from comixup.train import checkpoints

        restore = checkpoints.restore_rng_state

        def restore_all_but_numpy(state):
            numpy_now = np.random.get_state()
            restore(state)
            np.random.set_state(numpy_now)

        monkeypatch.setattr(checkpoints, "restore_rng_state", restore_all_but_numpy)
        without_numpy = tmp_path / "without_numpy"
        assert main.main(base_args(cifar10_dir, without_numpy, *resume)) == 0
        d = read_checkpoint(only_experiment(without_numpy) / "checkpoint.pth.tar")
        assert not torch.equal(a["state_dict"]["linear.weight"], d["state_dict"]["linear.weight"])


@pytest.mark.parametrize("extra, fragments", [
    (["--method", "mixer"], ["--method", "mixer", "vanilla", "puzzle"]),
    (["--comix", "False", "--method", "comix"], ["--comix False contradicts --method comix"]),
    (["--comix", "True", "--method", "cutmix"], ["--comix True contradicts --method cutmix"]),
    (["--loss", "mse"], ["--loss", "mse", "bce"]),
    (["--method", "mixup", "--clean_lam", "1"], ["--clean_lam 1.0", "--method mixup has no clean-input pass"]),
    (["--method", "cutmix", "--mixup_alpha", "0"], ["--mixup_alpha must be a finite number > 0"]),
    (["--method", "puzzle", "--mixup_alpha", "-1"], ["mixup_alpha must be > 0"]),
    (["--method", "puzzle", "--n_labels", "1"], ["n_labels must be an int >= 2"]),
    (["--method", "puzzle", "--beta", "nan"], ["beta must be a finite number >= 0"]),
    (["--method", "puzzle", "--neigh_size", "3"], ["--neigh_size 3 does not divide"]),
    (["--method", "puzzle", "--t_size", "3"], ["--t_size 3 does not divide"]),
    (["--method", "puzzle", "--transport", "perhaps"], ["--transport", "perhaps"]),
    (["--method", "manifold", "--ngpu", "2"], ["--method manifold", "--ngpu 1"]),
], ids=["unknown", "comix-false", "comix-true", "loss", "clean-lam", "alpha", "puzzle-alpha", "n-labels", "beta",
        "neigh", "t-size", "bool", "manifold-ngpu"])
def test_bad_method_flags_exit_2_with_one_line(cifar10_dir, tmp_path, capsys, extra, fragments):
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, *extra)) == 2
    assert_one_error_line(capsys, *fragments)
    assert not root.exists()


def test_puzzle_geometry_check():
    assert methods.puzzle_geometry_problem(32, 4, 4) is None
    assert methods.puzzle_geometry_problem(64, 4, -1) is None
    assert "t_size 4" in methods.puzzle_geometry_problem(224, 2, 4)  # 14-pixel blocks of a 16x16 grid
    assert "neigh_size 5" in methods.puzzle_geometry_problem(32, 5, 4)


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
