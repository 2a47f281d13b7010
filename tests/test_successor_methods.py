"""main.py's --method saliencymix, fmix, resizemix, guided_ap and guided_sr: their flags (published
defaults, checks, folder names), their training steps, an epoch and a bit-identical resume of each
through main.main, and SaliencyMix's one line without OpenCV's contrib modules."""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from comixup.data.datasets import dataset_info
from comixup.mixing import fmix, guided, resizemix
from comixup.mixing.saliency import saliency_and_clean_loss
from comixup.train import methods, options

import main
from tests.support.models import TinyNet
from tests.support.runs import (
    TEST_RE,
    TRAIN_RE,
    assert_one_error_line,
    base_args,
    keep_first_checkpoint,
    only_experiment,
    read_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SUCCESSORS = ("saliencymix", "fmix", "resizemix", "guided_ap", "guided_sr")
PREFIX = "cifar10_per_500_arch_preactresnet18_eph_300_lr_0.2"
CALIB_RE = re.compile(r"^\*\*Calib\*\* ")


def parse(*argv: str) -> argparse.Namespace:
    args = main.get_args_parser().parse_args(["--dataset", "cifar10", *argv])
    main.resolve_method(args)
    return args


# --------------------------------------------------------------------------- the flags

@pytest.mark.parametrize("argv, folder, alpha, settings", [
    (["--method", "saliencymix"], "_method_saliencymix_m_alpha_1.0_prob_0.5", 1.0,
     {"salmix_prob": 0.5, "salmix_detector_input": "uint8"}),
    (["--method", "saliencymix", "--salmix_detector_input", "normalised", "--mixup_alpha", "0.5"],
     "_method_saliencymix_m_alpha_0.5_prob_0.5_detector_normalised", 0.5, {"salmix_detector_input": "normalised"}),
    (["--method", "fmix"], "_method_fmix_m_alpha_1.0_decay_3.0", 1.0,
     {"fmix_decay_power": 3.0, "fmix_max_soft": 0.0, "fmix_spectrum": "isotropic"}),
    (["--method", "fmix", "--fmix_spectrum", "published", "--fmix_max_soft", "0.1"],
     "_method_fmix_m_alpha_1.0_decay_3.0_soft_0.1_spectrum_published", 1.0, {"fmix_spectrum": "published"}),
    (["--method", "resizemix"], "_method_resizemix_scope_0.1_0.8", None,
     {"resizemix_scope": [0.1, 0.8], "resizemix_use_alpha": False}),
    (["--method", "resizemix", "--resizemix_use_alpha", "True"], "_method_resizemix_scope_0.1_0.8_use_alpha_1.0",
     1.0, {"resizemix_use_alpha": True}),
    (["--method", "guided_ap"], "_method_guided_ap_mix_prob_0.8", None,
     {"mix_prob": 0.8, "guided_pairing": "greedy", "clean_lam": 0.0}),
    (["--method", "guided_ap", "--clean_lam", "1", "--guided_pairing", "random"],
     "_method_guided_ap_mix_prob_0.8_pairing_random_clean_1.0", None, {"guided_pairing": "random"}),
    (["--method", "guided_sr"], "_method_guided_sr_mix_prob_0.5", None, {"mix_prob": 0.5, "guided_pairing": "greedy"}),
])
def test_published_defaults_and_folder_names(argv, folder, alpha, settings):
    args = parse(*argv)
    options.validate_args(args)
    assert options.experiment_name(args) == PREFIX + folder + "_seed_0"
    assert args.mixup_alpha == alpha
    assert {name: getattr(args, name) for name in settings} == settings
    # the other methods' flags stay unset, so the log and the checkpoint say which flags applied
    own = {flag.dest for flag in methods.REGISTRY[args.method].flags}
    assert all(getattr(args, name) is None for name in methods.method_flags() if name not in own)
    main.resolve_method(args)  # idempotent
    assert options.experiment_name(args) == PREFIX + folder + "_seed_0"


def test_the_flags_reach_the_mixers():
    info = dataset_info("cifar10")
    built = {name: methods.build_method(parse("--method", name), 10, info) for name in SUCCESSORS}
    salmix = built["saliencymix"].mixer
    assert (salmix.prob, salmix.beta, salmix.detector_input) == (0.5, 1.0, "uint8")
    assert (salmix.mean, salmix.std) == (tuple(info.mean), tuple(info.std))
    assert vars(built["fmix"].mixer) == vars(fmix.FMix(num_classes=10))
    assert vars(built["resizemix"].mixer) == vars(resizemix.ResizeMix(num_classes=10))
    assert (built["guided_ap"].mixer.mix_prob, built["guided_ap"].clean_lam) == (0.8, 0.0)
    assert built["guided_sr"].mixer.mix_prob == 0.5
    assert [built[name].clean_logits for name in SUCCESSORS] == [False, False, False, True, False]

    given = {
        "saliencymix": ["--salmix_prob", "0.3", "--salmix_detector_input", "normalised", "--mixup_alpha", "0.2"],
        "fmix": ["--fmix_decay_power", "2", "--fmix_max_soft", "0.1", "--fmix_spectrum", "published",
                 "--mixup_alpha", "0.4"],
        "resizemix": ["--resizemix_scope", "0.2", "0.5", "--resizemix_use_alpha", "yes", "--mixup_alpha", "2"],
        "guided_ap": ["--mix_prob", "0.6", "--guided_pairing", "random", "--clean_lam", "1"],
        "guided_sr": ["--mix_prob", "1", "--guided_pairing", "random"],
    }
    custom = {name: methods.build_method(parse("--method", name, *argv), 10, info) for name, argv in given.items()}
    salmix = custom["saliencymix"].mixer
    assert (salmix.prob, salmix.beta, salmix.detector_input) == (0.3, 0.2, "normalised")
    assert vars(custom["fmix"].mixer) == vars(fmix.FMix(alpha=0.4, decay_power=2.0, max_soft=0.1,
                                                        spectrum="published", num_classes=10))
    assert vars(custom["resizemix"].mixer) == vars(resizemix.ResizeMix(scope=(0.2, 0.5), use_alpha=True, alpha=2.0,
                                                                       num_classes=10))
    ap = custom["guided_ap"]
    assert (ap.mixer.mix_prob, ap.mixer.pairing, ap.clean_lam) == (0.6, "random", 1.0)
    assert (custom["guided_sr"].mixer.mix_prob, custom["guided_sr"].mixer.pairing) == (1.0, "random")


@pytest.mark.parametrize("extra, fragments", [
    (["--method", "fmix", "--mix_prob", "0.5"], ["--mix_prob applies only to --method guided_ap or guided_sr"]),
    (["--method", "comix", "--fmix_spectrum", "published"], ["--fmix_spectrum applies only to --method fmix"]),
    (["--method", "guided_sr", "--salmix_prob", "1", "--resizemix_scope", "0", "1"],
     ["--salmix_prob applies only to --method saliencymix", "--resizemix_scope applies only to --method resizemix"]),
    (["--method", "saliencymix", "--salmix_prob", "1.5"], ["--salmix_prob must be", "<= 1", "1.5"]),
    (["--method", "saliencymix", "--salmix_detector_input", "float"], ["--salmix_detector_input", "float"]),
    (["--method", "saliencymix", "--mixup_alpha", "0"], ["--mixup_alpha must be a finite number > 0"]),
    (["--method", "fmix", "--fmix_max_soft", "0.7", "--fmix_decay_power", "-1"],
     ["--fmix_decay_power must be a finite number >= 0", "--fmix_max_soft must be", "<= 0.5"]),
    (["--method", "fmix", "--fmix_spectrum", "blue"], ["--fmix_spectrum", "blue"]),
    (["--method", "resizemix", "--resizemix_scope", "0.8", "0.1"], ["--resizemix_scope must be LOW HIGH with LOW <="]),
    (["--method", "resizemix", "--resizemix_scope", "0.1", "1.5"], ["--resizemix_scope must be", "1.5"]),
    (["--method", "resizemix", "--mixup_alpha", "0.5"],
     ["--mixup_alpha 0.5: --method resizemix draws its scale uniformly", "--resizemix_use_alpha True"]),
    (["--method", "resizemix", "--resizemix_use_alpha", "perhaps"], ["--resizemix_use_alpha", "perhaps"]),
    (["--method", "guided_sr", "--mixup_alpha", "1"], ["--mixup_alpha 1.0: --method guided_sr draws no mixing weight"]),
    (["--method", "guided_sr", "--clean_lam", "1"], ["--method guided_sr has no clean-input pass", "guided_ap"]),
    (["--method", "guided_ap", "--mix_prob", "-0.1"], ["--mix_prob must be a finite number >= 0"]),
    (["--method", "guided_ap", "--guided_pairing", "best"], ["--guided_pairing", "best"]),
], ids=["foreign", "foreign-comix", "two-foreign", "prob", "detector", "alpha", "two-problems", "spectrum",
        "scope-order", "scope-range", "resizemix-alpha", "use-alpha", "guided-alpha", "guided-sr-clean-lam",
        "mix-prob", "pairing"])
def test_bad_flags_exit_2_with_one_line_before_any_work(tmp_path, capsys, extra, fragments):
    data, root = tmp_path / "data", tmp_path / "exp"  # no data: a run that got past the checks would download
    assert main.main(base_args(data, root, *extra)) == 2
    assert_one_error_line(capsys, *fragments)
    assert not root.exists() and not data.exists()


def test_without_opencv_contrib_saliencymix_exits_2_naming_the_extra_and_the_others_run(tmp_path, capsys,
                                                                                         monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    data, root = tmp_path / "data", tmp_path / "exp"
    assert main.main(base_args(data, root, "--method", "saliencymix")) == 2
    assert_one_error_line(capsys, "--method saliencymix", "OpenCV", 'pip install "comixup[saliencymix]"')
    assert not root.exists() and not data.exists()
    options.validate_args(parse("--method", "saliencymix", "--evaluate"))  # evaluating a checkpoint mixes nothing
    for name in methods.METHODS:
        if name != "saliencymix":
            args = parse("--method", name)
            options.validate_args(args)
            methods.build_method(args, 10, dataset_info("cifar10"))


# --------------------------------------------------------------------------- the steps

def batch(size: int = 8, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, classes, (size,), generator=g)


def tiny_model() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet(10).train()


@pytest.mark.parametrize("name", ["saliencymix", "fmix", "resizemix", "guided_sr"])
def test_a_step_is_the_mixer_then_one_forward_pass_on_the_mixed_batch(name):
    images, labels = batch()
    always = {"saliencymix": ["--salmix_prob", "1"], "guided_sr": ["--mix_prob", "1"]}.get(name, [])
    method = methods.build_method(parse("--method", name, *always), 10, dataset_info("cifar10"))
    model = tiny_model()
    np.random.seed(3)
    step = method(model, images, labels)
    np.random.seed(3)
    mixed, targets = method.mixer(images, labels)
    assert not torch.equal(mixed, images)
    logits = model(mixed)  # train mode: the same batch statistics
    torch.testing.assert_close(step.logits, logits)  # the mixed images' logits
    torch.testing.assert_close(step.targets, targets)
    torch.testing.assert_close(step.loss, methods.soft_target_loss(logits, targets, "bce"))
    assert model.mix_layers == [None, None] and step.mix_time > 0


@pytest.mark.parametrize("clean_lam", [0.0, 1.0])
def test_guided_ap_draws_the_coin_first_and_runs_the_clean_pass_only_for_a_mixed_batch(clean_lam):
    images, labels = batch()
    method = methods.build_method(parse("--method", "guided_ap", "--clean_lam", str(clean_lam)), 10,
                                  dataset_info("cifar10"))
    model = tiny_model()
    before = copy.deepcopy(model)
    # the coin mixes unless mix_prob (0.8) is below the draw: seed 8 draws 0.873 (unmixed), seed 1 0.417
    np.random.seed(8)
    unmixed = method(model, images, labels)
    assert model.mix_layers == [None]  # one forward pass, no saliency pass
    torch.testing.assert_close(unmixed.logits, before(images))
    torch.testing.assert_close(unmixed.targets, torch.eye(10)[labels])
    assert all(p.grad is None for p in model.parameters())  # the caller's backward is the only one

    model, before = tiny_model(), tiny_model()
    np.random.seed(1)
    mixed = method(model, images, labels)
    assert model.mix_layers == [None, None]  # the clean pass, then the mixed batch
    saliency, _, clean_logits = saliency_and_clean_loss(before, images, labels, clean_lam, 10)
    np.random.seed(1)
    expected_images, expected_targets = guided.GuidedMixupAP(num_classes=10)(images, labels, saliency)
    torch.testing.assert_close(mixed.logits, clean_logits)  # the clean images' logits
    torch.testing.assert_close(mixed.targets, expected_targets)
    torch.testing.assert_close(mixed.loss, methods.soft_target_loss(before(expected_images), expected_targets, "bce"))
    for param, reference in zip(model.parameters(), before.parameters(), strict=True):  # trains when > 0
        assert (param.grad is None) == (clean_lam == 0)
        if clean_lam > 0:
            torch.testing.assert_close(param.grad, reference.grad)


# --------------------------------------------------------------------------- through main.main

# SaliencyMix mixes every batch here, so that every step draws; GuidedMixup's greedy pairing draws
# nothing (only its coin does): random pairing makes every step draw
DRAWING_EVERY_STEP = {"saliencymix": ["--salmix_prob", "1"], "guided_ap": ["--guided_pairing", "random"],
                      "guided_sr": ["--guided_pairing", "random"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", SUCCESSORS)
def test_an_epoch_through_main_and_a_bit_identical_resume(cifar10_dir, tmp_path, capsys, monkeypatch, name):
    """A run of 2 epochs, its checkpoint after epoch 1 kept aside, and that checkpoint resumed to 2:
    the same weights, momenta, history and log lines (numpy's saved state gives every mixing draw
    again)."""
    straight, resumed, first = tmp_path / "straight", tmp_path / "resumed", tmp_path / "epoch1.pth.tar"
    argv = ["--method", name, "--epochs", "2", *DRAWING_EVERY_STEP.get(name, [])]
    keep_first_checkpoint(monkeypatch, first)
    assert main.main(base_args(cifar10_dir, straight, *argv)) == 0
    assert main.main(base_args(cifar10_dir, resumed, *argv, "--resume", str(first))) == 0
    capsys.readouterr()

    exp = only_experiment(straight)
    assert exp.name == options.experiment_name(parse(*base_args(cifar10_dir, straight, *argv)[4:]))
    lines = (exp / "log.txt").read_text().splitlines()
    assert f"'method': '{name}'" in lines[1]
    trains = [m for m in map(TRAIN_RE.match, lines) if m]
    assert len(trains) == 2 and sum(bool(TEST_RE.match(line)) for line in lines) == 2
    a, b, c = (read_checkpoint(path) for path in (exp / "checkpoint.pth.tar",
                                                  only_experiment(resumed) / "checkpoint.pth.tar", first))
    assert c["epoch"] == 1 and np.isfinite(c["history"]["train_loss"][0]) and c["args"]["method"] == name
    assert a["epoch"] == b["epoch"] == 2
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][index]["momentum_buffer"])
    assert a["history"] == b["history"]
    assert not torch.equal(c["state_dict"]["linear.weight"], b["state_dict"]["linear.weight"])

    def epoch_two(log: Path) -> list[str]:
        text = log.read_text().split("[Epoch=001/002]", 1)[1].splitlines()
        return [line for line in text if TRAIN_RE.match(line) or TEST_RE.match(line) or CALIB_RE.match(line)]

    assert len(epoch_two(exp / "log.txt")) == 3
    assert epoch_two(exp / "log.txt") == epoch_two(only_experiment(resumed) / "log.txt")
