"""Concat, Slice, Split, Eltwise, Reshape, Crop: references by indexing, and gradients."""
import numpy as np
import pytest

from cnntrain.layers.base import SetupError
from layer_helpers import assert_gradients, distinct_values, make_layer

RNG = np.random.default_rng(5)


def randn(*shapes):
    return [RNG.standard_normal(s) for s in shapes]


# --- Concat and Slice ------------------------------------------------------------------
@pytest.mark.parametrize("shapes, params, axis", [
    ([(2, 3, 4), (2, 1, 4), (2, 2, 4)], {}, 1),
    ([(2, 3, 4), (2, 3, 1)], {"axis": -1}, 2),
    ([(1, 3), (4, 3)], {"concat_dim": 0}, 0),
    ([(2, 3, 2, 2)], {}, 1),
])
def test_concat(shapes, params, axis):
    layer, (top,) = make_layer("Concat", shapes, concat_param=params)
    xs = randn(*shapes)
    (y,) = layer.forward(xs)
    assert y.shape == top
    start = 0
    for x in xs:   # each bottom sits in its own range of the axis, in order
        index = [slice(None)] * y.ndim
        index[axis] = slice(start, start + x.shape[axis])
        np.testing.assert_array_equal(y[tuple(index)], x)
        start += x.shape[axis]
    assert start == y.shape[axis]
    assert_gradients(layer, xs)


@pytest.mark.parametrize("shapes, params, field", [
    ([(2, 3, 4), (2, 3, 5)], {}, "bottom"),
    ([(2, 3), (2, 3, 1)], {}, "bottom"),
    ([(2, 3), (2, 3)], {"axis": 1, "concat_dim": 1}, "concat_param.concat_dim"),
    ([(2, 3), (2, 3)], {"axis": 2}, "concat_param.axis"),
])
def test_concat_errors(shapes, params, field):
    with pytest.raises(SetupError) as err:
        make_layer("Concat", shapes, concat_param=params)
    assert err.value.field == field


@pytest.mark.parametrize("shape, tops, params, sizes, axis", [
    ((2, 6, 3), 3, {}, [2, 2, 2], 1),
    ((2, 7, 3), 3, {"slice_point": [1, 5]}, [1, 4, 2], 1),
    ((4, 3), 2, {"axis": 0, "slice_point": [3]}, [3, 1], 0),
    ((2, 3, 5), 2, {"slice_dim": 2, "slice_point": [2]}, [2, 3], 2),
    ((2, 3, 4), 1, {}, [3], 1),
])
def test_slice(shape, tops, params, sizes, axis):
    layer, top_shapes = make_layer("Slice", [shape], tops=tops, slice_param=params)
    (x,) = randn(shape)
    ys = layer.forward([x])
    edges = np.cumsum([0] + sizes)
    for y, top, a, b in zip(ys, top_shapes, edges, edges[1:]):
        np.testing.assert_array_equal(y, np.take(x, range(a, b), axis=axis))
        assert y.shape == top
    assert_gradients(layer, [x])


@pytest.mark.parametrize("shape, tops, params, field, words", [
    ((2, 7), 3, {}, "slice_param.slice_point", "equal parts"),
    ((2, 7), 3, {"slice_point": [2]}, "slice_param.slice_point", "for 3 tops"),
    ((2, 7), 3, {"slice_point": [4, 2]}, "slice_param.slice_point", "increase"),
    ((2, 7), 2, {"slice_point": [7]}, "slice_param.slice_point", "below 7"),
])
def test_slice_errors(shape, tops, params, field, words):
    with pytest.raises(SetupError, match=words) as err:
        make_layer("Slice", [shape], tops=tops, slice_param=params)
    assert err.value.field == field


def test_split_copies_forward_and_sums_gradients():
    layer, tops = make_layer("Split", [(2, 3)], tops=3)
    (x,) = randn((2, 3))
    ys = layer.forward([x])
    assert len(ys) == 3 == len(tops) and all(np.array_equal(y, x) for y in ys)
    dys = randn((2, 3), (2, 3), (2, 3))
    before = [d.copy() for d in dys]
    (dx,) = layer.backward(dys, [True])
    np.testing.assert_allclose(dx, sum(before))
    for d, b in zip(dys, before):   # the top diffs are not written into
        np.testing.assert_array_equal(d, b)
    assert_gradients(layer, [x])


