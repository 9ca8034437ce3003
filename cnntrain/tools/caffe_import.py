"""Caffe nets and solvers (``.prototxt``) → a cnntrain YAML config; ``.caffemodel.h5``
or binary ``.caffemodel`` weights → a cnntrain snapshot.

Nothing is dropped silently: every field or layer that has no cnntrain equivalent is
collected as *unsupported* (the command prints them and writes them as comments at
the top of the YAML), and every change of form (an LMDB source that becomes
``dataset: cifar10``, ``mean_file`` that becomes ``mean_image: true``) as a *note*.
Fields that only tune Caffe's machinery (``backend: LMDB``, ``engine: CUDNN``,
``prefetch``) are dropped without a word.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cnntrain.config import schema
from cnntrain.errors import ConfigError, SnapshotError
from cnntrain.tools.prototxt import Ident, Message, read_prototxt

# Fields that only tune how Caffe runs, not what it computes.
IGNORED_FIELDS = {"engine", "backend", "prefetch"}
LAYER_LEVEL = {"name", "type", "bottom", "top", "param", "include", "exclude", "loss_weight",
               "propagate_down"}
DATA_SOURCES = (("cifar100", re.compile(r"cifar[-_]?100", re.I)),
                ("cifar10", re.compile(r"cifar[-_]?10(?!\d)", re.I)))
SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}
# Solver fields that name files or hardware: what happens to them instead.
SOLVER_NOTES = {
    "net": "net {v!r}: the net given on the command line is used",
    "train_net": "train_net {v!r}: the net given on the command line is used",
    "snapshot_prefix": "snapshot_prefix {v!r}: cnntrain writes snapshots to "
                       "runs/<name>/snapshots/iter_N.h5",
    "solver_mode": "solver_mode {v}: cnntrain runs on the CPU",
    "device_id": "device_id {v}: cnntrain runs on the CPU",
    "snapshot_format": "snapshot_format {v}: cnntrain snapshots are always HDF5",
    "debug_info": "debug_info {v}: not used",
    "test_compute_loss": "test_compute_loss {v}: cnntrain always reports the test loss",
    "layer_wise_reduce": "layer_wise_reduce {v}: not used (no multi-GPU)",
}
# Solver fields copied as they are (after type checks by the schema).
SOLVER_FIELDS = ("base_lr", "lr_policy", "gamma", "power", "stepsize", "stepvalue", "momentum",
                 "momentum2", "rms_decay", "delta", "weight_decay", "regularization_type",
                 "clip_gradients", "iter_size", "max_iter", "display", "average_loss",
                 "test_iter", "test_interval", "test_initialization", "snapshot",
                 "snapshot_after_train", "random_seed")


class CaffeImportError(ConfigError):
    """The prototxt cannot be imported as asked (exit code 2)."""


@dataclass
class Report:
    """What did not come across (unsupported) and how things were mapped (notes)."""

    unsupported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unsupported_types: list[tuple[str, str, int]] = field(default_factory=list)  # type, name, line

    def drop(self, where: str, what: str) -> None:
        self.unsupported.append(f"{where}: {what}")

    def note(self, where: str, what: str) -> None:
        self.notes.append(f"{where}: {what}")


@dataclass
class ImportResult:
    config: dict            # name, net, solver: what the YAML holds
    yaml_text: str
    report: Report


# ----------------------------------------------------------------------------- values
def _where(file: str, msg: Message, key: str | None = None) -> str:
    return f"{file}:{msg.line_of(key) if key else msg.line}"


def _plain(value: Any) -> Any:
    """Idents become plain strings (YAML output must not hold the subclass)."""
    if isinstance(value, Ident):
        return str(value)
    return value


def _fmt(values: list[Any]) -> str:
    shown = [_show(v) for v in values]
    return shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"


def _show(value: Any) -> str:
    if isinstance(value, Message):
        inner = " ".join(f"{k}: {_show(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{ }"
    if isinstance(value, str) and not isinstance(value, Ident):
        return f'"{value}"'
    return str(value)


class _Bad(Exception):
    """A value that does not fit the field's type."""


