"""Validated, immutable descriptions of an experiment: what the rest of the code reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnntrain.errors import ConfigError


class Block(dict):
    """A validated ``*_param`` block: a dict with attribute access and defaults filled in."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


@dataclass(frozen=True)
class Where:
    """Where a thing was written, for error messages."""

    file: str | None
    line: int | None = None
    key_lines: dict[str, int] = field(default_factory=dict)

    def error(self, message: str, *, layer: str | None = None, field_name: str | None = None,
              ) -> ConfigError:
        top = field_name.split(".")[0] if field_name else None
        line = self.key_lines.get(top, self.line) if top else self.line
        return ConfigError(message, file=self.file, line=line, layer=layer, field=field_name)


@dataclass(frozen=True)
class ParamSpec:
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    name: str | None = None
    freeze_iter: int | None = None


@dataclass(frozen=True)
class LayerSpec:
    name: str
    type: str
    bottom: tuple[str, ...]
    top: tuple[str, ...]
    param_specs: tuple[ParamSpec, ...]
    include: tuple[str, ...]          # phases the layer is in (empty: all)
    exclude: tuple[str, ...]
    loss_weight: tuple[float, ...] | None
    propagate_down: tuple[bool, ...] | None
    blocks: dict[str, Block]
    where: Where

    def in_phase(self, phase: str) -> bool:
        if self.include and phase not in self.include:
            return False
        return phase not in self.exclude

    def error(self, message: str, field_name: str | None = None) -> ConfigError:
        return self.where.error(message, layer=self.name, field_name=field_name)


@dataclass(frozen=True)
class NetSpec:
    name: str
    layers: tuple[LayerSpec, ...]
    where: Where


@dataclass(frozen=True)
class SolverSpec:
    values: Block
    where: Where

    def __getattr__(self, key: str) -> Any:
        return self.values[key]


@dataclass(frozen=True)
class ExperimentSpec:
    """A whole config file: run name, net, solver, and the text it came from."""

    name: str
    net: NetSpec
    solver: SolverSpec
    text: str          # the resolved config as YAML, net inline: stored in snapshots
    file: str
    logging: Block = field(default_factory=Block)   # the top-level ``logging`` block
