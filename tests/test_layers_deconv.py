"""Deconvolution: the reference forms in its file (checked against a direct scatter
definition), the adjoint of Convolution, gradients."""
import numpy as np
import pytest

from cnntrain.layers.base import SetupError
from layer_helpers import assert_gradients, make_layer

FILLERS = {"weight_filler": {"type": "gaussian", "std": 0.5},
           "bias_filler": {"type": "gaussian", "std": 0.5}}


def naive_deconv(x, w, b, stride, pad, group, dilation=(1, 1)):
    """Each input pixel adds its value times the kernel into a window of the output
    (stride apart, taps dilation apart), over the output channels of its group; then
    the border is cut."""
    n, cin, h, wd = x.shape
    _, cog, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    full = np.zeros((n, cog * group, sh * (h - 1) + dh * (kh - 1) + 1,
                     sw * (wd - 1) + dw * (kw - 1) + 1))
    cig = cin // group
    for c in range(cin):
        g = c // cig
        for i in range(h):
            for j in range(wd):
                full[:, g * cog:(g + 1) * cog, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                     j * sw:j * sw + dw * (kw - 1) + 1:dw] += \
                    x[:, c, i, j][:, None, None, None] * w[c][None]
    y = full[:, :, ph:full.shape[2] - ph, pw:full.shape[3] - pw]
    return y + (b[None, :, None, None] if b is not None else 0)


DECONV_CASES = [
    dict(num_output=3, kernel_size=3),
    dict(num_output=2, kernel_size=2, stride=2),
    dict(num_output=4, kernel_size=4, stride=2, pad=1),                      # 2x upsampling
    dict(num_output=3, kernel_size=3, stride=3, pad=1, bias_term=False),
    dict(num_output=4, kernel_size=[3, 2], stride=[1, 3], pad=[1, 0], group=2),
    dict(num_output=6, kernel_h=5, kernel_w=3, stride_h=2, stride_w=1, pad_h=2, pad_w=1, group=2),
    dict(num_output=4, kernel_size=3, stride=2, group=4),                    # depth-wise
    dict(num_output=5, kernel_size=1),
    dict(num_output=2, kernel_size=1, stride=2),                             # gaps of zeros
    dict(num_output=3, kernel_size=2, stride=3),                             # kernel < stride
    dict(num_output=3, kernel_size=3, stride=2, pad=2, dilation=2),          # dilated
    dict(num_output=4, kernel_size=[2, 3], dilation=[3, 1], group=2),
]


@pytest.mark.parametrize("params", DECONV_CASES)
def test_reference_form_matches_the_scatter_definition(params):
    from cnntrain.layers.deconv import deconv_forward_reference
    shape = (2, 4, 3, 5)
    layer, (top,) = make_layer("Deconvolution", [shape], convolution_param={**FILLERS, **params})
    x = np.random.default_rng(1).standard_normal(shape)
    w = layer.blobs[0].data
    assert w.shape == (4, params["num_output"] // layer.group, layer.kh, layer.kw)
    b = layer.blobs[1].data if len(layer.blobs) > 1 else None
    expected = naive_deconv(x, w, b, (layer.sh, layer.sw), (layer.ph, layer.pw), layer.group,
                            (layer.dh, layer.dw))
    y = deconv_forward_reference(x, w, b, layer.geometry, top)
    assert y.shape == top == expected.shape
    # Caffe's output size
    assert top[2] == layer.sh * (3 - 1) + layer.dh * (layer.kh - 1) + 1 - 2 * layer.ph
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("params", DECONV_CASES)
def test_deconvolution_matches_reference_and_gradients(params):
    from cnntrain.layers.deconv import (deconv_forward_reference, deconv_input_grad_reference,
                                        deconv_weight_grad_reference)
    shape = (2, 4, 3, 5)
    layer, (top,) = make_layer("Deconvolution", [shape], convolution_param={**FILLERS, **params})
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal(shape), rng.standard_normal(top)
    w, g = layer.blobs[0].data, layer.geometry
    b = layer.blobs[1].data if len(layer.blobs) > 1 else None
    (y,) = layer.forward([x])
    np.testing.assert_allclose(y, deconv_forward_reference(x, w, b, g, top), rtol=1e-10,
                               atol=1e-10)
    (dx,) = layer.backward([dy], [True])
    np.testing.assert_allclose(dx, deconv_input_grad_reference(dy, w, g), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(layer.blobs[0].diff, deconv_weight_grad_reference(x, dy, g),
                               rtol=1e-10, atol=1e-10)
    assert_gradients(layer, [x])


@pytest.mark.parametrize("params", DECONV_CASES)
def test_deconvolution_is_the_adjoint_of_convolution(params):
    """<conv(u), v> = <u, deconv(v)> for a convolution with the same weights, no bias."""
    params = {**params, "bias_term": False, "weight_filler": {"type": "gaussian", "std": 1.0}}
    vshape = (2, 4, 3, 5)
    deconv, (ushape,) = make_layer("Deconvolution", [vshape], convolution_param=params)
    conv, (cshape,) = make_layer("Convolution", [ushape],
                                 convolution_param={**params, "num_output": vshape[1]})
    assert cshape == vshape and conv.blobs[0].shape == deconv.blobs[0].shape
    conv.blobs[0].data[...] = deconv.blobs[0].data
    rng = np.random.default_rng(2)
    u, v = rng.standard_normal(ushape), rng.standard_normal(vshape)
    left = np.vdot(conv.forward([u])[0], v)
    right = np.vdot(u, deconv.forward([v])[0])
    assert left == pytest.approx(right, rel=1e-12)
    # And the backward of each is the forward of the other.
    (dv,) = deconv.backward([u], [True])
    np.testing.assert_allclose(dv, conv.forward([u])[0], rtol=1e-12, atol=1e-12)


def test_deconvolution_chunks_agree_with_one_chunk(monkeypatch):
    import cnntrain.engine.conv_plan as conv_plan

    shape = (5, 3, 4, 3)
    x = np.random.default_rng(3).standard_normal(shape)
    results = []
    for budget in (1 << 30, 1):
        monkeypatch.setattr(conv_plan, "CHUNK_BYTES", budget)
        layer, (top,) = make_layer("Deconvolution", [shape], convolution_param=dict(
            num_output=4, kernel_size=3, stride=2, pad=1, **FILLERS))
        (y,) = layer.forward([x])
        dy = np.random.default_rng(4).standard_normal(top)
        (dx,) = layer.backward([dy], [True])
        results.append((y, dx, layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_deconvolution_in_float32_matches_float64():
    shape = (2, 4, 5, 5)
    params = dict(num_output=6, kernel_size=3, stride=2, pad=1, group=2, **FILLERS)
    layer, _ = make_layer("Deconvolution", [shape], convolution_param=params)
    x = np.random.default_rng(5).standard_normal(shape)
    expected = layer.forward([x])[0]
    for blob in layer.blobs:
        blob.astype(np.float32)
    got = layer.forward([x.astype(np.float32)])[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("params, field", [
    (dict(num_output=3, kernel_size=3, group=2), "convolution_param.group"),
    (dict(num_output=2, kernel_size=2, pad=2), "convolution_param.pad"),
    (dict(num_output=2), "convolution_param.kernel_size"),
])
def test_deconvolution_config_errors(params, field):
    with pytest.raises(SetupError) as err:
        make_layer("Deconvolution", [(1, 4, 1, 1)], convolution_param=params)
    assert err.value.field == field
