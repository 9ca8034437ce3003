"""Binary .caffemodel weights (a serialized NetParameter) through import-prototxt --weights.

The files are written here by a small protobuf wire-format encoder of their own, with
the field numbers of Caffe's caffe.proto spelled out, so the reader's schema is checked
against them rather than against itself.
"""
import struct
import sys

import h5py
import numpy as np
import pytest

from test_tools_caffe import SMALL_NET
from tool_helpers import run

pytest.importorskip("google.protobuf", reason="the caffe extra (protobuf) is not installed "
                                              "(pip install 'cnntrain[caffe]')")


# --- protobuf wire format ---------------------------------------------------------------
def varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1                     # negative int32/int64: ten-byte two's complement
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def number(field: int, value: int) -> bytes:
    return key(field, 0) + varint(value)


def chunk(field: int, payload: bytes) -> bytes:
    return key(field, 2) + varint(len(payload)) + payload


def text(field: int, value: str) -> bytes:
    return chunk(field, value.encode())


def blob(array: np.ndarray, *, legacy: bool = False, double: bool = False) -> bytes:
    """BlobProto: shape 7 (BlobShape dim 1, packed), or the legacy num 1, channels 2,
    height 3, width 4; data 5 (packed float) or double_data 8 (packed double)."""
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        out = b"".join(number(f, d) for f, d in zip((1, 2, 3, 4), dims))
    else:
        out = chunk(7, chunk(1, b"".join(varint(d) for d in array.shape)))
    values = array.reshape(-1)
    if double:
        return out + chunk(8, struct.pack(f"<{values.size}d", *values))
    return out + chunk(5, struct.pack(f"<{values.size}f", *values))


def layer(name: str, kind: str, blobs=(), bottoms=(), tops=()) -> bytes:
    """LayerParameter: name 1, type 2, bottom 3, top 4, blobs 7; plus fields the reader
    must skip: phase 10 and a convolution_param 106 holding num_output 1."""
    return (text(1, name) + text(2, kind) + b"".join(text(3, b) for b in bottoms)
            + b"".join(text(4, t) for t in tops) + number(10, 1)
            + chunk(106, number(1, 4)) + b"".join(chunk(7, b) for b in blobs))


def v1_layer(name: str, kind: int, blobs=()) -> bytes:
    """V1LayerParameter: name 4, type 5 (enum), blobs 6."""
    return text(4, name) + number(5, kind) + b"".join(chunk(6, b) for b in blobs)


def net(layers=(), v1_layers=()) -> bytes:
    """NetParameter: name 1, layers 2 (V1), layer 100."""
    return (text(1, "small") + b"".join(chunk(2, v) for v in v1_layers)
            + b"".join(chunk(100, entry) for entry in layers))


