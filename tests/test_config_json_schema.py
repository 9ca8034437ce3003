"""cnntrain schema: the config format as a JSON Schema (draft 2020-12).

Each config is checked with jsonschema where it is installed, and always with the small
checker below (the keywords the generated schema uses, no more), so the schema is
exercised either way and the two checkers are held to agree.
"""
import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from cnntrain.config import experiment_from_text
from cnntrain.config import schema as fields
from cnntrain.errors import ConfigError
from tool_helpers import run

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("**/*.yaml"))
KEYWORDS = {"$schema", "$defs", "$ref", "title", "description", "default", "type", "enum",
            "const", "allOf", "if", "then", "else", "properties", "required",
            "additionalProperties", "propertyNames", "items", "minItems", "minLength",
            "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool,
         "integer": int, "number": (int, float)}


@pytest.fixture(scope="module")
def config_schema():
    result = run("schema")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _same(a, b) -> bool:
    """JSON equality: true is not 1."""
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def small_check(node, value, root, path="$") -> list[str]:
    """The errors of ``value`` against ``node``, for the keywords in KEYWORDS."""
    if "$ref" in node:
        target = root
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return small_check(target, value, root, path)
    kind = node.get("type")
    if kind and (not isinstance(value, TYPES[kind])
                 or (kind in ("integer", "number") and isinstance(value, bool))):
        return [f"{path}: not {kind}"]
    errors = []
    if "enum" in node and not any(_same(value, v) for v in node["enum"]):
        errors.append(f"{path}: {value!r} not in enum")
    if "const" in node and not _same(value, node["const"]):
        errors.append(f"{path}: not {node['const']!r}")
    for sub in [node] + node.get("allOf", []):
        if "if" in sub:
            branch = "else" if small_check(sub["if"], value, root, path) else "then"
            errors += small_check(sub.get(branch, {}), value, root, path)
        elif sub is not node:
            errors += small_check(sub, value, root, path)
    if isinstance(value, dict):
        errors += [f"{path}: {k} is required" for k in node.get("required", [])
                   if k not in value]
        props = node.get("properties", {})
        for key, item in value.items():
            if key in props:
                errors += small_check(props[key], item, root, f"{path}.{key}")
            elif node.get("additionalProperties") is False:
                errors.append(f"{path}: unknown field {key}")
            if "propertyNames" in node:
                errors += small_check(node["propertyNames"], key, root, f"{path}.{key}")
    if isinstance(value, list):
        if len(value) < node.get("minItems", 0):
            errors.append(f"{path}: too few items")
        if "items" in node:
            for i, item in enumerate(value):
                errors += small_check(node["items"], item, root, f"{path}[{i}]")
    if isinstance(value, str):
        if len(value) < node.get("minLength", 0):
            errors.append(f"{path}: too short")
        if "pattern" in node and not re.search(node["pattern"], value):
            errors.append(f"{path}: does not match {node['pattern']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for word, bad in (("minimum", lambda v, b: v < b), ("maximum", lambda v, b: v > b),
                          ("exclusiveMinimum", lambda v, b: v <= b),
                          ("exclusiveMaximum", lambda v, b: v >= b)):
            if word in node and bad(value, node[word]):
                errors.append(f"{path}: {word} {node[word]}")
    return errors


def _checkers(config_schema):
    checkers = {"small": lambda value: small_check(config_schema, value, config_schema)}
    try:
        from jsonschema import Draft202012Validator
    except ImportError:
        return checkers
    validator = Draft202012Validator(config_schema)
    checkers["jsonschema"] = lambda value: [e.message for e in validator.iter_errors(value)]
    return checkers


def _keywords(node, found):
    if isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            if key in ("properties", "$defs"):
                for sub in value.values():
                    _keywords(sub, found)
            elif key not in ("enum", "const", "default", "required"):
                _keywords(value, found)
    elif isinstance(node, list):
        for item in node:
            _keywords(item, found)
    return found


def test_the_schema_is_draft_2020_12_and_uses_only_known_keywords(config_schema):
    assert config_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert _keywords(config_schema, set()) <= KEYWORDS
    try:
        from jsonschema import Draft202012Validator
    except ImportError:
        return
    Draft202012Validator.check_schema(config_schema)


def test_the_schema_is_generated_from_the_field_table(config_schema):
    defs = config_schema["$defs"]
    for block, table in fields.PARAM_BLOCKS.items():
        assert set(defs[block]["properties"]) == set(table), block
    assert set(defs["solver"]["properties"]) == set(fields.SOLVER)
    assert defs["solver"]["required"] == ["base_lr", "max_iter"]
    conv = defs["convolution_param"]
    assert conv["required"] == ["num_output"]
    assert conv["properties"]["group"] == {"type": "integer", "minimum": 1,
                                           "description": "default: 1", "default": 1}
    dropout = defs["dropout_param"]["properties"]["dropout_ratio"]
    assert dropout["minimum"] == 0 and dropout["exclusiveMaximum"] == 1


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_is_valid(config_schema, path):
    config = yaml.safe_load(path.read_text())
    for name, check in _checkers(config_schema).items():
        assert check(config) == [], name


def _set(config, path, value):
    node = config
    *parents, last = path
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value


# Each change makes cnntrain's own checker refuse the config; the schema must too.
CHANGES = {
    "unknown top-level field": (["solvr"], {}),
    "unknown layer field": (["net", "layer", 2, "kernel_size"], 3),
    "misspelt block field": (["net", "layer", 2, "convolution_param", "kernal_size"], 3),
    "a block its type does not read": (["net", "layer", 4, "convolution_param"], {}),
    "unknown solver field": (["solver", "base_lrr"], 0.1),
    "unknown layer type": (["net", "layer", 2, "type"], "Convolutoin"),
    "enum value": (["net", "layer", 3, "pooling_param", "pool"], "MEDIAN"),
    "integer expected": (["net", "layer", 2, "convolution_param", "num_output"], 3.5),
    "bound": (["net", "layer", 2, "convolution_param", "group"], 0),
    "required field": (["net", "layer", 2, "convolution_param", "num_output"], KeyError),
    "lr_policy needs": (["solver", "lr_policy"], "step"),
    "run name": (["name"], "a/b"),
}


@pytest.mark.parametrize("change", CHANGES, ids=str)
def test_what_cnntrain_refuses_the_schema_refuses(config_schema, change):
    base = yaml.safe_load((CONFIGS[0].parent / "cifar10_quick.yaml").read_text())
    assert base["net"]["layer"][2]["type"] == "Convolution"
    assert [base["net"]["layer"][i]["type"] for i in (3, 4)] == ["Pooling", "ReLU"]
    config = copy.deepcopy(base)
    path, value = CHANGES[change]
    _set(config, path, value)
    with pytest.raises(ConfigError):
        experiment_from_text(yaml.safe_dump(config), "changed.yaml")
    for name, check in _checkers(config_schema).items():
        assert check(config), f"{name} accepts a config with a bad {change}"
    for name, check in _checkers(config_schema).items():
        assert check(base) == [], name


def test_schema_writes_a_file_and_fails_in_one_line(tmp_path):
    out = tmp_path / "cnntrain.schema.json"
    result = run("schema", "-o", out)
    assert result.exit_code == 0 and result.stdout == f"wrote {out}\n"
    assert json.loads(out.read_text())["title"] == "cnntrain config"
    (tmp_path / "file").write_text("")
    result = run("schema", "-o", tmp_path / "file" / "s.json")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot write") and result.stderr.count("\n") == 1
