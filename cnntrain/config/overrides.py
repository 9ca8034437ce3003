"""``--set a.b=value`` overrides, applied to the parsed YAML before validation.

A path walks mappings by key and lists by index or, for lists of named items such as
``net.layer``, by name: ``net.layer.conv1.convolution_param.num_output=64`` sets the
field in every layer called ``conv1`` (both Data layers of a TRAIN/TEST pair share a
name, so ``net.layer.cifar.data_param.batch_size=10`` sets both). Values are YAML:
``0.01``, ``1e-3``, ``true``, ``[4000, 6000]``, ``{type: gaussian, std: 0.01}``; an
empty value (``a.b=``) removes the field, so its default applies. Missing mappings
along the path are created; the validator then checks the result like any config,
so a misspelt last key gets the usual "unknown field (did you mean ...)" error.
The overridden config is what the run records in ``runs/<name>/config.yaml``.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from cnntrain.errors import ConfigError

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_value(text: str) -> Any:
    """A YAML value, with ``1e-3`` read as a number (YAML 1.1 wants ``1.0e-3``)."""
    if text.strip() == "":
        return None
    if _NUMBER.match(text.strip()):
        number = float(text)
        return int(text) if re.fullmatch(r"[-+]?\d+", text.strip()) else number
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else "invalid YAML"
        raise ValueError(f"the value is not valid YAML ({first})") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=v"`` → (["a", "b"], v)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected PATH=VALUE, e.g. solver.base_lr=0.01")
    path, _, value = text.partition("=")
    keys = path.strip().split(".")
    if not path.strip() or any(not k.strip() for k in keys):
        raise ConfigError(f"--set {text}: the path '{path}' has an empty part")
    try:
        return [k.strip() for k in keys], parse_value(value)
    except ValueError as err:
        raise ConfigError(f"--set {text}: {err}") from None


def _label(item: Any, index: int) -> str:
    return str(item.get("name", index)) if isinstance(item, dict) else str(index)


def _children(node: Any, key: str, where: str, text: str, create: bool) -> list[tuple[Any, Any]]:
    """(container, key-or-index) pairs that ``key`` names inside ``node``."""
    if isinstance(node, dict):
        if key not in node and create:
            node[key] = {}
        return [(node, key)]
    if isinstance(node, list):
        if re.fullmatch(r"-?\d+", key):
            i = int(key)
            if not -len(node) <= i < len(node):
                raise ConfigError(f"--set {text}: '{where}' has {len(node)} items, no index {i}")
            return [(node, i)]
        named = [(node, i) for i, item in enumerate(node)
                 if isinstance(item, dict) and item.get("name") == key]
        if not named:
            names = ", ".join(_label(item, i) for i, item in enumerate(node))
            raise ConfigError(f"--set {text}: no item named '{key}' in '{where}' "
                              f"(there are: {names})")
        return named
    kind = "text" if isinstance(node, str) else "a value"
    raise ConfigError(f"--set {text}: '{where}' is {kind} ({node!r}), not a mapping or list")


def apply_overrides(raw: Any, overrides: Sequence[str]) -> Any:
    """A copy of ``raw`` (the parsed YAML) with each ``PATH=VALUE`` applied in order."""
    raw = copy.deepcopy(raw)
    if not overrides:
        return raw
    if not isinstance(raw, dict):
        raise ConfigError("--set needs a config that is a mapping")
    for text in overrides:
        keys, value = parse_override(text)
        nodes: list[tuple[Any, Any]] = [(None, None)]
        current = [raw]
        for depth, key in enumerate(keys):
            where = ".".join(keys[:depth]) or "the config"
            last = depth == len(keys) - 1
            nodes = [pair for node in current
                     for pair in _children(node, key, where, text, create=not last)]
            if not last:
                current = [container[k] for container, k in nodes]
        for container, k in nodes:
            if value is None and isinstance(container, dict):
                container.pop(k, None)
            else:
                container[k] = value
    return raw


def load_experiment_with(path: str | Path, overrides: Sequence[str] = ()):
    """:func:`cnntrain.config.load_experiment` with ``--set`` overrides applied first.

    A net kept in its own file (``net: file.yaml``) is read in when an override
    reaches into it, so the run's config then holds it inline.
    """
    from cnntrain.config.validate import parse_experiment
    from cnntrain.config.yaml_lines import load_yaml_file

    path = Path(path)
    raw = load_yaml_file(path)
    if overrides and isinstance(raw, dict) and isinstance(raw.get("net"), str) and any(
            o.strip().startswith("net.") for o in overrides):
        net_path = path.parent / raw["net"]
        if net_path.is_file():
            net_raw = load_yaml_file(net_path)
            if isinstance(net_raw, dict) and set(net_raw) == {"net"}:
                net_raw = net_raw["net"]
            raw["net"] = net_raw
    raw = apply_overrides(raw, overrides)
    try:
        return parse_experiment(raw, str(path), path.parent, path.stem)
    except ConfigError as err:
        culprit = _override_behind(err, overrides)
        if culprit is None:
            raise
        # The value came from the command line: a line of the file would mislead.
        raise ConfigError(err.message, file=f"--set {culprit}", layer=err.layer,
                          field=err.field) from None


def _override_behind(err: ConfigError, overrides: Sequence[str]) -> str | None:
    """The ``--set`` argument that wrote the field ``err`` is about (the last one, as
    later overrides win), or None when the error is about the file's own text."""
    if not err.field:
        return None
    for text in reversed(overrides):
        keys, _ = parse_override(text)
        if keys[:2] == ["net", "layer"] and len(keys) > 2:
            if err.layer != keys[2]:
                continue
            path = ".".join(keys[3:])
        elif err.layer is None:
            path = ".".join(keys)
        else:
            continue
        if not path or err.field == path or err.field.startswith(path + "."):
            return text
    return None