# --- the small net of test_tools_caffe, its weights as Caffe would write them -------------
def weights(seed: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    return {"conv1/0": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
            "conv1/1": rng.normal(0, 0.1, 4).astype(np.float32),
            # Old Caffe wrote InnerProduct blobs 4-D: (1, 1, num_output, K).
            "ip/0": rng.normal(0, 0.1, (1, 1, 10, 256)).astype(np.float32),
            "ip/1": rng.normal(0, 0.1, 10).astype(np.float32)}


def modern_model(w: dict) -> bytes:
    return net([layer("cifar", "Data", tops=["data", "label"]),
                layer("conv1", "Convolution", [blob(w["conv1/0"]), blob(w["conv1/1"])],
                      ["data"], ["conv1"]),
                layer("relu1", "ReLU", bottoms=["conv1"], tops=["conv1"]),
                layer("ip", "InnerProduct", [blob(w["ip/0"]), blob(w["ip/1"])])])


def _import(tmp_path, model: bytes, name: str = "small.caffemodel"):
    (tmp_path / "small.prototxt").write_text(SMALL_NET)
    (tmp_path / name).write_bytes(model)
    return run("import-prototxt", tmp_path / "small.prototxt", "-o", tmp_path / "small.yaml",
               "--weights", tmp_path / name)


def _snapshot_weights(path) -> dict:
    with h5py.File(path, "r") as f:
        return {f"{layer}/{i}": f[f"data/{layer}/{i}"][()] for layer in f["data"]
                for i in f[f"data/{layer}"]}


def test_a_binary_caffemodel_becomes_the_same_snapshot_as_its_hdf5_twin(tmp_path):
    w = weights()
    result = _import(tmp_path, modern_model(w))
    assert result.exit_code == 0, result.stderr
    assert "wrote" in result.stdout and "conv1, ip" in result.stdout
    assert "(1, 1, 10, 256) read as (10, 256)" in result.stderr
    got = _snapshot_weights(tmp_path / "small.h5")
    for name, value in w.items():
        np.testing.assert_array_equal(got[name], value.reshape(got[name].shape))
    # The same weights as .caffemodel.h5 give the same snapshot, bit for bit.
    twin = tmp_path / "h5"
    twin.mkdir()
    with h5py.File(twin / "small.caffemodel.h5", "w") as f:
        for name, value in w.items():
            f[f"data/{name}"] = value
    (twin / "small.prototxt").write_text(SMALL_NET)
    result = run("import-prototxt", twin / "small.prototxt", "-o", twin / "small.yaml",
                 "--weights", twin / "small.caffemodel.h5")
    assert result.exit_code == 0, result.stderr
    h5_weights = _snapshot_weights(twin / "small.h5")
    assert set(h5_weights) == set(got)
    for name in got:
        np.testing.assert_array_equal(got[name], h5_weights[name])


def test_a_legacy_v1_caffemodel_with_4d_double_blobs(tmp_path):
    w = weights(seed=8)
    CONVOLUTION, INNER_PRODUCT, RELU = 4, 14, 18    # V1LayerParameter.LayerType
    model = net(v1_layers=[
        v1_layer("conv1", CONVOLUTION, [blob(w["conv1/0"], legacy=True, double=True),
                                        blob(w["conv1/1"], legacy=True)]),
        v1_layer("relu1", RELU),
        v1_layer("ip", INNER_PRODUCT, [blob(w["ip/0"], legacy=True), blob(w["ip/1"],
                                                                            legacy=True)])])
    result = _import(tmp_path, model)
    assert result.exit_code == 0, result.stderr
    got = _snapshot_weights(tmp_path / "small.h5")
    assert got["conv1/1"].shape == (4,) and got["ip/0"].shape == (10, 256)
    for name, value in w.items():
        np.testing.assert_array_equal(got[name], value.reshape(got[name].shape))


def _without_bias(w):
    return net([layer("conv1", "Convolution", [blob(w["conv1/0"])]),
                layer("ip", "InnerProduct", [blob(w["ip/0"]), blob(w["ip/1"])])])


def _truncated(w):
    whole = modern_model(w)
    return whole[:len(whole) // 2]


def _short_data(w):
    bad = chunk(7, chunk(1, varint(4) + varint(3) + varint(3) + varint(3))) + chunk(
        5, struct.pack("<10f", *range(10)))
    return net([layer("conv1", "Convolution", [bad, blob(w["conv1/1"])])])


def _nan(w):
    conv = w["conv1/0"].copy()
    conv[0, 0, 0, 0] = np.nan
    return net([layer("conv1", "Convolution", [blob(conv), blob(w["conv1/1"])])])


def _twice(w):
    conv = layer("conv1", "Convolution", [blob(w["conv1/0"]), blob(w["conv1/1"])])
    return net([conv, conv])


@pytest.mark.parametrize("make, words", [
    (_without_bias, "layer 'conv1' has 1 blob(s) in the file, the net's layer 2: param 1 is "
                    "missing (its bias"),
    (_truncated, "truncated or corrupt"),
    (_short_data, "layer 'conv1' blob 0 has shape (4, 3, 3, 3) (108 values) but holds 10"),
    (_nan, "layer 'conv1' blob 0 holds NaN or inf"),
    (_twice, "layer 'conv1' has weights twice"),
    (lambda w: b"", "holds no layer weights"),
    (lambda w: np.random.default_rng(0).bytes(4000), "small.caffemodel"),
])
def test_bad_caffemodels_are_one_line_errors_and_write_no_snapshot(tmp_path, make, words):
    result = _import(tmp_path, make(weights()))
    assert result.exit_code == 4, result.output
    assert words in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "small.h5").exists()
    assert not list(tmp_path.glob(".small.h5*"))


def test_a_missing_weights_file_is_a_snapshot_error(tmp_path):
    (tmp_path / "small.prototxt").write_text(SMALL_NET)
    result = run("import-prototxt", tmp_path / "small.prototxt", "-o", tmp_path / "s.yaml",
                 "--weights", tmp_path / "nowhere.caffemodel")
    assert result.exit_code == 4 and "not found" in result.stderr


def test_without_protobuf_the_error_says_what_to_install(tmp_path, monkeypatch):
    from cnntrain.tools.caffemodel import net_parameter_class

    net_parameter_class.cache_clear()
    monkeypatch.setitem(sys.modules, "google.protobuf", None)
    try:
        result = _import(tmp_path, modern_model(weights()))
    finally:
        net_parameter_class.cache_clear()
    assert result.exit_code == 1
    assert "pip install 'cnntrain[caffe]'" in result.stderr
    assert not (tmp_path / "small.h5").exists()
