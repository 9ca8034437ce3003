"""BatchNorm, Scale, Bias and LRN: gradient checks plus direct references."""
import numpy as np
import pytest

from cnntrain.blob import Statistic
from cnntrain.config import schema
from cnntrain.config.specs import Where
from cnntrain.config.validate import check_block
from cnntrain.errors import ConfigError
from cnntrain.layers.base import SetupError
from cnntrain.solvers import make_solver
from layer_helpers import assert_gradients, distinct_values, make_layer
from net_helpers import GAUSS, build, input_layer

RNG = np.random.default_rng(11)


def per_channel(x):
    """x as (channels, everything else): the axes BatchNorm reduces over."""
    if x.ndim == 1:
        return x[None, :]
    return np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)


def channel_view(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2)) if ndim > 1 else v


# --- BatchNorm ---------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 3, 2, 3), (6, 5), (7,), (3, 2, 5)])
def test_batchnorm_train_uses_biased_batch_statistics(shape):
    layer, (top,) = make_layer("BatchNorm", [shape])
    x = RNG.standard_normal(shape) * 3 + 1
    (y,) = layer.forward([x])
    flat = per_channel(x)
    mean, var = flat.mean(axis=1), flat.var(axis=1)   # ddof 0: biased
    expected = (x - channel_view(mean, x.ndim)) / np.sqrt(channel_view(var, x.ndim) + 1e-5)
    assert y.shape == top == shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    results = assert_gradients(layer, [x])
    assert [r.name for r in results] == ["L.param[0]", "L.param[1]", "L.param[2]", "L.bottom[0]"]


def test_batchnorm_running_statistics_follow_caffes_rule():
    layer, _ = make_layer("BatchNorm", [(4, 3, 5)],
                          batch_norm_param={"moving_average_fraction": 0.9})
    batches = [RNG.standard_normal((4, 3, 5)) * (i + 1) + i for i in range(3)]
    for x in batches:
        layer.forward([x])
    f = 0.9
    weights = [f ** 2, f, 1.0]
    # Means accumulate as they are; variances with Bessel's correction (ddof 1).
    mean_sum = sum(w * per_channel(x).mean(axis=1) for w, x in zip(weights, batches))
    var_sum = sum(w * per_channel(x).var(axis=1, ddof=1) for w, x in zip(weights, batches))
    np.testing.assert_allclose(layer.blobs[0].data, mean_sum, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].data, var_sum, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[2].data, [sum(weights)], rtol=1e-12)
    assert all(isinstance(b, Statistic) for b in layer.blobs)


def bn_nets(**bn_param):
    layers = [input_layer((5, 3, 2, 2)),
              {"name": "bn", "type": "BatchNorm", "bottom": "data", "top": "data",
               "batch_norm_param": bn_param}]
    train = build(layers)
    return train, build(layers, phase="TEST", shared=train.shared)


def test_test_net_normalizes_with_the_train_nets_running_statistics():
    train, test = bn_nets(eps=1e-3)
    batches = [RNG.standard_normal((5, 3, 2, 2)) + 2 for _ in range(2)]
    for x in batches:
        train.layer("input").values[0][...] = x
        train.forward()
    stats = [b.data.copy() for b in train.layer("bn").blobs]
    assert test.layer("bn").blobs[0] is train.layer("bn").blobs[0]
    x = RNG.standard_normal((5, 3, 2, 2))
    test.layer("input").values[0][...] = x
    test.forward()
    count = 0.999 + 1
    mean = (0.999 * per_channel(batches[0]).mean(1) + per_channel(batches[1]).mean(1)) / count
    var = (0.999 * per_channel(batches[0]).var(1, ddof=1)
           + per_channel(batches[1]).var(1, ddof=1)) / count
    expected = (x - channel_view(mean, 4)) / np.sqrt(channel_view(var, 4) + 1e-3)
    np.testing.assert_allclose(test.output("data"), expected, rtol=1e-10)
    for before, blob in zip(stats, test.layer("bn").blobs):   # TEST leaves them alone
        np.testing.assert_array_equal(blob.data, before)


def test_batchnorm_global_statistics_is_an_affine_map_with_checked_gradients():
    layer, _ = make_layer("BatchNorm", [(3, 4, 2, 3)], phase="TEST")
    assert layer.global_stats
    layer.blobs[0].data[...] = RNG.standard_normal(4) * 2
    layer.blobs[1].data[...] = RNG.uniform(0.5, 3, 4)
    layer.blobs[2].data[...] = 2.5
    x = RNG.standard_normal((3, 4, 2, 3))
    (y,) = layer.forward([x])
    mean, var = layer.blobs[0].data / 2.5, layer.blobs[1].data / 2.5
    expected = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    # The statistics are inputs of this map: their gradients are checked too.
    assert len(assert_gradients(layer, [x])) == 4


