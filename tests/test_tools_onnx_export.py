"""cnntrain export: the TEST net as ONNX, checked against the net's own forward.

Where onnxruntime is installed, every blob the graph computes must equal the net's
TEST forward on random inputs: within 2e-5 of the blob's largest magnitude (float32
arithmetic in another order; the largest difference seen is 7e-6). Without it, the
model must pass ``onnx.checker``; without onnx, the tests are skipped.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from onnx_helpers import random_snapshot
from tool_helpers import run

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed "
                                          "(pip install 'cnntrain[onnx]')")
try:
    import onnxruntime
except ImportError:      # then the models are only checked structurally
    onnxruntime = None

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# The CIFAR-sized zoo (the ImageNet nets take 224x224 images: minutes on this engine).
ZOO = sorted(CONFIGS.glob("*.yaml"))
RTOL = 2e-5

# Every layer type export writes, in the corners where Caffe and ONNX differ: ceil
# rounding with and without pad, a window overhanging the far side (average divisor),
# FLOOR rounding, global pooling, grouped dilated (de)convolutions, in-place layers.
LAYERS = """\
name: onnx_layers
net:
  name: onnx_layers
  layer:
    - {name: input, type: Input, top: data, input_param: {shape: [{dim: [2, 4, 11, 11]}]}}
    - name: conv1
      type: Convolution
      bottom: data
      top: conv1
      convolution_param: {num_output: 8, kernel_size: 3, group: 2, dilation: 2, pad: 2}
    - {name: relu1, type: ReLU, bottom: conv1, top: conv1, relu_param: {negative_slope: 0.1}}
    - name: pool1
      type: Pooling
      bottom: conv1
      top: pool1
      pooling_param: {pool: MAX, kernel_size: 3, stride: 2, pad: 1}
    - {name: crop, type: Crop, bottom: [conv1, pool1], top: crop, crop_param: {offset: 2}}
    - {name: joined, type: Eltwise, bottom: [crop, pool1], top: joined}
    - {name: relu2, type: ReLU, bottom: joined, top: joined}
    - name: pool_ave
      type: Pooling
      bottom: joined
      top: pool_ave
      pooling_param: {pool: AVE, kernel_size: 3, stride: 2}
    - name: pool_ave_pad
      type: Pooling
      bottom: joined
      top: pool_ave_pad
      pooling_param: {pool: AVE, kernel_size: 3, stride: 2, pad: 1}
    - name: pool_floor
      type: Pooling
      bottom: joined
      top: pool_floor
      pooling_param: {pool: MAX, kernel_size: 3, stride: 2, round_mode: FLOOR}
    - name: deconv
      type: Deconvolution
      bottom: joined
      top: deconv
      convolution_param: {num_output: 6, kernel_size: 2, stride: 2, dilation: 2, pad: 1, group: 2}
    - {name: lrn1, type: LRN, bottom: deconv, top: lrn1,
       lrn_param: {local_size: 3, alpha: 0.5, beta: 0.75, k: 2.0}}
    - {name: lrn2, type: LRN, bottom: lrn1, top: lrn2,
       lrn_param: {local_size: 3, alpha: 0.5, norm_region: WITHIN_CHANNEL}}
    - {name: gpool, type: Pooling, bottom: lrn2, top: gpool,
       pooling_param: {pool: AVE, global_pooling: true}}
    - {name: bn, type: BatchNorm, bottom: pool_ave, top: bn}
    - {name: scale, type: Scale, bottom: bn, top: bn, scale_param: {bias_term: true}}
    - {name: bias, type: Bias, bottom: bn, top: biased}
    - {name: prelu, type: PReLU, bottom: biased, top: a}
    - {name: elu, type: ELU, bottom: a, top: b, elu_param: {alpha: 0.7}}
    - {name: gelu, type: GELU, bottom: b, top: c, gelu_param: {approximate: tanh}}
    - {name: gelu_exact, type: GELU, bottom: c, top: c2}
    - {name: swish, type: Swish, bottom: c2, top: d, swish_param: {beta: 1.5}}
    - {name: softplus, type: Softplus, bottom: d, top: e, softplus_param: {beta: 2.0}}
    - {name: bnll, type: BNLL, bottom: e, top: e2}
    - {name: absval, type: AbsVal, bottom: e2, top: f}
    - {name: power, type: Power, bottom: f, top: g,
       power_param: {power: 2.0, scale: 0.5, shift: 1.0}}
    - {name: exp, type: Exp, bottom: g, top: h, exp_param: {base: 2.0, scale: 0.5, shift: 0.25}}
    - {name: log, type: Log, bottom: h, top: i, log_param: {base: 10.0, scale: 2.0, shift: 0.5}}
    - {name: tanh, type: TanH, bottom: i, top: j}
    - {name: sigmoid, type: Sigmoid, bottom: j, top: k}
    - {name: sum, type: Eltwise, bottom: [k, biased], top: sum, eltwise_param: {coeff: [0.5, -2.0]}}
    - {name: prod, type: Eltwise, bottom: [k, g], top: prod, eltwise_param: {operation: PROD}}
    - {name: max, type: Eltwise, bottom: [sum, prod], top: max, eltwise_param: {operation: MAX}}
    - {name: slice, type: Slice, bottom: max, top: [s1, s2], slice_param: {slice_point: [3]}}
    - {name: split, type: Split, bottom: s2, top: [s2a, s2b]}
    - {name: concat, type: Concat, bottom: [s1, s2a, s2b], top: cat}
    - {name: flat1, type: Flatten, bottom: cat, top: flat1}
    - {name: reshape, type: Reshape, bottom: pool_floor, top: r,
       reshape_param: {shape: [{dim: [0, 8, -1]}]}}
    - {name: ip_axis2, type: InnerProduct, bottom: r, top: ip_axis2,
       inner_product_param: {num_output: 3, axis: 2}}
    - {name: flat2, type: Flatten, bottom: ip_axis2, top: flat2}
    - {name: flat3, type: Flatten, bottom: gpool, top: flat3}
    - {name: flat4, type: Flatten, bottom: pool_ave_pad, top: flat4}
    - {name: concat2, type: Concat, bottom: [flat1, flat2, flat3, flat4], top: features}
    - {name: ip, type: InnerProduct, bottom: features, top: ip,
       inner_product_param: {num_output: 5}}
    - {name: drop, type: Dropout, bottom: ip, top: ip}
    - {name: prob, type: Softmax, bottom: ip, top: prob}
