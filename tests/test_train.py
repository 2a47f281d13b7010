"""main.py end to end on a tiny CIFAR-10 written in the real format: files, log lines, resume,
argument checking."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch

import comix
import engine
import main
import methods
import models
from load_data import get_datasets, get_loaders
from runs import (assert_one_error_line, FINAL_RE, HEADER_RE, TEST_PER_CLASS, TEST_RE, TRAIN_PER_CLASS, TRAIN_RE, VALID_RE, base_args,
                  only_experiment, read_checkpoint)




pytestmark = pytest.mark.usefixtures("one_thread")







@pytest.mark.parametrize("comix_on", [False, True], ids=["vanilla", "comix"])
def test_one_epoch_writes_the_published_files(cifar10_dir, tmp_path, capsys, comix_on):
    root = tmp_path / "exp"
    rc = main.main(base_args(cifar10_dir, root, "--comix", str(comix_on), "--tag", "t"))
    out = capsys.readouterr().out
    assert rc == 0

    exp = only_experiment(root)
    expected_name = "cifar10_per_6_arch_preactresnet18_eph_1_lr_0.2"
    if comix_on:
        expected_name += ("_mblock_4_mbeta_0.32_mgamma_1.0_mthres_hard0.83_meta_0.05_m_alpha_2.0"
                          "_mpart_10_niter_4_omega_0.001_set")
    assert exp.name == expected_name + "_clean_1.0_seed_0_t"
    # (plus TensorBoard's event file when tensorboard is installed)
    names = {p.name for p in exp.iterdir() if not p.name.startswith("events.out.tfevents.")}
    assert names == {"log.txt", "log.pkl", "loss.png", "acc.png", "checkpoint.pth.tar", "model_best.pth.tar"}
    assert (exp / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (exp / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    lines = (exp / "log.txt").read_text().splitlines()
    assert lines[0] == f"save path : {exp}"
    assert lines[1].startswith("{'arch': 'preactresnet18', 'batch_size': 20,")
    assert "Random Seed: 0" in lines
    assert any(line.startswith("python version : ") for line in lines)
    assert any(line.startswith("torch  version : ") for line in lines)
    assert any(line.startswith("cudnn  version : ") for line in lines)
    assert "=> creating model 'preactresnet18'" in lines
    assert "=> do not use any checkpoint for preactresnet18 model" in lines
    headers = [m for m in map(HEADER_RE.match, lines) if m]
    trains = [m for m in map(TRAIN_RE.match, lines) if m]
    tests = [m for m in map(TEST_RE.match, lines) if m]
    finals = [m for m in map(FINAL_RE.match, lines) if m]
    assert len(headers) == len(trains) == len(tests) == len(finals) == 1
    assert headers[0].groups() == ("000", "001", "0.2000", "0.00", "100.00")
    assert lines[lines.index(headers[0].group(0)) - 1] == ""  # the published blank line before each epoch
    # every log line was printed too
    for line in lines[2:]:
        assert line in out.splitlines()

    with open(exp / "log.pkl", "rb") as f:
        log = pickle.load(f)
    assert set(log) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    assert all(len(v) == 1 for v in log.values())
    train_top1, _, train_err = map(float, trains[0].groups())
    test_top1, _, test_err, _ = map(float, tests[0].groups())
    assert f"{log['train_acc'][0]:.2f}" == trains[0].group(1)
    assert f"{log['test_acc'][0]:.2f}" == tests[0].group(1)
    assert f"{log['test_loss'][0]:.3f}" == tests[0].group(4)
    assert train_err == pytest.approx(100 - train_top1, abs=0.011)
    assert test_err == pytest.approx(100 - test_top1, abs=0.011)
    assert np.isfinite(log["train_loss"][0]) and log["train_loss"][0] > 0
    assert FINAL_RE.match(lines[-1]).groups() == (tests[0].group(1), "0.00")

    checkpoint = read_checkpoint(exp / "checkpoint.pth.tar")  # weights_only=True
    assert checkpoint["epoch"] == 1
    assert checkpoint["arch"] == "preactresnet18"
    assert checkpoint["num_classes"] == 10 and checkpoint["dataset"] == "cifar10"
    assert checkpoint["history"] == log
    assert checkpoint["best_acc"] == log["test_acc"][0]
    assert checkpoint["args"]["comix"] is comix_on and checkpoint["args"]["epochs"] == 1
    assert not any(key.startswith("module.") for key in checkpoint["state_dict"])
    assert "linear.weight" in checkpoint["state_dict"]
    assert set(checkpoint["rng"]) >= {"python", "numpy", "torch"}
    # the first epoch is the best so far, whatever its accuracy
    assert (exp / "model_best.pth.tar").read_bytes() == (exp / "checkpoint.pth.tar").read_bytes()


def test_valid_set_is_evaluated_and_logged(cifar10_dir, tmp_path):
    root = tmp_path / "exp"
    rc = main.main(base_args(cifar10_dir, root, "--comix", "False", "--labels_per_class", "4",
                             "--valid_labels_per_class", "2"))
    assert rc == 0
    exp = only_experiment(root)
    lines = (exp / "log.txt").read_text().splitlines()
    valid = [m for m in map(VALID_RE.match, lines) if m]
    assert len(valid) == 1
    with open(exp / "log.pkl", "rb") as f:
        log = pickle.load(f)
    assert f"{log['valid_acc'][0]:.2f}" == valid[0].group(1)
    assert f"{log['valid_loss'][0]:.3f}" == valid[0].group(4)


def test_train_one_epoch_partial_batches_and_small_partitions(cifar10_dir):
    """60 images in batches of 25 (25, 25, 10) with m_part 20: partitions of 20, 5 and 10."""
    train_set, _, test_set, num_classes = get_datasets("cifar10", str(cifar10_dir), labels_per_class=TRAIN_PER_CLASS)
    train_loader, _, _ = get_loaders(train_set, None, test_set, batch_size=25, workers=0, seed=0)
    torch.manual_seed(0)
    np.random.seed(0)
    model = models.build_model("preactresnet18", num_classes, initial_channels=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    mixer = comix.CoMixup(num_classes=num_classes, m_part=20)
    co_mixup = methods.CoMixupMethod(num_classes, mixer)
    stats = main.train_one_epoch(model, train_loader, optimizer, co_mixup, 0)
    assert stats["steps"] == 3
    assert stats["mix_time"] > 0
    assert np.isfinite(stats["loss"]) and stats["loss"] > 0
    assert 0 <= stats["top1"] <= stats["top5"] <= 100
    assert not torch.equal(before["linear.weight"], model.state_dict()["linear.weight"])

    vanilla = main.train_one_epoch(model, train_loader, optimizer, methods.VanillaMethod(num_classes), 1)
    assert vanilla["steps"] == 3 and vanilla["mix_time"] == 0


@pytest.mark.parametrize("batch,m_part", [(25, 20), (8, 20)], ids=["partial-last-batch", "batch-below-m_part"])
def test_any_batch_size_through_main(cifar10_dir, tmp_path, capsys, batch, m_part):
    root = tmp_path / "exp"
    rc = main.main(base_args(cifar10_dir, root, "--batch_size", str(batch), "--m_part", str(m_part), "--log_off"))
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert sum(bool(TRAIN_RE.match(line)) for line in out) == 1
    assert sum(bool(TEST_RE.match(line)) for line in out) == 1


def test_resume_is_bit_identical(cifar10_dir, tmp_path):
    """3 epochs in one go == 1 epoch, then --resume to 3 (Co-Mixup on, so numpy's state matters;
    augmentation draws from torch's; the lr drop at epoch 2 is applied after the resume too)."""
    schedule = ["--schedule", "2", "--gammas", "0.5"]
    straight, first, resumed = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    assert main.main(base_args(cifar10_dir, straight, "--epochs", "3", *schedule)) == 0
    assert main.main(base_args(cifar10_dir, first, "--epochs", "1", *schedule)) == 0
    first_ckpt = only_experiment(first) / "checkpoint.pth.tar"
    assert main.main(base_args(cifar10_dir, resumed, "--epochs", "3", "--resume", str(first_ckpt), *schedule)) == 0

    a = read_checkpoint(only_experiment(straight) / "checkpoint.pth.tar")
    b = read_checkpoint(only_experiment(resumed) / "checkpoint.pth.tar")
    assert a["epoch"] == b["epoch"] == 3
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    momenta_a = a["optimizer"]["state"]
    momenta_b = b["optimizer"]["state"]
    assert momenta_a.keys() == momenta_b.keys()
    for index in momenta_a:
        assert torch.equal(momenta_a[index]["momentum_buffer"], momenta_b[index]["momentum_buffer"])
    assert a["history"] == b["history"]
    assert len(a["history"]["test_acc"]) == 3
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"] == 0.1
    # the first run's weights really changed over the two resumed epochs
    c = read_checkpoint(first_ckpt)
    assert not torch.equal(c["state_dict"]["linear.weight"], b["state_dict"]["linear.weight"])

    resumed_log = (only_experiment(resumed) / "log.txt").read_text()
    assert f"=> loaded checkpoint '{first_ckpt}' (epoch 1)" in resumed_log
    assert "[Epoch=001/003]" in resumed_log and "[Epoch=000/003]" not in resumed_log


def test_evaluate_prints_the_test_line_of_the_checkpoint(cifar10_dir, tmp_path, capsys):
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root)) == 0
    trained = capsys.readouterr().out.splitlines()
    test_line = next(line for line in trained if TEST_RE.match(line))
    ckpt = only_experiment(root) / "checkpoint.pth.tar"

    eval_root = tmp_path / "eval"
    rc = main.main(base_args(cifar10_dir, eval_root, "--evaluate", "--log_off", "--parallel", "False",
                             "--resume", str(ckpt)))
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert [line for line in out if TEST_RE.match(line)] == [test_line]
    assert not any(TRAIN_RE.match(line) for line in out)
    assert not eval_root.exists()