def test_batchnorm_empty_statistics_give_zero_mean_and_variance():
    layer, _ = make_layer("BatchNorm", [(2, 3)], phase="TEST")
    x = RNG.standard_normal((2, 3))
    np.testing.assert_allclose(layer.forward([x])[0], x / np.sqrt(1e-5))


@pytest.mark.parametrize("phase, flag, updates", [("TRAIN", True, False), ("TEST", False, True)])
def test_use_global_stats_overrides_the_phase_default(phase, flag, updates):
    layer, _ = make_layer("BatchNorm", [(4, 2)], phase=phase,
                          batch_norm_param={"use_global_stats": flag})
    layer.blobs[2].data[...] = 1.0
    layer.forward([RNG.standard_normal((4, 2))])
    assert (layer.blobs[2].data[0] != 1.0) == updates


def test_solvers_never_touch_the_running_statistics():
    layers = [input_layer((4, 2, 3, 3), (4,)),
              {"name": "conv", "type": "Convolution", "bottom": "data", "top": "conv",
               "convolution_param": {"num_output": 3, "kernel_size": 1, **GAUSS}},
              {"name": "bn", "type": "BatchNorm", "bottom": "conv", "top": "conv",
               "param": [{"lr_mult": 0, "decay_mult": 5}] * 3,
               "batch_norm_param": {"use_global_stats": True}},
              {"name": "ip", "type": "InnerProduct", "bottom": "conv", "top": "ip",
               "inner_product_param": {"num_output": 3, **GAUSS}},
              {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"],
               "top": "loss"}]
    net = build(layers)
    bn = net.layer("bn")
    for b in bn.blobs:
        b.data[...] = 1.5
    values = {"type": "Adam", "base_lr": 1.0, "momentum": 0.9, "momentum2": 0.999,
              "delta": 1e-8, "weight_decay": 0.1, "regularization_type": "L2",
              "weight_decay_mode": "coupled", "clip_gradients": 0.0, "lr_policy": "fixed"}
    solver = make_solver(check_block(schema.SOLVER, {**values, "max_iter": 1}, Where(None),
                                     None, "solver."), net.params)
    net.forward()
    net.backward()
    assert np.abs(bn.blobs[0].diff).sum() > 0   # real gradients exist (affine mode) ...
    solver.apply_update()
    for b in bn.blobs:                         # ... yet nothing moves
        np.testing.assert_array_equal(b.data, 1.5)
        assert b.lr_mult == 0 and b.decay_mult == 0
    with pytest.raises(ValueError, match="lr_mult"):
        bn.blobs[0].lr_mult = 1.0


def test_learned_batchnorm_statistics_are_refused():
    layers = [input_layer((2, 3)),
              {"name": "bn", "type": "BatchNorm", "bottom": "data", "top": "bn",
               "param": [{"lr_mult": 0}, {"lr_mult": 1}]}]
    with pytest.raises(ConfigError, match="not learned") as err:
        build(layers)
    assert "param[1].lr_mult" in str(err.value)


def test_a_statistic_cannot_share_a_learned_parameter():
    layers = [input_layer((2, 3)),
              {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip",
               "param": [{"name": "w"}, {"name": "shared"}],
               "inner_product_param": {"num_output": 3}},
              {"name": "bn", "type": "BatchNorm", "bottom": "ip", "top": "bn",
               "param": [{"name": "shared", "lr_mult": 0}]}]
    with pytest.raises(ConfigError, match="learned parameter and a running statistic"):
        build(layers)


# --- Scale and Bias ------------------------------------------------------------------
def broadcast(v, ndim, axis):
    """``v`` laid along bottom axes axis.. (an independent form of the layers' view)."""
    return v.reshape((1,) * axis + v.shape + (1,) * (ndim - axis - v.ndim))


SCALE_CASES = [  # bottom shape, scale_param, operand shape, axis it lines up with
    ((3, 4, 2, 3), {}, (4,), 1),
    ((3, 4, 2, 3), {"bias_term": True}, (4,), 1),
    ((3, 4, 2, 3), {"axis": 2, "num_axes": -1, "bias_term": True}, (2, 3), 2),
    ((3, 4, 5), {"axis": -2, "num_axes": 2}, (4, 5), 1),
    ((3, 4, 5), {"num_axes": 0, "bias_term": True}, (1,), 0),   # a scalar, kept 1-D
    ((2, 5), {"axis": 0, "num_axes": 2}, (2, 5), 0),
]


