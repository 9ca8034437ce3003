"""Subsampling and MapCombination (Bouvrie's notes): forward against loops over blocks
and map pairs, backward against the notes' formulas and finite differences."""
import numpy as np
import pytest

from cnntrain.layers.base import SetupError
from layer_helpers import assert_gradients, distinct_values, make_layer
from test_layers_conv_pool import naive_conv

GAUSS = {"type": "gaussian", "std": 0.7}


def naive_down(x, kh, kw):
    n, c, h, w = x.shape
    out = np.zeros((n, c, h // kh, w // kw))
    for i in range(h // kh):
        for j in range(w // kw):
            out[:, :, i, j] = x[:, :, i * kh:(i + 1) * kh, j * kw:(j + 1) * kw].sum(axis=(2, 3))
    return out


@pytest.mark.parametrize("shape, params", [
    ((2, 3, 6, 4), dict(kernel_size=2)),
    ((2, 2, 6, 6), dict(kernel_size=3, method="MEAN", activation="TANH")),
    ((1, 3, 4, 9), dict(kernel_h=2, kernel_w=3, activation="SIGMOID")),
    ((2, 3, 5, 5), dict(kernel_size=5, bias_term=False, activation="TANH")),
    ((3, 1, 2, 6), dict(kernel_size=[1, 2])),
])
def test_subsampling_forward_and_gradients(shape, params):
    layer, (top,) = make_layer("Subsampling", [shape], subsampling_param={
        "scale_filler": GAUSS, "bias_filler": GAUSS, **params})
    x = distinct_values(shape, seed=4, spread=2.0)
    (y,) = layer.forward([x])
    kh, kw = layer.kh, layer.kw
    u = naive_down(x, kh, kw) / (kh * kw if params.get("method") == "MEAN" else 1)
    u = u * layer.blobs[0].data[None, :, None, None]
    if len(layer.blobs) > 1:
        u += layer.blobs[1].data[None, :, None, None]
    f = {"TANH": np.tanh, "SIGMOID": lambda v: 1 / (1 + np.exp(-v))}.get(
        params.get("activation"), lambda v: v)
    assert y.shape == top
    np.testing.assert_allclose(y, f(u), rtol=1e-12)
    assert_gradients(layer, [x])


def test_subsampling_backward_is_the_notes_formulas():
    """d beta = sum(delta * down(x)), d b = sum(delta), dx = beta * kron(delta, ones)."""
    shape = (2, 2, 4, 6)
    layer, _ = make_layer("Subsampling", [shape], subsampling_param={
        "kernel_size": 2, "scale_filler": GAUSS, "bias_filler": GAUSS})
    x = np.random.default_rng(0).standard_normal(shape)
    delta = np.random.default_rng(1).standard_normal((2, 2, 2, 3))
    layer.forward([x])
    (dx,) = layer.backward([delta], [True])
    beta = layer.blobs[0].data
    np.testing.assert_allclose(layer.blobs[0].diff,
                               (delta * naive_down(x, 2, 2)).sum(axis=(0, 2, 3)))
    np.testing.assert_allclose(layer.blobs[1].diff, delta.sum(axis=(0, 2, 3)))
    for n in range(2):
        for c in range(2):
            np.testing.assert_allclose(dx[n, c], beta[c] * np.kron(delta[n, c], np.ones((2, 2))))


def test_subsampling_defaults_are_the_notes():
    layer, _ = make_layer("Subsampling", [(1, 4, 4, 4)], subsampling_param={"kernel_size": 2})
    np.testing.assert_array_equal(layer.blobs[0].data, np.ones(4))   # beta = 1
    np.testing.assert_array_equal(layer.blobs[1].data, np.zeros(4))  # b = 0
    x = np.arange(64.0).reshape(1, 4, 4, 4)
    assert layer.forward([x])[0][0, 0, 0, 0] == 0 + 1 + 4 + 5         # SUM


def test_subsampling_needs_whole_blocks():
    with pytest.raises(SetupError, match="not a multiple") as err:
        make_layer("Subsampling", [(1, 2, 7, 8)], subsampling_param={"kernel_size": 2})
    assert err.value.field == "subsampling_param.kernel_size"
    with pytest.raises(SetupError, match="kernel_size"):
        make_layer("Subsampling", [(1, 2, 8, 8)])


# --- MapCombination ---------------------------------------------------------------------
def naive_map_combination(x, k, c, b, stride, pad):
    """Each pair (i, j) convolved on its own, then mixed by alpha = softmax_i(c_ij)."""
    alpha = np.exp(c) / np.exp(c).sum(axis=0, keepdims=True)
    out = None
    for j in range(k.shape[0]):
        acc = 0
        for i in range(k.shape[1]):
            acc = acc + alpha[i, j] * naive_conv(x[:, i:i + 1], k[j:j + 1, i:i + 1], None,
                                                 stride, pad, 1)
        acc = acc + (b[j] if b is not None else 0)
        out = acc if out is None else np.concatenate([out, acc], axis=1)
    return out


MAP_CASES = [
    dict(num_output=4, kernel_size=3),
    dict(num_output=3, kernel_size=[3, 2], stride=2, pad=1),
    dict(num_output=2, kernel_h=2, kernel_w=3, stride_h=1, stride_w=2, pad_h=1, pad_w=0,
         bias_term=False),
    dict(num_output=5, kernel_size=1),
]


@pytest.mark.parametrize("params", MAP_CASES)
def test_map_combination_matches_pairwise_definition_and_gradients(params):
    shape = (2, 3, 7, 6)
    layer, (top,) = make_layer("MapCombination", [shape], map_combination_param={
        "weight_filler": GAUSS, "bias_filler": GAUSS, "combination_filler": GAUSS, **params})
    x = np.random.default_rng(1).standard_normal(shape)
    (y,) = layer.forward([x])
    k, c = layer.blobs[0].data, layer.blobs[1].data
    b = layer.blobs[2].data if len(layer.blobs) > 2 else None
    expected = naive_map_combination(x, k, c, b, (layer.sh, layer.sw), (layer.ph, layer.pw))
    assert y.shape == top == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    assert_gradients(layer, [x])


def test_map_combination_starts_as_an_average_of_the_maps():
    layer, _ = make_layer("MapCombination", [(1, 4, 5, 5)],
                          map_combination_param={"num_output": 2, "kernel_size": 3})
    np.testing.assert_array_equal(layer.blobs[1].data, np.zeros((4, 2)))
    layer.forward([np.zeros((1, 4, 5, 5))])
    np.testing.assert_allclose(layer.alpha, np.full((4, 2), 0.25))
    assert [p.data.shape for p in layer.blobs] == [(2, 4, 3, 3), (4, 2), (2,)]


@pytest.mark.parametrize("kind", ["L1", "ENTROPY"])
def test_sparsity_penalty_top_value_and_gradients(kind):
    shape = (2, 3, 5, 5)
    layer, tops = make_layer("MapCombination", [shape], tops=2, map_combination_param={
        "num_output": 2, "kernel_size": 3, "sparsity": 0.3, "sparsity_type": kind,
        "weight_filler": GAUSS, "combination_filler": GAUSS})
    assert tops[1] == ()
    x = np.random.default_rng(2).standard_normal(shape)
    _, penalty = layer.forward([x])
    c = layer.blobs[1].data
    alpha = np.exp(c) / np.exp(c).sum(axis=0, keepdims=True)
    if kind == "L1":
        assert float(penalty) == pytest.approx(0.3 * 2)          # lambda * num_output, always
    else:
        assert float(penalty) == pytest.approx(-0.3 * (alpha * np.log(alpha)).sum())
    assert_gradients(layer, [x])


def test_l1_penalty_of_the_notes_has_no_gradient_under_the_softmax():
    layer, _ = make_layer("MapCombination", [(1, 3, 4, 4)], tops=2, map_combination_param={
        "num_output": 2, "kernel_size": 3, "sparsity": 5.0, "combination_filler": GAUSS})
    out, _ = layer.forward([np.ones((1, 3, 4, 4))])
    layer.backward([np.zeros_like(out), np.array(1.0)], [False])
    np.testing.assert_allclose(layer.blobs[1].diff, 0, atol=1e-14)
    entropic, _ = make_layer("MapCombination", [(1, 3, 4, 4)], tops=2, map_combination_param={
        "num_output": 2, "kernel_size": 3, "sparsity": 5.0, "sparsity_type": "ENTROPY",
        "combination_filler": GAUSS})
    entropic.forward([np.ones((1, 3, 4, 4))])
    entropic.backward([np.zeros_like(out), np.array(1.0)], [False])
    # Gradient descent on the entropy sharpens each column: the largest alpha gains.
    alpha, dc = entropic.alpha, entropic.blobs[1].diff
    top = alpha.argmax(axis=0)
    assert np.all(dc[top, [0, 1]] < 0)


def test_map_combination_errors_name_their_fields():
    with pytest.raises(SetupError, match="second top") as err:
        make_layer("MapCombination", [(1, 3, 4, 4)],
                   map_combination_param={"num_output": 2, "kernel_size": 3, "sparsity": 0.1})
    assert err.value.field == "map_combination_param.sparsity"
    with pytest.raises(SetupError, match="larger than the padded input") as err:
        make_layer("MapCombination", [(1, 3, 4, 4)],
                   map_combination_param={"num_output": 2, "kernel_size": 5})
    assert err.value.field == "map_combination_param.kernel_size"
