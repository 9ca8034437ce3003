"""SigmoidCrossEntropyLoss, HingeLoss, InfogainLoss and label smoothing: values against
direct definitions (loops over samples), gradients in float64."""
import math

import numpy as np
import pytest

from cnntrain.layers.base import SetupError
from layer_helpers import assert_gradients, distinct_values, make_layer

RNG = np.random.default_rng(11)


def _labels(n, classes, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n).astype(np.float64)


def _softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- SigmoidCrossEntropyLoss ------------------------------------------------------------
@pytest.mark.parametrize("loss_param, divisor", [
    ({}, 3),                                   # Caffe's default here: BATCH_SIZE
    ({"normalization": "FULL"}, 3 * 4 * 5),
    ({"normalization": "VALID", "ignore_label": -1}, None),
    ({"normalization": "NONE"}, 1),
])
def test_sigmoid_cross_entropy(loss_param, divisor):
    shape = (3, 4, 5)
    layer, (top,) = make_layer("SigmoidCrossEntropyLoss", [shape, shape], loss_param=loss_param)
    x = RNG.standard_normal(shape) * 3
    t = RNG.uniform(0, 1, shape)
    t[0, 0, :2] = -1                            # ignored only where ignore_label says so
    valid = (t != -1) if "ignore_label" in loss_param else np.ones(shape, bool)
    p = 1 / (1 + np.exp(-x))
    per = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    divisor = divisor or valid.sum()
    assert top == ()
    assert float(layer.forward([x, t])[0]) == pytest.approx((per * valid).sum() / divisor,
                                                          rel=1e-12)
    assert_gradients(layer, [x, t], check_bottoms=[True, False])


def test_sigmoid_cross_entropy_is_stable():
    layer, _ = make_layer("SigmoidCrossEntropyLoss", [(1, 4), (1, 4)])
    with np.errstate(over="raise"):
        loss = float(layer.forward([np.array([[1e4, -1e4, 1e4, -1e4]]),
                                    np.array([[1.0, 0.0, 0.0, 1.0]])])[0])
    assert loss == pytest.approx(2e4)


# --- HingeLoss --------------------------------------------------------------------------
def naive_hinge(x, lab, norm):
    n = x.shape[0]
    rows = x.reshape(n, -1)
    total = 0.0
    for i in range(n):
        for k in range(rows.shape[1]):
            t = 1.0 if k == lab[i] else -1.0
            m = max(0.0, 1.0 - t * rows[i, k])
            total += m if norm == "L1" else m * m
    return total / n


@pytest.mark.parametrize("shape, norm", [((4, 5), "L1"), ((4, 5), "L2"), ((3, 2, 2, 2), "L1"),
                                         ((3, 7), "L2")])
def test_hinge_loss(shape, norm):
    layer, _ = make_layer("HingeLoss", [shape, (shape[0],)], hinge_loss_param={"norm": norm})
    x = distinct_values(shape, seed=3, spread=2.5)   # away from the kinks at +-1
    x[np.abs(np.abs(x) - 1) < 0.02] += 0.05
    lab = _labels(shape[0], int(np.prod(shape[1:])))
    assert float(layer.forward([x, lab])[0]) == pytest.approx(naive_hinge(x, lab.astype(int),
                                                                          norm), rel=1e-12)
    assert_gradients(layer, [x, lab], check_bottoms=[True, False])


# --- label smoothing --------------------------------------------------------------------
def test_label_smoothing_targets_and_gradient():
    eps, k = 0.1, 5
    layer, _ = make_layer("SoftmaxWithLoss", [(4, k), (4,)], loss_param={"label_smoothing": eps})
    x, lab = RNG.standard_normal((4, k)), _labels(4, k)
    logp = np.log(_softmax(x))
    q = np.full((4, k), eps / k)
    q[np.arange(4), lab.astype(int)] += 1 - eps
    assert float(layer.forward([x, lab])[0]) == pytest.approx(-(q * logp).sum() / 4, rel=1e-12)
    dx = layer.backward([np.array(1.0)], [True, False])[0]
    np.testing.assert_allclose(dx, (_softmax(x) - q) / 4, rtol=1e-12)
    assert_gradients(layer, [x, lab], check_bottoms=[True, False])


def test_label_smoothing_with_ignore_label_spatial():
    layer, _ = make_layer("SoftmaxWithLoss", [(2, 3, 2, 2), (2, 2, 2)],
                          loss_param={"label_smoothing": 0.2, "ignore_label": 1})
    lab = np.array([[[0, 1], [2, 1]], [[1, 0], [2, 2]]], float)
    assert_gradients(layer, [RNG.standard_normal((2, 3, 2, 2)), lab], check_bottoms=[True, False])


