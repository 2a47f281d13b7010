"""The command line (options.py): the published flags, their defaults and boolean spellings; bad
command lines are refused before any heavy work: exit 2, one ``error:`` line on stderr that names
the flag, no traceback, nothing created under --root_dir, no download, no data read, no model
built."""
from __future__ import annotations

from pathlib import Path

import pytest
import torchvision.datasets as tv_datasets
import torchvision.datasets.utils as tv_utils

from comixup import models
from comixup.train import engine

import load_data
import main
from tests.support.runs import assert_one_error_line, base_args


class Attempted(AssertionError):
    """Raised by the hooks below: a bad command line got as far as heavy work."""


@pytest.fixture
def heavy_work(monkeypatch) -> list[str]:
    """Records (and stops) every download, data set read and model build main could start."""
    calls: list[str] = []

    def hook(name):
        def refuse(*args, **kwargs):
            calls.append(name)
            raise Attempted(f"{name} was attempted")
        return refuse

    monkeypatch.setattr(tv_datasets.CIFAR10, "download", hook("download"))
    monkeypatch.setattr(tv_utils, "download_url", hook("download_url"))
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", hook("download_and_extract_archive"))
    monkeypatch.setattr(engine, "get_datasets", hook("get_datasets"))
    monkeypatch.setattr(models, "build_model", hook("build_model"))  # every command builds through it
    return calls


def _file(tmp_path: Path) -> str:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return str(path)


def _folder(tmp_path: Path) -> str:
    path = tmp_path / "a-folder"
    path.mkdir()
    return str(path)


# (extra arguments, or a function of tmp_path giving them; the flag the error line must name)
BAD_ARGUMENTS = {
    "batch-zero": (["--batch_size", "0"], "--batch_size"),
    "batch-negative": (["--batch_size", "-5"], "--batch_size"),
    "batch-not-int": (["--batch_size", "2.5"], "--batch_size"),
    "m-part-zero": (["--m_part", "0"], "--m_part"),
    "m-block-num-not-divisor": (["--m_block_num", "3"], "--m_block_num"),
    "m-block-num-zero": (["--m_block_num", "0"], "--m_block_num"),
    "m-thres-negative": (["--m_thres", "-0.1"], "--m_thres"),
    "m-thres-nan": (["--m_thres", "nan"], "--m_thres"),
    "m-thres-type": (["--m_thres_type", "medium"], "--m_thres_type"),
    "m-omega": (["--m_omega", "1.5"], "--m_omega"),
    "m-niter": (["--m_niter", "0"], "--m_niter"),
    "lr-zero": (["--learning_rate", "0"], "--learning_rate"),
    "lr-nan": (["--learning_rate", "nan"], "--learning_rate"),
    "lr-inf": (["--learning_rate", "inf"], "--learning_rate"),
    "momentum": (["--momentum", "-0.1"], "--momentum"),
    "decay-nan": (["--decay", "nan"], "--decay"),
    "schedule-gammas-length": (["--schedule", "100", "200", "--gammas", "0.1"], "--schedule"),
    "schedule-order": (["--schedule", "200", "100", "--gammas", "0.1", "0.1"], "--schedule"),
    "gammas-zero": (["--schedule", "5", "--gammas", "0"], "--gammas"),
    "epochs-negative": (["--epochs", "-1"], "--epochs"),
    "epochs-not-int": (["--epochs", "abc"], "--epochs"),
    "nothing-to-train": (["--start_epoch", "5", "--epochs", "3"], "--start_epoch"),
    "labels-negative": (["--labels_per_class", "-1"], "--labels_per_class"),
    "labels-over-cifar10": (["--labels_per_class", "5001"], "--labels_per_class"),
    "labels-over-cifar100": (["--dataset", "cifar100", "--labels_per_class", "501"], "--labels_per_class"),
    "labels-over-tiny": (["--dataset", "tiny-imagenet-200", "--labels_per_class", "600"], "--labels_per_class"),
    "valid-plus-labels": (["--labels_per_class", "4000", "--valid_labels_per_class", "1001"],
                          "--valid_labels_per_class"),
    "valid-leaves-none": (["--labels_per_class", "0", "--valid_labels_per_class", "5000"],
                          "--valid_labels_per_class"),
    "dataset": (["--dataset", "mnist"], "--dataset"),
    "arch": (["--arch", "resnet7"], "--arch"),
    "method": (["--method", "mixupp"], "--method"),
    "solver": (["--m_solver", "magic"], "--m_solver"),
    "loss": (["--loss", "mse"], "--loss"),
    "amp": (["--amp", "fp8"], "--amp"),
    "fp16-on-cpu": (["--amp", "fp16"], "--amp"),
    "workers": (["--workers", "-1"], "--workers"),
    "seed": (["--seed", str(2**32)], "--seed"),
    "mixup-alpha-inf": (["--mixup_alpha", "inf"], "--mixup_alpha"),
    "clean-lam-negative": (["--clean_lam", "-1"], "--clean_lam"),
    "clean-lam-for-mixup": (["--method", "mixup", "--clean_lam", "1"], "--clean_lam"),
    "puzzle-neigh-size": (["--method", "puzzle", "--neigh_size", "3"], "--neigh_size"),
    "puzzle-n-labels": (["--method", "puzzle", "--n_labels", "1"], "--n_labels"),
    "warmup-factor": (["--warmup_start_factor", "1.5"], "--warmup_start_factor"),
    "comix-contradiction": (["--method", "cutmix", "--comix", "True"], "--comix"),
    "bool": (["--parallel", "maybe"], "--parallel"),
    "tag": (["--tag", "a/b"], "--tag"),
    "resume-missing": (lambda tmp: ["--resume", str(tmp / "none.pth.tar")], "--resume"),
    "resume-folder": (lambda tmp: ["--resume", _folder(tmp)], "--resume"),
    "data-dir-file": (lambda tmp: ["--data_dir", _file(tmp)], "--data_dir"),
    "imagenet-empty": (lambda tmp: ["--dataset", "imagenet", "--labels_per_class", "0", "--data_dir",
                                    _folder(tmp)], "--data_dir"),
}


