"""Training configs: YAML files merged over defaults, then ``key.sub=value`` overrides.

A config is a nested dict of plain values. ``merge_config(defaults, override)`` replaces leaves and
recurses into dicts; a key the defaults do not know raises ``ValueError`` (a typo must not silently
train with the default). Free-form sections (loader ``options``, ``model`` overrides) hold whatever
their consumer accepts and are replaced as a whole. Overrides like ``--set data.kind=nuscenes`` are
parsed with YAML, so ``true``, ``0.5``, ``[1, 2]`` and ``null`` become the values they look like.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import yaml

#: Keys whose value is free-form (loader options, model overrides): replaced whole, without key checks.
FREE_FORM_KEYS = ("options", "model")
#: Retired keys and what replaced them (named in the unknown-key error).
RETIRED_KEYS = {"kl_distillation": "loss.semantic_loss: kl"}


def merge_config(defaults: Mapping[str, Any], override: Optional[Mapping[str, Any]],
                 where: str = "") -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``defaults``.

    Args:
        defaults: the full set of known keys with their default values.
        override: values to replace (nested dicts merge recursively); None = nothing.
        where: dotted prefix used in error messages.
    Returns:
        A new dict.
    Raises:
        ValueError: ``override`` names a key absent from ``defaults`` (outside free-form sections).
    """
    merged = copy.deepcopy(dict(defaults))
    for key, value in (override or {}).items():
        name = f"{where}{key}"
        if key not in merged:
            if key in RETIRED_KEYS:
                raise ValueError(f"config key {name!r} was replaced by {RETIRED_KEYS[key]!r}")
            raise ValueError(f"unknown config key {name!r}; known here: {sorted(merged)}")
        if isinstance(merged[key], dict) and isinstance(value, Mapping) and key not in FREE_FORM_KEYS:
            merged[key] = merge_config(merged[key], value, f"{name}.")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml_config(path: Union[str, Path]) -> dict[str, Any]:
    """Load a YAML config file (a mapping at the top level)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, "r", encoding="utf-8") as handle:
        content = yaml.safe_load(handle) or {}
    if not isinstance(content, dict):
        raise ValueError(f"config file {path} must hold a mapping, got {type(content).__name__}")
    return content


def parse_overrides(assignments: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a": {"b": 1}, "c": ["x", "y"]}`` (values parsed as YAML)."""
    dotted: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {assignment!r} must look like key.subkey=value")
        dotted[key.strip()] = yaml.safe_load(text) if text.strip() else None
    return nest(dotted)


def build_config(defaults: Mapping[str, Any], files: Sequence[Union[str, Path]] = (),
                 overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults, then each YAML file in order, then ``key=value`` overrides."""
    config = copy.deepcopy(dict(defaults))
    for path in files:
        config = merge_config(config, read_yaml_config(path))
    return merge_config(config, parse_overrides(overrides))


def nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "c": 2}`` -> ``{"a": {"b": 1}, "c": 2}``."""
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"config key {key!r} conflicts with a value given for {part!r}")
        node[parts[-1]] = value
    return nested


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` (repeatable, applied in order) and ``--set key.sub=value`` (repeatable)."""
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="config file(s) merged over the defaults, in order")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override any config value, e.g. --set loss.temperature=0.07 (YAML value)")


def config_from_args(defaults: Mapping[str, Any], args: argparse.Namespace,
                     flags: Mapping[str, str]) -> dict[str, Any]:
    """Defaults <- ``--config`` files <- explicit flags <- ``--set`` overrides.

    Args:
        defaults: the command's default config.
        args: parsed arguments (with ``config`` and ``overrides`` from :func:`add_config_arguments`).
        flags: argparse destination -> dotted config key; flags left at None are not applied.
    """
    config = build_config(defaults, args.config)
    explicit = {key: getattr(args, dest) for dest, key in flags.items() if getattr(args, dest) is not None}
    config = merge_config(config, nest(explicit))
    return merge_config(config, parse_overrides(args.overrides))
