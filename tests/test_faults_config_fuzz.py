"""Fuzzed configs: hand-edited YAML gone wrong must end in one ``error:`` line, never a
traceback.

hypothesis mutates the tiny config of ``test_cli_e2e``: wrong types, missing and
unknown fields, unknown layer types, cycles and forward references, duplicate tops,
negative, zero and huge sizes, kernels larger than their input, non-finite numbers,
reordered and duplicated layers; then, on the text, cut files, stray YAML syntax and
non-UTF-8 bytes. Every mutant goes through ``cnntrain train --dry-run`` (the summary)
and, with a clamped run length, through ``cnntrain train`` on the tiny dataset.

A mutant may well be a valid config (then the command succeeds); otherwise it must
exit with a code of ``cnntrain --help``, print exactly one ``error: ...`` line on
stderr, and, for config errors (exit 2), name the file (the config or its net file).

The default budget is deterministic (``derandomize``; see ``conftest.py``). The heavy
version runs many more random examples:

    python -m pytest tests/test_faults_config_fuzz.py -m fuzz_heavy
"""
from __future__ import annotations

import copy
import tempfile
import urllib.error
import warnings
from pathlib import Path
from unittest import mock

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

import fault_figures  # noqa: E402
from cnntrain.config import schema  # noqa: E402
from cnntrain.layers import LAYER_TYPES  # noqa: E402
from test_cli_e2e import CONFIG, write_cifar10_binary  # noqa: E402
from tool_helpers import run  # noqa: E402

BASE = yaml.safe_load(CONFIG)
EXIT_CODES = {1, 2, 3, 4, 5}
MAX_LINE = 2000   # one line, and one a person can read

SIZE_FIELDS = ("num_output", "kernel_size", "kernel_h", "kernel_w", "stride", "stride_h",
               "stride_w", "pad", "pad_h", "pad_w", "group", "batch_size", "crop_size", "shift",
               "axis", "top_k", "max_iter", "test_iter", "test_interval", "snapshot",
               "iter_size", "average_loss", "stepsize", "display", "snapshot_keep", "dim")
ALL_FIELDS = sorted({k for block in schema.PARAM_BLOCKS.values() for k in block}
                    | set(schema.SOLVER) | set(schema.LAYER_FIELDS) | set(schema.PARAM_BLOCKS)
                    | set(schema.FILLER) | set(schema.TOP_LEVEL))

HUGE = [2 ** 31, 2 ** 31 - 1, 2 ** 32 + 1, 10 ** 9, 2 ** 63, 2 ** 64, 10 ** 18, 10 ** 30,
        10 ** 400, 1e308, -1e308, 1e-320, float("inf"), float("-inf"), float("nan")]
SPECIAL = HUGE + [-1, 0, -2 ** 63, 1, 3, 33, 64, 1000, "", " ", "NaN", "1e-3", "0x10", "~",
                  "../../etc/passwd", "/dev/zero", "\x00", "\u2603" * 30, "x" * 5000, True, False,
                  None, [], {}, [[]], [None], {"phase": "TRAIN"}, {"dim": [0]}, b"\xff\xfe",
                  ["data", "data"], "data", "label", "loss"]

scalars = st.one_of(st.sampled_from(SPECIAL), st.integers(-2 ** 70, 2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.booleans(), st.none())
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.one_of(st.sampled_from(ALL_FIELDS), st.text(max_size=8)),
                                   scalars, max_size=3))