def test_label_smoothing_only_where_it_means_something():
    with pytest.raises(SetupError, match="no label smoothing") as err:
        make_layer("SigmoidCrossEntropyLoss", [(2, 3), (2, 3)],
                   loss_param={"label_smoothing": 0.1})
    assert err.value.field == "loss_param.label_smoothing"


# --- InfogainLoss -----------------------------------------------------------------------
def naive_infogain(x, lab, h, axis=1, floor=1e-20):
    """Caffe's definition, one position at a time: softmax, then -sum_k H[l,k] log p_k."""
    p = np.moveaxis(_softmax(x, axis), axis, -1).reshape(-1, x.shape[axis])
    total = 0.0
    for row, l in zip(p, lab.reshape(-1).astype(int)):
        total -= sum(h[l, k] * math.log(max(row[k], floor)) for k in range(len(row)))
    return total / len(p)


def test_infogain_from_a_npy_file(tmp_path):
    k = 4
    h = RNG.uniform(0, 1, (k, k))
    np.save(tmp_path / "H.npy", h)
    layer, tops = make_layer("InfogainLoss", [(5, k), (5,)], tops=2,
                             infogain_loss_param={"source": str(tmp_path / "H.npy")})
    assert tops == [(), (5, k)]
    x, lab = RNG.standard_normal((5, k)) * 2, _labels(5, k)
    loss, prob = layer.forward([x, lab])
    assert float(loss) == pytest.approx(naive_infogain(x, lab, h), rel=1e-12)
    np.testing.assert_allclose(prob, _softmax(x))
    assert_gradients(layer, [x, lab], check_bottoms=[True, False])


def test_infogain_as_third_bottom_spatial_with_ignore():
    k = 3
    h = RNG.uniform(0, 1, (k, k))
    shape = (2, k, 2, 3)
    layer, _ = make_layer("InfogainLoss", [shape, (2, 2, 3), (1, 1, k, k)],
                          loss_param={"ignore_label": 2})
    x = RNG.standard_normal(shape)
    lab = _labels(12, k, seed=4).reshape(2, 2, 3)
    valid = lab != 2
    expected = naive_infogain(x, np.where(valid, lab, 0), h * 1.0) * 12
    # naive sums every position; remove the ignored ones and divide by the valid count
    p = np.moveaxis(_softmax(x), 1, -1).reshape(-1, k)
    ignored = sum(-(h[0] * np.log(p[i])).sum() for i in np.flatnonzero(~valid.reshape(-1)))
    got = float(layer.forward([x, lab, h.reshape(1, 1, k, k)])[0])
    assert got == pytest.approx((expected - ignored) / valid.sum(), rel=1e-12)
    assert_gradients(layer, [x, lab, h.reshape(1, 1, k, k)], check_bottoms=[True, False, False])


def test_infogain_with_identity_is_softmax_with_loss():
    k = 6
    x, lab = RNG.standard_normal((4, k)), _labels(4, k)
    info, _ = make_layer("InfogainLoss", [(4, k), (4,), (k, k)])
    soft, _ = make_layer("SoftmaxWithLoss", [(4, k), (4,)])
    assert float(info.forward([x, lab, np.eye(k)])[0]) == pytest.approx(
        float(soft.forward([x, lab])[0]), rel=1e-12)


def test_infogain_clips_log_probabilities_as_caffe():
    layer, _ = make_layer("InfogainLoss", [(1, 2), (1,), (2, 2)])
    loss = float(layer.forward([np.array([[0.0, 1e4]]), np.array([0.0]), np.eye(2)])[0])
    assert loss == pytest.approx(-math.log(1e-20))


@pytest.mark.parametrize("setup, match", [
    ({}, "is required"),
    ({"source": "missing.npy"}, "cannot read"),
    ({"source": "H.binaryproto"}, "numpy.save"),
])
def test_infogain_source_errors_name_the_field(setup, match):
    with pytest.raises(SetupError, match=match) as err:
        make_layer("InfogainLoss", [(2, 3), (2,)], infogain_loss_param=setup)
    assert err.value.field == "infogain_loss_param.source"


def test_infogain_matrix_of_the_wrong_size(tmp_path):
    np.save(tmp_path / "H.npy", np.eye(4))
    with pytest.raises(SetupError, match="must be 3x3"):
        make_layer("InfogainLoss", [(2, 3), (2,)],
                   infogain_loss_param={"source": str(tmp_path / "H.npy")})
