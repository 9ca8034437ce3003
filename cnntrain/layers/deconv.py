"""Deconvolution (transposed convolution) on the im2col engine."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cnntrain.engine import (batch_chunk, col2im, gemm, groups_to_nchw, im2col,
                             nchw_to_groups, pad_to_nhwc)
from cnntrain.engine.parallel import channel_sums
from cnntrain.layers.base import Layer, SetupError, Shape, register
from cnntrain.layers.conv import (conv_forward_reference, conv_input_grad_reference,
                                  conv_weight_grad_reference)
from cnntrain.layers.geometry import ConvGeometry, conv_geometry, nchw

# --- the math, in reference form ---------------------------------------------------
# A Deconvolution with weights W (C_in, C_out/G, kh, kw) is the adjoint of the
# Convolution from C_out to C_in channels with the same W (see layers/conv.py):
#
#     y  = crop(col2im(Wᵀ @ x)) + b     (that Convolution's input gradient)
#     dx = W @ im2col(pad(dy))          (its forward)
#     dW = sum over images of x @ im2col(pad(dy))ᵀ   (its weight gradient, with dy
#                                       as the input and x as the output's gradient)
#
# The tests hold the fast path to these functions.


def adjoint_geometry(geo: ConvGeometry, in_channels: int) -> ConvGeometry:
    """The Convolution whose adjoint a Deconvolution of ``in_channels`` inputs is."""
    return geo._replace(cout=in_channels)


def deconv_forward_reference(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None,
                             geo: ConvGeometry, out_shape: Shape) -> np.ndarray:
    y = conv_input_grad_reference(x, weights, adjoint_geometry(geo, x.shape[1]), out_shape)
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


def deconv_input_grad_reference(dy: np.ndarray, weights: np.ndarray,
                                geo: ConvGeometry) -> np.ndarray:
    return conv_forward_reference(dy, weights, None, adjoint_geometry(geo, weights.shape[0]))


def deconv_weight_grad_reference(x: np.ndarray, dy: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    return conv_weight_grad_reference(dy, x, adjoint_geometry(geo, x.shape[1]))


@register("Deconvolution")
class Deconvolution(Layer):
    """Caffe's Deconvolution: the transpose (adjoint) of a Convolution.

    Weights are (C_in, C_out/group, kh, kw), bias (C_out,); the output is
    ``stride*(in - 1) + dilation*(kernel - 1) + 1 - 2*pad`` per spatial axis. Each input pixel scatters
    its channel vector times the kernel into a window of the (padded) output, and the
    border ``pad`` is cut off. That is a Convolution's input gradient with the same
    weights, so the forward is ``col2im(x @ Wᵀ)`` and the backward is a Convolution's
    forward: ``dx = im2col(dy) @ W`` and ``dW = im2col(dy)ᵀ @ x``, one GEMM per chunk
    of the batch for all groups (see ``engine.im2col``).
    """

    param_blocks = ("convolution_param",)

    def setup(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        n, c, h, w = nchw(bottom_shapes)
        p = self.param("convolution_param")
        self.geometry = conv_geometry(p, "convolution_param", c)
        (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw, self.group,
         self.cout) = self.geometry
        # A dilated kernel's taps are dilation pixels apart: it spans d*(k-1)+1.
        self.ho = self.sh * (h - 1) + self.dh * (self.kh - 1) + 1 - 2 * self.ph
        self.wo = self.sw * (w - 1) + self.dw * (self.kw - 1) + 1 - 2 * self.pw
        if self.ho < 1 or self.wo < 1:
            raise SetupError(f"pad {self.ph}x{self.pw} leaves no output ({self.ho}x{self.wo}) "
                             f"for a {h}x{w} input", "convolution_param.pad")
        cout_g = self.cout // self.group
        # Caffe's fans for a deconvolution: each output sees C_out/G * kh*kw weights.
        fan_in = cout_g * self.kh * self.kw
        fan_out = c // self.group * self.kh * self.kw
        self.blobs = [self.make_param((c, cout_g, self.kh, self.kw), p.weight_filler, 0,
                                      fan_in, fan_out)]
        if p.bias_term:
            self.blobs.append(self.make_param((self.cout,), p.bias_filler, 1, fan_in, fan_out))
        return [(n, self.cout, self.ho, self.wo)]

    # Weights (C_in, C_out/G, kh, kw) as the engine's per-group matrix
    # (G, kh*kw*C_out/G, C_in/G): a Convolution from C_out to C_in channels.
    def _weight_matrix(self) -> np.ndarray:
        g, kh, kw = self.group, self.kh, self.kw
        w = self.blobs[0].data.reshape(g, -1, self.cout // g, kh, kw)
        return np.ascontiguousarray(w.transpose(0, 3, 4, 2, 1)).reshape(g, -1, w.shape[1])

    def _chunk(self, n: int, h: int, w: int) -> int:
        return batch_chunk(h * w * self.kh * self.kw * self.cout, n,
                           itemsize=self.blobs[0].data.itemsize)

    def _padded(self, name: str, m: int, dtype) -> np.ndarray:
        return self.ws.get(name, (m, self.ho + 2 * self.ph, self.wo + 2 * self.pw, self.cout),
                           dtype, zero=True)

    def forward(self, bottom):
        (x,) = bottom
        n, c, h, w = x.shape
        g = self.group
        self.x, self.wmat = x, self._weight_matrix()
        y = np.empty((n, self.cout, self.ho, self.wo), x.dtype)
        step = self._chunk(n, h, w)
        for a in range(0, n, step):
            m = min(step, n - a)
            xb = nchw_to_groups(x[a:a + m], g, self.ws.get("xb", (g, m * h * w, c // g), x.dtype))
            col = self.ws.get("col", (g, m * h * w, self.wmat.shape[1]), x.dtype)
            gemm(xb, self.wmat.transpose(0, 2, 1), out=col)
            yp = self._padded("yp", m, x.dtype)
            yp[...] = 0
            col2im(col, self.kh, self.kw, self.sh, self.sw, h, w, yp, self.dh, self.dw)
            y[a:a + m] = yp[:, self.ph:self.ph + self.ho, self.pw:self.pw + self.wo].transpose(
                0, 3, 1, 2)
        if len(self.blobs) > 1:
            y += self.blobs[1].data.reshape(1, -1, 1, 1)
        return [y]

    def backward(self, top_diff, propagate_down):
        (dy,) = top_diff
        x = self.x
        n, c, h, w = x.shape
        g = self.group
        if len(self.blobs) > 1:
            self.blobs[1].diff += channel_sums(dy)
        dx = np.empty_like(x) if propagate_down[0] else None
        dw = np.zeros_like(self.wmat)
        step = self._chunk(n, h, w)
        for a in range(0, n, step):
            m = min(step, n - a)
            dyp = pad_to_nhwc(dy[a:a + m], self.ph, self.pw, self._padded("dyp", m, dy.dtype))
            col = im2col(dyp, self.kh, self.kw, self.sh, self.sw, h, w,
                         self.ws.get("col", (g, m * h * w, self.wmat.shape[1]), dy.dtype),
                         self.dh, self.dw)
            xb = nchw_to_groups(x[a:a + m], g, self.ws.get("xb", (g, m * h * w, c // g), x.dtype))
            dw += gemm(col.transpose(0, 2, 1), xb)
            if dx is not None:
                groups_to_nchw(gemm(col, self.wmat), dx[a:a + m])
        cg, cog = c // g, self.cout // g
        self.blobs[0].diff.reshape(g, cg, cog, self.kh, self.kw)[...] += \
            dw.reshape(g, self.kh, self.kw, cog, cg).transpose(0, 4, 3, 1, 2)
        return [dx]
