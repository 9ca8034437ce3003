"""The TEST net of a snapshot as an ONNX model: ``cnntrain export``.

The graph takes what the net's Data (or Input) layer hands on, transformed images
(N, C, H, W) with a free batch size N, and gives the net's outputs (the scores the
loss and accuracy layers read; those layers, which need labels, are left out), plus
``prob``, their softmax, when the net does not end in one.

Every layer becomes ONNX operators of opset :data:`OPSET` that compute what the layer
computes, not an approximation of it; a layer with no such form is an error naming it.
The places where the two differ in convention:

* Pooling: Caffe rounds the output size up and drops a last window that would start
  past the input and its top pad; average pooling divides by the part of the window
  inside input plus pad. ONNX's ``ceil_mode`` follows neither rule everywhere, so the
  far side gets explicit padding that makes the floor rule give Caffe's size, and an
  average pool is multiplied by ``kernel area / Caffe's divisor`` where that differs.
* LRN within channels, Power, Exp, Log, GELU, Swish and Softplus with a beta are
  written out as elementwise operators (opset 17 has no GELU).
* BatchNorm with its running statistics is ``BatchNormalization`` (scale 1, shift 0);
  the Scale or Bias after it stays a ``Mul``/``Add``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cnntrain.errors import CnnTrainError

OPSET = 17
IR_VERSION = 8            # the IR version of opset 17: runtimes that read opset 17 read it
INSTALL_HINT = "ONNX export needs the onnx package: pip install 'cnntrain[onnx]'"


class ExportError(CnnTrainError):
    """The net cannot be written as ONNX (a layer with no exact ONNX form)."""


def _onnx():
    try:
        import onnx
    except ImportError:
        raise CnnTrainError(INSTALL_HINT) from None
    return onnx


@dataclass
class LayerNode:
    """One layer of the net as the exporters see it: ONNX names of its bottoms and
    tops, and the shapes the net gave them (batch as built)."""

    layer: Any
    bottoms: list[str]
    tops: list[str]
    bottom_shapes: list[tuple[int, ...]]
    top_shapes: list[tuple[int, ...]]

    def fail(self, why: str) -> ExportError:
        return ExportError(f"layer '{self.layer.name}' ({self.layer.type_name}) has no exact "
                           f"ONNX form: {why}")


class GraphBuilder:
    """Nodes and constants of the graph under construction, with unique names."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes: list = []
        self.initializers: list = []
        self.names: set[str] = set()

    def fresh(self, hint: str) -> str:
        name, k = hint, 1
        while name in self.names:
            k += 1
            name = f"{hint}_{k}"
        self.names.add(name)
        return name

    def const(self, hint: str, value) -> str:
        """A float32 (or int64, for integer ``value``) initializer; returns its name."""
        array = np.asarray(value)
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, *,
           hint: str = "", outputs: list[str] | None = None, **attrs) -> str:
        """Add one node; returns its (first) output's name: ``out`` if given, else a
        fresh name from ``hint``."""
        if outputs is None:
            outputs = [out if out is not None else self.fresh(hint or op_type)]
        self.nodes.append(self.onnx.helper.make_node(
            op_type, inputs, outputs, name=self.fresh(f"{hint or outputs[0]}/{op_type}"),
            **attrs))
        return outputs[0]


EXPORTERS: dict[str, Callable[[GraphBuilder, LayerNode], None]] = {}


def exports(*type_names: str):
    """Register the exporter of the layer types ``type_names``."""
    def wrap(fn):
        for name in type_names:
            EXPORTERS[name] = fn
        return fn
    return wrap


def _hint(n: LayerNode, what: str) -> str:
    return f"{n.layer.name}/{what}"


def _batch_kept_shape(shape: tuple[int, ...]) -> list[int]:
    """A Reshape target for ``shape`` that copies the batch (0 = "as the input"), so the
    graph keeps its free batch size."""
    return [0] + list(shape[1:])