def _scalar(kind: str, value: Any) -> Any:
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer, got {_show(value)}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(f"expected a number, got {_show(value)}")
        return value
    if kind == "bool":
        if isinstance(value, Ident) and value.lower() in ("true", "t"):
            return True
        if isinstance(value, Ident) and value.lower() in ("false", "f"):
            return False
        if isinstance(value, int) and value in (0, 1) and not isinstance(value, bool):
            return bool(value)
        raise _Bad(f"expected true or false, got {_show(value)}")
    if kind in ("enum", "str"):
        if isinstance(value, (str, Ident)):
            return str(value)
        raise _Bad(f"expected a name, got {_show(value)}")
    raise AssertionError(kind)


def _convert(spec: schema.Field, values: list[Any]) -> Any:
    """Caffe values of one field → the YAML value for a field of the cnntrain schema."""
    if spec.kind in ("ints", "floats"):
        items = [_scalar(spec.kind[:-1], v) for v in values]
        return items[0] if len(items) == 1 else items
    if spec.kind in ("int", "float", "bool", "enum", "str"):
        if any(isinstance(v, Message) for v in values):
            raise _Bad("expected a value, got a message")
        value = _scalar(spec.kind, values[-1])
        if spec.kind == "enum" and value not in spec.choices:
            raise _Bad(f"{value} is not one of {', '.join(spec.choices)}")
        return value
    raise AssertionError(spec.kind)


