"""``--config FILE.yml``: a YAML file of flag values, as timm's train.py ``--config`` reads one.

Every top-level key is a flag of the command line, by its destination name (``mixed_precision``)
or its long option without the dashes (``amp``), with the value the flag takes (a list for a flag
of several values, true/false for a boolean); besides them, ``phases:`` and ``lr_points:`` describe
a multi-phase recipe (recipe.py). The file's values become the parser's defaults, so a flag given
on the command line overrides the file. Values are checked as the command line checks them (type
and choices); an unknown key is refused, naming the allowed ones.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["ConfigError", "RECIPE_KEYS", "load_config", "apply_config", "parse_args_with_config"]

RECIPE_KEYS = ("phases", "lr_points")
"""Keys that are not flags: the recipe's phases and learning-rate points, kept as read."""


class ConfigError(ValueError):
    """A config file that cannot be used; the message is one line naming the file."""


def _flag_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Key -> action for every optional flag, by dest and by long option name."""
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public list of its actions
        if not action.option_strings or action.dest in (argparse.SUPPRESS, "help", "config"):
            continue
        actions[action.dest] = action
        for option in action.option_strings:
            if option.startswith("--"):
                actions.setdefault(option[2:], action)
    return actions


def _convert_one(action: argparse.Action, item: Any) -> Any:
    """One value as the command line would have parsed it (same type function and choices)."""
    if isinstance(item, (dict, list)):
        raise ValueError(f"expected a single value, got {item!r}")
    if isinstance(item, bool) and action.type is None:
        # YAML reads off/on/no/yes unquoted as booleans: the word itself is lost
        raise ValueError(f"expected text, got the YAML boolean {str(item).lower()}; quote the word (\"off\")")
    value = action.type(str(item)) if callable(action.type) else (item if isinstance(item, str) else str(item))
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"invalid choice {item!r} (choose from {', '.join(map(str, action.choices))})")
    return value


def _convert(action: argparse.Action, value: Any) -> Any:
    if action.nargs == 0:  # store_true / store_false / store_const
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return action.const if value else action.default
    if value is None:
        if action.default is None:
            return None
        raise ValueError("a value is needed (null is not allowed here)")
    if action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 1):
        items = value if isinstance(value, list) else [value]
        if isinstance(action.nargs, int) and len(items) != action.nargs:
            raise ValueError(f"expected {action.nargs} values, got {len(items)}")
        if action.nargs == "+" and not items:
            raise ValueError("expected at least one value")
        return [_convert_one(action, item) for item in items]
    return _convert_one(action, value)


def load_config(path: str | os.PathLike, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a YAML config (yaml.safe_load) and check it against ``parser``'s flags.

    Returns {dest: value} with each flag value converted as the command line would convert it,
    plus ``phases`` and ``lr_points`` as read (recipe.Recipe checks them). ConfigError, one line
    naming the file, for an unreadable file, bad YAML, a file that is not a mapping, an unknown
    key (listing the allowed ones), a flag given twice (by two names) or a bad value.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as err:
        raise ConfigError(f"cannot read the config file {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must be a mapping of flag names to values, got a "
                          f"{type(raw).__name__}")
    actions = _flag_actions(parser)
    config: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in raw.items():
        key = str(key)
        if key in RECIPE_KEYS:
            config[key] = value
            continue
        action = actions.get(key)
        if action is None:
            allowed = sorted(set(actions) | set(RECIPE_KEYS))
            raise ConfigError(f"config file {path}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
        if action.dest in given_as:
            raise ConfigError(f"config file {path}: {key!r} and {given_as[action.dest]!r} set the same flag; "
                              f"keep one")
        given_as[action.dest] = key
        try:
            config[action.dest] = _convert(action, value)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as err:
            raise ConfigError(f"config file {path}: {key}: {' '.join(str(err).split())}") from err
    return config


def apply_config(parser: argparse.ArgumentParser, config: dict[str, Any]) -> None:
    """Make the config's values ``parser``'s defaults (command-line flags still override them)."""
    parser.set_defaults(**config)


def parse_args_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` as timm's train.py does: first only ``--config FILE``; the file's values
    then become ``parser``'s defaults, and the rest of ``argv`` is parsed with them, so the
    command line wins. The namespace always has ``config`` (the path or None), ``phases`` and
    ``lr_points`` (None without a config or without those keys). A bad file is a usage error
    of ``parser`` (``parser.error``: with the project's parser, one ``error:`` line and exit 2).
    """
    # the same parser class, so that its errors look the same; no abbreviations, so that a
    # prefix of another flag (--co ...) is never taken for --config
    pre = type(parser)(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, remaining = pre.parse_known_args(argv)
    parser.set_defaults(config=known.config, phases=None, lr_points=None)
    if known.config is not None:
        try:
            apply_config(parser, load_config(known.config, parser))
        except ConfigError as err:
            parser.error(str(err))
    return parser.parse_args(remaining)
