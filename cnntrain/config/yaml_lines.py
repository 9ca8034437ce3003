"""YAML loading that remembers line numbers, so errors can point into the file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cnntrain.errors import ConfigError


class LineDict(dict):
    """A mapping from a YAML file that knows its own line and each key's line."""

    line: int | None = None
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int | None:
        return getattr(self, "key_lines", {}).get(key, self.line)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are LineDicts (it never builds arbitrary objects)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise ConfigError(f"keys must be names, got {key!r}", line=key_node.start_mark.line + 1)
        if key in result:
            raise ConfigError(f"duplicate key '{key}'", line=key_node.start_mark.line + 1)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_text(text: str, file: str) -> Any:
    """Parse YAML text; syntax errors become one-line ConfigErrors with the line."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except ConfigError as err:
        raise ConfigError(err.message, file=file, line=err.line) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        problem = (err.problem or err.context or "invalid YAML").strip()
        raise ConfigError(f"invalid YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML: {str(err).splitlines()[0]}", file=file) from None
    except RecursionError:  # PyYAML parses and builds nested collections recursively
        raise ConfigError("invalid YAML: nested too deeply", file=file) from None
    except ValueError as err:
        # Python refuses to convert integers of more than 4300 digits (and PyYAML builds
        # numbers and dates with int()); say so without Python's own advice.
        reason = ("a number has too many digits" if "digits" in str(err)
                  else f"a value cannot be read: {str(err).splitlines()[0]}")
        raise ConfigError(f"invalid YAML: {reason}", file=file) from None


def load_yaml_file(path: Path) -> Any:
    """Read and parse a YAML file, with one-line errors for unreadable files."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", file=str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text (byte {err.start})", file=str(path)) from None
    return load_yaml_text(text, str(path))
