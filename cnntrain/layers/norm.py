"""Normalization and per-channel affine layers: BatchNorm, Scale, Bias, LRN."""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from cnntrain.backend import array_module
from cnntrain.engine.channelwise import channel_dot, channel_sum
from cnntrain.engine.parallel import over_slices
from cnntrain.layers.base import Layer, SetupError, Shape, register
from cnntrain.layers.geometry import nchw
from cnntrain.layers.inner_product import canonical_axis


@register("BatchNorm")
class BatchNorm(Layer):
    """Caffe's BatchNorm: ``y = (x - mean) / sqrt(var + eps)`` per channel (axis 1).

    Without ``use_global_stats`` (the TRAIN default) mean and biased variance are the
    batch's, over every axis but the channels, and the running statistics advance as
    Caffe's do: ``s ← f·s + 1``, ``Σmean ← f·Σmean + mean``, ``Σvar ← f·Σvar +
    m/(m-1)·var`` (m values per channel, f = ``moving_average_fraction``). With it (the
    TEST default) the layer is the affine map given by ``Σmean/s`` and ``Σvar/s``.

    The three blobs (Σmean, Σvar, s) are :class:`~cnntrain.blob.Statistic` parameters:
    snapshots keep them and the TEST net shares them, but no solver ever updates them.
    Their gradients are still computed in the affine mode (they are real derivatives,
    which the gradient checker verifies); in the batch mode they are zero. There is no
    learned scale or shift: follow with ``Scale`` (``bias_term: true``), as in Caffe.
    """

    param_blocks = ("batch_norm_param",)
    in_place_ok = True

    def setup(self, bottom_shapes):
        (shape,) = bottom_shapes
        if len(shape) < 1:
            raise SetupError("needs a bottom with at least one axis", "bottom")
        specs = self.spec.param_specs
        if len(specs) > 3:
            raise SetupError(f"BatchNorm keeps 3 blobs (mean, variance, count), {len(specs)} "
                             "param entries given", "param")
        for i, spec in enumerate(specs):
            if spec.lr_mult:
                raise SetupError("BatchNorm's running statistics are not learned: set "
                                 "lr_mult: 0 or leave param out", f"param[{i}].lr_mult")
        p = self.param("batch_norm_param")
        self.global_stats = (self.phase == "TEST" if p.use_global_stats is None
                             else p.use_global_stats)
        self.channels = shape[1] if len(shape) > 1 else 1
        c = self.channels
        self.blobs = [self.make_statistic((c,), 0), self.make_statistic((c,), 1),
                      self.make_statistic((1,), 2)]
        return [tuple(shape)]

    def forward(self, bottom):
        xp = self.xp
        (x,) = bottom
        p = self.param("batch_norm_param")
        x3 = x.reshape(x.shape[0], self.channels, -1)
        m = x3.shape[0] * x3.shape[2]
        batch_stats = not self.global_stats
        if batch_stats:
            mean, var = xp.empty(self.channels, x.dtype), xp.empty(self.channels, x.dtype)
        else:
            mean, var = self.running_stats()
        eps = x.dtype.type(p.eps)
        self.inv_std = xp.empty(self.channels, np.result_type(var.dtype, x.dtype))
        self.y3 = y3 = self.buffer("y", x3.shape, x3.dtype)

        def channels(s: slice) -> None:
            # Channels are independent: each worker takes a block of them whole. The
            # centred values go into y, scaled there in place: two passes over the
            # block besides the reductions, which read it once each and write nothing.
            ys = y3[:, s]
            if batch_stats:
                mean[s] = channel_sum(x3[:, s]) / m
            xp.subtract(x3[:, s], mean[s, None], out=ys)
            if batch_stats:
                var[s] = channel_dot(ys, ys) / m
            self.inv_std[s] = 1.0 / xp.sqrt(var[s] + eps)
            ys *= self.inv_std[s, None]
        over_slices(self.channels, channels, x3.size)
        if batch_stats:
            self._accumulate(mean, var, m, p.moving_average_fraction)
        return [y3.reshape(x.shape)]

    def running_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean and variance the affine (global-stats) mode normalizes with."""
        count = self.blobs[2].data[0]
        factor = 0 if count == 0 else 1 / count   # Caffe: an empty count gives zeros
        return self.blobs[0].data * factor, self.blobs[1].data * factor

    def _accumulate(self, mean, var, m: int, fraction: float) -> None:
        mean_sum, var_sum, count = (b.data for b in self.blobs)
        count *= fraction
        count += 1
        mean_sum *= fraction
        mean_sum += mean
        var_sum *= fraction
        # The running variance is unbiased, though the batch is normalized with the biased one.
        var_sum += var * (m / (m - 1) if m > 1 else 1)

    def backward(self, top_diff, propagate_down):
        xp = self.xp
        dy3 = top_diff[0].reshape(self.y3.shape)
        inv = self.inv_std[:, None]
        if not self.global_stats:
            if not propagate_down[0]:
                return [None]
            dx = self.buffer("dx", dy3.shape, dy3.dtype)
            m = dy3.shape[0] * dy3.shape[2]

            def channels(s: slice) -> None:
                # dx = inv_std (dy - mean(dy) - y mean(dy y)), the two means from the
                # batch statistics: four passes over the block besides the reductions.
                d, out = dy3[:, s], dx[:, s]
                y = self.y3[:, s]
                mean_d, mean_dy = channel_sum(d) / m, channel_dot(d, y) / m
                xp.multiply(y, mean_dy[:, None], out=out)
                xp.subtract(d, out, out=out)
                out -= mean_d[:, None]
                out *= inv[s]
            over_slices(self.channels, channels, dy3.size)
            return [dx.reshape(top_diff[0].shape)]
        self._statistic_gradients(dy3)
        return [(dy3 * inv).reshape(top_diff[0].shape) if propagate_down[0] else None]

    def _statistic_gradients(self, dy3) -> None:
        """Affine mode: y = (x - Σmean/s) / sqrt(Σvar/s + eps). The variance's gradient
        needs Σ dy (x - mean) = Σ dy y / inv_std, from y rather than a kept copy of the
        centred input."""
        mean_sum, var_sum, count = (b.data for b in self.blobs)
        if count[0] == 0:
            return   # the statistics are multiplied by a constant 0
        d_mean = -self.inv_std * channel_sum(dy3)
        d_var = -0.5 * self.inv_std ** 2 * channel_dot(dy3, self.y3)
        self.blobs[0].diff += d_mean / count[0]
        self.blobs[1].diff += d_var / count[0]
        self.blobs[2].diff += -(d_mean @ mean_sum + d_var @ var_sum) / count[0] ** 2


class _AxisOperand(Layer):
    """Scale and Bias: an operand spanning axes ``axis``.. of bottom 0, broadcast over
    the others. It is a learned parameter (one bottom; shape from ``num_axes``) or
    bottom 1 (its shape must match bottom 0's from ``axis`` on). A scalar operand
    applies everywhere, whatever ``axis`` says, as in Caffe."""

    num_bottom = (1, 2)
    in_place_ok = True
    block: ClassVar[str]

    def operand_shape(self, bottom_shapes) -> Shape:
        """Check the shapes, note where the operand lies, return its shape (a learned
        scalar is kept as shape (1,): parameters are at least 1-D)."""
        shape = tuple(bottom_shapes[0])
        p = self.param(self.block)
        if len(bottom_shapes) > 1:
            operand = tuple(bottom_shapes[1])
        else:
            axis = canonical_axis(p.axis, len(shape), f"{self.block}.axis")
            end = len(shape) if p.num_axes == -1 else axis + p.num_axes
            if end > len(shape):
                raise SetupError(f"axis {p.axis} with num_axes {p.num_axes} extends past the "
                                 f"bottom's {len(shape)} axes", f"{self.block}.num_axes")
            operand = shape[axis:end]
        axis = 0 if not operand else canonical_axis(p.axis, len(shape), f"{self.block}.axis")
        if shape[axis:axis + len(operand)] != operand:
            raise SetupError(f"bottom 1 has shape {operand}, which does not match bottom 0's "
                             f"{shape} from axis {axis} on", f"{self.block}.axis")
        self.axis, self.span = axis, len(operand)
        learned = len(bottom_shapes) == 1
        return (1,) if learned and not operand else operand

    def view(self, shape: Shape, size: int) -> Shape:
        """Data of ``shape`` as (outer, operand size, inner). From the actual arrays: the
        batch may differ from the one set up (a last partial batch), on either bottom."""
        return (math.prod(shape[:self.axis]), size, math.prod(shape[self.axis + self.span:]))

    def broadcast(self, a: np.ndarray) -> np.ndarray:
        """The operand as (1, dim, 1), against data viewed as (outer, dim, inner)."""
        return a.reshape(1, -1, 1)

    def reduce(self, a3: np.ndarray, shape: Shape) -> np.ndarray:
        """The adjoint of :meth:`broadcast`: sum over the outer and inner axes."""
        return channel_sum(a3).reshape(shape)

    def deliver(self, dx, d_operand, propagate_down) -> list:
        """The operand's gradient goes to bottom 1, or into the learned blob 0."""
        if len(propagate_down) > 1:
            return [dx, d_operand if propagate_down[1] else None]
        self.blobs[0].diff += d_operand
        return [dx]


@register("Scale")
class Scale(_AxisOperand):
    """``y = x * s (+ b)``; ``s`` learned (one bottom) or bottom 1, ``b`` learned if
    ``bias_term``. Blobs: [scale, bias] with one bottom, [bias] with two (Caffe's order).
    The usual use is after BatchNorm: one scale and bias per channel."""

    param_blocks = ("scale_param",)
    block = "scale_param"

    def setup(self, bottom_shapes):
        operand = self.operand_shape(bottom_shapes)
        p = self.param("scale_param")
        fan = max(1, math.prod(operand))
        self.blobs = []
        if len(bottom_shapes) == 1:
            self.blobs.append(self.make_param(operand, p.filler, 0, fan, fan))
        self.has_bias = p.bias_term
        if p.bias_term:
            self.blobs.append(self.make_param(operand, p.bias_filler, len(self.blobs), fan, fan))
        return [tuple(bottom_shapes[0])]

    def forward(self, bottom):
        xp = self.xp
        x = bottom[0]
        self.scale = bottom[1] if len(bottom) > 1 else self.blobs[0].data
        self.x3 = x.reshape(self.view(x.shape, self.scale.size))
        scale = self.broadcast(self.scale)
        bias = self.broadcast(self.blobs[-1].data) if self.has_bias else None
        y = self.buffer("y", self.x3.shape, np.result_type(self.x3.dtype, scale.dtype))

        def operand(s: slice) -> None:
            xp.multiply(self.x3[:, s], scale[:, s], out=y[:, s])
            if bias is not None:
                y[:, s] += bias[:, s]
        over_slices(self.scale.size, operand, y.size)
        return [y.reshape(x.shape)]

    def backward(self, top_diff, propagate_down):
        xp = self.xp
        dy3 = top_diff[0].reshape(self.x3.shape)
        scale = self.broadcast(self.scale)
        size = self.scale.size
        d_scale = xp.empty(size, dy3.dtype)
        d_bias = xp.empty(size, dy3.dtype) if self.has_bias else None
        dx = (self.buffer("dx", dy3.shape, np.result_type(dy3.dtype, scale.dtype))
              if propagate_down[0] else None)

        def operand(s: slice) -> None:
            # reduce()'s sums, one block of the operand's entries per worker.
            d = dy3[:, s]
            if d_bias is not None:
                d_bias[s] = channel_sum(d)
            d_scale[s] = channel_dot(d, self.x3[:, s])
            if dx is not None:
                xp.multiply(d, scale[:, s], out=dx[:, s])
        over_slices(size, operand, dy3.size)
        if d_bias is not None:
            self.blobs[-1].diff += d_bias.reshape(self.blobs[-1].shape)
        return self.deliver(None if dx is None else dx.reshape(top_diff[0].shape),
                            d_scale.reshape(np.shape(self.scale)), propagate_down)


@register("Bias")
class Bias(_AxisOperand):
    """``y = x + b``; ``b`` learned (one bottom; Caffe's default filler: constant 0) or
    bottom 1."""

    param_blocks = ("bias_param",)
    block = "bias_param"

    def setup(self, bottom_shapes):
        operand = self.operand_shape(bottom_shapes)
        fan = max(1, math.prod(operand))
        self.blobs = ([] if len(bottom_shapes) > 1 else
                      [self.make_param(operand, self.param("bias_param").filler, 0, fan, fan)])
        return [tuple(bottom_shapes[0])]

    def forward(self, bottom):
        xp = self.xp
        x = bottom[0]
        b = bottom[1] if len(bottom) > 1 else self.blobs[0].data
        self.operand, self.x3_shape = b.shape, self.view(x.shape, b.size)
        x3, b3 = x.reshape(self.x3_shape), self.broadcast(b)
        # In a kept buffer: a fresh top of the 94 % net's size (33 MB) was faulted in
        # anew every step, 59-162 ms of each large Bias layer's forward against 9 ms.
        y = self.buffer("y", self.x3_shape, np.result_type(x.dtype, b.dtype))
        over_slices(b.size, lambda s: xp.add(x3[:, s], b3[:, s], out=y[:, s]), y.size)
        return [y.reshape(x.shape)]

    def backward(self, top_diff, propagate_down):
        dy = top_diff[0]
        d_bias = self.reduce(dy.reshape(self.x3_shape), self.operand)
        return self.deliver(dy if propagate_down[0] else None, d_bias, propagate_down)


def window_sum(a: np.ndarray, axes: tuple[int, ...], size: int) -> np.ndarray:
    """Sum over the centred window of odd ``size`` along each of ``axes``, zero padded:
    same shape as ``a``. One add per window offset and axis (the window is separable)."""
    xp = array_module(a)
    half = size // 2
    for axis in axes:
        pad = [(0, 0)] * a.ndim
        pad[axis] = (half, half)
        padded = xp.pad(a, pad)
        out = xp.zeros_like(a)
        index = [slice(None)] * a.ndim
        for offset in range(size):
            index[axis] = slice(offset, offset + a.shape[axis])
            out += padded[tuple(index)]
        a = out
    return a


@register("LRN")
class LRN(Layer):
    """Local response normalization, Caffe's formula: ``y = x · scale^-beta``.

    ACROSS_CHANNELS: ``scale = k + alpha/n · Σ x²`` over the n channels centred on
    each one (zero padded). WITHIN_CHANNEL: ``scale = 1 + alpha/n² · Σ x²`` over the
    n×n pixels centred on each one (zero padded): Caffe computes it as an average
    pooling with padding, whose divisor is always n², and adds 1, not ``k``.
    The window is symmetric, so the backward sums over the same windows:
    ``dx = dy · scale^-beta - 2·beta·alpha' · x · Σ_window(dy · y / scale)``.
    """

    param_blocks = ("lrn_param",)

    def setup(self, bottom_shapes):
        shape = nchw(bottom_shapes)
        p = self.param("lrn_param")
        if p.local_size % 2 == 0:
            raise SetupError(f"must be odd, got {p.local_size}", "lrn_param.local_size")
        within = p.norm_region == "WITHIN_CHANNEL"
        if within and p.k != 1.0:
            raise SetupError("WITHIN_CHANNEL does not use k (it adds 1, as in Caffe); leave "
                             "k out", "lrn_param.k")
        self.axes = (2, 3) if within else (1,)
        self.size, self.beta = p.local_size, p.beta
        self.coef = p.alpha / p.local_size ** len(self.axes)
        self.shift = 1.0 if within else p.k
        return [tuple(shape)]

    def forward(self, bottom):
        (x,) = bottom
        t = x.dtype.type
        self.x = x
        self.scale = t(self.shift) + t(self.coef) * window_sum(x * x, self.axes, self.size)
        self.factor = self.scale ** t(-self.beta)
        self.y = x * self.factor
        return [self.y]

    def backward(self, top_diff, propagate_down):
        if not propagate_down[0]:
            return [None]
        (dy,) = top_diff
        t = dy.dtype.type
        spread = window_sum(dy * self.y / self.scale, self.axes, self.size)
        return [dy * self.factor - t(2 * self.beta * self.coef) * self.x * spread]