# ----------------------------------------------------------------------------- convolutions
def _window_attrs(layer) -> dict:
    return dict(kernel_shape=[layer.kh, layer.kw], strides=[layer.sh, layer.sw],
                pads=[layer.ph, layer.pw, layer.ph, layer.pw], dilations=[layer.dh, layer.dw],
                group=layer.group)


def _windowed(g: GraphBuilder, n: LayerNode, op: str, weights, bias, geometry) -> None:
    """``op`` (Conv or ConvTranspose) with these weights, an optional bias, and the
    window of ``geometry``."""
    inputs = [n.bottoms[0], g.const(_hint(n, "weight"), weights)]
    if bias is not None:
        inputs.append(g.const(_hint(n, "bias"), bias))
    g.op(op, inputs, n.tops[0], **_window_attrs(geometry))


def _weights_and_bias(layer):
    return layer.blobs[0].data, layer.blobs[1].data if len(layer.blobs) > 1 else None


@exports("Convolution")
def _convolution(g: GraphBuilder, n: LayerNode) -> None:
    _windowed(g, n, "Conv", *_weights_and_bias(n.layer), n.layer)


@exports("Deconvolution")
def _deconvolution(g: GraphBuilder, n: LayerNode) -> None:
    # Caffe's deconvolution weights (C_in, C_out/G, kh, kw) are ConvTranspose's layout,
    # and its output size s(in-1) + d(k-1) + 1 - 2p is ConvTranspose's with those pads.
    _windowed(g, n, "ConvTranspose", *_weights_and_bias(n.layer), n.layer)


@exports("MapCombination")
def _map_combination(g: GraphBuilder, n: LayerNode) -> None:
    # One convolution with the effective weights alpha_ij k_ij (as its forward runs it);
    # the sparsity penalty top is a training loss, not part of the exported graph.
    from cnntrain.layers.loss import softmax

    layer = n.layer
    alpha = softmax(layer.blobs[1].data.astype(np.float64), axis=0)
    weights = layer.blobs[0].data * alpha.T[:, :, None, None].astype(layer.blobs[0].data.dtype)
    bias = layer.blobs[2].data if len(layer.blobs) > 2 else None
    _windowed(g, n, "Conv", weights, bias, layer.geometry)


@exports("Subsampling")
def _subsampling(g: GraphBuilder, n: LayerNode) -> None:
    # f(beta_j down(x_j) + b_j): a depthwise convolution whose kernel is beta_j (or
    # beta_j / area for MEAN) on every tap of a non-overlapping block.
    layer = n.layer
    c = n.bottom_shapes[0][1]
    gain = layer.blobs[0].data.astype(np.float64)
    if layer.mean:
        gain = gain / (layer.kh * layer.kw)
    kernel = np.broadcast_to(gain[:, None, None, None], (c, 1, layer.kh, layer.kw))
    inputs = [n.bottoms[0], g.const(_hint(n, "weight"), kernel)]
    if len(layer.blobs) > 1:
        inputs.append(g.const(_hint(n, "bias"), layer.blobs[1].data))
    activation = {"SIGMOID": "Sigmoid", "TANH": "Tanh"}.get(layer.activation)
    out = g.op("Conv", inputs, None if activation else n.tops[0], hint=_hint(n, "u"),
               kernel_shape=[layer.kh, layer.kw], strides=[layer.kh, layer.kw], group=c)
    if activation:
        g.op(activation, [out], n.tops[0])


@exports("InnerProduct")
def _inner_product(g: GraphBuilder, n: LayerNode) -> None:
    layer = n.layer
    if layer.axis == 0:
        raise n.fail("axis 0 folds the batch into the product")
    x = n.bottoms[0]
    ndim = len(n.bottom_shapes[0])
    weight = layer.blobs[0].data
    if layer.axis == 1:
        if ndim > 2:
            x = g.op("Flatten", [x], hint=_hint(n, "flat"), axis=1)
        inputs = [x, g.const(_hint(n, "weight"), weight)]
        if len(layer.blobs) > 1:
            inputs.append(g.const(_hint(n, "bias"), layer.blobs[1].data))
        g.op("Gemm", inputs, n.tops[0], transB=1)
        return
    target = _batch_kept_shape(n.bottom_shapes[0][:layer.axis] + (layer.k,))
    x = g.op("Reshape", [x, g.const(_hint(n, "shape"), target)], hint=_hint(n, "flat"))
    has_bias = len(layer.blobs) > 1
    y = g.op("MatMul", [x, g.const(_hint(n, "weight_t"), weight.T)],
             None if has_bias else n.tops[0], hint=_hint(n, "product"))
    if has_bias:
        g.op("Add", [y, g.const(_hint(n, "bias"), layer.blobs[1].data)], n.tops[0])


