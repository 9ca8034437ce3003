"""Convolution and pooling: the layers against the reference forms in their files,
those against loop-based definitions, and gradient checks."""
import math

import numpy as np
import pytest

from cnntrain.layers.base import SetupError
from layer_helpers import assert_gradients, distinct_values, make_layer


def naive_conv(x, w, b, stride, pad, group, dilation=(1, 1)):
    """Direct definition of Caffe's convolution (cross-correlation), one output at a time."""
    n, c, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, cout, ho, wo))
    per = cout // group
    for o in range(cout):
        g = o // per
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, g * cg:(g + 1) * cg, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                           j * sw:j * sw + dw * (kw - 1) + 1:dw]
                y[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3)) + (b[o] if b is not None else 0)
    return y


CONV_CASES = [
    dict(num_output=4, kernel_size=3),
    dict(num_output=3, kernel_size=[3, 2], stride=2, pad=1),
    dict(num_output=4, kernel_size=3, group=2, stride=[2, 1], pad=[0, 1]),
    dict(num_output=6, kernel_h=2, kernel_w=3, stride_h=1, stride_w=2, pad_h=1, pad_w=0, group=2),
    dict(num_output=3, kernel_size=1),
    dict(num_output=2, kernel_size=1, stride=2, bias_term=False),
    dict(num_output=4, kernel_size=1, group=2),                   # grouped 1x1 (no im2col shortcut)
    dict(num_output=4, kernel_size=5, pad=2, group=4),            # depth-wise
    dict(num_output=2, kernel_size=3, stride=3),                  # stride leaves pixels unused
    dict(num_output=3, kernel_size=3, dilation=2, pad=2),         # dilated, full-conv dx path
    dict(num_output=4, kernel_size=[2, 3], dilation=[3, 1], stride=[1, 2], group=2),
    dict(num_output=5, kernel_size=2, dilation=2),                # dilated, col2im dx path
]


CONV_FILLERS = {"weight_filler": {"type": "gaussian", "std": 0.5},
                "bias_filler": {"type": "gaussian", "std": 0.5}}


@pytest.mark.parametrize("params", CONV_CASES)
def test_reference_forms_match_the_direct_definition(params):
    """The layer file's reference forms: im2col + GEMM is the per-output definition,
    and col2im(Wᵀ dy) is the full convolution of dy with the kernel rotated by 180°."""
    from cnntrain.layers.conv import (conv_forward_reference, conv_input_grad_full_reference,
                                      conv_input_grad_reference)
    shape = (2, 4, 7, 6)
    layer, (top,) = make_layer("Convolution", [shape], convolution_param={**CONV_FILLERS,
                                                                           **params})
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal(shape), rng.standard_normal(top)
    w = layer.blobs[0].data
    b = layer.blobs[1].data if len(layer.blobs) > 1 else None
    g = layer.geometry
    expected = naive_conv(x, w, b, (g.sh, g.sw), (g.ph, g.pw), g.group, (g.dh, g.dw))
    y = conv_forward_reference(x, w, b, g)
    assert y.shape == top == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(conv_input_grad_reference(dy, w, g, shape),
                               conv_input_grad_full_reference(dy, w, g, shape),
                               rtol=1e-10, atol=1e-10)


