"""Turn YAML into validated specs. Every config error message is made here or in specs."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cnntrain.config import schema
from cnntrain.config.schema import REQUIRED, Field
from cnntrain.config.specs import (Block, ExperimentSpec, LayerSpec, NetSpec, ParamSpec,
                                   SolverSpec, Where)
from cnntrain.config.yaml_lines import LineDict, load_yaml_file, load_yaml_text
from cnntrain.errors import ConfigError


def _where(raw: Any, file: str | None) -> Where:
    if isinstance(raw, LineDict):
        return Where(file, raw.line, dict(getattr(raw, "key_lines", {})))
    return Where(file)


def _suggest(name: str, allowed) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "text",
            list: "a list", type(None): "empty"}.get(type(value), type(value).__name__)


def _check_unknown(raw: dict, allowed, where: Where, layer: str | None, prefix: str = "") -> None:
    for key in raw:
        if key not in allowed:
            raise where.error(f"unknown field{_suggest(key, allowed)}; allowed: "
                              f"{', '.join(sorted(allowed))}", layer=layer,
                              field_name=prefix + key)


def _scalar(kind: str, value: Any, fail) -> Any:
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"must be an integer, got {_type_name(value)} {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"must be a number, got {_type_name(value)} {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            fail(f"must be finite, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer beyond the largest float
            fail(f"must be finite, got an integer of {len(str(abs(value)))} digits")
    if kind == "bool":
        if not isinstance(value, bool):
            fail(f"must be true or false, got {_type_name(value)} {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str) or not value:
            fail(f"must be non-empty text, got {_type_name(value)} {value!r}")
        return value
    raise AssertionError(kind)


def _bounds(spec: Field, value: float, fail) -> None:
    if spec.min is not None and (value < spec.min or (spec.min_exclusive and value == spec.min)):
        fail(f"must be {'>' if spec.min_exclusive else '>='} {spec.min:g}, got {value!r}")
    if spec.max is not None and (value > spec.max or (spec.max_exclusive and value == spec.max)):
        fail(f"must be {'<' if spec.max_exclusive else '<='} {spec.max:g}, got {value!r}")


def check_block(fields: dict[str, Field], raw: Any, where: Where, layer: str | None,
                prefix: str) -> Block:
    """Validate a mapping against ``fields``; fill defaults; raise one-line errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise where.error(f"must be a mapping of fields, got {_type_name(raw)}", layer=layer,
                          field_name=prefix.rstrip(".") or None)
    inner = _where(raw, where.file) if isinstance(raw, LineDict) else where
    _check_unknown(raw, fields, inner, layer, prefix)
    out = Block()
    for key, spec in fields.items():
        name = prefix + key

        def fail(message: str, name: str = name) -> None:
            raise inner.error(message, layer=layer, field_name=name)

        if key not in raw or raw[key] is None:
            if spec.default is REQUIRED:
                raise inner.error("is required", layer=layer, field_name=name)
            default = spec.default
            if spec.kind == "filler":
                default = check_block(schema.FILLER, dict(default), inner, layer, name + ".")
            out[key] = default
            continue
        out[key] = _check_value(spec, raw[key], inner, layer, name, fail)
    if fields is schema.FILLER and out.type == "uniform" and out.min > out.max:
        raise inner.error(f"min {out.min:g} is greater than max {out.max:g}", layer=layer,
                          field_name=prefix + "min")
    return out