# ----------------------------------------------------------------------------- pooling
def _far_pad(size: int, kernel: int, stride: int, pad: int, out: int) -> int:
    """Padding after the input that makes ONNX's floor rule give Caffe's ``out``."""
    far = max(0, (out - 1) * stride + kernel - size - pad)
    assert (size + pad + far - kernel) // stride + 1 == out, (size, kernel, stride, pad, out)
    return far


@exports("Pooling")
def _pooling(g: GraphBuilder, n: LayerNode) -> None:
    from cnntrain.layers.pool import ave_divisor

    layer = n.layer
    _, _, h, w = n.bottom_shapes[0]
    far_h = _far_pad(h, layer.kh, layer.sh, layer.ph, layer.ho)
    far_w = _far_pad(w, layer.kw, layer.sw, layer.pw, layer.wo)
    pads = [layer.ph, layer.pw, far_h, far_w]
    window = dict(kernel_shape=[layer.kh, layer.kw], strides=[layer.sh, layer.sw])
    x = n.bottoms[0]
    if layer.method == "MAX":
        # Caffe's pad is below the kernel and its last window starts inside the input
        # or the top pad, so the far pad is below the kernel too, as ONNX runtimes want.
        g.op("MaxPool", [x], n.tops[0], pads=pads, **window)
        return
    if layer.method != "AVE":
        raise n.fail(f"pooling method {layer.method}")
    # Zero padding, then windows that all lie inside the padded input: ONNX divides by
    # the kernel area. Caffe divides by the part of the window inside input and pad
    # (the far overhang does not count): the ratio fixes the border windows.
    if any(pads):
        x = _pad(g, n, x, pads, 0.0)
    divisor = np.outer(ave_divisor(h, layer.kh, layer.sh, layer.ph, layer.ho),
                       ave_divisor(w, layer.kw, layer.sw, layer.pw, layer.wo))
    area = layer.kh * layer.kw
    exact = np.all(divisor == area)
    y = g.op("AveragePool", [x], n.tops[0] if exact else None, hint=_hint(n, "mean"),
             **window)
    if not exact:
        g.op("Mul", [y, g.const(_hint(n, "border"), area / divisor)], n.tops[0])


def _pad(g: GraphBuilder, n: LayerNode, x: str, pads: list[int], value: float) -> str:
    top, left, bottom, right = pads
    return g.op("Pad", [x, g.const(_hint(n, "pads"), [0, 0, top, left, 0, 0, bottom, right]),
                        g.const(_hint(n, "pad_value"), np.float32(value))],
                hint=_hint(n, "padded"), mode="constant")


# ----------------------------------------------------------------------------- normalization
@exports("BatchNorm")
def _batch_norm(g: GraphBuilder, n: LayerNode) -> None:
    layer = n.layer
    if not layer.global_stats:
        raise n.fail("it normalizes with the batch's statistics in the TEST net "
                     "(batch_norm_param.use_global_stats: false)")
    if len(n.bottom_shapes[0]) < 2:
        raise n.fail("BatchNormalization needs a channel axis")
    mean, var = layer.running_stats()
    c = layer.channels
    eps = float(layer.param("batch_norm_param").eps)
    g.op("BatchNormalization",
         [n.bottoms[0], g.const(_hint(n, "one"), np.ones(c)), g.const(_hint(n, "zero"),
                                                                     np.zeros(c)),
          g.const(_hint(n, "mean"), mean), g.const(_hint(n, "var"), var)],
         n.tops[0], epsilon=eps)


