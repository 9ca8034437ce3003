"""Deconvolution (transposed convolution): a Convolution's adjoint, on its plan."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cnntrain.engine.conv_plan import ConvGeometry
from cnntrain.engine.parallel import channel_sums
from cnntrain.layers.base import Layer, SetupError, Shape, register
from cnntrain.layers.conv import (conv_forward_reference, conv_input_grad_reference, conv_plan,
                                  conv_weight_grad_reference)
from cnntrain.layers.geometry import conv_geometry, nchw

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
    ``stride*(in - 1) + dilation*(kernel - 1) + 1 - 2*pad`` per spatial axis. Each input
    pixel scatters its channel vector times the kernel into a window of the (padded)
    output, and the border ``pad`` is cut off. That is the input gradient of the
    Convolution from C_out to C_in channels with the same weights (the reference form
    above), so the layer runs that Convolution's plan backwards: its input gradient
    is the forward, its forward and weight gradient are the backward. The plan keeps
    im2col (Winograd is not measured for this layer).
    """

    param_blocks = ("convolution_param",)

    def setup(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        n, c, h, w = nchw(bottom_shapes)
        p = self.param("convolution_param")
        self.geometry = conv_geometry(p, "convolution_param", c)
        (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw, self.group,
         self.cout) = self.geometry
        self.reshape(bottom_shapes)
        cout_g = self.cout // self.group
        # Caffe's fans for a deconvolution: each output sees C_out/G * kh*kw weights.
        fan_in = cout_g * self.kh * self.kw
        fan_out = c // self.group * self.kh * self.kw
        self.blobs = [self.make_param((c, cout_g, self.kh, self.kw), p.weight_filler, 0,
                                      fan_in, fan_out)]
        if p.bias_term:
            self.blobs.append(self.make_param((self.cout,), p.bias_filler, 1, fan_in, fan_out))
        return [(n, self.cout, self.ho, self.wo)]

    def reshape(self, bottom_shapes: Sequence[Shape]) -> None:
        """The output size for this input, and the adjoint Convolution's plan on it."""
        n, c, h, w = nchw(bottom_shapes)
        # A dilated kernel's taps are dilation pixels apart: it spans d*(k-1)+1.
        self.ho = self.sh * (h - 1) + self.dh * (self.kh - 1) + 1 - 2 * self.ph
        self.wo = self.sw * (w - 1) + self.dw * (self.kw - 1) + 1 - 2 * self.pw
        if self.ho < 1 or self.wo < 1:
            raise SetupError(f"pad {self.ph}x{self.pw} leaves no output ({self.ho}x{self.wo}) "
                             f"for a {h}x{w} input", "convolution_param.pad")
        self.plan = conv_plan(self, adjoint_geometry(self.geometry, c),
                              (n, self.cout, self.ho, self.wo), None)

    def forward(self, bottom):
        (x,) = bottom
        self.x = x
        y = self.buffer("y", (x.shape[0], self.cout, self.ho, self.wo), x.dtype)
        self.plan.backward(x, self.blobs[0].data, None, y)
        if len(self.blobs) > 1:
            y += self.blobs[1].data.reshape(1, -1, 1, 1)
        return [y]

    def backward(self, top_diff, propagate_down):
        (dy,) = top_diff
        x, weights = self.x, self.blobs[0]
        if len(self.blobs) > 1:
            self.blobs[1].diff += channel_sums(dy)
        dx = None
        if propagate_down[0]:
            dx = self.plan.forward(dy, weights.data, None, self.buffer("dx", x.shape, dy.dtype))
        else:
            self.plan.prepare(dy)
        self.plan.backward(x, weights.data, weights.diff, None)
        return [dx]