solver: {base_lr: 0.01, max_iter: 10}
"""


def _export(snapshot, out):
    result = run("export", "--snapshot", snapshot, "-o", out)
    assert result.exit_code == 0, result.output
    return result


def _blob_session(path: Path, names):
    """An onnxruntime session whose outputs are all the blobs ``names`` the graph holds."""
    from onnx import helper

    model = onnx.load(path)
    produced = {o for node in model.graph.node for o in node.output}
    present = {o.name for o in model.graph.output}
    for name in names:
        if name in produced and name not in present:
            model.graph.output.append(helper.make_tensor_value_info(name, 1, None))
    return onnxruntime.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"])


def _check_against_net(snapshot: Path, path: Path, batch: int = 2):
    """The ONNX model of ``path`` against the TEST net of ``snapshot``: every blob, and
    ``prob`` against predict's probabilities. Returns how many blobs were compared."""
    from cnntrain.tools.predict import Predictor

    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    if onnxruntime is None:
        return 0
    predictor = Predictor(snapshot, notify=lambda _: None)
    net = predictor.build(batch)
    feed = next(node for node in net.nodes if node.layer.type_name == "Input")
    x = np.random.default_rng(5).normal(0, 1, feed.layer.values[0].shape).astype(np.float32)
    probs = predictor._run(net, x)
    session = _blob_session(path, net.blobs)
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {feed.tops[0]: x})))
    compared = 0
    for name, value in got.items():
        want = probs if name == "prob" else net.blobs[name]
        assert value.shape == want.shape, name
        scale = max(float(np.abs(want).max()), 1e-3)
        err = float(np.abs(value - want).max())
        assert err <= RTOL * scale, f"{name}: max difference {err:.3g} at scale {scale:.3g}"
        compared += 1
    return compared


@pytest.mark.parametrize("config", ZOO, ids=lambda p: p.stem)
def test_every_cifar_zoo_net_exports_and_matches_its_test_forward(config, tmp_path):
    snapshot = random_snapshot(config, tmp_path / "s.h5")
    _export(snapshot, tmp_path / "net.onnx")
    compared = _check_against_net(snapshot, tmp_path / "net.onnx")
    assert onnxruntime is None or compared > 3


def test_every_exported_layer_type_matches_blob_by_blob(tmp_path):
    from cnntrain.tools.onnx_export import EXPORTERS

    config = tmp_path / "layers.yaml"
    config.write_text(LAYERS)
    snapshot = random_snapshot(config, tmp_path / "s.h5")
    result = _export(snapshot, tmp_path / "net.onnx")
    assert "input  data [N, 4, 11, 11]" in result.stdout
    assert "output prob [N, 5]" in result.stdout
    used = {line.split("type: ")[1].split(",")[0] for line in LAYERS.splitlines()
            if "type: " in line}
    assert set(EXPORTERS) - used <= {"MapCombination", "Subsampling"}   # lenet5 has them
    compared = _check_against_net(snapshot, tmp_path / "net.onnx")
    assert onnxruntime is None or compared >= 40