def _operand(g: GraphBuilder, n: LayerNode, value: np.ndarray | None, hint: str) -> str:
    """Scale's or Bias's operand, shaped to broadcast against bottom 0 (ONNX aligns
    shapes on the right): a learned ``value``, or bottom 1 reshaped."""
    layer = n.layer
    ndim = len(n.bottom_shapes[0])
    trailing = ndim - layer.axis - layer.span
    if value is not None:
        shape = value.shape if layer.span else (1,)
        return g.const(_hint(n, hint), value.reshape(tuple(shape) + (1,) * trailing))
    if trailing == 0:
        return n.bottoms[1]
    target = list(n.bottom_shapes[1]) + [1] * trailing
    if layer.axis == 0:
        target[0] = 0     # bottom 1 holds the batch axis: keep it free
    return g.op("Reshape", [n.bottoms[1], g.const(_hint(n, f"{hint}_shape"), target)],
                hint=_hint(n, hint))


@exports("Scale")
def _scale(g: GraphBuilder, n: LayerNode) -> None:
    layer = n.layer
    learned = len(n.bottoms) == 1
    scale = _operand(g, n, layer.blobs[0].data if learned else None, "scale")
    y = g.op("Mul", [n.bottoms[0], scale], None if layer.has_bias else n.tops[0],
             hint=_hint(n, "scaled"))
    if layer.has_bias:
        g.op("Add", [y, _operand(g, n, layer.blobs[-1].data, "bias")], n.tops[0])


@exports("Bias")
def _bias(g: GraphBuilder, n: LayerNode) -> None:
    learned = len(n.bottoms) == 1
    bias = _operand(g, n, n.layer.blobs[0].data if learned else None, "bias")
    g.op("Add", [n.bottoms[0], bias], n.tops[0])


@exports("LRN")
def _lrn(g: GraphBuilder, n: LayerNode) -> None:
    layer = n.layer
    p = layer.param("lrn_param")
    if p.norm_region == "ACROSS_CHANNELS":
        # ONNX's LRN is Caffe's formula: x / (k + alpha/n sum x^2)^beta over n channels.
        g.op("LRN", [n.bottoms[0]], n.tops[0], size=p.local_size, alpha=float(p.alpha),
             beta=float(p.beta), bias=float(p.k))
        return
    # Within a channel: 1 + alpha/n^2 * (the n x n window sum of x^2, zero padded), an
    # average pool whose divisor is n^2 everywhere (padding counts).
    x = n.bottoms[0]
    half = p.local_size // 2
    square = g.op("Mul", [x, x], hint=_hint(n, "square"))
    mean = g.op("AveragePool", [square], hint=_hint(n, "window_mean"),
                kernel_shape=[p.local_size] * 2, pads=[half] * 4, count_include_pad=1)
    scaled = g.op("Mul", [mean, g.const(_hint(n, "alpha"), np.float32(p.alpha))],
                  hint=_hint(n, "scaled"))
    scale = g.op("Add", [scaled, g.const(_hint(n, "one"), np.float32(1.0))],
                 hint=_hint(n, "scale"))
    factor = g.op("Pow", [scale, g.const(_hint(n, "minus_beta"), np.float32(-p.beta))],
                  hint=_hint(n, "factor"))
    g.op("Mul", [x, factor], n.tops[0])


# ----------------------------------------------------------------------------- activations
def _unary(op_type: str, **attrs):
    def export(g: GraphBuilder, n: LayerNode) -> None:
        g.op(op_type, [n.bottoms[0]], n.tops[0], **attrs)
    return export


exports("Sigmoid")(_unary("Sigmoid"))
exports("TanH")(_unary("Tanh"))
exports("AbsVal")(_unary("Abs"))
exports("BNLL")(_unary("Softplus"))
exports("Dropout")(_unary("Identity"))      # the TEST phase passes its input on