@pytest.mark.parametrize("shape, params, operand, axis", SCALE_CASES)
def test_scale_learned(shape, params, operand, axis):
    params = {"filler": {"type": "gaussian", "std": 1.0},
              "bias_filler": {"type": "gaussian", "std": 1.0}, **params}
    layer, (top,) = make_layer("Scale", [shape], scale_param=params)
    assert [b.shape for b in layer.blobs] == [operand] * (1 + params.get("bias_term", False))
    x = RNG.standard_normal(shape)
    (y,) = layer.forward([x])
    scale = layer.blobs[0].data.reshape(operand if operand != (1,) else ())
    expected = x * broadcast(scale, len(shape), axis)
    if params.get("bias_term"):
        expected = expected + broadcast(layer.blobs[1].data.reshape(scale.shape), len(shape), axis)
    assert top == shape
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert_gradients(layer, [x])


def test_scale_default_filler_is_one_and_bias_zero():
    layer, _ = make_layer("Scale", [(2, 3, 4)], scale_param={"bias_term": True})
    np.testing.assert_array_equal(layer.blobs[0].data, 1.0)
    np.testing.assert_array_equal(layer.blobs[1].data, 0.0)


@pytest.mark.parametrize("shape, operand, params, axis", [
    ((3, 4, 2, 3), (4,), {}, 1),
    ((3, 4, 2, 3), (4, 2), {"bias_term": True}, 1),
    ((3, 4, 2, 3), (2, 3), {"axis": -2}, 2),
    ((3, 4, 2), (), {}, 0),
])
def test_scale_by_a_second_bottom(shape, operand, params, axis):
    layer, _ = make_layer("Scale", [shape, operand], scale_param=params)
    x, s = RNG.standard_normal(shape), RNG.standard_normal(operand)
    expected = x * broadcast(s, len(shape), axis)
    if params.get("bias_term"):
        assert layer.blobs[0].shape == operand
        expected = expected + broadcast(layer.blobs[0].data, len(shape), axis)
    np.testing.assert_allclose(layer.forward([x, s])[0], expected, rtol=1e-12)
    assert_gradients(layer, [x, s])


@pytest.mark.parametrize("shapes, params, axis", [
    ([(3, 4, 2, 3)], {"filler": {"type": "gaussian"}}, 1),
    ([(3, 4, 2, 3)], {"axis": 1, "num_axes": 3, "filler": {"type": "uniform"}}, 1),
    ([(3, 4, 2, 3), (2, 3)], {"axis": 2}, 2),
    ([(3, 4, 5), ()], {}, 0),
])
def test_bias(shapes, params, axis):
    layer, _ = make_layer("Bias", shapes, bias_param=params)
    xs = [RNG.standard_normal(s) for s in shapes]
    b = xs[1] if len(xs) > 1 else layer.blobs[0].data
    np.testing.assert_allclose(layer.forward(xs)[0], xs[0] + broadcast(b, len(shapes[0]), axis))
    assert_gradients(layer, xs)


@pytest.mark.parametrize("type_name, block", [
    ("Scale", {"scale_param": {"bias_term": True}}), ("Bias", {}), ("BatchNorm", {}),
    ("Scale", {"scale_param": {"num_axes": 0}}),
])
def test_a_smaller_last_batch_passes_through(type_name, block):
    """The TEST set's last batch may be smaller than the one the net was set up with."""
    layer, _ = make_layer(type_name, [(4, 3, 2)], **block)
    for n in (4, 2):
        x = RNG.standard_normal((n, 3, 2))
        (y,) = layer.forward([x])
        (dx,) = layer.backward([np.ones_like(y)], [True])
        assert y.shape == dx.shape == x.shape


@pytest.mark.parametrize("type_name", ["Scale", "Bias"])
def test_a_second_bottom_along_the_batch_axis_follows_the_batch(type_name):
    key = "scale_param" if type_name == "Scale" else "bias_param"
    layer, _ = make_layer(type_name, [(4, 3, 2), (4, 3)], **{key: {"axis": 0}})
    x, s = RNG.standard_normal((2, 3, 2)), RNG.standard_normal((2, 3))
    (y,) = layer.forward([x, s])
    expected = x * s[:, :, None] if type_name == "Scale" else x + s[:, :, None]
    np.testing.assert_allclose(y, expected)
    dx, ds = layer.backward([np.ones_like(y)], [True, True])
    assert dx.shape == x.shape and ds.shape == s.shape