# ----------------------------------------------------------------------------- layers
class _LayerConverter:
    def __init__(self, file: str, report: Report):
        self.file, self.report = file, report

    def block(self, layer: str, block_name: str, msg: Any, fields: dict[str, schema.Field],
              prefix: str | None = None) -> dict:
        """Map one ``*_param`` message field by field through the schema."""
        prefix = prefix or block_name
        out: dict[str, Any] = {}
        if not isinstance(msg, Message):
            self.report.drop(f"{self.file}", f"layer '{layer}': {prefix} must be a message, "
                                             f"got {_show(msg)}")
            return out
        for key in msg.keys():
            values = msg.all(key)
            where = _where(self.file, msg, key)
            if key in IGNORED_FIELDS:
                continue
            handled = self.special(layer, block_name, key, values, out, where)
            if handled:
                continue
            spec = fields.get(key)
            if spec is None:
                self.report.drop(where, f"layer '{layer}': {prefix}.{key}: {_fmt(values)} "
                                        "(cnntrain has no such field)")
                continue
            if spec.kind == "filler":
                filler = self.filler(layer, f"{prefix}.{key}", values[-1], where)
                if filler is not None:
                    out[key] = filler
                continue
            if spec.kind == "shape":
                out[key] = [{"dim": [_scalar("int", d) for d in s.all("dim")]}
                            for s in values if isinstance(s, Message)]
                continue
            try:
                out[key] = _convert(spec, values)
            except _Bad as err:
                self.report.drop(where, f"layer '{layer}': {prefix}.{key}: {err}")
        return out

    def filler(self, layer: str, name: str, msg: Any, where: str) -> dict | None:
        if not isinstance(msg, Message):
            self.report.drop(where, f"layer '{layer}': {name} must be a message")
            return None
        kind = str(msg.get("type", "constant"))
        if kind not in schema.FILLER["type"].choices:
            self.report.drop(where, f"layer '{layer}': {name}: filler type '{kind}' (cnntrain "
                                    f"has {', '.join(schema.FILLER['type'].choices)}); the "
                                    "default filler is used")
            return None
        out: dict[str, Any] = {}
        for key in msg.keys():
            values = msg.all(key)
            if key == "sparse" and values[-1] in (-1,):
                continue
            spec = schema.FILLER.get(key)
            if spec is None:
                self.report.drop(_where(self.file, msg, key),
                                 f"layer '{layer}': {name}.{key}: {_fmt(values)} "
                                 "(cnntrain has no such filler field)")
                continue
            try:
                out[key] = _convert(spec, values)
            except _Bad as err:
                self.report.drop(_where(self.file, msg, key),
                                 f"layer '{layer}': {name}.{key}: {err}")
        return out

    def special(self, layer: str, block: str, key: str, values: list[Any], out: dict,
                where: str) -> bool:
        """Caffe fields with no cnntrain twin that are harmless at their default values,
        or that map to a differently named field."""
        last = values[-1]
        defaults = {("convolution_param", "axis"): 1,
                    ("convolution_param", "force_nd_im2col"): "false",
                    ("inner_product_param", "transpose"): "false",
                    ("dropout_param", "scale_train"): "true"}
        if (block, key) in defaults:
            if all(str(v).lower() == str(defaults[(block, key)]).lower() for v in values):
                return True
            self.report.drop(where, f"layer '{layer}': {block}.{key}: {_fmt(values)} "
                                    "(cnntrain supports only "
                                    f"{key}: {defaults[(block, key)]})")
            return True
        if block == "loss_param" and key == "normalize":
            try:
                normalize = _scalar("bool", last)
            except _Bad as err:
                self.report.drop(where, f"layer '{layer}': loss_param.normalize: {err}")
                return True
            out.setdefault("normalization", "VALID" if normalize else "BATCH_SIZE")
            self.report.note(where, f"layer '{layer}': loss_param.normalize: {_show(last)} → "
                                    f"normalization: {out['normalization']}")
            return True
        return False

    def data_layer(self, msg: Message, out: dict, phase: str | None) -> None:
        layer = out["name"]
        dp = msg.get("data_param")
        data: dict[str, Any] = {}
        if isinstance(dp, Message):
            source = dp.get("source")
            if source is not None:
                found = next((name for name, pattern in DATA_SOURCES
                              if pattern.search(str(source))), None)
                if found:
                    data["dataset"] = found
                    self.report.note(_where(self.file, dp, "source"),
                                     f"layer '{layer}': data_param.source \"{source}\" → "
                                     f"dataset: {found}")
                else:
                    self.report.drop(_where(self.file, dp, "source"),
                                     f"layer '{layer}': data_param.source \"{source}\" is not "
                                     "CIFAR-10/100: set data_param.dataset by hand")
            split = phase.lower() if phase else None
            if split is None and source is not None:
                split = "test" if re.search(r"test|val", str(source), re.I) else "train"
            if "dataset" in data:
                data["split"] = split or "train"
                if data["split"] == "train" and phase != "TEST":
                    self.report.note(_where(self.file, msg), f"layer '{layer}': Caffe reads "
                                     "the database in its stored order; cnntrain shuffles the "
                                     "TRAIN split every epoch (data_param.shuffle: false "
                                     "reads it in order)")
            for key in dp.keys():
                values = dp.all(key)
                if key in ("source",) or key in IGNORED_FIELDS:
                    continue
                if key == "batch_size":
                    try:
                        data["batch_size"] = _convert(
                            schema.PARAM_BLOCKS["data_param"]["batch_size"], values)
                    except _Bad as err:
                        self.report.drop(_where(self.file, dp, key),
                                         f"layer '{layer}': data_param.batch_size: {err}")
                elif key == "rand_skip" and values[-1] == 0:
                    continue
                else:
                    self.report.drop(_where(self.file, dp, key),
                                     f"layer '{layer}': data_param.{key}: {_fmt(values)}")
        elif dp is not None:
            self.report.drop(_where(self.file, msg, "data_param"),
                             f"layer '{layer}': data_param must be a message")
        out["data_param"] = data
        tp = msg.get("transform_param")
        if isinstance(tp, Message):
            transform: dict[str, Any] = {}
            fields = schema.PARAM_BLOCKS["transform_param"]
            for key in tp.keys():
                values = tp.all(key)
                where = _where(self.file, tp, key)
                if key == "mean_file":
                    transform["mean_image"] = True
                    self.report.note(where, f"layer '{layer}': transform_param.mean_file "
                                            f"\"{values[-1]}\" → mean_image: true (the training "
                                            "split's per-pixel mean, computed by cnntrain)")
                elif key in ("scale", "mirror", "crop_size", "mean_value"):
                    try:
                        transform[key] = _convert(fields[key], values)
                    except _Bad as err:
                        self.report.drop(where, f"layer '{layer}': transform_param.{key}: {err}")
                else:
                    self.report.drop(where, f"layer '{layer}': transform_param.{key}: "
                                            f"{_fmt(values)}")
            if transform.get("mean_image") and "mean_value" in transform:
                raise CaffeImportError("transform_param sets both mean_file and mean_value; "
                                       "Caffe refuses that too: keep one", file=self.file,
                                       line=tp.line, layer=layer)
            if transform:
                out["transform_param"] = transform

    def layer(self, msg: Message, index: int, known_types) -> dict | None:
        """One ``layer { }`` → a layer mapping, or None for an unsupported type."""
        name = msg.get("name")
        kind = msg.get("type")
        if not isinstance(name, str):
            raise CaffeImportError(f"layer #{index + 1} has no name", file=self.file,
                                   line=msg.line)
        name = str(name)
        if not isinstance(kind, str):
            raise CaffeImportError("has no type", file=self.file, line=msg.line, layer=name)
        kind = str(kind)
        if kind not in known_types:
            self.report.unsupported_types.append((kind, name, msg.line))
            return None
        cls = known_types[kind]
        out: dict[str, Any] = {"name": name, "type": kind}
        for key in ("bottom", "top"):
            blobs = [str(b) for b in msg.all(key)]
            if blobs:
                out[key] = blobs[0] if len(blobs) == 1 else blobs
        params = [self.block(name, "param", p, schema.PARAM_SPEC) for p in msg.all("param")]
        if params:
            out["param"] = params
        phase = None
        for rule_key in ("include", "exclude"):
            rules = []
            for rule in msg.all(rule_key):
                if not isinstance(rule, Message):
                    continue
                for key in rule.keys():
                    if key != "phase":
                        self.report.drop(_where(self.file, rule, key),
                                         f"layer '{name}': {rule_key}.{key}: "
                                         f"{_fmt(rule.all(key))} (cnntrain selects by phase only)")
                if "phase" in rule:
                    rules.append({"phase": str(rule.get("phase"))})
            if rules:
                out[rule_key] = rules[0] if len(rules) == 1 else rules
                if rule_key == "include" and len(rules) == 1:
                    phase = rules[0]["phase"]
        for key in ("loss_weight", "propagate_down"):
            values = msg.all(key)
            if values:
                try:
                    items = [_scalar("float" if key == "loss_weight" else "bool", v)
                             for v in values]
                    out[key] = items[0] if key == "loss_weight" and len(items) == 1 else items
                except _Bad as err:
                    self.report.drop(_where(self.file, msg, key), f"layer '{name}': {key}: {err}")
        if kind == "Data":
            self.data_layer(msg, out, phase)
        allowed = set(cls.param_blocks)
        if cls.param_blocks and cls.is_loss:
            allowed.add("loss_param")
        for key in msg.keys():
            if key in LAYER_LEVEL or (kind == "Data" and key in ("data_param", "transform_param")):
                continue
            where = _where(self.file, msg, key)
            if key == "blobs":
                self.report.drop(where, f"layer '{name}': blobs (weights written in the "
                                        "prototxt; load weights with --weights)")
            elif key.endswith("_param") and key in allowed:
                block = self.block(name, key, msg.get(key), schema.PARAM_BLOCKS[key])
                if block:
                    out[key] = block
                if "weight_filler" in schema.PARAM_BLOCKS[key] and "weight_filler" not in block:
                    self.report.note(where, f"layer '{name}': no weight_filler: Caffe would "
                                            "fill constant 0, cnntrain's default is xavier")
            elif key.endswith("_param") and isinstance(msg.get(key), Message) and all(
                    k in IGNORED_FIELDS for k in msg.get(key).keys()):
                continue  # e.g. relu_param { engine: CUDNN } on a layer with no block
            else:
                self.report.drop(where, f"layer '{name}': {key}: {_fmt(msg.all(key))}"
                                        + (f" ({kind} in cnntrain reads "
                                           f"{', '.join(sorted(allowed)) or 'no *_param block'})"
                                           if key.endswith("_param") else ""))
        return out