@exports("ReLU")
def _relu(g: GraphBuilder, n: LayerNode) -> None:
    slope = n.layer.param("relu_param").negative_slope
    if slope:
        g.op("LeakyRelu", [n.bottoms[0]], n.tops[0], alpha=float(slope))
    else:
        g.op("Relu", [n.bottoms[0]], n.tops[0])


@exports("ELU")
def _elu(g: GraphBuilder, n: LayerNode) -> None:
    g.op("Elu", [n.bottoms[0]], n.tops[0], alpha=float(n.layer.param("elu_param").alpha))


@exports("PReLU")
def _prelu(g: GraphBuilder, n: LayerNode) -> None:
    layer = n.layer
    slope = layer.blobs[0].data
    if not layer.shared_slope:     # one per channel: (C, 1, ...) against (N, C, ...)
        slope = slope.reshape(slope.shape + (1,) * (len(n.bottom_shapes[0]) - 2))
    g.op("PRelu", [n.bottoms[0], g.const(_hint(n, "slope"), slope)], n.tops[0])


def _times(g: GraphBuilder, n: LayerNode, x: str, factor: float, what: str,
           out: str | None = None) -> str:
    """``x * factor``, or ``x`` itself when the factor is 1 (and no ``out`` is asked for)."""
    if factor == 1 and out is None:
        return x
    return g.op("Mul", [x, g.const(_hint(n, what), np.float32(factor))], out,
                hint=_hint(n, f"times_{what}"))


@exports("Softplus")
def _softplus(g: GraphBuilder, n: LayerNode) -> None:
    beta = float(n.layer.param("softplus_param").beta)
    if beta == 1:
        g.op("Softplus", [n.bottoms[0]], n.tops[0])
        return
    inner = _times(g, n, n.bottoms[0], beta, "beta")
    soft = g.op("Softplus", [inner], hint=_hint(n, "softplus"))
    g.op("Div", [soft, g.const(_hint(n, "beta_div"), np.float32(beta))], n.tops[0])


@exports("GELU")
def _gelu(g: GraphBuilder, n: LayerNode) -> None:
    x = n.bottoms[0]
    if n.layer.param("gelu_param").approximate == "tanh":
        # x/2 (1 + tanh(c (x + 0.044715 x^3)))
        cube = g.op("Mul", [g.op("Mul", [x, x], hint=_hint(n, "square")), x],
                    hint=_hint(n, "cube"))
        inner = g.op("Add", [x, _times(g, n, cube, 0.044715, "k")], hint=_hint(n, "inner"))
        t = g.op("Tanh", [_times(g, n, inner, n.layer.TANH_C, "c")], hint=_hint(n, "tanh"))
    else:
        # x Phi(x) = x/2 (1 + erf(x / sqrt 2))
        t = g.op("Erf", [_times(g, n, x, 1 / math.sqrt(2.0), "inv_sqrt2")],
                 hint=_hint(n, "erf"))
    one_plus = g.op("Add", [t, g.const(_hint(n, "one"), np.float32(1.0))],
                    hint=_hint(n, "one_plus"))
    half_x = _times(g, n, x, 0.5, "half")
    g.op("Mul", [half_x, one_plus], n.tops[0])


@exports("Swish")
def _swish(g: GraphBuilder, n: LayerNode) -> None:
    x = n.bottoms[0]
    beta = float(n.layer.param("swish_param").beta)
    s = g.op("Sigmoid", [_times(g, n, x, beta, "beta")], hint=_hint(n, "sigmoid"))
    g.op("Mul", [x, s], n.tops[0])


@exports("Power")
def _power(g: GraphBuilder, n: LayerNode) -> None:
    p = n.layer.param("power_param")
    x = n.bottoms[0]
    if p.power == 0:
        g.op("ConstantOfShape", [g.op("Shape", [x], hint=_hint(n, "shape"))], n.tops[0],
             value=g.onnx.numpy_helper.from_array(np.ones(1, np.float32)))
        return
    last = p.power == 1 and p.shift == 0
    base = _times(g, n, x, float(p.scale), "scale", n.tops[0] if last and p.scale != 1
                  else None)
    if p.shift != 0:
        base = g.op("Add", [base, g.const(_hint(n, "shift"), np.float32(p.shift))],
                    n.tops[0] if p.power == 1 else None, hint=_hint(n, "base"))
    if p.power != 1:
        g.op("Pow", [base, g.const(_hint(n, "power"), np.float32(p.power))], n.tops[0])
    elif base == x:
        g.op("Identity", [x], n.tops[0])


