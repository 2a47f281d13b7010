"""config_file.py: a YAML file of flag values as the parser's defaults (the command line wins),
values checked as the command line checks them, unknown keys refused in one line."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from comixup.train.config_file import ConfigError, load_config, parse_args_with_config
from comixup.train.options import get_args_parser
from comixup.train.recipe import Recipe

SHIPPED = Path(__file__).resolve().parents[1] / "configs" / "imagenet_fast.yml"


def _parser() -> argparse.ArgumentParser:
    """main.py's parser, with the recipe's proposed flags added where options.py lacks them
    (until it defines them; then the real definitions are tested)."""
    parser = get_args_parser()
    known = {a.dest for a in parser._actions}
    proposed = {
        "nesterov": dict(type=lambda v: v.lower() in ("1", "true", "yes", "t", "y"), default=True),
        "bn_weight_decay": dict(type=float, default=None),
        "init": dict(default="default", choices=("default", "published_imagenet")),
        "m_peak_stride": dict(type=int, default=1),
    }
    for name, spec in proposed.items():
        if name not in known:
            parser.add_argument(f"--{name}", **spec)
    return parser


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "run.yml"
    path.write_text(text)
    return str(path)


def test_shipped_config_loads_and_the_command_line_overrides_it():
    args = parse_args_with_config(_parser(), ["--config", str(SHIPPED), "--m_part", "8", "--amp", "bf16",
                                              "--data_dir", "/fast/imagenet"])
    assert args.config == str(SHIPPED)
    # from the file
    assert (args.dataset, args.arch, args.labels_per_class, args.epochs) == ("imagenet", "resnet50", 0, 100)
    assert (args.loss, args.clean_lam, args.mixup_alpha, args.m_block_num, args.m_niter) == ("ce", 500.0, 1.0, 4, 3)
    assert (args.nesterov, args.bn_weight_decay, args.init, args.m_peak_stride) == (False, 0.0,
                                                                                    "published_imagenet", 8)
    assert args.workers == 8 and args.decay == 1e-4 and args.momentum == 0.9
    # from the command line
    assert args.m_part == 8 and args.mixed_precision == "bf16" and args.data_dir == "/fast/imagenet"
    recipe = Recipe.from_config(args.phases, args.lr_points, args.epochs, args.data_dir)
    assert [p.data_dir for p in recipe.phases] == ["/fast/imagenet/160", "/fast/imagenet/352", "/fast/imagenet/352"]
    # --config=FILE and a file value the command line leaves alone
    args = parse_args_with_config(_parser(), [f"--config={SHIPPED}"])
    assert args.m_part == 16 and args.mixed_precision == "fp16" and args.data_dir == "./data/imagenet"


def test_without_a_config_the_defaults_are_unchanged():
    args = parse_args_with_config(_parser(), ["--epochs", "3"])
    plain = _parser().parse_args(["--epochs", "3"])
    assert (args.config, args.phases, args.lr_points) == (None, None, None)
    assert {k: v for k, v in vars(args).items() if k not in ("config", "phases", "lr_points")} == vars(plain)


def test_values_are_converted_as_on_the_command_line(tmp_path):
    path = _write(tmp_path, "schedule: 100\ngammas: [0.1]\nlog_off: true\nlearning_rate: 2e-1\ntag: 2024\n"
                            "data_dir: null\nmixed_precision: bf16\n")
    config = load_config(path, _parser())
    assert config == {"schedule": [100], "gammas": [0.1], "log_off": True, "learning_rate": 0.2, "tag": "2024",
                      "data_dir": None, "mixed_precision": "bf16"}


@pytest.mark.parametrize("text, message", [
    ("m_parts: 4\n", "unknown key 'm_parts'; allowed keys: "),
    ("epochs: 1.5\n", "epochs: invalid literal for int()"),
    ("arch: resnet9000\n", "arch: invalid choice 'resnet9000' (choose from "),
    ("amp: fp32\n", "amp: invalid choice 'fp32'"),
    ("amp: bf16\nmixed_precision: off\n", "'mixed_precision' and 'amp' set the same flag"),
    ("log_off: perhaps\n", "log_off: boolean value expected"),
    ("amp: off\n", "amp: expected text, got the YAML boolean false; quote the word"),
    ("schedule: [100, [200]]\n", "schedule: expected a single value"),
    ("epochs: null\n", "epochs: a value is needed"),
    ("config: other.yml\n", "unknown key 'config'"),
    ("- epochs\n- 3\n", "must be a mapping of flag names to values, got a list"),
    ("epochs: [1\n", "is not valid YAML"),
])
def test_bad_config_files_are_one_error_line_and_exit_2(tmp_path, capsys, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match="^config file .*run.yml") as err:
        load_config(path, _parser())
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    with pytest.raises(SystemExit) as stop:
        parse_args_with_config(_parser(), ["--config", path])
    assert stop.value.code == 2
    out = capsys.readouterr().err
    assert out.startswith("error: config file ") and out.count("\n") == 1 and message in out


def test_unknown_key_names_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "m_parts: 4\n"), _parser())
    allowed = str(err.value).split("allowed keys: ")[1].split(", ")
    assert {"m_part", "amp", "mixed_precision", "phases", "lr_points", "epochs"} <= set(allowed)
    assert "help" not in allowed and "config" not in allowed


def test_missing_config_file_and_no_abbreviation(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args_with_config(_parser(), ["--config", str(tmp_path / "none.yml")])
    assert stop.value.code == 2 and "cannot read the config file" in capsys.readouterr().err
    # --co is not taken for --config: main's parser sees it (ambiguous --comix / --config or --comix)
    with pytest.raises(SystemExit):
        parse_args_with_config(_parser(), ["--co", "x.yml"])
    assert "cannot read the config file" not in capsys.readouterr().err


def test_an_empty_file_changes_nothing(tmp_path):
    args = parse_args_with_config(_parser(), ["--config", _write(tmp_path, "# nothing yet\n")])
    assert args.m_part == 20 and args.phases is None