def test_evaluate_runs_on_a_copy_with_fewer_training_images_than_labels_per_class(cifar10_dir, tmp_path, capsys):
    """Evaluation reads only the test split: a reduced copy (2 training images per class, fewer
    than the default --labels_per_class 500) evaluates as the full set does."""
    from fakedata import write_cifar

    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root)) == 0
    test_line = next(line for line in capsys.readouterr().out.splitlines() if TEST_RE.match(line))
    ckpt = only_experiment(root) / "checkpoint.pth.tar"
    reduced = write_cifar(tmp_path / "reduced", "cifar10", train_per_class=2, test_per_class=TEST_PER_CLASS)
    shutil.copyfile(cifar10_dir / "cifar-10-batches-py" / "test_batch", reduced / "cifar-10-batches-py" / "test_batch")
    argv = ["--dataset", "cifar10", "--data_dir", str(reduced), "--arch", "preactresnet18", "--initial_channels",
            "16", "--ngpu", "0", "--evaluate", "--log_off", "--resume", str(ckpt)]
    assert main.main(argv) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if TEST_RE.match(line)] == [test_line]


def test_log_off_writes_nothing(cifar10_dir, tmp_path, capsys):
    root = tmp_path / "exp"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main.main(base_args(cifar10_dir, root, "--log_off")) == 0
    out = capsys.readouterr().out.splitlines()
    assert not root.exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert any(TRAIN_RE.match(line) for line in out) and any(TEST_RE.match(line) for line in out)
    assert not any(line.startswith("save path") for line in out)