@exports("Exp")
def _exp(g: GraphBuilder, n: LayerNode) -> None:
    layer = n.layer
    y = g.op("Exp", [_times(g, n, n.bottoms[0], layer.inner, "inner")],
             n.tops[0] if layer.outer == 1 else None, hint=_hint(n, "exp"))
    if layer.outer != 1:
        _times(g, n, y, layer.outer, "outer", n.tops[0])


@exports("Log")
def _log(g: GraphBuilder, n: LayerNode) -> None:
    layer = n.layer
    inside = _times(g, n, n.bottoms[0], layer.scale, "scale")
    if layer.shift != 0:
        inside = g.op("Add", [inside, g.const(_hint(n, "shift"), np.float32(layer.shift))],
                      hint=_hint(n, "inside"))
    y = g.op("Log", [inside], n.tops[0] if layer.base_scale == 1 else None,
             hint=_hint(n, "log"))
    if layer.base_scale != 1:
        _times(g, n, y, layer.base_scale, "base", n.tops[0])


@exports("Softmax")
def _softmax(g: GraphBuilder, n: LayerNode) -> None:
    g.op("Softmax", [n.bottoms[0]], n.tops[0], axis=n.layer.axis)


# ----------------------------------------------------------------------------- structure
def _not_on_batch(n: LayerNode, axis: int) -> None:
    if axis == 0:   # the graph's batch size is free; its outputs must keep it
        raise n.fail("it works along the batch axis")


@exports("Concat")
def _concat(g: GraphBuilder, n: LayerNode) -> None:
    _not_on_batch(n, n.layer.axis)
    g.op("Concat", n.bottoms, n.tops[0], axis=n.layer.axis)


@exports("Slice")
def _slice(g: GraphBuilder, n: LayerNode) -> None:
    _not_on_batch(n, n.layer.axis)
    g.op("Split", [n.bottoms[0], g.const(_hint(n, "sizes"), n.layer.sizes)], outputs=n.tops,
         axis=n.layer.axis)


@exports("Split")
def _split(g: GraphBuilder, n: LayerNode) -> None:
    for top in n.tops:
        g.op("Identity", [n.bottoms[0]], top)


@exports("Eltwise")
def _eltwise(g: GraphBuilder, n: LayerNode) -> None:
    layer = n.layer
    if layer.op == "MAX":
        g.op("Max", n.bottoms, n.tops[0])
        return
    if layer.op == "PROD":
        terms = n.bottoms
        combine = "Mul"
    else:
        terms = [_times(g, n, x, float(c), f"coeff{i}") for i, (x, c)
                 in enumerate(zip(n.bottoms, layer.coeff))]
        combine = "Add"
    # In the layer's order, one pair at a time, as its forward adds or multiplies.
    acc = terms[0]
    for i, term in enumerate(terms[1:], 1):
        acc = g.op(combine, [acc, term], n.tops[0] if i == len(terms) - 1 else None,
                   hint=_hint(n, f"partial{i}"))


@exports("Reshape", "Flatten")
def _reshape(g: GraphBuilder, n: LayerNode) -> None:
    before, after = n.bottom_shapes[0], n.top_shapes[0]
    if not before or not after or before[0] != after[0]:
        raise n.fail("it changes the batch axis")
    g.op("Reshape", [n.bottoms[0], g.const(_hint(n, "shape"), _batch_kept_shape(after))],
         n.tops[0])