def _deploy_input(net: Message, file: str, taken: set[str]) -> dict | None:
    """Old-style deploy headers: ``input: "data"`` with ``input_shape``/``input_dim``."""
    names = [str(v) for v in net.all("input")]
    if not names:
        return None
    shapes = [[int(d) for d in s.all("dim")] for s in net.all("input_shape")
              if isinstance(s, Message)]
    dims = [int(d) for d in net.all("input_dim")]
    if not shapes and dims:
        if len(dims) != 4 * len(names):
            raise CaffeImportError(f"{len(dims)} input_dim values for {len(names)} input(s): "
                               "expected 4 per input", file=file, line=net.line_of("input_dim"))
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(names))]
    if len(shapes) not in (1, len(names)):
        raise CaffeImportError(f"{len(shapes)} input_shape(s) for {len(names)} input(s)",
                           file=file, line=net.line_of("input_shape"))
    name = "input" if "input" not in taken else "input_data"
    return {"name": name, "type": "Input", "top": names[0] if len(names) == 1 else names,
            "input_param": {"shape": [{"dim": s} for s in shapes]}}


def convert_net(net: Message, file: str, report: Report, *, skip_unsupported: bool) -> dict:
    from cnntrain.layers import LAYER_TYPES

    if "layers" in net:
        raise CaffeImportError("uses the legacy V1 'layers { }' syntax (Caffe before 2015, with "
                           "enum types such as CONVOLUTION); upgrade it first with Caffe's "
                           "tools/upgrade_net_proto_text, or rename 'layers' to 'layer' and "
                           "write the types as strings (\"Convolution\")",
                           file=file, line=net.line_of("layers"))
    converter = _LayerConverter(file, report)
    layers: list[dict] = []
    alias: dict[str, str] = {}   # tops of skipped one-in-one-out layers → their bottom
    skipped: list[str] = []
    raw_layers = net.all("layer")
    taken = {str(m.get("name")) for m in raw_layers if isinstance(m, Message)}
    header = _deploy_input(net, file, taken)
    if header:
        layers.append(header)
    for i, msg in enumerate(raw_layers):
        if not isinstance(msg, Message):
            raise CaffeImportError("'layer' must be a message", file=file,
                                   line=net.line_of("layer"))
        converted = converter.layer(msg, i, LAYER_TYPES)
        bottoms = [alias.get(str(b), str(b)) for b in msg.all("bottom")]
        tops = [str(t) for t in msg.all("top")]
        if converted is None:
            what = f"{file}:{msg.line}: layer '{msg.get('name')}' ({msg.get('type')}) skipped"
            if len(bottoms) == 1 and len(tops) == 1:
                if tops[0] != bottoms[0]:
                    alias[tops[0]] = bottoms[0]
                skipped.append(f"{what}: its consumers read '{bottoms[0]}' instead of "
                               f"'{tops[0]}'")
            else:
                skipped.append(f"{what}: its tops {', '.join(tops)} are produced by nothing")
            continue
        if bottoms:
            converted["bottom"] = bottoms[0] if len(bottoms) == 1 else bottoms
        for t in tops:
            alias.pop(t, None)  # a new producer of that name
        layers.append(converted)
    for key in net.keys():
        if key in ("name", "layer", "input", "input_shape", "input_dim"):
            continue
        report.drop(_where(file, net, key), f"net field {key}: {_fmt(net.all(key))}")
    if report.unsupported_types and not skip_unsupported:
        where: dict[str, list[str]] = {}
        for kind, layer, line in report.unsupported_types:
            where.setdefault(kind, []).append(f"{layer} at line {line}")
        listed = "; ".join(f"{kind} ({', '.join(places)})" for kind, places in where.items())
        raise CaffeImportError(f"layer types cnntrain does not have: {listed}; pass "
                               "--skip-unsupported to leave them out (a one-in one-out "
                               "layer is bypassed)", file=file)
    for kind, name, line in report.unsupported_types:
        report.unsupported.append(f"{file}:{line}: layer '{name}': type {kind} (cnntrain has "
                                  "no such layer type)")
    report.notes.extend(skipped)
    if not layers:
        raise CaffeImportError("holds no layers", file=file)
    name = net.get("name")
    return {"name": str(name) if name is not None else "net", "layer": layers}


