"""InnerProduct, activations, Dropout, Flatten, Softmax, losses, Accuracy, Input."""
import numpy as np
import pytest

from cnntrain.errors import TrainingError
from layer_helpers import assert_gradients, distinct_values, make_layer

RNG = np.random.default_rng(7)
FILLERS = {"weight_filler": {"type": "gaussian", "std": 0.5},
           "bias_filler": {"type": "gaussian", "std": 0.5}}


@pytest.mark.parametrize("shape, params", [
    ((3, 4, 2, 3), dict(num_output=5)),
    ((3, 7), dict(num_output=2, bias_term=False)),
    ((2, 3, 4), dict(num_output=3, axis=2)),
])
def test_inner_product(shape, params):
    layer, (top,) = make_layer("InnerProduct", [shape], inner_product_param={**FILLERS, **params})
    x = RNG.standard_normal(shape)
    (y,) = layer.forward([x])
    k = int(np.prod(shape[layer.axis:]))
    expected = x.reshape(-1, k) @ layer.blobs[0].data.T
    if len(layer.blobs) > 1:
        expected += layer.blobs[1].data
    np.testing.assert_allclose(y.reshape(-1, params["num_output"]), expected)
    assert y.shape == top
    assert_gradients(layer, [x])


@pytest.mark.parametrize("type_name, fields, reference", [
    ("ReLU", {}, lambda x: np.maximum(x, 0)),
    ("ReLU", {"relu_param": {"negative_slope": 0.1}}, lambda x: np.where(x > 0, x, 0.1 * x)),
    ("Sigmoid", {}, lambda x: 1 / (1 + np.exp(-x))),
    ("TanH", {}, np.tanh),
    ("Softplus", {}, lambda x: np.log1p(np.exp(x))),
    ("Softplus", {"softplus_param": {"beta": 2.0}}, lambda x: np.log1p(np.exp(2 * x)) / 2),
])
def test_activations(type_name, fields, reference):
    shape = (2, 3, 4, 5)
    layer, _ = make_layer(type_name, [shape], **fields)
    x = distinct_values(shape, seed=1, spread=3.0)
    np.testing.assert_allclose(layer.forward([x])[0], reference(x), rtol=1e-12)
    assert_gradients(layer, [x])


def test_sigmoid_and_softplus_do_not_overflow():
    x = np.array([-1000.0, 1000.0])
    for name in ("Sigmoid", "Softplus"):
        layer, _ = make_layer(name, [x.shape])
        with np.errstate(over="raise"):
            y = layer.forward([x])[0]
        assert np.all(np.isfinite(y))


def test_dropout_train_scales_and_test_is_identity():
    shape = (4, 50, 10)
    layer, _ = make_layer("Dropout", [shape], dropout_param={"dropout_ratio": 0.3})
    x = np.ones(shape)
    y = layer.forward([x])[0]
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.03
    np.testing.assert_allclose(y[kept], 1 / 0.7)
    assert_gradients(layer, [RNG.standard_normal(shape)])
    test_layer, _ = make_layer("Dropout", [shape], phase="TEST")
    np.testing.assert_array_equal(test_layer.forward([x])[0], x)


def test_dropout_masks_follow_the_seed():
    draws = []
    for seed in (5, 5, 6):
        layer, _ = make_layer("Dropout", [(100,)], seed=seed)
        draws.append(layer.forward([np.ones(100)])[0])
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])


def test_flatten():
    layer, (top,) = make_layer("Flatten", [(2, 3, 4, 5)], flatten_param={"axis": 1, "end_axis": 2})
    assert top == (2, 12, 5)
    assert_gradients(layer, [RNG.standard_normal((2, 3, 4, 5))])


def test_softmax():
    layer, _ = make_layer("Softmax", [(3, 5, 2)])
    x = RNG.standard_normal((3, 5, 2)) * 3
    y = layer.forward([x])[0]
    np.testing.assert_allclose(y.sum(axis=1), 1.0)
    np.testing.assert_allclose(y, np.exp(x) / np.exp(x).sum(axis=1, keepdims=True))
    assert_gradients(layer, [x])


