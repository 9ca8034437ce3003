"""The activations added to Caffe's set: forward against closed forms, gradients in float64."""
import math

import numpy as np
import pytest

from cnntrain.errors import ConfigError
from cnntrain.layers.base import SetupError
from cnntrain.layers.special import erfc_nonneg, normal_cdf
from layer_helpers import assert_gradients, distinct_values, make_layer

SHAPE = (2, 3, 4, 5)
PHI = np.vectorize(lambda v: 0.5 * math.erfc(-v / math.sqrt(2)))   # independent of special.py


def _positive(shape, seed=1):
    return 0.2 + np.abs(distinct_values(shape, seed=seed, spread=3.0))


@pytest.mark.parametrize("type_name, fields, reference, inputs", [
    ("ELU", {}, lambda x: np.where(x > 0, x, np.exp(x) - 1), None),
    ("ELU", {"elu_param": {"alpha": 0.5}}, lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1)),
     None),
    ("GELU", {}, lambda x: x * PHI(x), None),
    ("GELU", {"gelu_param": {"approximate": "tanh"}},
     lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))), None),
    ("Swish", {}, lambda x: x / (1 + np.exp(-x)), None),
    ("Swish", {"swish_param": {"beta": 2.5}}, lambda x: x / (1 + np.exp(-2.5 * x)), None),
    ("AbsVal", {}, np.abs, None),
    ("BNLL", {}, lambda x: np.log(1 + np.exp(x)), None),
    ("Power", {}, lambda x: x, None),
    ("Power", {"power_param": {"power": 2.0, "scale": -0.5, "shift": 1.5}},
     lambda x: (1.5 - 0.5 * x) ** 2, None),
    ("Power", {"power_param": {"power": 0.5, "scale": 2.0, "shift": 0.1}},
     lambda x: np.sqrt(0.1 + 2 * x), _positive),
    ("Power", {"power_param": {"power": -1.5}}, lambda x: x ** -1.5, _positive),
    ("Power", {"power_param": {"power": 0.0}}, lambda x: np.ones_like(x), None),
    ("Exp", {}, np.exp, None),
    ("Exp", {"exp_param": {"base": 2.0, "scale": 0.5, "shift": 1.0}},
     lambda x: 2.0 ** (1.0 + 0.5 * x), None),
    ("Log", {}, np.log, _positive),
    ("Log", {"log_param": {"base": 10.0, "scale": 2.0, "shift": 0.5}},
     lambda x: np.log10(0.5 + 2 * x), _positive),
])
def test_activation_forward_and_gradients(type_name, fields, reference, inputs):
    layer, (top,) = make_layer(type_name, [SHAPE], **fields)
    x = inputs(SHAPE) if inputs else distinct_values(SHAPE, seed=1, spread=3.0)
    (y,) = layer.forward([x])
    assert top == y.shape == SHAPE
    np.testing.assert_allclose(y, reference(x), rtol=1e-8, atol=1e-12)
    assert_gradients(layer, [x])


@pytest.mark.parametrize("shape, shared", [((2, 3, 4, 5), False), ((3, 4), False),
                                           ((2, 3, 5), True)])
def test_prelu_learns_a_slope_per_channel(shape, shared):
    layer, _ = make_layer("PReLU", [shape], prelu_param={
        "channel_shared": shared, "filler": {"type": "uniform", "min": 0.1, "max": 0.9}})
    a = layer.blobs[0].data
    assert a.shape == ((1,) if shared else (shape[1],))
    x = distinct_values(shape, seed=2, spread=2.0)
    (y,) = layer.forward([x])
    slope = a if shared else a.reshape((1, -1) + (1,) * (len(shape) - 2))
    np.testing.assert_allclose(y, np.where(x > 0, x, slope * x))
    assert_gradients(layer, [x])


def test_prelu_default_slope_is_a_quarter():
    layer, _ = make_layer("PReLU", [(2, 6)])
    np.testing.assert_array_equal(layer.blobs[0].data, np.full(6, 0.25))
    np.testing.assert_allclose(layer.forward([np.array([[-4.0, 4, -1, 1, 0, -8]] * 2)])[0][0],
                               [-1, 4, -0.25, 1, 0, -2])


def test_gelu_is_exact_to_float32_precision_far_into_both_tails():
    x = np.linspace(-12, 12, 20001)
    phi = PHI(x)
    np.testing.assert_allclose(normal_cdf(x), phi, rtol=1e-8, atol=0)
    layer, _ = make_layer("GELU", [x.shape])
    y32 = layer.forward([x.astype(np.float32)])[0]
    assert y32.dtype == np.float32
    # float32 rounding alone is 6e-8 relative; the formula adds less than a tenth of that.
    np.testing.assert_allclose(y32, (x.astype(np.float32).astype(np.float64)
                                     * PHI(x.astype(np.float32))), rtol=1.3e-7)


def test_erfc_matches_math_erfc_relatively():
    z = np.linspace(0, 25, 5001)
    ref = np.array([math.erfc(v) for v in z])
    assert np.max(np.abs(erfc_nonneg(z) / ref - 1)) < 6e-9


def test_stable_for_huge_inputs():
    x = np.array([-800.0, -50.0, 50.0, 800.0])
    for name in ("BNLL", "Swish", "GELU", "ELU"):
        layer, _ = make_layer(name, [x.shape])
        with np.errstate(over="raise", invalid="raise"):
            y = layer.forward([x])[0]
            dx = layer.backward([np.ones_like(x)], [True])[0]
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx)), name
    np.testing.assert_allclose(make_layer("BNLL", [x.shape])[0].forward([x])[0],
                               [0, math.exp(-50), 50, 800], rtol=1e-12)


@pytest.mark.parametrize("type_name, block, base", [("Exp", "exp_param", 0.0),
                                                    ("Exp", "exp_param", -2.0),
                                                    ("Log", "log_param", 1.0)])
def test_bad_base_names_the_field(type_name, block, base):
    with pytest.raises(SetupError, match="or -1 for e") as err:
        make_layer(type_name, [(2, 3)], **{block: {"base": base}})
    assert err.value.field == f"{block}.base"


def test_bad_enum_is_a_config_error():
    with pytest.raises(ConfigError, match="gelu_param.approximate"):
        make_layer("GELU", [(2, 3)], gelu_param={"approximate": "sigmoid"})


@pytest.mark.parametrize("type_name", ["PReLU", "ELU", "GELU", "Swish", "AbsVal", "BNLL",
                                       "Power", "Exp", "Log"])
def test_float32_in_float32_out(type_name):
    from cnntrain.config import parse_layer
    from cnntrain.layers import LAYER_TYPES, BuildContext
    from cnntrain.rng import RngStreams

    spec = parse_layer({"name": "L", "type": type_name, "bottom": "x", "top": "y"}, "t", 0)
    layer = LAYER_TYPES[type_name](spec, "TRAIN", BuildContext(RngStreams(0), np.float32))
    layer.setup([SHAPE])
    x = _positive(SHAPE).astype(np.float32)
    (y,) = layer.forward([x])
    (dx,) = layer.backward([np.ones_like(y)], [True])
    assert y.dtype == dx.dtype == np.float32