def convert_solver(msg: Message, file: str, report: Report) -> dict:
    out: dict[str, Any] = {}
    kind = "SGD"
    if "type" in msg or "solver_type" in msg:
        key = "type" if "type" in msg else "solver_type"
        given = str(msg.get(key))
        kind = SOLVER_TYPES.get(given.upper())
        if kind is None:
            raise CaffeImportError(f"solver {key} '{given}' is not one of "
                               f"{', '.join(SOLVER_TYPES.values())}", file=file,
                               line=msg.line_of(key))
        if "type" in msg and "solver_type" in msg:
            report.note(_where(file, msg, "solver_type"), "solver_type: type is used instead")
    out["type"] = kind
    from cnntrain.solvers import SOLVERS

    rule_fields = {f for cls in SOLVERS.values() for f in cls.uses}
    for key in msg.keys():
        values = msg.all(key)
        where = _where(file, msg, key)
        if key in ("type", "solver_type"):
            continue
        if key in SOLVER_NOTES:
            report.note(where, SOLVER_NOTES[key].format(v=_plain(values[-1])))
            continue
        if key not in SOLVER_FIELDS:
            report.drop(where, f"solver.{key}: {_fmt(values)} (cnntrain has no such field)")
            continue
        if key in rule_fields and key not in SOLVERS[kind].uses:
            report.drop(where, f"solver.{key}: {_fmt(values)} (not read by the {kind} solver)")
            continue
        spec = schema.SOLVER[key]
        try:
            if key == "test_iter":
                items = [_scalar("int", v) for v in values]
                if len(items) > 1:
                    report.drop(where, f"solver.test_iter: {_fmt(values)}: cnntrain has one "
                                       f"test net; test_iter {items[0]} is used")
                value = items[0]
            elif key == "random_seed" and values[-1] == -1:
                report.note(where, "random_seed: -1 (a random seed each run): cnntrain always "
                                   "seeds; the default seed 1 is used")
                continue
            elif key == "clip_gradients" and isinstance(values[-1], (int, float)) \
                    and values[-1] < 0:
                continue  # Caffe's -1: off, as cnntrain's default 0
            else:
                value = _convert(spec, values)
                if key == "stepvalue" and not isinstance(value, list):
                    value = [value]
        except _Bad as err:
            report.drop(where, f"solver.{key}: {err}")
            continue
        out[key] = value
    order = list(schema.SOLVER)
    return {key: out[key] for key in sorted(out, key=order.index)}