def _paths(node, prefix=()):
    """Every path into the parsed YAML: (key, key, ...) with list indexes as ints."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _get(raw, path):
    for key in path:
        raw = raw[key]
    return raw


def _layers(raw):
    net = raw.get("net") if isinstance(raw, dict) else None
    layers = net.get("layer") if isinstance(net, dict) else None
    return layers if isinstance(layers, list) else []


@st.composite
def mutated(draw):
    """(description, YAML bytes) of one mutant of the tiny config."""
    raw = copy.deepcopy(BASE)
    done = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "set", "delete", "unknown", "type", "cycle",
                                   "duplicate_top", "kernel", "size", "layers", "root"]))
        paths = [p for p in _paths(raw) if p]
        layers = _layers(raw)
        if op == "set" and paths:
            path = draw(st.sampled_from(paths))
            _get(raw, path[:-1])[path[-1]] = draw(values)
        elif op == "delete" and paths:
            path = draw(st.sampled_from(paths))
            parent = _get(raw, path[:-1])
            del parent[path[-1]]
        elif op == "unknown":
            dicts = [p for p in [()] + paths if isinstance(_get(raw, p), dict)]
            if dicts:
                key = draw(st.one_of(st.sampled_from(ALL_FIELDS), st.text(min_size=1, max_size=8)))
                _get(raw, draw(st.sampled_from(dicts)))[key] = draw(values)
        elif op == "type" and layers:
            layer = draw(st.sampled_from(layers))
            if isinstance(layer, dict):
                layer["type"] = draw(st.one_of(st.sampled_from(sorted(LAYER_TYPES)),
                                               st.sampled_from(["Poolling", "convolution", "",
                                                                "BatchNorm", "Python"]),
                                               st.text(max_size=10)))
        elif op == "cycle" and len(layers) > 2:
            i = draw(st.integers(0, len(layers) - 1))
            j = draw(st.integers(i, len(layers) - 1))   # itself or a later layer
            if isinstance(layers[i], dict) and isinstance(layers[j], dict):
                layers[i]["bottom"] = layers[j].get("top", "x")
        elif op == "duplicate_top" and len(layers) > 2:
            i = draw(st.integers(1, len(layers) - 1))
            j = draw(st.integers(0, i - 1))
            if isinstance(layers[i], dict) and isinstance(layers[j], dict):
                layers[i]["top"] = layers[j].get("top", "x")
        elif op == "kernel":
            blocks = [layer[b] for layer in layers if isinstance(layer, dict)
                      for b in ("convolution_param", "pooling_param") if isinstance(layer.get(b), dict)]
            if blocks:
                block = draw(st.sampled_from(blocks))
                key = draw(st.sampled_from(["kernel_size", "kernel_h", "kernel_w", "stride",
                                            "pad"]))
                block[key] = draw(st.sampled_from([17, 33, 64, 1000, 2 ** 31, 10 ** 12]))
        elif op == "size":
            holders = [p for p in paths if p[-1] in SIZE_FIELDS]
            if holders:
                path = draw(st.sampled_from(holders))
                _get(raw, path[:-1])[path[-1]] = draw(st.sampled_from(
                    [-1, 0, -2 ** 40, 2 ** 31, 10 ** 9, 10 ** 18, 2 ** 64, 1.5, -0.0]))
        elif op == "layers" and layers:
            how = draw(st.sampled_from(["swap", "copy", "drop"]))
            i, j = draw(st.integers(0, len(layers) - 1)), draw(st.integers(0, len(layers) - 1))
            if how == "swap":
                layers[i], layers[j] = layers[j], layers[i]
            elif how == "copy":
                layers.insert(j, copy.deepcopy(layers[i]))
            else:
                del layers[i]
        elif op == "root":
            raw = draw(st.sampled_from([None, [], "text", 42, [BASE], {"net": None, "solver": None},
                                        {"net": "missing_net.yaml", "solver": BASE["solver"]},
                                        {"net": "../../../../etc/passwd", "solver": BASE["solver"]}]))
            raw = copy.deepcopy(raw)
        done.append(op)
    try:
        text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True).encode("utf-8")
    except yaml.YAMLError:
        text = repr(raw).encode()
    how = draw(st.sampled_from(["none"] * 6 + ["cut", "bytes", "char", "line", "bom", "latin1",
                                               "utf16"]))
    if how == "cut":
        text = text[:draw(st.integers(0, len(text)))]
    elif how == "bytes":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.binary(min_size=1, max_size=4).filter(
            lambda b: any(c >= 0x80 for c in b))) + text[at:]
    elif how == "char" and text:
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.sampled_from(list(b":-[]{}&*!|>'\"%@`\t#,?"))) \
            .to_bytes(1, "big") + text[at + 1:]
    elif how == "line":
        lines = text.split(b"\n")
        i = draw(st.integers(0, len(lines) - 1))
        if draw(st.booleans()):
            lines.insert(i, lines[i])   # a duplicate key, or a doubled list item
        else:
            del lines[i]
        text = b"\n".join(lines)
    elif how == "bom":
        text = b"\xef\xbb\xbf" + text
    elif how == "latin1":
        text = text.replace(b"name: tiny", "name: tiny\u00e9".encode("latin-1"), 1)
    elif how == "utf16":
        text = text.decode("utf-8", "replace").encode("utf-16")
    return f"{'+'.join(done)}/{how}", text


def invoke(*args):
    """``cnntrain ARGS`` in-process; warnings are kept with the result, as the real
    command would print them on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(*args)
    result.warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
    return result