def test_missing_resume_file_exits_2(cifar10_dir, tmp_path, capsys):
    root = tmp_path / "exp"
    missing = tmp_path / "nowhere" / "checkpoint.pth.tar"
    assert main.main(base_args(cifar10_dir, root, "--resume", str(missing))) == 2
    assert_one_error_line(capsys, str(missing))
    assert not root.exists()


@pytest.mark.parametrize("extra, fragments", [
    (["--schedule", "100", "200", "--gammas", "0.1"], ["--schedule and --gammas must have the same length"]),
    (["--m_block_num", "3"], ["--m_block_num 3 does not divide", "32x32"]),
    (["--arch", "resnet7"], ["--arch", "resnet7", "preactresnet18"]),
    (["--batch_size", "0"], ["--batch_size"]),
    (["--m_part", "0"], ["m_part"]),
    (["--learning_rate", "-1"], ["--learning_rate"]),
    (["--comix", "maybe"], ["--comix", "maybe"]),
    (["--m_thres_type", "medium"], ["--m_thres_type"]),
], ids=["schedule-gammas", "block-num", "arch", "batch", "m-part", "lr", "bool", "thres-type"])
def test_bad_arguments_exit_2_with_one_line(cifar10_dir, tmp_path, capsys, extra, fragments):
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, *extra)) == 2
    assert_one_error_line(capsys, *fragments)
    assert not root.exists()