# ----------------------------------------------------------------------------- YAML
def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10 ** 9, sort_keys=False,
                          allow_unicode=True).strip()
    if text.endswith("\n..."):
        text = text[:-4].strip()
    elif text.endswith("..."):
        text = text[:-3].strip()
    return text


def _is_flat(value: Any) -> bool:
    if isinstance(value, dict):
        return all(not isinstance(v, (dict, list)) or (isinstance(v, list) and all(
            not isinstance(i, (dict, list)) for i in v)) for v in value.values())
    return True


def _mapping_lines(mapping: dict, indent: str, flow_width: int = 88) -> list[str]:
    """Block-style ``key: value`` lines; small flat values stay on one line."""
    lines = []
    for key, value in mapping.items():
        one = f"{indent}{key}: {_flow(value)}"
        if not isinstance(value, dict) or (_is_flat(value) and len(one) <= flow_width):
            lines.append(one)
        else:
            lines.append(f"{indent}{key}:")
            lines += _mapping_lines(value, indent + "  ", flow_width)
    return lines


def to_yaml(config: dict, header: list[str]) -> str:
    lines = [f"# {h}" if h else "#" for h in header]
    lines.append(f"name: {_flow(config['name'])}")
    lines.append("net:")
    lines.append(f"  name: {_flow(config['net']['name'])}")
    lines.append("  layer:")
    for layer in config["net"]["layer"]:
        body = _mapping_lines(layer, "      ")
        body[0] = "    - " + body[0].lstrip()
        lines += body
    if "solver" in config:
        lines.append("solver:")
        lines += _mapping_lines(config["solver"], "  ")
    return "\n".join(lines) + "\n"