def _labels(n, classes, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n).astype(np.float64)


def test_softmax_with_loss_value_and_gradient():
    layer, (top,) = make_layer("SoftmaxWithLoss", [(4, 5), (4,)])
    assert top == ()
    x, lab = RNG.standard_normal((4, 5)), _labels(4, 5)
    loss = float(layer.forward([x, lab])[0])
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(4), lab.astype(int)]).mean(), rel=1e-12)
    assert_gradients(layer, [x, lab], check_bottoms=[True, False])


def test_softmax_with_loss_is_stable_for_huge_scores():
    layer, _ = make_layer("SoftmaxWithLoss", [(2, 3), (2,)])
    loss = float(layer.forward([np.array([[1e4, 0, 0], [0, 1e4, -1e4]]), np.array([0.0, 1.0])])[0])
    assert loss == pytest.approx(0.0, abs=1e-12)


def test_softmax_with_loss_spatial_with_ignore_label():
    layer, _ = make_layer("SoftmaxWithLoss", [(2, 3, 2, 2), (2, 2, 2)],
                          loss_param={"ignore_label": 1})
    lab = np.array([[[0, 1], [2, 1]], [[1, 0], [2, 2]]], float)
    assert_gradients(layer, [RNG.standard_normal((2, 3, 2, 2)), lab], check_bottoms=[True, False])


def test_label_out_of_range_says_what_to_fix():
    layer, _ = make_layer("SoftmaxWithLoss", [(2, 10), (2,)])
    with pytest.raises(TrainingError, match="num_output"):
        layer.forward([np.zeros((2, 10)), np.array([3.0, 42.0])])


def test_euclidean_loss():
    layer, _ = make_layer("EuclideanLoss", [(3, 4), (3, 4)])
    a, b = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))
    assert float(layer.forward([a, b])[0]) == pytest.approx(((a - b) ** 2).sum() / 6)
    assert_gradients(layer, [a, b])


def test_accuracy_top_k_and_per_class():
    layer, _ = make_layer("Accuracy", [(4, 3), (4,)], tops=2, accuracy_param={"top_k": 2})
    scores = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = np.array([2.0, 1.0, 0.0, 1.0])
    acc, per_class = layer.forward([scores, labels])
    # top-2 hits: row 0 (2 is 2nd), row 1 (1 ties with 2 for 2nd: fewer than 2 strictly higher),
    # row 2 misses (0 is last), row 3 hits (1 is 2nd).
    assert float(acc) == pytest.approx(0.75)
    np.testing.assert_allclose(per_class, [0.0, 1.0, 1.0])


def test_accuracy_counts_nan_scores_as_misses():
    """An overflowed net (an untrained BatchNorm net at test, say) must not score 100 %."""
    layer, _ = make_layer("Accuracy", [(3, 3), (3,)])
    scores = np.array([[np.nan] * 3, [0.1, np.nan, 0.2], [0.0, 1.0, 0.0]])
    assert float(layer.forward([scores, np.array([0.0, 2.0, 1.0])])[0]) == pytest.approx(1 / 3)


def test_label_rank_ties_favour_the_label_and_nan_rows_rank_last():
    """The rank that the Accuracy layer and `cnntrain test` both count hits by."""
    from cnntrain.layers.loss import label_rank
    rows = np.array([[0.5, 0.5, 0.1], [0.3, 0.2, 0.9], [0.0, np.nan, 1.0]])
    np.testing.assert_array_equal(label_rank(rows, np.array([1, 1, 2])), [0, 2, 3])


def test_input_layer_gives_its_shapes():
    layer, tops = make_layer("Input", [], tops=2,
                             input_param={"shape": [{"dim": [2, 3, 4, 4]}, {"dim": [2]}]})
    assert tops == [(2, 3, 4, 4), (2,)]
    assert [v.shape for v in layer.forward([])] == tops
