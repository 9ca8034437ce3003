"""The fast paths (``engine.conv_plan``, ``engine.pool_plan``) equal the reference forms
stated in the layer files on every layer of every CIFAR zoo net in configs/, forward
and backward, on generated inputs at batch 2.

float64: within 1e-9 of the largest reference value (Winograd's transforms and the
GEMMs' summation order are the only differences). float32: the fast path on float32
inputs against the reference in float64 on the same inputs, within 1e-4 of the
largest reference value (the bound that Winograd's F(4x4, 3x3) float32 rounding
needs; im2col alone stays near 1e-6). The ImageNet nets are left out: their reference
forms in float64 take minutes.
"""
from pathlib import Path

import numpy as np
import pytest

from cnntrain.config import load_experiment
from cnntrain.layers.conv import (conv_forward_reference, conv_input_grad_reference,
                                  conv_weight_grad_reference)
from cnntrain.layers.deconv import (deconv_forward_reference, deconv_input_grad_reference,
                                    deconv_weight_grad_reference)
from cnntrain.layers.pool import (ave_pool_backward_reference, ave_pool_reference,
                                  max_pool_backward_reference, max_pool_reference)
from cnntrain.tools.inputs import net_with_random_inputs

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ZOO = sorted(CONFIGS.glob("*.yaml"))
PLANNED = ("Convolution", "Deconvolution", "MapCombination", "Pooling")


def record_planned_layers(net):
    """Wrap each planned layer's forward and backward to keep copies of what went in and
    came out: {layer name: record}."""
    records = {}
    for node in net.nodes:
        layer = node.layer
        if layer.type_name not in PLANNED:
            continue
        rec = records[layer.name] = {"layer": layer}

        def forward(bottom, layer=layer, rec=rec, real=layer.forward):
            tops = real(bottom)
            rec["x"], rec["y"] = bottom[0].copy(), tops[0].copy()
            return tops

        def backward(top_diff, propagate_down, layer=layer, rec=rec, real=layer.backward):
            before = layer.blobs[0].diff.copy() if layer.blobs else None
            diffs = real(top_diff, propagate_down)
            rec["dy"] = top_diff[0].copy()
            rec["dx"] = None if diffs[0] is None else diffs[0].copy()
            rec["dw"] = layer.blobs[0].diff - before if layer.blobs else None
            return diffs
        layer.forward, layer.backward = forward, backward
    return records


def references(rec):
    """(y, dx, dW) of the reference forms for one recorded layer, in float64 (dW None
    where the layer's own parameter gradient is not the convolution's)."""
    layer = rec["layer"]
    x, dy = rec["x"].astype(np.float64), rec["dy"].astype(np.float64)
    kind = layer.type_name
    if kind == "Pooling":
        g = layer.geometry
        if layer.method == "MAX":
            y, argmax = max_pool_reference(x, g)
            return y, max_pool_backward_reference(dy, argmax, x.shape, g), None
        return ave_pool_reference(x, g), ave_pool_backward_reference(dy, x.shape, g), None
    if kind == "MapCombination":
        w = layer.effective.astype(np.float64)
        b = layer.blobs[2].data if len(layer.blobs) > 2 else None
        return (conv_forward_reference(x, w, b, layer.geometry),
                conv_input_grad_reference(dy, w, layer.geometry, x.shape), None)
    w = layer.blobs[0].data.astype(np.float64)
    b = layer.blobs[1].data.astype(np.float64) if len(layer.blobs) > 1 else None
    if kind == "Deconvolution":
        return (deconv_forward_reference(x, w, b, layer.geometry, rec["y"].shape),
                deconv_input_grad_reference(dy, w, layer.geometry),
                deconv_weight_grad_reference(x, dy, layer.geometry))
    return (conv_forward_reference(x, w, b, layer.geometry),
            conv_input_grad_reference(dy, w, layer.geometry, x.shape),
            conv_weight_grad_reference(x, dy, layer.geometry))


def assert_close(got, want, tol, what):
    scale = max(float(np.abs(want).max()), 1e-30)
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err <= tol * scale, f"{what}: max error {err:.3g}, {err / scale:.3g} of max |ref|"


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-9), (np.float32, 1e-4)],
                         ids=["float64", "float32"])
@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_fast_paths_equal_the_reference_forms_on_the_zoo(path, dtype, tol):
    exp = load_experiment(path)
    net, _ = net_with_random_inputs(exp, batch=2, seed=1, dtype=dtype, force_backward=True)
    records = record_planned_layers(net)
    assert records, "no planned layer in this net"
    net.forward()
    net.backward()
    for name, rec in records.items():
        if "dy" not in rec:
            continue                 # a layer the loss does not depend on
        y, dx, dw = references(rec)
        assert_close(rec["y"], y, tol, f"{name} forward")
        if rec["dx"] is not None:
            assert_close(rec["dx"], dx, tol, f"{name} input gradient")
        if dw is not None:
            assert_close(rec["dw"], dw, tol, f"{name} weight gradient")