def _header(sources: list[str], report: Report, placeholder_solver: bool) -> list[str]:
    head = [f"Imported from {' and '.join(sources)} by cnntrain import-prototxt."]
    if placeholder_solver:
        head.append("No solver prototxt was given: the solver below is a placeholder to edit.")
    if report.unsupported:
        head += ["", "NOT IMPORTED (no cnntrain equivalent; check the net still means what "
                     "you want):"]
        head += [f"  - {line}" for line in report.unsupported]
    if report.notes:
        head += ["", "Notes:"]
        head += [f"  - {line}" for line in report.notes]
    return head


def import_caffe(net_path: str | Path, solver_path: str | Path | None = None, *,
                 name: str | None = None, skip_unsupported: bool = False) -> ImportResult:
    """Read a Caffe net prototxt (and optionally its solver) into a cnntrain config."""
    report = Report()
    net_file = str(net_path)
    net = convert_net(read_prototxt(net_path), net_file, report,
                      skip_unsupported=skip_unsupported)
    sources = [Path(net_file).name]
    if solver_path is not None:
        solver = convert_solver(read_prototxt(solver_path), str(solver_path), report)
        sources.append(Path(solver_path).name)
    else:
        solver = {"type": "SGD", "base_lr": 0.01, "max_iter": 10000}
    run_name = name or re.sub(r"[^\w.-]+", "_", net["name"]).strip("._") or "net"
    config = {"name": run_name, "net": net, "solver": solver}
    text = to_yaml(config, _header(sources, report, solver_path is None))
    return ImportResult(config, text, report)


def validate(result: ImportResult, source: str):
    """The imported config as cnntrain reads it (raises its ConfigError if invalid)."""
    from cnntrain.config import experiment_from_text

    return experiment_from_text(result.yaml_text, source)


# ----------------------------------------------------------------------------- weights
def read_caffemodel_h5(path: str | Path) -> dict[tuple[str, int], np.ndarray]:
    """``data/<layer>/<i>`` arrays of a Caffe HDF5 model (``.caffemodel.h5``)."""
    from cnntrain.snapshot import load_snapshot

    return load_snapshot(path).weights


def read_caffe_weights(path: str | Path) -> dict[tuple[str, int], np.ndarray]:
    """The weights of a Caffe model by (layer, blob index): a ``.caffemodel.h5`` (told
    by HDF5's signature) or a binary ``.caffemodel`` (:mod:`cnntrain.tools.caffemodel`)."""
    from cnntrain.tools.caffemodel import is_hdf5, read_caffemodel

    path = Path(path)
    if not path.is_file():
        raise SnapshotError(f"weights file {path} not found")
    try:
        hdf5 = is_hdf5(path)
    except OSError as err:
        from cnntrain.errors import os_error_reason

        raise SnapshotError(f"cannot read {path}: {os_error_reason(err)}") from None
    return read_caffemodel_h5(path) if hdf5 else read_caffemodel(path)