@exports("Crop")
def _crop(g: GraphBuilder, n: LayerNode) -> None:
    cut = [(axis, s) for axis, s in enumerate(n.layer.index) if s != slice(None)]
    if cut:
        _not_on_batch(n, cut[0][0])
    g.op("Slice", [n.bottoms[0], g.const(_hint(n, "starts"), [s.start for _, s in cut]),
                   g.const(_hint(n, "ends"), [s.stop for _, s in cut]),
                   g.const(_hint(n, "axes"), [axis for axis, _ in cut])], n.tops[0])


# ----------------------------------------------------------------------------- the model
@dataclass
class ExportResult:
    path: str
    opset: int
    nodes: int
    inputs: list[tuple[str, list]]     # (name, shape with "N" for the batch)
    outputs: list[tuple[str, list]]


def _dims(shape: tuple[int, ...]) -> list:
    return ["N"] + list(shape[1:]) if shape else []


def build_model(net, *, name: str = "net", add_prob: bool = True):
    """The ONNX ModelProto of ``net`` (a TEST net built by ``Predictor.build``)."""
    onnx = _onnx()
    from onnx import TensorProto, helper

    g = GraphBuilder(onnx)
    consumed = {b for node in net.nodes for b in node.bottoms}
    inputs, skipped = [], set()
    g.names.update(t for node in net.nodes for t in node.tops)   # the blobs keep their names
    for node in net.nodes:
        layer = node.layer
        if layer.type_name == "Input":
            inputs += [t for t in node.tops if t in consumed]
            skipped.update(t for t in node.tops if t not in consumed)
            continue
        exporter = EXPORTERS.get(layer.type_name)
        if exporter is None:
            raise ExportError(f"layer '{layer.name}' ({layer.type_name}) has no exact ONNX "
                              "form in cnntrain export")
        tops = list(node.tops)
        if layer.type_name == "MapCombination":
            skipped.update(tops[1:])        # the training penalty
            tops = tops[:1]
        exporter(g, LayerNode(layer, list(node.bottoms), tops,
                              [net.shapes[b] for b in node.bottoms],
                              [net.shapes[t] for t in tops]))
    outputs = [i for i in net.output_ids.values() if i not in skipped and i not in inputs]
    if not outputs:
        raise ExportError("the TEST net has no outputs once the layers that read labels "
                          "are left out")
    info = {i: net.shapes[i] for i in outputs}
    last = net.nodes[-1].layer.type_name
    if add_prob and len(outputs) == 1 and len(info[outputs[0]]) == 2 and last != "Softmax":
        prob = g.fresh("prob")          # "prob" unless the net has a blob of that name
        g.op("Softmax", [outputs[0]], prob, axis=1)
        outputs.append(prob)
        info[prob] = info[outputs[0]]
    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info(i, TensorProto.FLOAT, _dims(net.shapes[i]))
         for i in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, _dims(info[o])) for o in outputs],
        g.initializers)
    from cnntrain import __version__

    model = helper.make_model(graph, producer_name="cnntrain", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def export_snapshot(snapshot: str | Path, output: str | Path) -> ExportResult:
    """Write the TEST net of ``snapshot`` to ``output`` as ONNX (atomically)."""
    onnx = _onnx()
    from cnntrain.snapshot import atomic_write
    from cnntrain.tools.predict import Predictor

    predictor = Predictor(snapshot, notify=lambda _: None)
    # Built for two images, not one: a layer that folds the batch into another axis
    # (a Reshape to a literal 1) then shows as changing the batch axis.
    net = predictor.build(2)
    model = build_model(net, name=predictor.exp.name)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:  # the checker's error types vary between onnx versions
        raise ExportError(f"the exported graph fails onnx.checker (a bug in cnntrain "
                          f"export): {str(err).splitlines()[0]}") from None
    output = Path(output)
    data = model.SerializeToString()
    try:
        atomic_write(output, lambda tmp: tmp.write_bytes(data))
    except OSError as err:
        from cnntrain.errors import os_error_reason

        raise CnnTrainError(f"cannot write {output}: {os_error_reason(err)}") from None
    graph = model.graph

    def dims(value) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return ExportResult(str(output), OPSET, len(graph.node),
                        [(v.name, dims(v)) for v in graph.input],
                        [(v.name, dims(v)) for v in graph.output])