def check_one_line(result, config: Path, what: str) -> None:
    """The command succeeded, or failed with one ``error:`` line and a documented code."""
    fault_figures.add("configs_fuzzed")
    assert not result.warnings, (what, result.warnings)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        fault_figures.add("tracebacks")
        raise AssertionError(f"{what}: traceback ({type(result.exception).__name__}: "
                             f"{result.exception})") from result.exception
    assert "Traceback" not in result.output, what
    if result.exit_code == 0:
        return
    assert result.exit_code in EXIT_CODES, (what, result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (what, result.stderr)
    assert len(lines[0]) <= MAX_LINE, (what, lines[0][:300])
    if result.exit_code == 2 and "--set" not in lines[0]:
        # Names the file at fault: the config, or a net file it refers to.
        assert str(config.parent) in lines[0], (what, lines[0])


def _dry_run(text: bytes, what: str = "") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "fuzz.yaml"
        config.write_bytes(text)
        result = invoke("train", config, "--dry-run")
        check_one_line(result, config, what or text[:300])


def _offline(*args, **kwargs):
    raise urllib.error.URLError(OSError("network is off in the fault suite"))


# Run length of mutants that train: a valid mutant trains for a moment, not for hours.
CLAMP = {"max_iter": 3, "test_iter": 1, "test_interval": 2, "snapshot": 2, "display": 1,
         "iter_size": 2, "average_loss": 2, "stepsize": 2}


def _clamped(text: bytes) -> bytes:
    try:
        raw = yaml.safe_load(text.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return text
    solver = raw.get("solver") if isinstance(raw, dict) else None
    if not isinstance(solver, dict):
        return text
    for key, most in CLAMP.items():
        value = solver.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > most:
            solver[key] = most
    for layer in _layers(raw):
        param = layer.get("data_param") if isinstance(layer, dict) else None
        if isinstance(param, dict) and isinstance(param.get("batch_size"), int) \
                and not isinstance(param["batch_size"], bool) and 64 < param["batch_size"] < 2 ** 20:
            param["batch_size"] = 64   # huge ones stay: they must be refused, not allocated
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True).encode("utf-8")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_cifar10_binary(tmp_path_factory.mktemp("fuzzdata") / "data")


def _train(text: bytes, data: Path, what: str = "") -> None:
    text = _clamped(text)
    with tempfile.TemporaryDirectory() as tmp, \
            mock.patch("cnntrain.data.download.urlopen", _offline):
        config = Path(tmp) / "fuzz.yaml"
        config.write_bytes(text)
        result = invoke("train", config, "--data-dir", data, "--runs-dir", Path(tmp) / "runs",
                     "--no-progress")
        check_one_line(result, config, what or text[:300])


@settings(max_examples=250)
@given(mutated())
def test_fuzzed_configs_dry_run_is_one_line_error_or_ok(case):
    _dry_run(case[1], case[0])


@settings(max_examples=120)
@given(mutated())
def test_fuzzed_configs_train_is_one_line_error_or_trains(data_dir, case):
    _train(case[1], data_dir, case[0])


# Directed cases the random mutations reach only rarely.
DEEP = b"solver: " + b"[" * 5_000 + b"]" * 5_000 + b"\n"
BOMB = (b"a: &a [x, x, x, x, x, x, x, x, x]\n"
        + b"".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n".encode()
                   for p, c in zip("abcdefgh", "bcdefghi"))
        + b"net: {name: n, layer: *i}\nsolver: {base_lr: 0.1, max_iter: 1}\n")
