"""Convolution: its math in reference form (im2col + GEMM, col2im and the rot180 full
convolution), and the layer, which runs it on an ``engine.conv_plan.ConvPlan``."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cnntrain.backend import array_module
from cnntrain.engine import conv_out_size
from cnntrain.engine.conv_plan import ConvGeometry, ConvPlan, winograd_tile
from cnntrain.engine.parallel import channel_sums
from cnntrain.layers.base import Layer, SetupError, Shape, register
from cnntrain.layers.geometry import check_kernel_fits, conv_geometry, nchw

# --- the math, in reference form ---------------------------------------------------
# What the layer computes, written for reading: plain array code over a padded NCHW
# input, no layout tricks, no chunking, on NumPy or CuPy alike (it runs as is on a GPU,
# see ``ReferenceConvPlan``). The tests hold the fast path (``engine.conv_plan``) to
# these functions; the gradient checks hold these functions to the chain rule.
#
# With ``cols = im2col(pad(x))``, (N, C*kh*kw, Ho*Wo), one column per output pixel
# holding its receptive field in (c, i, j) order, and W as (G, Cout/G, C/G*kh*kw):
#
#     y  = W @ cols + b                     (forward, one GEMM per group)
#     dW = sum over images of dy @ colsᵀ    (weight gradient)
#     dx = crop(col2im(Wᵀ @ dy))            (input gradient)
#
# col2im is im2col's adjoint (it adds each column back onto the pixels it was read
# from), so col2im(Wᵀ dy) is the textbook "full convolution of dy with the kernel
# rotated by 180°, input and output channels swapped": for each input pixel it sums
# dy over every output whose window covered it, weighted by the tap that covered it.
# ``conv_input_grad_full_reference`` writes that second form out (dy spread out by
# the stride, padded by span - 1 - pad, correlated with rot180(W)) and the tests
# check the two agree.


def im2col_reference(x_pad: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                     dilation: tuple[int, int], out: tuple[int, int]) -> np.ndarray:
    """Columns (N, C*kh*kw, Ho*Wo) of the padded NCHW ``x_pad``: entry ((c, i, j), (y, x))
    is ``x_pad[c, y*sh + i*dh, x*sw + j*dw]``."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out
    n, c = x_pad.shape[:2]
    cols = array_module(x_pad).empty((n, c, kh, kw, ho, wo), x_pad.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x_pad[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                                  j * dw:j * dw + sw * (wo - 1) + 1:sw]
    return cols.reshape(n, c * kh * kw, ho * wo)


def col2im_reference(cols: np.ndarray, padded_shape: Shape, kernel: tuple[int, int],
                     stride: tuple[int, int], dilation: tuple[int, int],
                     out: tuple[int, int]) -> np.ndarray:
    """im2col's adjoint: every column entry added back onto the pixel it came from."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out
    n, c = padded_shape[:2]
    x_pad = array_module(cols).zeros(padded_shape, cols.dtype)
    cols = cols.reshape(n, c, kh, kw, ho, wo)
    for i in range(kh):
        for j in range(kw):
            x_pad[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh,
               j * dw:j * dw + sw * (wo - 1) + 1:sw] += cols[:, :, i, j]
    return x_pad


def _pad(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    return array_module(x).pad(x, ((0, 0), (0, 0), (geo.ph, geo.ph), (geo.pw, geo.pw)))


def _per_group(a: np.ndarray, groups: int) -> np.ndarray:
    """(N, G*k, P) -> (N, G, k, P)."""
    return a.reshape(a.shape[0], groups, -1, a.shape[-1])


def conv_forward_reference(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None,
                           geo: ConvGeometry) -> np.ndarray:
    """``y = W @ im2col(pad(x)) + b``, per group."""
    n, _, h, w = x.shape
    ho = conv_out_size(h, geo.kh, geo.sh, geo.ph, geo.dh)
    wo = conv_out_size(w, geo.kw, geo.sw, geo.pw, geo.dw)
    x_pad = _pad(x, geo)
    cols = _per_group(im2col_reference(x_pad, (geo.kh, geo.kw), (geo.sh, geo.sw),
                                       (geo.dh, geo.dw), (ho, wo)), geo.group)
    wmat = weights.reshape(geo.group, geo.cout // geo.group, -1)
    y = (wmat @ cols).reshape(n, geo.cout, ho, wo)
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


def conv_weight_grad_reference(x: np.ndarray, dy: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``dW = sum over images of dy @ colsᵀ``, per group: (Cout, C/G, kh, kw)."""
    cols = _per_group(im2col_reference(_pad(x, geo), (geo.kh, geo.kw), (geo.sh, geo.sw),
                                       (geo.dh, geo.dw), dy.shape[2:]), geo.group)
    dyg = _per_group(dy.reshape(dy.shape[0], geo.cout, -1), geo.group)
    dw = (dyg @ cols.transpose(0, 1, 3, 2)).sum(axis=0)
    return dw.reshape(geo.cout, -1, geo.kh, geo.kw)


def conv_input_grad_reference(dy: np.ndarray, weights: np.ndarray, geo: ConvGeometry,
                              in_shape: Shape) -> np.ndarray:
    """``dx = crop(col2im(Wᵀ @ dy))``, per group."""
    n, c, h, w = in_shape
    wmat = weights.reshape(geo.group, geo.cout // geo.group, -1)
    dyg = _per_group(dy.reshape(n, geo.cout, -1), geo.group)
    dcols = (wmat.transpose(0, 2, 1) @ dyg).reshape(n, -1, dy.shape[2] * dy.shape[3])
    dxp = col2im_reference(dcols, (n, c, h + 2 * geo.ph, w + 2 * geo.pw), (geo.kh, geo.kw),
                           (geo.sh, geo.sw), (geo.dh, geo.dw), dy.shape[2:])
    return dxp[:, :, geo.ph:geo.ph + h, geo.pw:geo.pw + w]


def conv_input_grad_full_reference(dy: np.ndarray, weights: np.ndarray, geo: ConvGeometry,
                                   in_shape: Shape) -> np.ndarray:
    """The same dx as the textbook writes it: spread dy out by the stride (stride-1
    zeros between its pixels), pad it by ``span - 1 - pad`` (``span``: the dilated
    kernel's extent), and correlate that with the kernels rotated by 180°, input and
    output channels swapped. Rows and columns of x that no window reached (a stride
    that does not divide the padded size) get a zero gradient."""
    n, c, h, w = in_shape
    ho, wo = dy.shape[2:]
    span_h, span_w = geo.dh * (geo.kh - 1) + 1, geo.dw * (geo.kw - 1) + 1
    xp = array_module(dy)
    spread = xp.zeros((n, geo.cout, geo.sh * (ho - 1) + 1, geo.sw * (wo - 1) + 1), dy.dtype)
    spread[:, :, ::geo.sh, ::geo.sw] = dy
    # Padding by span - 1 - pad can be negative (a pad wider than the kernel): crop then.
    qh, qw = span_h - 1 - geo.ph, span_w - 1 - geo.pw
    spread = xp.pad(spread, ((0, 0), (0, 0), (max(qh, 0),) * 2, (max(qw, 0),) * 2))
    spread = spread[:, :, max(-qh, 0):spread.shape[2] - max(-qh, 0),
                    max(-qw, 0):spread.shape[3] - max(-qw, 0)]
    g, cog = geo.group, geo.cout // geo.group
    rotated = (weights.reshape(g, cog, c // g, geo.kh, geo.kw)[:, :, :, ::-1, ::-1]
               .transpose(0, 2, 1, 3, 4).reshape(c, cog, geo.kh, geo.kw))
    full = conv_forward_reference(spread, rotated, None, geo._replace(
        sh=1, sw=1, ph=0, pw=0, cout=c))
    dx = xp.zeros(in_shape, dy.dtype)
    rows, cols = min(h, full.shape[2]), min(w, full.shape[3])
    dx[:, :, :rows, :cols] = full[:, :, :rows, :cols]
    return dx


class ReferenceConvPlan:
    """The reference forms above with a plan's interface (``engine.conv_plan.ConvPlan``):
    what a convolution runs on a GPU, where the GEMMs are cuBLAS's and NumPy's layout
    and cache tricks buy nothing. Keeps a copy of the input for the weight gradient."""

    channel_first = False

    def __init__(self, geo: ConvGeometry, in_shape: Shape):
        n, c, h, w = in_shape
        self.geo = geo
        self.out_shape = (geo.cout, conv_out_size(h, geo.kh, geo.sh, geo.ph, geo.dh),
                          conv_out_size(w, geo.kw, geo.sw, geo.pw, geo.dw))

    def prepare(self, x: np.ndarray) -> None:
        self.x = x.copy()

    def forward(self, x, weights, bias, y):
        self.prepare(x)
        y[...] = conv_forward_reference(x, weights, bias, self.geo)
        return y

    def backward(self, dy, weights, dweights, dx) -> None:
        if dweights is not None:
            dweights += conv_weight_grad_reference(self.x, dy, self.geo)
        if dx is not None:
            dx[...] = conv_input_grad_reference(dy, weights, self.geo, dx.shape)


def conv_plan(layer: Layer, geo: ConvGeometry, in_shape: Shape, winograd: int | None):
    """The plan a convolution of ``layer``'s runs on: the engine's on the CPU, the
    reference forms on a GPU."""
    if not layer.device.is_cpu:
        return ReferenceConvPlan(geo, in_shape)
    return ConvPlan(geo, in_shape, layer.dtype, layer.ws, winograd)


@register("Convolution")
class Convolution(Layer):
    """Caffe's Convolution: weights (Cout, C/group, kh, kw), optional bias (Cout,);
    stride, padding, groups and dilation (kernel taps spread ``dilation`` pixels apart).

    The math is the reference form above: ``y = W @ im2col(pad(x)) + b``,
    ``dW = dy @ colsᵀ``, ``dx = crop(col2im(Wᵀ @ dy))``. It runs on a
    :class:`~cnntrain.engine.conv_plan.ConvPlan` (im2col + GEMM in cache-sized chunks,
    or Winograd's F(m, 3) as ``engine`` says), built by ``reshape`` for each input
    shape.
    """

    param_blocks = ("convolution_param",)

    def setup(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        n, c, h, w = nchw(bottom_shapes)
        p = self.param("convolution_param")
        self.geometry = conv_geometry(p, "convolution_param", c)
        (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw, self.group,
         self.cout) = self.geometry
        cin_g = c // self.group
        if p.weight_filler["type"] == "whitening":
            k = c * self.kh * self.kw
            if self.group != 1 or self.cout not in (k, 2 * k):
                raise SetupError(f"the whitening filler needs group 1 and num_output {k} "
                                 f"(C*kh*kw: one filter per eigenvector) or {2 * k} (with "
                                 f"their negatives), got group {self.group} and "
                                 f"num_output {self.cout}", "convolution_param.weight_filler")
        self.engine = p.engine
        self.reshape(bottom_shapes)
        fan_in = cin_g * self.kh * self.kw
        fan_out = self.cout // self.group * self.kh * self.kw
        self.blobs = [self.make_param((self.cout, cin_g, self.kh, self.kw), p.weight_filler, 0,
                                      fan_in, fan_out)]
        if p.bias_term:
            self.blobs.append(self.make_param((self.cout,), p.bias_filler, 1, fan_in, fan_out))
        return [(n, self.cout, self.ho, self.wo)]

    def reshape(self, bottom_shapes: Sequence[Shape]) -> None:
        """Check the kernel fits the input and build the plan for its shape."""
        n, c, h, w = nchw(bottom_shapes)
        self.ho, self.wo = check_kernel_fits(self.geometry, h, w, "convolution_param")
        try:
            self.winograd = winograd_tile(self.geometry, c, self.ho, self.wo, self.engine)
        except ValueError as err:
            raise SetupError(str(err), "convolution_param.engine") from None
        self.plan = conv_plan(self, self.geometry, (n, c, h, w), self.winograd)
        self.channel_first = self.plan.channel_first

    def forward(self, bottom: Sequence[np.ndarray]) -> list[np.ndarray]:
        (x,) = bottom
        self.in_shape = x.shape
        y = self.buffer("y", (x.shape[0], self.cout, self.ho, self.wo), x.dtype)
        bias = self.blobs[1].data if len(self.blobs) > 1 else None
        return [self.plan.forward(x, self.blobs[0].data, bias, y)]

    def backward(self, top_diff, propagate_down):
        (dy,) = top_diff
        if len(self.blobs) > 1:
            self.blobs[1].diff += channel_sums(dy)
        dx = self.buffer("dx", self.in_shape, dy.dtype) if propagate_down[0] else None
        self.plan.backward(dy, self.blobs[0].data, self.blobs[0].diff, dx)
        return [dx]