@pytest.mark.parametrize("type_name, shapes, block, field, words", [
    ("Scale", [(2, 3, 4), (4,)], {}, "scale_param.axis", "does not match"),
    ("Scale", [(2, 3, 4)], {"axis": 2, "num_axes": 2}, "scale_param.num_axes", "extends past"),
    ("Bias", [(2, 3)], {"axis": 2}, "bias_param.axis", "out of range"),
])
def test_scale_and_bias_shape_errors(type_name, shapes, block, field, words):
    key = "scale_param" if type_name == "Scale" else "bias_param"
    with pytest.raises(SetupError, match=words) as err:
        make_layer(type_name, shapes, **{key: block})
    assert err.value.field == field


# --- LRN -----------------------------------------------------------------------------
def naive_lrn_across(x, n, alpha, beta, k):
    """Caffe's ACROSS_CHANNELS definition, channel by channel."""
    c = x.shape[1]
    y = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - n // 2), min(c, ch + n // 2 + 1)
        scale = k + alpha / n * (x[:, lo:hi] ** 2).sum(axis=1)
        y[:, ch] = x[:, ch] * scale ** -beta
    return y


def naive_lrn_within(x, n, alpha, beta):
    """Caffe's WITHIN_CHANNEL: 1 + alpha * AVE-pool(x²) with pad (n-1)/2 (padding counts,
    so the divisor is n² everywhere), then x times that to the -beta."""
    half = n // 2
    sq = np.pad(x ** 2, ((0, 0), (0, 0), (half, half), (half, half)))
    pooled = np.empty_like(x)
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            pooled[:, :, i, j] = sq[:, :, i:i + n, j:j + n].sum(axis=(2, 3)) / (n * n)
    return x * (1 + alpha * pooled) ** -beta


@pytest.mark.parametrize("shape, params", [
    ((2, 7, 3, 4), {}),
    ((2, 4, 3, 3), {"local_size": 3, "alpha": 2.0, "beta": 0.5, "k": 2.0}),
    ((1, 3, 2, 5), {"local_size": 7, "alpha": 0.3}),   # window wider than the channels
    ((2, 5, 1, 1), {"local_size": 1, "alpha": 0.7, "beta": 1.3}),
])
def test_lrn_across_channels(shape, params):
    layer, _ = make_layer("LRN", [shape], lrn_param=params)
    p = {"local_size": 5, "alpha": 1.0, "beta": 0.75, "k": 1.0, **params}
    x = RNG.standard_normal(shape)
    expected = naive_lrn_across(x, p["local_size"], p["alpha"], p["beta"], p["k"])
    np.testing.assert_allclose(layer.forward([x])[0], expected, rtol=1e-12)
    assert_gradients(layer, [x])


@pytest.mark.parametrize("shape, params", [
    ((2, 3, 5, 4), {}),
    ((2, 2, 6, 7), {"local_size": 3, "alpha": 5e-05, "beta": 0.75}),   # cifar10_full's
    ((1, 2, 4, 4), {"local_size": 3, "alpha": 2.0, "beta": 1.5}),
    ((1, 1, 2, 3), {"local_size": 7}),                                  # window past the image
])
def test_lrn_within_channel(shape, params):
    params = {"norm_region": "WITHIN_CHANNEL", **params}
    layer, _ = make_layer("LRN", [shape], lrn_param=params)
    p = {"local_size": 5, "alpha": 1.0, "beta": 0.75, **params}
    x = RNG.standard_normal(shape) * 3
    expected = naive_lrn_within(x, p["local_size"], p["alpha"], p["beta"])
    np.testing.assert_allclose(layer.forward([x])[0], expected, rtol=1e-12)
    assert_gradients(layer, [x])


@pytest.mark.parametrize("params, field", [
    ({"local_size": 4}, "lrn_param.local_size"),
    ({"norm_region": "WITHIN_CHANNEL", "k": 2.0}, "lrn_param.k"),
])
def test_lrn_errors(params, field):
    with pytest.raises(SetupError) as err:
        make_layer("LRN", [(1, 3, 4, 4)], lrn_param=params)
    assert err.value.field == field


def test_lrn_gradient_check_can_fail(monkeypatch):
    """Dropping the term through the neighbours' scales must be caught."""
    from cnntrain.layers.norm import LRN

    monkeypatch.setattr(LRN, "backward", lambda self, dy, down: [dy[0] * self.factor])
    layer, _ = make_layer("LRN", [(2, 5, 2, 2)], lrn_param={"local_size": 3})
    with pytest.raises(AssertionError, match="bottom"):
        assert_gradients(layer, [distinct_values((2, 5, 2, 2))])