def test_the_batch_is_free(tmp_path):
    import json

    snapshot = random_snapshot(CONFIGS / "cifar10_quick.yaml", tmp_path / "s.h5")
    result = run("export", "--snapshot", snapshot, "-o", tmp_path / "net.onnx", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["opset"] == 17 and doc["inputs"] == {"data": ["N", 3, 32, 32]}
    assert doc["outputs"] == {"ip2": ["N", 10], "prob": ["N", 10]}
    if onnxruntime is None:
        pytest.skip("onnxruntime is not installed: the model is not run")
    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"),
                                           providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(0, 50, (5, 3, 32, 32)).astype(np.float32)
    one = session.run(["prob"], {"data": x[:1]})[0]
    five = session.run(["prob"], {"data": x})[0]
    assert five.shape == (5, 10)
    np.testing.assert_allclose(five.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(five[:1], one, atol=1e-6)


NO_ONNX_FORM = """\
name: no_onnx
net:
  name: no_onnx
  layer:
    - {{name: input, type: Input, top: data, input_param: {{shape: [{{dim: [2, 3, 4, 4]}}]}}}}
    - {layer}
    - {{name: ip, type: InnerProduct, bottom: out, top: ip, inner_product_param: {{num_output: 2}}}}
solver: {{base_lr: 0.01, max_iter: 10}}
"""


@pytest.mark.parametrize("layer, words", [
    ("{name: bn_batch, type: BatchNorm, bottom: data, top: out, "
     "batch_norm_param: {use_global_stats: false}}",
     "layer 'bn_batch' (BatchNorm) has no exact ONNX form: it normalizes with the batch's "
     "statistics"),
    ("{name: fold, type: Reshape, bottom: data, top: out, "
     "reshape_param: {shape: [{dim: [1, -1]}]}}",
     "layer 'fold' (Reshape) has no exact ONNX form: it changes the batch axis"),
    ("{name: stack, type: Concat, bottom: [data, data], top: out, concat_param: {axis: 0}}",
     "layer 'stack' (Concat) has no exact ONNX form: it works along the batch axis"),
    ("{name: ip0, type: InnerProduct, bottom: data, top: feat, "
     "inner_product_param: {num_output: 2}}\n"
     "    - {name: loss, type: EuclideanLoss, bottom: [feat, feat], top: out}",
     "layer 'loss' (EuclideanLoss) has no exact ONNX form"),
], ids=["batch-statistics", "reshape-batch", "concat-batch", "loss"])
def test_a_layer_with_no_exact_onnx_form_is_a_one_line_error_naming_it(tmp_path, layer, words):
    config = tmp_path / "no_onnx.yaml"
    text = NO_ONNX_FORM.format(layer=layer)
    if "Loss" in layer:   # a scalar top: nothing after it
        text = "\n".join(line for line in text.splitlines() if "{name: ip," not in line) + "\n"
    config.write_text(text)
    snapshot = random_snapshot(config, tmp_path / "s.h5")
    result = run("export", "--snapshot", snapshot, "-o", tmp_path / "net.onnx")
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1
    assert words in result.stderr
    assert list(tmp_path.glob("*.onnx*")) == []


@pytest.mark.parametrize("make, code, words", [
    (lambda p: p / "missing.h5", 4, "not found"),
    (lambda p: (p / "junk.h5").write_bytes(b"not hdf5 at all") and p / "junk.h5", 4,
     "not a readable snapshot"),
])
def test_bad_snapshots_are_one_line_errors_and_write_nothing(tmp_path, make, code, words):
    result = run("export", "--snapshot", make(tmp_path), "-o", tmp_path / "out" / "net.onnx")
    assert result.exit_code == code, result.output
    assert words in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_without_onnx_the_error_says_what_to_install(tmp_path, monkeypatch):
    snapshot = random_snapshot(CONFIGS / "cifar10_quick.yaml", tmp_path / "s.h5")
    monkeypatch.setitem(sys.modules, "onnx", None)
    result = run("export", "--snapshot", snapshot, "-o", tmp_path / "net.onnx")
    assert result.exit_code == 1
    assert "pip install 'cnntrain[onnx]'" in result.stderr
    assert not (tmp_path / "net.onnx").exists()