def _check_value(spec: Field, value: Any, where: Where, layer, name: str, fail) -> Any:
    if spec.kind in ("int", "float", "bool", "str"):
        value = _scalar(spec.kind, value, fail)
        if spec.kind in ("int", "float"):
            _bounds(spec, value, fail)
        return value
    if spec.kind == "enum":
        if value not in spec.choices:
            fail(f"must be one of {', '.join(spec.choices)}, got {value!r}"
                 f"{_suggest(str(value), spec.choices)}")
        return value
    if spec.kind in ("ints", "floats"):
        items = value if isinstance(value, list) else [value]
        if not items:
            fail("must not be an empty list")
        kind = spec.kind[:-1]
        checked = [_scalar(kind, v, fail) for v in items]
        for v in checked:
            _bounds(spec, v, fail)
        return tuple(checked)
    if spec.kind == "filler":
        return check_block(schema.FILLER, value, where, layer, name + ".")
    if spec.kind == "block":
        return check_block(spec.fields, value, where, layer, name + ".")
    if spec.kind == "shape":
        shapes = []
        for item in value if isinstance(value, list) else [value]:
            dims = item.get("dim") if isinstance(item, dict) else None
            least = 1 if spec.min is None else int(spec.min)
            if not isinstance(dims, list) or not dims or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= least for d in dims):
                fail("must be {dim: [N, C, H, W]} (or a list of them) with "
                     + ("positive integers" if least == 1 else f"integers >= {least}"))
            shapes.append(tuple(dims))
        return tuple(shapes)
    raise AssertionError(spec.kind)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a layer, blob, shared parameter or run, or None.

    Names become HDF5 paths in snapshots (``data/<layer>/0``), folder names and lines
    of output, so they hold no path separator, are not '.' or '..', and hold no
    control or invisible formatting characters (a right-to-left override would make
    the name print as another)."""
    import unicodedata

    if "/" in name:
        return "must not contain '/' (names become paths in snapshots and run folders)"
    if name in (".", ".."):
        return f"must not be '{name}' (names become paths in snapshots and run folders)"
    for char in name:
        category = unicodedata.category(char)
        if category == "Cc":
            return f"must not contain control characters ({char!r})"
        if category in ("Cf", "Zl", "Zp"):
            return (f"must not contain invisible formatting characters such as bidi "
                    f"overrides (U+{ord(char):04X})")
    return None


def _check_name(name: str, where: Where, layer: str | None, field_name: str) -> None:
    problem = name_problem(name)
    if problem:
        raise where.error(problem, layer=layer if field_name != "name" else None,
                          field_name=field_name)


def _names(value: Any, where: Where, layer: str, field_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str) or not item:
            raise where.error(f"must be a blob name or a list of them, got {item!r}",
                              layer=layer, field_name=field_name)
        _check_name(item, where, layer, field_name)
    return tuple(items)


def _phases(value: Any, where: Where, layer: str, field_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    rules = value if isinstance(value, list) else [value]
    phases = []
    for rule in rules:
        if not isinstance(rule, dict) or set(rule) != {"phase"}:
            raise where.error("must be {phase: TRAIN} or {phase: TEST} (or a list of them)",
                              layer=layer, field_name=field_name)
        if rule["phase"] not in schema.PHASES:
            raise where.error(f"phase must be TRAIN or TEST, got {rule['phase']!r}",
                              layer=layer, field_name=field_name + ".phase")
        phases.append(rule["phase"])
    return tuple(phases)


def layer_fields(cls) -> set[str]:
    """The fields a layer of class ``cls`` may have: the common ones, its ``*_param``
    blocks, and ``loss_param`` for a loss layer that has blocks of its own."""
    allowed = set(schema.LAYER_FIELDS) | set(cls.param_blocks)
    if cls.param_blocks and "loss_param" not in cls.param_blocks and cls.is_loss:
        allowed.add("loss_param")
    return allowed


def parse_layer(raw: Any, file: str | None, index: int) -> LayerSpec:
    from cnntrain.layers import LAYER_TYPES

    where = _where(raw, file)
    if not isinstance(raw, dict):
        raise where.error(f"layer #{index + 1} must be a mapping, got {_type_name(raw)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise where.error(f"layer #{index + 1} needs a 'name' (non-empty text)", field_name="name")
    _check_name(name, where, None, f"layer #{index + 1} name")
    type_name = raw.get("type")
    if not isinstance(type_name, str):
        raise where.error("is required (a Caffe layer type such as Convolution)",
                          layer=name, field_name="type")
    cls = LAYER_TYPES.get(type_name)
    if cls is None:
        raise where.error(f"unknown layer type '{type_name}'{_suggest(type_name, LAYER_TYPES)}",
                          layer=name, field_name="type")
    allowed = layer_fields(cls)
    for key in raw:
        if key not in allowed:
            hint = (f"; {type_name} reads {', '.join(cls.param_blocks)}" if key.endswith("_param")
                    and cls.param_blocks else _suggest(key, allowed))
            if key.endswith("_param") and not cls.param_blocks:
                hint = f"; {type_name} takes no *_param block"
            raise where.error(f"unknown field{hint}", layer=name, field_name=key)
    blocks = {b: check_block(schema.PARAM_BLOCKS[b], raw.get(b), where, name, b + ".")
              for b in cls.param_blocks}
    if type_name == "Data":
        _check_data_blocks(blocks, where, name)
    transform = blocks.get("transform_param")
    if transform is not None and transform["mean_image"] and transform["mean_value"] is not None:
        # As in Caffe (mean_file and mean_value): one mean, never both.
        raise _where(raw.get("transform_param"), file).error(
            "sets both mean_image and mean_value: subtract one mean, not both", layer=name,
            field_name="transform_param.mean_value")
    bottom = _names(raw.get("bottom"), where, name, "bottom")
    top = _names(raw.get("top"), where, name, "top")
    for what, got, (lo, hi) in (("bottom", bottom, cls.num_bottom), ("top", top, cls.num_top)):
        if not lo <= len(got) <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise where.error(f"{type_name} takes {want} {what} blob(s), got {len(got)}",
                              layer=name, field_name=what)
    params_raw = raw.get("param") or []
    if not isinstance(params_raw, list):
        params_raw = [params_raw]
    param_specs = tuple(ParamSpec(**check_block(schema.PARAM_SPEC, p, where, name, f"param[{i}]."))
                        for i, p in enumerate(params_raw))
    for i, param in enumerate(param_specs):
        if param.name is not None:
            _check_name(param.name, where, name, f"param[{i}].name")
    loss_weight = raw.get("loss_weight")
    if loss_weight is not None:
        items = loss_weight if isinstance(loss_weight, list) else [loss_weight]
        fail = lambda m: (_ for _ in ()).throw(where.error(m, layer=name, field_name="loss_weight"))
        loss_weight = tuple(_scalar("float", v, fail) for v in items)
        if len(loss_weight) != len(top):
            raise where.error(f"needs one weight per top ({len(top)}), got {len(loss_weight)}",
                              layer=name, field_name="loss_weight")
    prop = raw.get("propagate_down")
    if prop is not None:
        items = prop if isinstance(prop, list) else [prop]
        if not all(isinstance(v, bool) for v in items) or len(items) != len(bottom):
            raise where.error(f"must be a list of {len(bottom)} true/false values, one per bottom",
                              layer=name, field_name="propagate_down")
        prop = tuple(items)
    return LayerSpec(name=name, type=type_name, bottom=bottom, top=top, param_specs=param_specs,
                     include=_phases(raw.get("include"), where, name, "include"),
                     exclude=_phases(raw.get("exclude"), where, name, "exclude"),
                     loss_weight=loss_weight, propagate_down=prop, blocks=blocks, where=where)


def _check_data_blocks(blocks: dict[str, Block], where: Where, layer: str) -> None:
    """What a Data layer's fields must say whether or not its data is read: train and
    ``--dry-run`` (which builds the net without data) give the same verdict."""
    from cnntrain.tools.inputs import DATASETS

    p, t = blocks["data_param"], blocks["transform_param"]
    if p.dataset is None:
        raise where.error("is required (cifar10 or cifar100; with hdf5 it must match the file)",
                          layer=layer, field_name="data_param.dataset")
    channels = DATASETS[p.dataset][0][0]
    if not t.mean_image and t.mean_value is not None \
            and len(t.mean_value) not in (1, channels):
        raise where.error(f"needs 1 or {channels} values, got {len(t.mean_value)}",
                          layer=layer, field_name="transform_param.mean_value")
    largest = float(np.finfo(np.float32).max)   # nets train in float32
    for key, value in (("scale", t.scale), ("mean_value", t.mean_value)):
        if value is not None and np.max(np.abs(value)) > largest:
            raise where.error(f"{np.max(np.abs(value)):g} is beyond the {largest:g} of float32",
                              layer=layer, field_name=f"transform_param.{key}")


def parse_net(raw: Any, file: str | None) -> NetSpec:
    where = _where(raw, file)
    if not isinstance(raw, dict):
        raise where.error(f"'net' must be a mapping with 'name' and 'layer', got {_type_name(raw)}",
                          field_name="net")
    _check_unknown(raw, schema.NET_FIELDS, where, None, "net.")
    layers_raw = raw.get("layer")
    if not isinstance(layers_raw, list) or not layers_raw:
        raise where.error("must be a non-empty list of layers", field_name="net.layer")
    layers = tuple(parse_layer(item, file, i) for i, item in enumerate(layers_raw))
    name = raw.get("name", "net")
    if not isinstance(name, str):
        raise where.error("must be text", field_name="net.name")
    net = NetSpec(name=name, layers=layers, where=where)
    for phase in schema.PHASES:
        check_graph(net, phase)
    check_train_only_augmentation(net)
    return net


def check_train_only_augmentation(net: NetSpec) -> None:
    """Erasing, resized crops and mixing change what a test would measure: a Data layer
    in the TEST phase (one without ``include: {phase: TRAIN}``) may not ask for them."""
    from cnntrain.data.augment import RANGE_FIELDS, TRAIN_ONLY_FIELDS, range_problem

    for spec in net.layers:
        t = spec.blocks.get("transform_param")
        if t is None:
            continue
        for key, lo_hi in RANGE_FIELDS.items():
            problem = range_problem(t[key], *lo_hi)
            if problem:
                raise spec.error(problem, f"transform_param.{key}")
        if not spec.in_phase("TEST"):
            continue
        for key, off in TRAIN_ONLY_FIELDS.items():
            if t[key] != off:
                raise spec.error(f"is a TRAIN-only augmentation, but this Data layer is also in "
                                 "the TEST phase (give it include: {phase: TRAIN})",
                                 f"transform_param.{key}")


def check_graph(net: NetSpec, phase: str) -> None:
    """Layer names are unique in a phase; blobs exist before use and are written once
    (in-place layers excepted)."""
    from cnntrain.layers import LAYER_TYPES

    produced: set[str] = set()
    names: set[str] = set()
    producer: dict[str, LayerSpec] = {}
    for spec in net.layers:
        if not spec.in_phase(phase):
            continue
        if spec.name in names:
            raise spec.error(f"another layer in the {phase} phase has this name", "name")
        names.add(spec.name)
        for blob in spec.bottom:
            if blob not in produced:
                raise spec.error(f"bottom blob '{blob}' is not produced by any earlier layer "
                                 f"in the {phase} phase", "bottom")
        if phase == "TRAIN":
            _check_data_fillers(spec, producer)
        for i, blob in enumerate(spec.top):
            in_place = i < len(spec.bottom) and spec.bottom[i] == blob
            if in_place and not LAYER_TYPES[spec.type].in_place_ok:
                raise spec.error(f"{spec.type} cannot run in place (top '{blob}' == bottom)", "top")
            if blob in produced and not in_place:
                raise spec.error(f"top blob '{blob}' is already produced by an earlier layer "
                                 f"in the {phase} phase", "top")
            produced.add(blob)
            producer[blob] = spec


def _check_data_fillers(spec: LayerSpec, producer: dict[str, LayerSpec]) -> None:
    """A filler that learns from the data (``whitening``) fills a Convolution's weights
    from the images of the TRAIN Data layer it reads directly, and nothing else."""
    from cnntrain.fillers import DATA_FILLERS

    for block_name, block in spec.blocks.items():
        for key, value in block.items():
            if not (isinstance(value, dict) and value.get("type") in DATA_FILLERS):
                continue
            field = f"{block_name}.{key}.type"
            if (block_name, key) != ("convolution_param", "weight_filler"):
                raise spec.error(f"the {value['type']} filler fills only a Convolution's "
                                 "weight_filler", field)
            # An Input layer stands in for the Data layer where nets are built without
            # data (dry-run, time, benchmarks); the layer then keeps its stand-in draw.
            source = producer.get(spec.bottom[0]) if spec.bottom else None
            if source is None or source.type not in ("Data", "Input") \
                    or source.top[0] != spec.bottom[0]:
                raise spec.error(f"the {value['type']} filler needs the layer's bottom to be "
                                 "the images of a TRAIN Data layer (its first top)", field)


def parse_solver(raw: Any, file: str | None) -> SolverSpec:
    """Validate the ``solver`` block: field types and bounds, the fields the lr policy
    needs, and no field the chosen solver type or policy would silently ignore."""
    from cnntrain.solvers import SOLVERS

    where = _where(raw, file)
    values = check_block(schema.SOLVER, raw, where, None, "solver.")
    given = {key for key, value in (raw or {}).items() if value is not None}

    def unused(key: str, users: str) -> None:
        raise where.error(f"{key} is only used {users}", field_name=f"solver.{key}")

    rule = SOLVERS[values.type]
    rule_fields = {key for cls in SOLVERS.values() for key in cls.uses}
    for key in sorted(given & rule_fields - set(rule.uses)):
        users = [name for name, cls in SOLVERS.items() if key in cls.uses]
        unused(key, f"by {'/'.join(users)} (this solver is {values.type})")
    if values.momentum is None:
        values["momentum"] = rule.default_momentum
    if "regularization_type" in given and values.weight_decay_mode == "decoupled":
        unused("regularization_type", "with weight_decay_mode coupled (decoupled decay "
                                      "always shrinks w in proportion to w)")

    for need in schema.POLICY_NEEDS[values.lr_policy]:
        if values[need] is None:
            raise where.error(f"lr_policy '{values.lr_policy}' needs '{need}'",
                              field_name=f"solver.{need}")
    if values.stepvalue and list(values.stepvalue) != sorted(values.stepvalue):
        raise where.error("must be increasing", field_name="solver.stepvalue")
    if "min_lr" in given and values.lr_policy != "cosine":
        unused("min_lr", "by lr_policy cosine")
    if values.min_lr > values.base_lr:
        raise where.error(f"must not exceed base_lr ({values.base_lr:g}), got {values.min_lr:g}",
                          field_name="solver.min_lr")
    if "warmup_start_factor" in given and not values.warmup_iter:
        unused("warmup_start_factor", "with warmup_iter > 0")
    for key in ("piecewise_iters", "piecewise_factors"):
        if key in given and values.lr_policy != "piecewise":
            unused(key, "by lr_policy piecewise")
    if values.lr_policy == "piecewise":
        iters, factors = values.piecewise_iters, values.piecewise_factors
        if len(iters) != len(factors):
            raise where.error(f"needs one factor per piecewise_iters entry ({len(iters)}), got "
                              f"{len(factors)}", field_name="solver.piecewise_factors")
        if any(b <= a for a, b in zip(iters, iters[1:])):
            raise where.error("must be increasing", field_name="solver.piecewise_iters")
    for key in ("lookahead_decay", "lookahead_decay_power"):
        if key in given and not values.lookahead_interval:
            unused(key, "with lookahead_interval > 0")
    _check_rates(values, where)
    return SolverSpec(values=values, where=where)


def _check_rates(values: Block, where: Where) -> None:
    """The learning rate stays finite and not negative over the whole run: a negative
    rate climbs the loss, and Python's powers fail on some (inv: 0 to a negative power)."""
    import math

    from cnntrain.solvers.lr_policy import learning_rate

    policy = values.lr_policy
    if policy in ("step", "multistep", "exp") and values.gamma <= 0:
        raise where.error(f"must be > 0 for lr_policy {policy} (the rate is base_lr times "
                          f"powers of gamma), got {values.gamma:g}", field_name="solver.gamma")
    if policy == "inv" and values.gamma < 0:
        raise where.error(f"must be >= 0 for lr_policy inv (1 + gamma * iter must stay "
                          f"positive), got {values.gamma:g}", field_name="solver.gamma")
    if policy == "poly" and values.power < 0:
        raise where.error(f"must be >= 0 for lr_policy poly, got {values.power:g}",
                          field_name="solver.power")
    # The remaining policies are monotone between these points (or bounded by them).
    for it in sorted({0, 1, max(values.max_iter - 1, 0)}):
        try:
            rate = learning_rate(values, it)
        except (OverflowError, ZeroDivisionError, ValueError):
            rate = math.inf
        if not (math.isfinite(rate) and rate >= 0):
            raise where.error(f"gives a learning rate of {rate:g} at iteration {it}; it must "
                              "stay finite and >= 0", field_name="solver.lr_policy")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def parse_experiment(raw: Any, file: str, base_dir: Path | None, default_name: str
                     ) -> ExperimentSpec:
    where = _where(raw, file)
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a mapping with 'net' and 'solver'", file=file)
    _check_unknown(raw, schema.TOP_LEVEL, where, None)
    for key in ("net", "solver"):
        if key not in raw:
            raise where.error("is required", field_name=key)
    net_raw, net_file = raw["net"], file
    if isinstance(net_raw, str):
        if base_dir is None:
            raise where.error("must be inline here", field_name="net")
        net_path = (base_dir / net_raw)
        if not net_path.is_file():
            raise where.error(f"net file '{net_path}' not found", field_name="net")
        net_raw, net_file = load_yaml_file(net_path), str(net_path)
        if isinstance(net_raw, dict) and set(net_raw) == {"net"}:
            net_raw = net_raw["net"]
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise where.error("must be a simple name (used as the run folder)", field_name="name")
    _check_name(name, where, None, "name")
    if name.startswith("."):
        raise where.error("must not start with '.' (the run folder would be hidden)",
                          field_name="name")
    net = parse_net(net_raw, net_file)
    solver = parse_solver(raw["solver"], file)
    _check_early_stop(net, solver)
    logging = check_block(schema.LOGGING, raw.get("logging"), where, None, "logging.")
    resolved = {"name": name, "net": _plain(net_raw), "solver": _plain(raw["solver"])}
    if raw.get("logging") is not None:
        resolved["logging"] = _plain(raw["logging"])
    text = yaml.safe_dump(resolved, sort_keys=False)
    return ExperimentSpec(name=name, net=net, solver=solver, text=text, file=file,
                          logging=logging)


