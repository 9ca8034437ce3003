"""Winograd F(2,3) and F(4,3): the transforms against the 1-D and 2-D definitions, and the
convolution (forward, kernel and input gradients) against a direct loop over kernel taps,
in float64 to rounding and in float32 within a stated bound."""
import numpy as np
import pytest

from cnntrain.engine import winograd
from cnntrain.engine.workspace import Workspace


def direct(x, w, b, pad):
    """y[n, k] = sum over taps (i, j) and channels c of w[k, c, i, j] x[n, c, y+i, x+j]."""
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = h + 2 * pad - 2, wd + 2 * pad - 2
    y = np.zeros((n, w.shape[0], ho, wo))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,kc->nkhw", xp[:, :, i:i + ho, j:j + wo], w[:, :, i, j])
    return y + b.reshape(1, -1, 1, 1)


def direct_gradients(x, w, dy, pad):
    """dW[k, c, i, j] = sum dy[n, k] * x shifted by (i, j); dx: each tap's product added
    back where it came from (col2im by loops)."""
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = dy.shape[2:]
    dw, dxp = np.zeros(w.shape), np.zeros(xp.shape)
    for i in range(3):
        for j in range(3):
            dw[:, :, i, j] = np.einsum("nkhw,nchw->kc", dy, xp[:, :, i:i + ho, j:j + wo])
            dxp[:, :, i:i + ho, j:j + wo] += np.einsum("nkhw,kc->nchw", dy, w[:, :, i, j])
    return dw, dxp[:, :, pad:pad + h, pad:pad + wd]


@pytest.mark.parametrize("m", [2, 4])
def test_transforms_compute_the_correlation_of_a_tile(m):
    rng = np.random.default_rng(m)
    bt, g, at = (np.array(a, float) for a in winograd._MATRICES[m])
    d, k = rng.normal(size=(m + 2, m + 2)), rng.normal(size=(3, 3))
    blocks = at @ ((g @ k @ g.T) * (bt @ d @ bt.T)) @ at.T
    expected = [[(d[i:i + 3, j:j + 3] * k).sum() for j in range(m)] for i in range(m)]
    np.testing.assert_allclose(blocks, expected, atol=1e-12)
    tr = winograd.transforms(m, np.float64)
    # The Kronecker forms act on row-major flattened tiles.
    np.testing.assert_allclose(tr.input @ d.reshape(-1), (bt @ d @ bt.T).reshape(-1))
    np.testing.assert_allclose(tr.kernel @ k.reshape(-1), (g @ k @ g.T).reshape(-1))


CASES = [  # n, c, h, w, cout, pad, m
    (3, 5, 7, 9, 4, 1, 4),       # blocks overhang both axes
    (2, 3, 6, 6, 5, 1, 2),
    (4, 6, 11, 5, 3, 0, 4),      # valid convolution
    (2, 3, 8, 8, 2, 2, 4),       # full convolution (pad 2)
    (3, 4, 3, 3, 4, 1, 4),       # one block per image
    (9, 2, 5, 4, 3, 1, 2),       # more chunks than one
]