# --- Eltwise -----------------------------------------------------------------------------
SHAPE = (2, 3, 4)


@pytest.mark.parametrize("params, reference", [
    ({}, lambda a, b, c: a + b + c),
    ({"operation": "SUM", "coeff": [1, -1, 0.5]}, lambda a, b, c: a - b + 0.5 * c),
    ({"operation": "PROD"}, lambda a, b, c: a * b * c),
    ({"operation": "PROD", "stable_prod_grad": False}, lambda a, b, c: a * b * c),
    ({"operation": "MAX"}, lambda a, b, c: np.maximum(np.maximum(a, b), c)),
])
def test_eltwise(params, reference):
    layer, (top,) = make_layer("Eltwise", [SHAPE] * 3, eltwise_param=params)
    xs = [distinct_values(SHAPE, seed=i, spread=2.0) for i in range(3)]
    (y,) = layer.forward(xs)
    assert y.shape == top
    np.testing.assert_allclose(y, reference(*xs), rtol=1e-12)
    assert_gradients(layer, xs)


def test_eltwise_two_bottoms_and_many():
    for count in (2, 5):
        layer, _ = make_layer("Eltwise", [SHAPE] * count, eltwise_param={"operation": "PROD"})
        xs = [distinct_values(SHAPE, seed=i) for i in range(count)]
        np.testing.assert_allclose(layer.forward(xs)[0], np.prod(xs, axis=0), rtol=1e-12)
        assert_gradients(layer, xs)


def test_eltwise_max_ties_go_to_the_first_bottom_holding_the_max():
    layer, _ = make_layer("Eltwise", [(5,)] * 3, eltwise_param={"operation": "MAX"})
    a = np.array([1.0, 2.0, 3.0, 0.0, 4.0])
    b = np.array([1.0, 5.0, 3.0, 2.0, 1.0])
    c = np.array([0.0, 5.0, 3.0, 2.0, 4.0])
    (y,) = layer.forward([a, b, c])
    np.testing.assert_array_equal(y, [1, 5, 3, 2, 4])
    grads = layer.backward([np.arange(1.0, 6.0)], [True, True, True])
    np.testing.assert_array_equal(grads[0], [1, 0, 3, 0, 5])
    np.testing.assert_array_equal(grads[1], [0, 2, 0, 4, 0])
    np.testing.assert_array_equal(grads[2], [0, 0, 0, 0, 0])


def test_eltwise_prod_gradient_with_a_zero_bottom():
    """The stable gradient (product of the others) is finite where a bottom is 0."""
    layer, _ = make_layer("Eltwise", [(3,)] * 2, eltwise_param={"operation": "PROD"})
    a, b = np.array([0.0, 2.0, 3.0]), np.array([4.0, 0.0, 5.0])
    layer.forward([a, b])
    da, db = layer.backward([np.ones(3)], [True, True])
    np.testing.assert_array_equal(da, b)
    np.testing.assert_array_equal(db, a)


@pytest.mark.parametrize("shapes, params, field", [
    ([SHAPE, (2, 3, 5)], {}, "bottom"),
    ([SHAPE] * 2, {"coeff": [1.0]}, "eltwise_param.coeff"),
    ([SHAPE] * 2, {"operation": "PROD", "coeff": [1.0, 2.0]}, "eltwise_param.coeff"),
    ([SHAPE] * 2, {"operation": "MAX", "coeff": [1.0, 2.0]}, "eltwise_param.coeff"),
])
def test_eltwise_errors(shapes, params, field):
    with pytest.raises(SetupError) as err:
        make_layer("Eltwise", shapes, eltwise_param=params)
    assert err.value.field == field


