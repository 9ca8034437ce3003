"""Fully connected layer."""
from __future__ import annotations

import math

import numpy as np

from cnntrain.engine import gemm
from cnntrain.layers.base import Layer, SetupError, check_count, register


def canonical_axis(axis: int, ndim: int, field: str) -> int:
    """Caffe-style axis (negative counts from the end), checked against ``ndim``."""
    if not -ndim <= axis < ndim:
        raise SetupError(f"axis {axis} is out of range for a {ndim}-D bottom", field)
    return axis % ndim


@register("InnerProduct")
class InnerProduct(Layer):
    """``y = x W^T + b`` over the axes from ``axis`` on, flattened; W is (num_output, K)."""

    param_blocks = ("inner_product_param",)

    def setup(self, bottom_shapes):
        (shape,) = bottom_shapes
        p = self.param("inner_product_param")
        self.axis = canonical_axis(p.axis, len(shape), "inner_product_param.axis")
        k = math.prod(shape[self.axis:])
        self.num_output = p.num_output
        self.blobs = [self.make_param((p.num_output, k), p.weight_filler, 0, k, p.num_output)]
        if p.bias_term:
            self.blobs.append(self.make_param((p.num_output,), p.bias_filler, 1, k, p.num_output))
        self.k = k
        return [tuple(shape[:self.axis]) + (p.num_output,)]

    def forward(self, bottom):
        (x,) = bottom
        self.x_shape = x.shape
        self.x2 = x.reshape(-1, self.k)
        y = gemm(self.x2, self.blobs[0].data.T)
        if len(self.blobs) > 1:
            y += self.blobs[1].data
        return [y.reshape(x.shape[:self.axis] + (self.num_output,))]

    def backward(self, top_diff, propagate_down):
        dy = top_diff[0].reshape(-1, self.num_output)
        self.blobs[0].diff += gemm(dy.T, self.x2)
        if len(self.blobs) > 1:
            self.blobs[1].diff += dy.sum(axis=0)
        if not propagate_down[0]:
            return [None]
        return [gemm(dy, self.blobs[0].data).reshape(self.x_shape)]


@register("Flatten")
class Flatten(Layer):
    """Collapse axes ``axis``..``end_axis`` into one (no copy)."""

    param_blocks = ("flatten_param",)

    def setup(self, bottom_shapes):
        (shape,) = bottom_shapes
        p = self.param("flatten_param")
        a = canonical_axis(p.axis, len(shape), "flatten_param.axis")
        b = canonical_axis(p.end_axis, len(shape), "flatten_param.end_axis")
        if b < a:
            raise SetupError(f"end_axis {p.end_axis} comes before axis {p.axis}",
                             "flatten_param.end_axis")
        self.a, self.b = a, b
        return [self._flat(shape)]

    def _flat(self, shape):
        return tuple(shape[:self.a]) + (math.prod(shape[self.a:self.b + 1]),) + tuple(shape[self.b + 1:])

    def forward(self, bottom):
        (x,) = bottom
        self.x_shape = x.shape
        return [x.reshape(self._flat(x.shape))]

    def backward(self, top_diff, propagate_down):
        return [top_diff[0].reshape(self.x_shape) if propagate_down[0] else None]


@register("Input")
class Input(Layer):
    """Blobs of fixed shapes that the caller fills (deploy nets, shape checks, benchmarks).

    ``input_param.shape`` gives one shape per top, or one shape for all of them.
    ``values`` holds the arrays, on the host; assign into them before forward, which
    hands them to the run's device.
    """

    param_blocks = ("input_param",)
    num_bottom = (0, 0)
    num_top = (1, 16)

    def setup(self, bottom_shapes):
        shapes = self.param("input_param").shape
        tops = len(self.spec.top)
        if len(shapes) not in (1, tops):
            raise SetupError(f"gives {len(shapes)} shapes for {tops} tops", "input_param.shape")
        shapes = shapes * tops if len(shapes) == 1 else shapes
        for top, shape in zip(self.spec.top, shapes):
            check_count(shape, f"top '{top}'", "input_param.shape")
        self.values = [np.zeros(s, self.dtype) for s in shapes]
        return list(shapes)

    @property
    def value(self) -> np.ndarray:
        return self.values[0]

    def forward(self, bottom):
        return [self.device.to_device(v) for v in self.values]

    def backward(self, top_diff, propagate_down):
        return []