RECURSIVE = CONFIG.replace("bottom: data\n", "bottom: &self [*self]\n", 1).encode()
DIRECTED = {
    "empty file": b"",
    "only a comment": b"# nothing\n",
    "a list": b"- 1\n- 2\n",
    "binary junk": bytes(range(256)),
    "nested 5000 deep": DEEP,
    "alias bomb": BOMB,
    "recursive alias": RECURSIVE,
    "python object tag": CONFIG.replace("base_lr: 0.05", "base_lr: !!python/object/apply:os.system "
                                        "['echo pwned']").encode(),
    "tabs": CONFIG.replace("    - name: conv1", "\t- name: conv1").encode(),
    "self loop": CONFIG.replace("bottom: pool1\n      top: ip", "bottom: ip\n      top: ip").encode(),
    "kernel larger than input": CONFIG.replace("kernel_size: 3, stride: 2, pad: 1",
                                               "kernel_size: 40").encode(),
    "pool kernel larger than input": CONFIG.replace("pool: MAX, kernel_size: 3",
                                                    "pool: MAX, kernel_size: 99").encode(),
    "huge num_output": CONFIG.replace("num_output: 10}", "num_output: 1000000000000}").encode(),
    "huge conv": CONFIG.replace("num_output: 4,", "num_output: 100000000,").encode(),
    "huge batch": CONFIG.replace("batch_size: 8", "batch_size: 100000000000").encode(),
    "huge group": CONFIG.replace("pad: 1}", "pad: 1, group: 1000000000000}").encode(),
    "huge stride": CONFIG.replace("stride: 2, pad: 1", "stride: 1000000000000000000000, pad: 1")
    .encode(),
    "huge pad": CONFIG.replace("stride: 2, pad: 1", "stride: 2, pad: 100000000").encode(),
    "huge float lr": CONFIG.replace("base_lr: 0.05", "base_lr: 1.0e+400").encode(),
    "huge int lr": CONFIG.replace("base_lr: 0.05", "base_lr: " + "9" * 400).encode(),
    "huge max_iter": CONFIG.replace("max_iter: 12", "max_iter: " + "9" * 30).encode(),
    "huge seed": CONFIG.replace("random_seed: 3", "random_seed: " + "9" * 30).encode(),
    "negative seed": CONFIG.replace("random_seed: 3", "random_seed: -1").encode(),
    "huge mean_value": CONFIG.replace("mean_image: true", "mean_value: [1.0e+300]").encode(),
    "huge top_k": CONFIG.replace("top: accuracy\n", "top: accuracy\n      accuracy_param: "
                                 "{top_k: 1000000}\n").encode(),
    "huge crop": CONFIG.replace("shift: 2}", "shift: 2, crop_size: 1000000000000}").encode(),
    "huge shift": CONFIG.replace("shift: 2}", "shift: 100000000}").encode(),
    "huge axis": CONFIG.replace("num_output: 10}", "num_output: 10, axis: 1000000000000000}")
    .encode(),
    "negative axis": CONFIG.replace("num_output: 10}", "num_output: 10, axis: -9}").encode(),
    "net file outside": CONFIG.replace("net:\n  name: tiny", "net: /etc/passwd\nxnet:\n  name: tiny")
    .encode(),
    "net file is a folder": b"net: .\nsolver: {base_lr: 0.1, max_iter: 1}\n",
    "huge dim": b"net:\n  layer:\n  - {name: in, type: Input, top: d, input_param: "
                b"{shape: {dim: [100000, 100000, 100000, 100000]}}}\n"
                b"solver: {base_lr: 0.1, max_iter: 1}\n",
    "empty dim": b"net:\n  layer:\n  - {name: in, type: Input, top: d, input_param: "
                 b"{shape: {dim: []}}}\nsolver: {base_lr: 0.1, max_iter: 1}\n",
    "latin-1 layer name": CONFIG.replace("name: conv1", "name: conv\u00e91").encode("latin-1"),
    "utf-16": CONFIG.encode("utf-16"),
}


@pytest.mark.parametrize("name", sorted(DIRECTED))
def test_directed_hostile_configs_are_one_line_errors(name, data_dir):
    _dry_run(DIRECTED[name], name)
    _train(DIRECTED[name], data_dir, name)


@pytest.mark.parametrize("override", [
    "solver.base_lr=", "solver=", "net=", "net.layer=[]", "net.layer.conv1=3",
    "net.layer.0.type=Nope", "net.layer.99.name=x", "solver.max_iter=-5", "solver.base_lr=[1,2]",
    "net.layer.conv1.convolution_param.num_output=1e12", "solver.base_lr={a: [}",
    "=", "a..b=1", "net.layer.conv1.bottom=conv1", "net.layer.ip.top=conv1",
    "net.layer.-1.type=Accuracy", "net.layer.-100.type=Accuracy", "solver.type=Adam\u00e9",
    "net.layer.cifar.data_param.batch_size=100000000000",
])
def test_fuzzed_overrides_are_one_line_errors_or_ok(tmp_path, override):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    check_one_line(invoke("train", config, "--dry-run", "--set", override), config, override)


@pytest.mark.fuzz_heavy
@settings(max_examples=5000)
@given(mutated())
def test_heavy_fuzzed_configs_dry_run(case):
    _dry_run(case[1], case[0])


@pytest.mark.fuzz_heavy
@settings(max_examples=1500)
@given(mutated())
def test_heavy_fuzzed_configs_train(data_dir, case):
    _train(case[1], data_dir, case[0])