# --- Reshape -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape, params, expected", [
    ((2, 3, 4, 5), {"shape": {"dim": [0, -1]}}, (2, 60)),
    ((2, 3, 4, 5), {"shape": {"dim": [0, 0, 20]}}, (2, 3, 20)),
    ((2, 3, 4, 5), {"shape": {"dim": [-1, 4, 5]}, "axis": 1}, (2, 3, 4, 5)),
    ((2, 3, 4, 5), {"shape": {"dim": [6, 2]}, "axis": 1, "num_axes": 2}, (2, 6, 2, 5)),
    ((2, 3, 4), {"shape": {"dim": [1]}, "axis": 1, "num_axes": 0}, (2, 1, 3, 4)),
    ((2, 3, 4), {"shape": {"dim": [1]}, "axis": -1, "num_axes": 0}, (2, 3, 4, 1)),
    ((2, 12), {"shape": {"dim": [0, 2, -1, 3]}}, (2, 2, 2, 3)),
])
def test_reshape(shape, params, expected):
    layer, (top,) = make_layer("Reshape", [shape], reshape_param=params)
    (x,) = randn(shape)
    (y,) = layer.forward([x])
    assert top == y.shape == expected
    np.testing.assert_array_equal(y.ravel(), x.ravel())   # same values, same order
    assert_gradients(layer, [x])


def test_reshape_follows_a_new_batch_size():
    layer, _ = make_layer("Reshape", [(2, 3, 4)], reshape_param={"shape": {"dim": [0, -1]}})
    assert layer.forward([np.zeros((5, 3, 4))])[0].shape == (5, 12)


@pytest.mark.parametrize("params, words", [
    ({"shape": {"dim": [-1, -1]}}, "at most one"),
    ({"shape": {"dim": [5, -1]}}, "cannot infer"),
    ({"shape": {"dim": [7, 2]}}, "holds 14 values"),
    ({"shape": {"dim": [0, 0, 0, 0]}}, "no axis 3"),
    ({"shape": {"dim": [2]}, "axis": 4}, "out of range"),
    ({"shape": {"dim": [2]}, "axis": 2, "num_axes": 2}, "extends past"),
    ({"shape": [{"dim": [2]}, {"dim": [3]}]}, "one shape"),
])
def test_reshape_errors(params, words):
    with pytest.raises(SetupError, match=words) as err:
        make_layer("Reshape", [(2, 3, 4)], reshape_param=params)
    assert err.value.field.startswith("reshape_param.")


# --- Crop ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shapes, params, index", [
    ([(2, 3, 7, 6), (2, 1, 4, 4)], {}, np.s_[:, :, 0:4, 0:4]),
    ([(2, 3, 7, 6), (2, 1, 4, 4)], {"offset": [1, 2]}, np.s_[:, :, 1:5, 2:6]),
    ([(2, 3, 7, 8), (2, 1, 4, 4)], {"offset": 3}, np.s_[:, :, 3:7, 3:7]),
    ([(4, 3, 5, 5), (2, 2, 3, 3)], {"axis": 1, "offset": [1, 2, 0]}, np.s_[:, 1:3, 2:5, 0:3]),
    ([(4, 3, 5), (2, 2, 3)], {"axis": 0, "offset": 1}, np.s_[1:3, 1:3, 1:4]),
])
def test_crop(shapes, params, index):
    layer, (top,) = make_layer("Crop", shapes, crop_param=params)
    xs = randn(*shapes)
    (y,) = layer.forward(xs)
    np.testing.assert_array_equal(y, xs[0][index])
    assert y.shape == top
    results = assert_gradients(layer, xs)
    assert results[-1].name == "L.bottom[1]" and results[-1].max_abs_err == 0   # shape only


@pytest.mark.parametrize("params, words", [
    ({"offset": [1, 2, 3]}, "one per axis"),
    ({"offset": [4, 0]}, "exceeds"),
])
def test_crop_errors(params, words):
    with pytest.raises(SetupError, match=words) as err:
        make_layer("Crop", [(2, 3, 7, 6), (2, 1, 4, 4)], crop_param=params)
    assert err.value.field == "crop_param.offset"
