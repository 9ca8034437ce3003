"""The config format as a JSON Schema (draft 2020-12), generated from :mod:`schema`:
``cnntrain schema``. Editors that read JSON Schema (VS Code's and JetBrains' YAML
support, yaml-language-server) then complete field names and enum values, show each
field's doc and default, and flag unknown fields and out-of-range values as you type.

The schema states what can be checked field by field: types, bounds, choices, required
fields, the ``*_param`` blocks each layer type reads, the fields each ``lr_policy``
needs. ``cnntrain train --dry-run`` remains the full check (blob graph, shapes, rules
across fields).
"""
from __future__ import annotations

from typing import Any

from cnntrain.config import schema
from cnntrain.config.schema import REQUIRED, Field

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _bounded(base: dict, spec: Field) -> dict:
    if spec.min is not None:
        base["exclusiveMinimum" if spec.min_exclusive else "minimum"] = spec.min
    if spec.max is not None:
        base["exclusiveMaximum" if spec.max_exclusive else "maximum"] = spec.max
    return base


def _one_or_many(item: dict, min_items: int = 1) -> dict:
    """A value that may be given alone or as a list (Caffe's repeated fields). Written as
    if/then/else rather than anyOf, so that a checker's message names the bad value
    instead of "not valid under any of the given schemas"."""
    many = {"type": "array", "items": item}
    if min_items:
        many["minItems"] = min_items
    return {"if": {"type": "array"}, "then": many, "else": item}


def _describe(node: dict, spec: Field) -> dict:
    notes = [spec.doc] if spec.doc else []
    if spec.default is not REQUIRED and spec.default is not None and spec.kind != "filler":
        notes.append(f"default: {spec.default}")
    if notes:
        node["description"] = "; ".join(notes)
    if spec.default is not REQUIRED and spec.default is not None and spec.kind not in (
            "filler", "block"):
        node["default"] = spec.default
    return node


def field_schema(spec: Field) -> dict:
    """The JSON Schema of one field of :mod:`schema`."""
    kind = spec.kind
    if kind == "int":
        node = _bounded({"type": "integer"}, spec)
    elif kind == "float":
        node = _bounded({"type": "number"}, spec)
    elif kind == "bool":
        node = {"type": "boolean"}
    elif kind == "str":
        node = {"type": "string", "minLength": 1}
    elif kind == "enum":
        node = {"enum": list(spec.choices)}
    elif kind in ("ints", "floats"):
        item = _bounded({"type": "integer" if kind == "ints" else "number"}, spec)
        node = _one_or_many(item)
    elif kind == "shape":
        least = 1 if spec.min is None else int(spec.min)
        one = {"type": "object", "required": ["dim"],
               "properties": {"dim": {"type": "array", "minItems": 1,
                                      "items": {"type": "integer", "minimum": least}}}}
        node = _one_or_many(one, 0)
    elif kind == "filler":
        node = {"$ref": "#/$defs/filler"}
        if spec.default:
            node["description"] = f"default: {spec.default}"
        return node
    elif kind == "block":
        node = block_schema(spec.fields)
    else:
        raise AssertionError(kind)
    return _describe(node, spec)


def block_schema(fields: dict[str, Field]) -> dict:
    """A mapping of ``fields``: no others, the REQUIRED ones present."""
    node: dict[str, Any] = {"type": "object",
                            "properties": {k: field_schema(f) for k, f in fields.items()},
                            "additionalProperties": False}
    required = [k for k, f in fields.items() if f.default is REQUIRED]
    if required:
        node["required"] = required
    return node


def _names(what: str) -> dict:
    text = {"type": "string", "minLength": 1}
    return {"description": what, **_one_or_many(text, 0)}


def _layer_schema() -> dict:
    from cnntrain.config.validate import layer_fields
    from cnntrain.layers import LAYER_TYPES

    phase = {"type": "object", "required": ["phase"], "additionalProperties": False,
             "properties": {"phase": {"enum": list(schema.PHASES)}}}
    params = {"$ref": "#/$defs/param"}
    properties: dict[str, Any] = {
        "name": {"type": "string", "minLength": 1, "description": "unique in each phase"},
        "type": {"enum": sorted(LAYER_TYPES), "description": "a Caffe layer type"},
        "bottom": _names("the blobs this layer reads"),
        "top": _names("the blobs this layer writes (a bottom's name: in place)"),
        "param": {"description": "one entry per parameter blob (weights, bias)",
                  **_one_or_many(params, 0)},
        "include": {"description": "the phases the layer is in (default: both)",
                    **_one_or_many(phase, 0)},
        "exclude": {"description": "the phases the layer is left out of",
                    **_one_or_many(phase, 0)},
        "loss_weight": _one_or_many({"type": "number"}),
        "propagate_down": _one_or_many({"type": "boolean"}),
    }
    properties.update({block: {"$ref": f"#/$defs/{block}"} for block in schema.PARAM_BLOCKS})
    # Each type reads its own blocks: any other field of a layer of that type is unknown.
    per_type = [{"if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                 "then": {"propertyNames": {"enum": sorted(layer_fields(cls))}}}
                for name, cls in sorted(LAYER_TYPES.items())]
    return {"type": "object", "required": ["name", "type"], "properties": properties,
            "additionalProperties": False, "allOf": per_type}


def _solver_schema() -> dict:
    node = block_schema(schema.SOLVER)
    node["allOf"] = [{"if": {"properties": {"lr_policy": {"const": policy}},
                             "required": ["lr_policy"]},
                      "then": {"required": list(needs)}}
                     for policy, needs in schema.POLICY_NEEDS.items() if needs]
    return node


def config_schema() -> dict:
    """The JSON Schema of a cnntrain config file."""
    net = {"type": "object", "required": ["layer"], "additionalProperties": False,
           "properties": {"name": {"type": "string", "default": "net"},
                          "layer": {"type": "array", "minItems": 1,
                                    "items": {"$ref": "#/$defs/layer"}}}}
    defs: dict[str, Any] = {"net": net, "layer": _layer_schema(), "solver": _solver_schema(),
                            "filler": block_schema(schema.FILLER),
                            "param": block_schema(schema.PARAM_SPEC)}
    defs.update({block: block_schema(fields) for block, fields in schema.PARAM_BLOCKS.items()})
    return {
        "$schema": DRAFT,
        "title": "cnntrain config",
        "description": "A cnntrain experiment: the run's name, the net (Caffe's layers in "
                       "YAML) and the solver. Generated by `cnntrain schema`.",
        "type": "object",
        "required": ["net", "solver"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": "^[^/.][^/]*$",
                     "description": "the run's name, its folder under runs/ "
                                    "(default: the file's name)"},
            "net": {"description": "the net, or a YAML file holding it (relative to this "
                                   "config)",
                    "if": {"type": "string"}, "then": {"minLength": 1},
                    "else": {"$ref": "#/$defs/net"}},
            "solver": {"$ref": "#/$defs/solver"},
            "logging": block_schema(schema.LOGGING),
        },
        "$defs": defs,
    }