@pytest.mark.parametrize("n, c, h, w, cout, pad, m", CASES)
def test_winograd_convolution_equals_the_direct_one(monkeypatch, n, c, h, w, cout, pad, m):
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 2048)      # several chunks and runs
    monkeypatch.setattr(winograd, "KERNEL_PARTS_BYTES", 3 * 16 * 36 * 8)
    rng = np.random.default_rng(n + c)
    x, wt = rng.normal(size=(n, c, h, w)), rng.normal(size=(cout, c, 3, 3))
    b = rng.normal(size=cout)
    conv = winograd.WinogradConvolution(n, c, h, w, cout, (pad, pad), m, np.float64,
                                        Workspace())
    y = np.empty((n, cout, h + 2 * pad - 2, w + 2 * pad - 2))
    conv.forward(x, wt, b, y)
    np.testing.assert_allclose(y, direct(x, wt, b, pad), rtol=1e-11, atol=1e-11)
    dy = rng.normal(size=y.shape)
    dw, dx = np.ones_like(wt), np.empty_like(x)
    conv.backward(dy, dw, dx)
    dw_ref, dx_ref = direct_gradients(x, wt, dy, pad)
    np.testing.assert_allclose(dw, 1 + dw_ref, rtol=1e-11, atol=1e-11)   # added to the 1s
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("m, bound", [(2, 2e-6), (4, 1e-5)])
def test_float32_error_stays_near_the_direct_convolutions(m, bound):
    """F(4,3)'s transforms have entries up to 8 and 1/24: its float32 error is larger
    than F(2,3)'s and im2col's; bounded here relative to the largest output, on
    256-channel layers like the fast94 net's."""
    rng = np.random.default_rng(7)
    n, c, h, cout = 4, 256, 7, 64
    x = rng.normal(size=(n, c, h, h)).astype(np.float32)
    wt = (rng.normal(size=(cout, c, 3, 3)) / 48).astype(np.float32)
    conv = winograd.WinogradConvolution(n, c, h, h, cout, (1, 1), m, np.float32, Workspace())
    y = np.empty((n, cout, h, h), np.float32)
    conv.forward(x, wt, None, y)
    ref = direct(x.astype(float), wt.astype(float), np.zeros(cout), 1)
    assert np.abs(y - ref).max() / np.abs(ref).max() < bound
    dy = rng.normal(size=y.shape).astype(np.float32)
    dw, dx = np.zeros_like(wt), np.empty_like(x)
    conv.backward(dy, dw, dx)
    dw_ref, dx_ref = direct_gradients(x.astype(float), wt.astype(float), dy.astype(float), 1)
    assert np.abs(dw - dw_ref).max() / np.abs(dw_ref).max() < bound
    assert np.abs(dx - dx_ref).max() / np.abs(dx_ref).max() < bound


def test_only_3x3_stride_1_ungrouped_layers_qualify():
    assert winograd.winograd_applies(3, 3, 1, 1, 1, 1, 1, 1, 1)
    for args in [(5, 5, 1, 1, 1, 1, 1, 2, 2), (3, 3, 2, 2, 1, 1, 1, 1, 1),
                 (3, 3, 1, 1, 2, 2, 1, 2, 2), (3, 3, 1, 1, 1, 1, 4, 1, 1),
                 (3, 3, 1, 1, 1, 1, 1, 3, 3)]:
        assert not winograd.winograd_applies(*args)


def test_tile_size_follows_the_blocks_overhang():
    assert winograd.best_tile(32, 32) == 4
    assert winograd.best_tile(7, 7) == 4      # 4 blocks of 36 products, not 16 of 16
    assert winograd.best_tile(2, 2) == 2


@pytest.mark.parametrize("shape, fields", [
    ((2, 3, 7, 6), dict(num_output=4, kernel_size=3, pad=1)),
    ((3, 2, 5, 5), dict(num_output=3, kernel_size=3, pad=0, bias_term=False)),
    ((2, 4, 9, 9), dict(num_output=2, kernel_size=3, pad=2)),
])
def test_convolution_layer_on_winograd_matches_the_reference_and_its_gradients(shape, fields):
    from layer_helpers import assert_gradients, make_layer
    from test_layers_conv_pool import assert_convolution_matches_reference

    wino, _ = make_layer("Convolution", [shape], convolution_param={**fields,
                                                                   "engine": "WINOGRAD"})
    assert wino.winograd
    x = np.random.default_rng(3).normal(size=shape)
    assert_convolution_matches_reference(wino, x, tol=1e-11)
    assert_gradients(wino, [x])


def test_winograd_engine_on_a_layer_it_cannot_run_names_the_field():
    from cnntrain.layers.base import SetupError
    from layer_helpers import make_layer

    with pytest.raises(SetupError, match="engine WINOGRAD needs a 3x3 kernel") as err:
        make_layer("Convolution", [(1, 2, 6, 6)], convolution_param=dict(
            num_output=2, kernel_size=3, stride=2, engine="WINOGRAD"))
    assert err.value.field == "convolution_param.engine"


def test_default_engine_takes_winograd_only_where_it_pays():
    from layer_helpers import make_layer

    wide, _ = make_layer("Convolution", [(1, 64, 8, 8)],
                         convolution_param=dict(num_output=64, kernel_size=3, pad=1))
    narrow, _ = make_layer("Convolution", [(1, 16, 8, 8)],
                           convolution_param=dict(num_output=64, kernel_size=3, pad=1))
    assert wide.winograd == 4 and narrow.winograd is None