def _run(tmp_path: Path, extra: list[str]) -> int:
    data, root = tmp_path / "data", tmp_path / "exp"  # data: absent, so CIFAR would be downloaded
    return main.main(base_args(data, root, *extra))


@pytest.mark.parametrize("case", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys, heavy_work, case):
    extra, flag = case
    if callable(extra):
        extra = extra(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert _run(tmp_path, extra) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and flag in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert sorted(tmp_path.rglob("*")) == before  # no experiment folder, no data folder
    assert heavy_work == []


def test_the_hooks_see_a_good_command_line(tmp_path, heavy_work):
    """The controls: the same command line without a bad flag reaches the data set, and reading
    the absent CIFAR would download it."""
    with pytest.raises(Attempted):
        _run(tmp_path, [])
    assert heavy_work == ["get_datasets"]
    with pytest.raises(Attempted):
        load_data.get_datasets("cifar10", str(tmp_path / "data"))
    assert heavy_work == ["get_datasets", "download"]


@pytest.mark.parametrize("dataset, per_class", [("cifar10", 5000), ("cifar100", 500), ("tiny-imagenet-200", 500)])
def test_labels_per_class_is_bounded_by_the_images_per_class(tmp_path, capsys, heavy_work, dataset, per_class):
    """Every training image of a class may be asked for: the run goes on to read the data set;
    one more is refused with one line that gives the allowed range."""
    if dataset == "tiny-imagenet-200":  # a prepared folder's layout, which is checked first
        for folder in ("train", "val/images"):
            (tmp_path / "all" / "data" / folder).mkdir(parents=True)
    with pytest.raises(Attempted):
        _run(tmp_path / "all", ["--dataset", dataset, "--labels_per_class", str(per_class)])
    assert heavy_work == ["get_datasets"]
    capsys.readouterr()
    assert _run(tmp_path / "more", ["--dataset", dataset, "--labels_per_class", str(per_class + 1)]) == 2
    assert_one_error_line(capsys, f"--labels_per_class {per_class + 1}", f"use 1 to {per_class}")
    assert heavy_work == ["get_datasets"]


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
    (["--warmup_epochs", "-1"], ["--warmup_epochs must be 0 or more"]),
    (["--warmup_start_factor", "1"], ["--warmup_start_factor must lie in [0, 1)"]),
    (["--labels_per_class", "-1"], ["--labels_per_class must be 0 (every image) or a positive count"]),
], ids=["schedule-gammas", "block-num", "arch", "batch", "m-part", "lr", "bool", "thres-type", "warmup",
        "start-factor", "labels"])
def test_bad_arguments_exit_2_with_one_line(cifar10_dir, tmp_path, capsys, extra, fragments):
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, *extra)) == 2
    assert_one_error_line(capsys, *fragments)
    assert not root.exists()


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


def test_help_documents_per_process_batch_and_the_imagenet_settings(capsys):
    assert main.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "N x batch_size images in all" in text and "torchrun --nproc_per_node N main.py" in text
    assert "--m_part 16 --m_niter 3" in text and "--amp {off,bf16,fp16}" in text