def assert_convolution_matches_reference(layer, x, seed: int = 5, tol: float = 1e-10):
    """Forward, input and weight gradients of ``layer`` against the reference forms."""
    from cnntrain.layers.conv import (conv_forward_reference, conv_input_grad_reference,
                                      conv_weight_grad_reference)
    w = layer.blobs[0].data
    b = layer.blobs[1].data if len(layer.blobs) > 1 else None
    g = layer.geometry
    for blob in layer.blobs:
        blob.diff[...] = 0
    (y,) = layer.forward([x])
    np.testing.assert_allclose(y, conv_forward_reference(x, w, b, g), rtol=tol, atol=tol)
    dy = np.random.default_rng(seed).standard_normal(y.shape).astype(x.dtype)
    (dx,) = layer.backward([dy], [True])
    np.testing.assert_allclose(dx, conv_input_grad_reference(dy, w, g, x.shape),
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(layer.blobs[0].diff, conv_weight_grad_reference(x, dy, g),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("params", CONV_CASES)
def test_convolution_matches_reference_and_gradients(params):
    shape = (2, 4, 7, 6)
    layer, _ = make_layer("Convolution", [shape], convolution_param={**CONV_FILLERS, **params})
    x = np.random.default_rng(1).standard_normal(shape)
    assert_convolution_matches_reference(layer, x)
    assert_gradients(layer, [x])


@pytest.mark.parametrize("channel_first", [True, False])
@pytest.mark.parametrize("params", CONV_CASES)
def test_convolution_in_either_column_layout(monkeypatch, params, channel_first):
    """Channel-first columns (few channels per group) and NHWC columns (the rest) must
    both match the definition and pass the gradient check, whatever a shape picks."""
    import cnntrain.engine.conv_plan as conv_plan

    monkeypatch.setattr(conv_plan, "channel_first_columns", lambda *_: channel_first)
    test_convolution_matches_reference_and_gradients(params)


def test_column_layout_follows_the_copy_runs():
    """RGB input and depth-wise layers go channel-first; wide layers stay NHWC."""
    picks = {}
    for name, shape, params in [
            ("rgb", (2, 3, 32, 32), dict(num_output=8, kernel_size=5, pad=2)),
            ("depthwise", (2, 8, 16, 16), dict(num_output=8, kernel_size=3, pad=1, group=8)),
            ("wide", (2, 32, 16, 16), dict(num_output=8, kernel_size=5, pad=2)),
            ("1x1", (2, 3, 32, 32), dict(num_output=8, kernel_size=1))]:
        layer, _ = make_layer("Convolution", [shape], convolution_param=params)
        picks[name] = layer.channel_first
    assert picks == {"rgb": True, "depthwise": True, "wide": False, "1x1": False}


def test_convolution_chunks_agree_with_one_chunk(monkeypatch):
    """Splitting the batch into cache-sized chunks must not change any result."""
    import cnntrain.engine.conv_plan as conv

    shape = (5, 3, 9, 9)
    x = np.random.default_rng(2).standard_normal(shape)
    dy = np.random.default_rng(3).standard_normal((5, 4, 5, 5))
    results = []
    for budget in (1 << 30, 1):  # one chunk, then one image per chunk
        monkeypatch.setattr(conv, "batch_chunk",
                            lambda per, n, budget_bytes=budget, itemsize=8: max(1, min(n, budget // (per * itemsize))))
        layer, _ = make_layer("Convolution", [shape],
                              convolution_param=dict(num_output=4, kernel_size=3, stride=2, pad=1))
        (y,) = layer.forward([x])
        (dx,) = layer.backward([dy], [True])
        results.append((y, dx, layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_weight_gradient_runs_of_several_chunks_agree_with_one_run_per_chunk(monkeypatch):
    """When the per-run weight-gradient buffers would not fit, chunks share a run and
    its buffer; the sum must be the same up to rounding."""
    import cnntrain.engine.conv_plan as conv

    shape = (5, 3, 7, 6)
    x = np.random.default_rng(4).standard_normal(shape)
    monkeypatch.setattr(conv, "CHUNK_BYTES", 1)                     # one image per chunk
    diffs = []
    for room in (1 << 30, 1):                                       # 5 runs, then 1
        monkeypatch.setattr(conv, "WEIGHT_PARTS_BYTES", room)
        layer, (top,) = make_layer("Convolution", [shape],
                                   convolution_param=dict(num_output=4, kernel_size=3, pad=1))
        layer.forward([x])
        layer.backward([np.random.default_rng(5).standard_normal(top)], [True])
        diffs.append(layer.blobs[0].diff.copy())
    assert np.abs(diffs[0]).max() > 0
    np.testing.assert_allclose(diffs[0], diffs[1], rtol=1e-12, atol=1e-12)


def test_gradient_checker_catches_a_wrong_col2im(monkeypatch):
    """A test must be able to fail: corrupt one pixel of col2im's result and it must."""
    import cnntrain.engine.conv_plan as conv

    real = conv.col2im

    def broken(col, kh, kw, sh, sw, ho, wo, out, *dilation):
        real(col, kh, kw, sh, sw, ho, wo, out, *dilation)
        out[:, 1, 1, :] += 0.5  # a wrong value at one (interior) pixel of the NHWC buffer
        return out

    monkeypatch.setattr(conv, "col2im", broken)
    layer, _ = make_layer("Convolution", [(2, 2, 5, 5)],
                          convolution_param=dict(num_output=2, kernel_size=3, pad=1, stride=2))
    with pytest.raises(AssertionError, match="bottom"):
        assert_gradients(layer, [np.random.default_rng(0).standard_normal((2, 2, 5, 5))])


def test_gradient_checker_catches_a_wrong_full_convolution(monkeypatch):
    from cnntrain.engine.conv_plan import ConvPlan

    real = ConvPlan._full_convolution

    def broken(self, *args):
        out = real(self, *args)
        out[0, 3, 1] += 0.5     # (group, pixel, channel): one wrong input-gradient value
        return out

    monkeypatch.setattr(ConvPlan, "_full_convolution", broken)
    layer, _ = make_layer("Convolution", [(2, 2, 5, 5)],
                          convolution_param=dict(num_output=2, kernel_size=3, pad=1))
    with pytest.raises(AssertionError, match="bottom"):
        assert_gradients(layer, [np.random.default_rng(0).standard_normal((2, 2, 5, 5))])


@pytest.mark.parametrize("bad, field", [
    (dict(num_output=3, kernel_size=3, group=2), "group"),
    (dict(num_output=2, kernel_size=9), "kernel_size"),
    (dict(num_output=2), "kernel_size"),
    (dict(num_output=2, kernel_size=3, kernel_h=3, kernel_w=3), "kernel_size"),
])
def test_convolution_setup_errors_name_the_field(bad, field):
    with pytest.raises(SetupError) as err:
        make_layer("Convolution", [(1, 4, 5, 5)], convolution_param=bad)
    assert field in err.value.field


def caffe_pool_reference(x, method, k, s, p, global_pooling=False, round_mode="CEIL"):
    """Caffe's pooling loops (pooling_layer.cpp semantics), written out per output."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    if global_pooling:
        kh, kw, sh, sw, ph, pw = h, w, 1, 1, 0, 0

    def out_size(size, kk, ss, pp):
        rounded = math.ceil if round_mode == "CEIL" else math.floor
        o = int(rounded((size + 2 * pp - kk) / ss)) + 1
        # Caffe tests this only with pp > 0 (and then emits empty windows when the stride
        # exceeds the kernel); cnntrain always does, as torch's ceil_mode does.
        if (o - 1) * ss >= size + pp:
            o -= 1
        return o

    ho, wo = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    y = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            hs, ws = i * sh - ph, j * sw - pw
            if method == "MAX":
                he, we = min(hs + kh, h), min(ws + kw, w)
                hs, ws = max(hs, 0), max(ws, 0)
                y[:, :, i, j] = x[:, :, hs:he, ws:we].max(axis=(2, 3))
            else:
                he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
                size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                y[:, :, i, j] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / size
    return y


POOL_CASES = [
    dict(pool="MAX", kernel_size=3, stride=2),            # overlapping, ceil rounding (7 → 3)
    dict(pool="AVE", kernel_size=3, stride=2),
    dict(pool="AVE", kernel_size=3, stride=2, pad=1),     # border divisors
    dict(pool="MAX", kernel_size=3, stride=2, pad=1),
    dict(pool="MAX", kernel_size=2, stride=2),            # odd size, ceil adds a partial window
    dict(pool="AVE", kernel_size=2, stride=2, pad=1),
    dict(pool="MAX", kernel_h=3, kernel_w=2, stride_h=2, stride_w=1),
    dict(pool="AVE", kernel_h=2, kernel_w=3, stride_h=1, stride_w=2, pad_h=1, pad_w=0),
    dict(pool="AVE", global_pooling=True),
    dict(pool="MAX", global_pooling=True),
    dict(pool="MAX", kernel_size=2, stride=3),            # stride > kernel: pixels skipped
    dict(pool="AVE", kernel_h=1, kernel_w=2, stride=2),
    dict(pool="MAX", kernel_size=5, stride=3, pad=2),     # phases that start in the pad
    dict(pool="MAX", kernel_size=2, stride=2, round_mode="FLOOR"),   # 7 → 3: last row unused
    dict(pool="AVE", kernel_size=2, stride=2, round_mode="FLOOR"),
    dict(pool="MAX", kernel_size=3, stride=2, pad=1, round_mode="FLOOR"),
    dict(pool="AVE", kernel_size=3, stride=3, round_mode="FLOOR"),   # 7 → 2, 6 → 2
]


@pytest.mark.parametrize("stride, pad, size", [(2, 0, 7), (2, 1, 6), (3, 2, 7), (2, 1, 1),
                                               (3, 0, 2), (4, 3, 5)])
def test_phase_span_finds_exactly_the_real_pixels_of_each_phase(stride, pad, size):
    from cnntrain.engine.pool_plan import phase_span
    padded = size + 2 * pad + stride          # longer than any window reaches
    for phase in range(stride):
        length = -(-(padded - phase) // stride)
        real = [r for r in range(length) if 0 <= phase + stride * r - pad < size]
        first, source, count = phase_span(phase, stride, pad, size, length)
        assert list(range(first, first + count)) == real
        if real:
            assert source == phase + stride * first - pad


def pool_references(layer, x, dy):
    """(y, dx) of the layer file's reference forms for ``layer``'s geometry."""
    from cnntrain.layers.pool import (ave_pool_backward_reference, ave_pool_reference,
                                      max_pool_backward_reference, max_pool_reference)
    g = layer.geometry
    if layer.method == "MAX":
        y, argmax = max_pool_reference(x, g)
        return y, max_pool_backward_reference(dy, argmax, x.shape, g)
    return ave_pool_reference(x, g), ave_pool_backward_reference(dy, x.shape, g)


@pytest.mark.parametrize("params", POOL_CASES)
def test_pooling_reference_forms_match_caffe_loops(params):
    shape = (2, 3, 7, 6)
    layer, (top,) = make_layer("Pooling", [shape], pooling_param=params)
    x = distinct_values(shape, seed=3)
    dy = np.random.default_rng(4).standard_normal(top)
    y, dx = pool_references(layer, x, dy)
    expected = caffe_pool_reference(x, params["pool"], (layer.kh, layer.kw), (layer.sh, layer.sw),
                                    (layer.ph, layer.pw), params.get("global_pooling", False),
                                    params.get("round_mode", "CEIL"))
    assert y.shape == top == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    if params["pool"] == "MAX":
        np.testing.assert_allclose(dx, caffe_max_routing(x, dy, (layer.kh, layer.kw),
                                                         (layer.sh, layer.sw), (layer.ph, layer.pw)),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("params", POOL_CASES)
def test_pooling_matches_reference_and_gradients(params):
    shape = (2, 3, 7, 6)
    layer, (top,) = make_layer("Pooling", [shape], pooling_param=params)
    x = distinct_values(shape, seed=3)
    dy = np.random.default_rng(4).standard_normal(top)
    (y,) = layer.forward([x])
    (dx,) = layer.backward([dy], [True])
    y_ref, dx_ref = pool_references(layer, x, dy)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    assert_gradients(layer, [x])


@pytest.mark.parametrize("params", [dict(pool="MAX", kernel_size=3, stride=2, pad=1),
                                    dict(pool="AVE", kernel_size=3, stride=2, pad=1)])
def test_pooling_stays_right_when_the_batch_size_changes(params):
    """The phase planes' borders are written only when their layout changes: a smaller
    batch, then the first again (each announced by ``reshape``, as the net does), must
    each see clean borders."""
    layer, _ = make_layer("Pooling", [(3, 2, 7, 6)], pooling_param=params)
    for n in (3, 1, 3, 3):
        x = distinct_values((n, 2, 7, 6), seed=n) * (-1 if params["pool"] == "MAX" else 1)
        layer.reshape([x.shape])
        (y,) = layer.forward([x])
        expected = caffe_pool_reference(x, params["pool"], (3, 3), (2, 2), (1, 1))
        np.testing.assert_allclose(y, expected, rtol=1e-12)


def test_no_window_lies_wholly_past_the_input():
    """Stride 3 > kernel 2 on 6 pixels: Caffe's ceil gives a third window at 6..7, outside
    the input; cnntrain keeps two (the window must start inside the input)."""
    _, (top,) = make_layer("Pooling", [(1, 1, 7, 6)],
                           pooling_param=dict(pool="MAX", kernel_size=2, stride=3))
    assert top == (1, 1, 3, 2)


def test_cifar10_quick_pool_sizes_use_ceil():
    for size, out in ((32, 16), (16, 8), (8, 4)):
        _, (top,) = make_layer("Pooling", [(1, 1, size, size)],
                               pooling_param=dict(pool="MAX", kernel_size=3, stride=2))
        assert top == (1, 1, out, out)


def test_floor_rounding_gives_pytorchs_sizes():
    """round_mode FLOOR: 31 → 15 → 7 → 3 under 2x2/2 (airbench's net), where CEIL gives 16, 8, 4."""
    for size, floor, ceil in ((31, 15, 16), (15, 7, 8), (7, 3, 4)):
        for mode, out in (("FLOOR", floor), ("CEIL", ceil)):
            _, (top,) = make_layer("Pooling", [(1, 1, size, size)], pooling_param=dict(
                pool="MAX", kernel_size=2, stride=2, round_mode=mode))
            assert top == (1, 1, out, out)


def test_max_pool_routes_gradient_to_first_maximum_on_ties():
    layer, _ = make_layer("Pooling", [(1, 1, 2, 2)], pooling_param=dict(pool="MAX", kernel_size=2))
    layer.forward([np.array([[[[1.0, 3.0], [3.0, 0.0]]]])])
    (dx,) = layer.backward([np.array([[[[1.0]]]])], [True])
    np.testing.assert_array_equal(dx, [[[[0.0, 1.0], [0.0, 0.0]]]])


def caffe_max_routing(x, dy, k, s, p):
    """Caffe's MAX backward as loops: each output's gradient goes to the first
    (row-major) maximum of its window, padding excluded; overlapping windows add up."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    dx = np.zeros_like(x)
    for b in range(n):
        for ch in range(c):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    hs, ws = i * sh - ph, j * sw - pw
                    he, we = min(hs + kh, h), min(ws + kw, w)
                    hs, ws = max(hs, 0), max(ws, 0)
                    window = x[b, ch, hs:he, ws:we]
                    r, q = np.unravel_index(np.argmax(window), window.shape)
                    dx[b, ch, hs + r, ws + q] += dy[b, ch, i, j]
    return dx


@pytest.mark.parametrize("params", [
    dict(kernel_size=3, stride=2),
    dict(kernel_size=3, stride=2, pad=1),
    dict(kernel_h=3, kernel_w=2, stride_h=2, stride_w=3),
    dict(kernel_size=2, stride=1),
    dict(kernel_size=2, stride=2, round_mode="FLOOR"),    # windows that tile the input
    dict(kernel_h=3, kernel_w=2, stride_h=3, stride_w=2),
])
def test_max_pool_routes_ties_to_the_first_maximum_like_caffe(params):
    """Inputs of a few distinct values (ReLU zeros are the everyday case) tie in most
    windows; the gradient must still reach exactly Caffe's argmax."""
    shape = (2, 3, 9, 8)
    layer, (top,) = make_layer("Pooling", [shape], pooling_param=dict(pool="MAX", **params))
    x = np.random.default_rng(7).integers(0, 3, shape).astype(np.float64)
    dy = np.random.default_rng(8).standard_normal(top)
    layer.forward([x])
    (dx,) = layer.backward([dy], [True])
    _, expected = pool_references(layer, x, dy)
    np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(expected, caffe_max_routing(
        x, dy, (layer.kh, layer.kw), (layer.sh, layer.sw), (layer.ph, layer.pw)), atol=1e-12)


def test_mean_pool_spreads_gradient_evenly():
    layer, _ = make_layer("Pooling", [(1, 1, 2, 2)], pooling_param=dict(pool="AVE", kernel_size=2))
    layer.forward([np.ones((1, 1, 2, 2))])
    (dx,) = layer.backward([np.array([[[[4.0]]]])], [True])
    np.testing.assert_array_equal(dx, np.ones((1, 1, 2, 2)))


@pytest.mark.parametrize("kernel, stride, pad", [(3, 2, 0), (3, 2, 1), (2, 2, 0)])
def test_max_pool_routes_windows_of_inf_and_nan_to_a_pixel_of_the_window(kernel, stride, pad):
    """A window of -inf matches its max at its first element, a NaN window nowhere
    (it routes to its first element too). Without padding that element is a real
    pixel, so every output's gradient lands in dx; nothing is written out of bounds.
    2x2/2 on 8 pixels: windows that tile the input, each pixel in one window."""
    shape = (2, 2, 7, 7) if kernel == 3 else (2, 2, 8, 8)
    layer, (top,) = make_layer("Pooling", [shape], pooling_param=dict(
        pool="MAX", kernel_size=kernel, stride=stride, pad=pad))
    x = distinct_values(shape, seed=5)
    x[0, 0, :4, :4] = -np.inf
    x[1, 1, 3, 3] = np.nan
    dy = np.random.default_rng(6).uniform(1, 2, top)
    y, = layer.forward([x])
    (dx,) = layer.backward([dy], [True])
    assert np.isfinite(dx).all()
    y_ref, dx_ref = pool_references(layer, x, dy)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=0)   # overlaps add in any order
    if pad == 0:
        np.testing.assert_allclose(dx.sum(axis=(2, 3)), dy.sum(axis=(2, 3)), rtol=1e-12)
        assert dx[0, 0, 0, 0] == dy[0, 0, 0, 0]     # the all -inf window, to its corner
