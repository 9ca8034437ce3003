"""Build single layers in float64 and run the shared gradient checker on them."""
from __future__ import annotations

import numpy as np

from cnntrain.config import parse_layer
from cnntrain.layers import BuildContext
from cnntrain.layers import LAYER_TYPES
from cnntrain.rng import RngStreams
from cnntrain.tools.gradcheck import check_layer, distinct_values  # noqa: F401 (re-exported)


def make_layer(type_name: str, bottom_shapes, *, tops: int = 1, phase: str = "TRAIN",
               seed: int = 0, **fields):
    """A set-up float64 layer from Caffe-style fields, e.g. convolution_param={...}."""
    raw = {"name": "L", "type": type_name,
           "bottom": [f"b{i}" for i in range(len(bottom_shapes))],
           "top": [f"t{i}" for i in range(tops)], **fields}
    spec = parse_layer(raw, "test", 0)
    layer = LAYER_TYPES[type_name](spec, phase, BuildContext(RngStreams(seed), np.float64))
    top_shapes = layer.setup([tuple(s) for s in bottom_shapes])
    return layer, top_shapes


def assert_gradients(layer, bottoms, *, tol: float = 1e-5, check_bottoms=None, seed: int = 0):
    """Fail with the worst element if any gradient disagrees with finite differences."""
    results = check_layer(layer, bottoms, check_bottoms=check_bottoms, seed=seed)
    assert results, "nothing was checked"
    bad = [str(r) for r in results if not r.ok(tol)]
    assert not bad, "\n".join(bad)
    return results