def _check_blob_counts(net, weights, path) -> None:
    """A layer the file has weights for must have all of them: a convolution whose bias
    is missing would otherwise keep its initial bias without a word."""
    in_file: dict[str, set[int]] = {}
    for layer, i in weights:
        in_file.setdefault(layer, set()).add(i)
    wanted: dict[str, list[int]] = {}
    for layer, i, _ in net.param_keys:
        wanted.setdefault(layer, []).append(i)
    for layer, indices in wanted.items():
        have = in_file.get(layer)
        if not have:
            continue
        missing = [i for i in indices if i not in have]
        if missing:
            what = ", ".join(f"param {i}" for i in missing)
            hint = (" (its bias: set bias_term: false if the model has none)"
                    if missing == [1] else "")
            raise SnapshotError(f"{path}: layer '{layer}' has {len(have)} blob(s) in the file, "
                                f"the net's layer {len(indices)}: {what} is missing{hint}")


def weights_to_snapshot(exp, weights_path: str | Path, out_path: str | Path,
                        report: Report | None = None) -> list[str]:
    """Write a cnntrain snapshot (iteration 0, zero solver state) holding the Caffe
    weights of ``weights_path`` for the net of ``exp``; returns the layers filled.

    Layers are matched by name and parameter index, as Caffe does. A blob whose shape
    differs only by leading 1s (old Caffe's 4-D InnerProduct blobs) is reshaped.
    """
    from cnntrain.layers import BuildContext
    from cnntrain.net import Net
    from cnntrain.rng import RngStreams
    from cnntrain.snapshot import save_snapshot
    from cnntrain.solvers import make_solver
    from cnntrain.tools.inputs import replace_data_layers

    report = report or Report()
    weights = read_caffe_weights(weights_path)
    spec, _ = replace_data_layers(exp.net)
    rngs = RngStreams(exp.solver.random_seed)
    net = Net(spec, "TRAIN", BuildContext(rngs, np.float32, notify=lambda _: None))
    filled, used = [], set()
    in_file = {layer for layer, _ in weights}
    for layer, i, p in net.param_keys:
        saved = weights.get((layer, i))
        if saved is None and layer in in_file:
            continue   # half a layer: refused below, after any clearer shape error
        if saved is None:
            report.drop(str(weights_path), f"layer '{layer}' param {i} is not in the file: it "
                                           "keeps its initial values")
            continue
        if saved.shape != p.data.shape:
            if saved.size == p.data.size and tuple(d for d in saved.shape if d != 1) == tuple(
                    d for d in p.data.shape if d != 1):
                report.note(str(weights_path), f"layer '{layer}' param {i}: shape "
                                               f"{saved.shape} read as {p.data.shape}")
                saved = saved.reshape(p.data.shape)
            else:
                raise SnapshotError(f"{weights_path}: layer '{layer}' param {i} has shape "
                                    f"{saved.shape} in the file but {p.data.shape} in the net")
        if saved.dtype.kind != "f" or not np.all(np.isfinite(saved)):
            raise SnapshotError(f"{weights_path}: layer '{layer}' param {i} holds NaN, inf "
                                "or values that are not floating point")
        p.data[...] = saved
        used.add((layer, i))
        filled.append(layer)
    for key in sorted(set(weights) - used):
        report.drop(str(weights_path), f"layer '{key[0]}' param {key[1]}: no such parameter "
                                       "in the net")
    if not filled:
        raise SnapshotError(f"{weights_path} has no weights for any layer of this net "
                            "(layer names differ)")
    _check_blob_counts(net, weights, weights_path)
    solver = make_solver(exp.solver.values, net.params)
    save_snapshot(Path(out_path), params=net.param_keys, config=exp.text, iteration=0,
                  solver_type=solver.type_name, history=solver.state(), rng=rngs.state(),
                  data_state={})
    return sorted(set(filled))