def _check_early_stop(net: NetSpec, solver: SolverSpec) -> None:
    """Early stopping is decided at tests: it needs them, and test_accuracy needs an
    Accuracy layer to measure it."""
    early = solver.early_stop
    if early is None:
        return
    fail = lambda message: solver.where.error(message, field_name="solver.early_stop")  # noqa: E731
    if not solver.test_interval:
        raise fail("needs test_interval > 0: the metric is checked at each test")
    test_layers = [spec for spec in net.layers if spec.in_phase("TEST")]
    if not any(spec.type == "Data" for spec in test_layers):
        raise fail("needs a TEST-phase Data layer to test on")
    if early.metric == "test_accuracy" and not any(spec.type == "Accuracy"
                                                   for spec in test_layers):
        raise fail("metric test_accuracy needs an Accuracy layer in the TEST net "
                   "(or use metric: test_loss)")


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Read and validate a config file (the ``cnntrain train CONFIG`` entry point)."""
    path = Path(path)
    raw = load_yaml_file(path)
    return parse_experiment(raw, str(path), path.parent, path.stem)


def experiment_from_text(text: str, source: str) -> ExperimentSpec:
    """Validate a config stored as text (e.g. inside a snapshot)."""
    raw = load_yaml_text(text, source)
    name = raw.get("name", "net") if isinstance(raw, dict) else "net"
    return parse_experiment(raw, source, None, name)