def test_data_error_exits_2_with_one_line(cifar10_dir, tmp_path, capsys):
    # the published default of 500 images per class is more than this data set holds
    args = base_args(cifar10_dir, tmp_path / "exp", "--log_off")
    args[args.index("--labels_per_class") + 1] = "500"
    assert main.main(args) == 2
    assert_one_error_line(capsys, "labels_per_class=500")


@pytest.mark.parametrize("flag", ["--comix", "--parallel", "--set_resolve", "--dropout", "--log_off", "--evaluate"])
def test_booleans_parse_in_every_published_spelling(flag):
    parser = main.get_args_parser()
    for spelling in ["True", "true", "TRUE", "yes", "Yes", "y", "t", "1"]:
        assert getattr(parser.parse_args([flag, spelling]), flag[2:]) is True, spelling
    for spelling in ["False", "false", "FALSE", "no", "No", "n", "f", "0"]:
        assert getattr(parser.parse_args([flag, spelling]), flag[2:]) is False, spelling


def test_bare_switches_and_defaults():
    parser = main.get_args_parser()
    defaults = parser.parse_args([])
    assert defaults.log_off is False and defaults.evaluate is False
    assert defaults.parallel is True and defaults.dropout is False
    # --method/--comix/--mixup_alpha/--clean_lam default to None; resolve_method makes them the published ones
    assert defaults.comix is None and defaults.method is None
    main.resolve_method(defaults)
    assert defaults.method == "comix" and defaults.comix is True
    assert (defaults.mixup_alpha, defaults.clean_lam, defaults.loss) == (2.0, 1.0, "bce")
    assert (defaults.dataset, defaults.labels_per_class, defaults.arch, defaults.epochs) == \
        ("cifar100", 500, "preactresnet18", 300)
    assert (defaults.m_block_num, defaults.m_part, defaults.m_beta, defaults.m_thres, defaults.m_solver) == \
        (4, 20, 0.32, 0.83, "fast")
    assert defaults.schedule == [100, 200] and defaults.gammas == [0.1, 0.1]
    bare = parser.parse_args(["--log_off", "--evaluate", "--epochs", "3"])
    assert bare.log_off is True and bare.evaluate is True and bare.epochs == 3
    valued = parser.parse_args(["--log_off", "True", "--evaluate", "no"])
    assert valued.log_off is True and valued.evaluate is False


def test_learning_rate_schedule():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lrs = [engine.adjust_learning_rate(optimizer, epoch, 0.2, [100, 200], [0.1, 0.1]) for epoch in (0, 99, 100, 199, 200)]
    assert lrs == pytest.approx([0.2, 0.2, 0.02, 0.02, 0.002])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.002)


def test_epoch_order_depends_on_seed_and_epoch_only(cifar10_dir):
    train_set, _, test_set, _ = get_datasets("cifar10", str(cifar10_dir), labels_per_class=TRAIN_PER_CLASS)

    def labels(loader, epoch):
        engine.set_train_epoch(loader, 0, epoch)
        return torch.cat([target for _, target in loader])

    def fresh():
        return get_loaders(train_set, None, test_set, batch_size=20, workers=0, seed=0)[0]

    used = fresh()
    for epoch in range(3):
        labels(used, epoch)
    assert torch.equal(labels(used, 5), labels(fresh(), 5))
    assert not torch.equal(labels(fresh(), 5), labels(fresh(), 6))


def test_tensorboard_scalars_next_to_the_log(cifar10_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, "--epochs", "2")) == 0
    exp = only_experiment(root)
    events = list(exp.glob("events.out.tfevents.*"))
    assert len(events) == 1 and (exp / "log.txt").exists()
    accumulator = EventAccumulator(str(exp))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/top1", "test/loss", "test/top1", "learning_rate", "mix_seconds_per_step"} <= tags
    test_acc = [event.value for event in accumulator.Scalars("test/top1")]
    history = pickle.load(open(exp / "log.pkl", "rb"))
    assert [event.step for event in accumulator.Scalars("test/top1")] == [0, 1]
    assert test_acc == pytest.approx(history["test_acc"])
    assert all(event.value > 0 for event in accumulator.Scalars("mix_seconds_per_step"))
