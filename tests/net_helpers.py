"""Small nets from Caffe-style layer lists, in float64, for graph and solver tests."""
import numpy as np

from cnntrain.config import parse_net
from cnntrain.layers import BuildContext
from cnntrain.net import Net
from cnntrain.rng import RngStreams


def build(layers, *, phase="TRAIN", seed=0, dtype=np.float64, force_backward=False, shared=None):
    spec = parse_net({"name": "t", "layer": layers}, "test")
    return Net(spec, phase, BuildContext(RngStreams(seed), dtype), shared=shared,
               force_backward=force_backward)


def fill_inputs(net, seed=0, classes=3):
    rng = np.random.default_rng(seed)
    layer = net.layer("input")
    layer.values[0][...] = rng.standard_normal(layer.values[0].shape)
    if len(layer.values) > 1:
        layer.values[1][...] = rng.integers(0, classes, layer.values[1].shape)


def input_layer(shape, label_shape=None):
    tops = ["data"] + (["label"] if label_shape else [])
    shapes = [{"dim": list(shape)}] + ([{"dim": list(label_shape)}] if label_shape else [])
    return {"name": "input", "type": "Input", "top": tops, "input_param": {"shape": shapes}}


GAUSS = {"weight_filler": {"type": "gaussian", "std": 0.3},
         "bias_filler": {"type": "gaussian", "std": 0.3}}
