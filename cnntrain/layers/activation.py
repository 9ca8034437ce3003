"""Element-wise activations and Dropout."""
from __future__ import annotations

import numpy as np

from cnntrain.layers.base import Layer, register


class _Elementwise(Layer):
    """Same-shape layers: ``y = f(x)``, ``dx = dy * f'(·)`` from what ``f`` kept."""

    def setup(self, bottom_shapes):
        return [tuple(bottom_shapes[0])]

    def backward(self, top_diff, propagate_down):
        return [self.grad(top_diff[0]) if propagate_down[0] else None]


@register("ReLU")
class ReLU(_Elementwise):
    """``max(x, 0) + negative_slope * min(x, 0)``; safe in place (the mask is kept)."""

    param_blocks = ("relu_param",)
    in_place_ok = True

    def forward(self, bottom):
        (x,) = bottom
        self.slope = self.param("relu_param").negative_slope
        self.positive = x > 0
        if self.slope:
            return [np.where(self.positive, x, x * x.dtype.type(self.slope))]
        return [np.maximum(x, 0, out=np.empty_like(x))]

    def grad(self, dy):
        if self.slope:
            return np.where(self.positive, dy, dy * dy.dtype.type(self.slope))
        return dy * self.positive


@register("Sigmoid")
class Sigmoid(_Elementwise):
    in_place_ok = True

    def forward(self, bottom):
        (x,) = bottom
        # Split by sign so exp never overflows.
        e = np.exp(-np.abs(x))
        self.y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        return [self.y]

    def grad(self, dy):
        return dy * self.y * (1 - self.y)


@register("TanH")
class TanH(_Elementwise):
    in_place_ok = True

    def forward(self, bottom):
        self.y = np.tanh(bottom[0])
        return [self.y]

    def grad(self, dy):
        return dy * (1 - self.y * self.y)


@register("Softplus")
class Softplus(_Elementwise):
    """``log(1 + exp(beta x)) / beta``, computed without overflow."""

    param_blocks = ("softplus_param",)

    def forward(self, bottom):
        (x,) = bottom
        self.beta = x.dtype.type(self.param("softplus_param").beta)
        self.x = x
        bx = self.beta * x
        return [(np.maximum(bx, 0) + np.log1p(np.exp(-np.abs(bx)))) / self.beta]

    def grad(self, dy):
        bx = self.beta * self.x
        e = np.exp(-np.abs(bx))
        return dy * np.where(bx >= 0, 1 / (1 + e), e / (1 + e))


@register("Dropout")
class Dropout(_Elementwise):
    """Inverted dropout: in TRAIN, zero with ``dropout_ratio`` and scale the rest by
    1/(1 - ratio), so TEST is the identity. Masks come from the "dropout" stream."""

    param_blocks = ("dropout_param",)
    in_place_ok = True

    def forward(self, bottom):
        (x,) = bottom
        if self.phase != "TRAIN":
            self.mask = None
            return [x]
        ratio = self.param("dropout_param").dropout_ratio
        keep = self.rngs.get("dropout").random(x.shape, dtype=np.float32) >= ratio
        self.mask = keep * x.dtype.type(1.0 / (1.0 - ratio))
        return [x * self.mask]

    def grad(self, dy):
        return dy if self.mask is None else dy * self.mask
