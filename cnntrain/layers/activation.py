"""Element-wise activations and Dropout."""
from __future__ import annotations

import math

import numpy as np

from cnntrain.backend import array_module
from cnntrain.engine.parallel import CACHE_CHUNK, over_chunks, over_slices, ufunc_over_batch
from cnntrain.layers.base import Layer, SetupError, register
from cnntrain.layers.special import gelu_and_slope


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), split by sign so exp never overflows; keeps x's dtype."""
    xp = array_module(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def log1p_exp(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|))."""
    xp = array_module(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


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
        xp = self.xp
        (x,) = bottom
        self.slope = self.param("relu_param").negative_slope
        self.positive = positive = self.buffer("mask", x.shape, bool)
        if self.slope:
            xp.greater(x, 0, out=positive)
            return [xp.where(positive, x, x * x.dtype.type(self.slope))]
        y = self.buffer("y", x.shape, x.dtype)
        flat_x, flat_y, flat_mask = x.reshape(-1), y.reshape(-1), positive.reshape(-1)

        def part(s: slice) -> None:
            # Mask and output in one pass over each slice, while it is in cache.
            xp.greater(flat_x[s], 0, out=flat_mask[s])
            xp.maximum(flat_x[s], 0, out=flat_y[s])
        over_slices(x.size, part, x.size)
        return [y]

    def grad(self, dy):
        xp = self.xp
        if self.slope:
            return xp.where(self.positive, dy, dy * dy.dtype.type(self.slope))
        return ufunc_over_batch(xp.multiply, self.buffer("dx", dy.shape, dy.dtype), dy, self.positive)


@register("Sigmoid")
class Sigmoid(_Elementwise):
    in_place_ok = True

    def forward(self, bottom):
        self.y = sigmoid(bottom[0])
        return [self.y]

    def grad(self, dy):
        return dy * self.y * (1 - self.y)


@register("TanH")
class TanH(_Elementwise):
    in_place_ok = True

    def forward(self, bottom):
        xp = self.xp
        self.y = xp.tanh(bottom[0])
        return [self.y]

    def grad(self, dy):
        return dy * (1 - self.y * self.y)


@register("Softplus")
class Softplus(_Elementwise):
    """``log(1 + exp(beta x)) / beta``, computed without overflow."""

    param_blocks = ("softplus_param",)

    def forward(self, bottom):
        (x,) = bottom
        self.beta = x.dtype.type(self._beta())
        self.x = x
        return [log1p_exp(self.beta * x) / self.beta]

    def _beta(self) -> float:
        return self.param("softplus_param").beta

    def grad(self, dy):
        return dy * sigmoid(self.beta * self.x)


@register("Dropout")
class Dropout(_Elementwise):
    """Inverted dropout: in TRAIN, zero with ``dropout_ratio`` and scale the rest by
    1/(1 - ratio), so TEST is the identity. Masks come from the "dropout" stream, drawn
    on the host (so a seed gives the same masks on every device) and handed over."""

    param_blocks = ("dropout_param",)
    in_place_ok = True

    def forward(self, bottom):
        (x,) = bottom
        if self.phase != "TRAIN":
            self.mask = None
            return [x]
        ratio = self.param("dropout_param").dropout_ratio
        shard = self.ctx.shard
        if shard is None:
            keep = self.rngs.get("dropout").random(x.shape, dtype=np.float32) >= ratio
        else:   # the global batch's mask, as one process draws it; this rank's rows
            whole = (x.shape[0] * shard.size,) + x.shape[1:]
            keep = self.rngs.get("dropout").random(whole, dtype=np.float32)[
                shard.rows(whole[0])] >= ratio
        self.mask = self.device.to_device(keep * x.dtype.type(1.0 / (1.0 - ratio)))
        return [x * self.mask]

    def grad(self, dy):
        return dy if self.mask is None else dy * self.mask


@register("PReLU")
class PReLU(_Elementwise):
    """``max(x, 0) + a_c * min(x, 0)`` with a learned slope per channel (axis 1), or
    one for all channels with ``channel_shared``. Caffe fills the slopes with constant
    0.25 by default. Safe in place: backward uses the negative part kept by forward."""

    param_blocks = ("prelu_param",)
    in_place_ok = True

    def setup(self, bottom_shapes):
        (shape,) = bottom_shapes
        if len(shape) < 2:
            raise SetupError(f"needs a bottom with a channel axis (N, C, ...), got {shape}",
                             "bottom")
        p = self.param("prelu_param")
        self.shared_slope = p.channel_shared
        channels = 1 if p.channel_shared else shape[1]
        self.blobs = [self.make_param((channels,), p.filler, 0, channels, channels)]
        return [tuple(shape)]

    def _slope(self, ndim: int) -> np.ndarray:
        a = self.blobs[0].data
        return a.reshape((1,) + a.shape + (1,) * (ndim - 2)) if not self.shared_slope else a

    def forward(self, bottom):
        xp = self.xp
        (x,) = bottom
        self.positive = x > 0
        self.negative_part = xp.minimum(x, 0)
        return [xp.where(self.positive, x, 0) + self._slope(x.ndim) * self.negative_part]

    def backward(self, top_diff, propagate_down):
        xp = self.xp
        (dy,) = top_diff
        contribution = dy * self.negative_part
        axes = tuple(i for i in range(dy.ndim) if self.shared_slope or i != 1)
        self.blobs[0].diff += contribution.sum(axis=axes).reshape(self.blobs[0].diff.shape)
        if not propagate_down[0]:
            return [None]
        return [xp.where(self.positive, dy, dy * self._slope(dy.ndim))]


@register("ELU")
class ELU(_Elementwise):
    """``x`` for x > 0, else ``alpha (exp(x) - 1)``; safe in place (backward reads y:
    dy/dx = y + alpha where x <= 0)."""

    param_blocks = ("elu_param",)
    in_place_ok = True

    def forward(self, bottom):
        xp = self.xp
        (x,) = bottom
        self.alpha = x.dtype.type(self.param("elu_param").alpha)
        self.positive = x > 0
        self.y = xp.where(self.positive, x, self.alpha * xp.expm1(xp.minimum(x, 0)))
        return [self.y]

    def grad(self, dy):
        xp = self.xp
        return xp.where(self.positive, dy, dy * (self.y + self.alpha))


@register("GELU")
class GELU(_Elementwise):
    """``y = x Phi(x)``, Phi the standard normal CDF, so ``dy/dx = Phi(x) + x phi(x)``:
    exact, through an erfc accurate to 6e-9 relative (see :mod:`cnntrain.layers.special`).
    ``approximate: tanh`` uses ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``
    instead, as BERT and GPT-2 did. Forward keeps the slope, so backward is
    ``dx = dy * slope``; safe in place."""

    param_blocks = ("gelu_param",)
    in_place_ok = True
    TANH_C = math.sqrt(2.0 / math.pi)

    def forward(self, bottom):
        (x,) = bottom
        y = self.buffer("y", x.shape, x.dtype)
        self.slope = self.buffer("slope", x.shape, x.dtype)
        if self.param("gelu_param").approximate == "tanh":
            self._tanh_form(x, y)
        else:
            gelu_and_slope(x, y, self.slope, self.ws)
        return [y]

    def _tanh_form(self, x, y) -> None:
        """The tanh form and its slope, a cache-sized chunk at a time (see
        ``special.gelu_and_slope``). With ``t = tanh(c (x + k x^3))`` and
        ``h = (1 + t)/2``, ``y = x h``, and since ``1 - t^2 = 4 h (1 - h)``,
        ``dy/dx = h + x (1 - t^2) c (1 + 3 k x^2) / 2 = h + y (1 - h) 2c (1 + 3 k x^2)``:
        14 passes over the chunk instead of the 18 of the formula as written (GELU on
        512 x 64 x 15 x 15, 2 workers: 22.5 -> 20.0 ms)."""
        xp = self.xp
        c, k = self.TANH_C, 0.044715
        flat_x, flat_y, flat_slope = x.reshape(-1), y.reshape(-1), self.slope.reshape(-1)

        def chunk(s: slice, worker: int) -> None:
            n = s.stop - s.start
            xs, ys, slope = flat_x[s], flat_y[s], flat_slope[s]
            sq, h = (self.ws.get(f"tanh{worker}/{name}", (CACHE_CHUNK,), x.dtype)[:n]
                     for name in ("sq", "h"))
            xp.multiply(xs, xs, out=sq)
            xp.multiply(sq, c * k, out=h)
            h += c
            h *= xs                                 # c (x + k x^3)
            xp.tanh(h, out=h)
            h *= 0.5
            h += 0.5                                # h = (1 + t)/2
            xp.multiply(xs, h, out=ys)              # y = x h; xs is not read after this
            sq *= 6 * c * k
            sq += 2 * c                             # 2c (1 + 3 k x^2)
            xp.subtract(1.0, h, out=slope)
            slope *= ys
            slope *= sq
            slope += h
        over_chunks(flat_x.size, chunk)

    def grad(self, dy):
        return ufunc_over_batch(self.xp.multiply, self.buffer("dx", dy.shape, dy.dtype), dy,
                                self.slope)


@register("Swish")
class Swish(_Elementwise):
    """``x sigmoid(beta x)`` (SiLU for beta 1); safe in place: backward reads y and
    the sigmoid, ``dy/dx = beta y + s (1 - beta y)``."""

    param_blocks = ("swish_param",)
    in_place_ok = True

    def forward(self, bottom):
        (x,) = bottom
        self.beta = x.dtype.type(self.param("swish_param").beta)
        self.s = sigmoid(self.beta * x)
        self.y = x * self.s
        return [self.y]

    def grad(self, dy):
        by = self.beta * self.y
        return dy * (by + self.s * (1 - by))


@register("AbsVal")
class AbsVal(_Elementwise):
    """``|x|``, gradient ``sign(x)`` (0 at 0). Caffe refuses to run it in place; here
    it is safe, as backward reads only the sign kept by forward."""

    in_place_ok = True

    def forward(self, bottom):
        xp = self.xp
        (x,) = bottom
        self.sign = xp.sign(x)
        return [xp.abs(x)]

    def grad(self, dy):
        return dy * self.sign


@register("BNLL")
class BNLL(Softplus):
    """Caffe's "binomial normal log likelihood" ``log(1 + exp(x))``: Softplus with beta 1."""

    param_blocks = ()

    def _beta(self) -> float:
        return 1.0


@register("Power")
class Power(_Elementwise):
    """``(shift + scale x)^power``. Where the base is negative and the power is not an
    integer the result is NaN, as in Caffe: keep such a layer's inputs in its domain."""

    param_blocks = ("power_param",)

    def forward(self, bottom):
        xp = self.xp
        (x,) = bottom
        p = self.param("power_param")
        self.power, self.scale = p.power, p.scale
        self.base = p.shift + p.scale * x
        if self.power == 0:
            return [xp.ones_like(x)]
        return [self.base ** x.dtype.type(self.power) if self.power != 1 else self.base]

    def grad(self, dy):
        xp = self.xp
        if self.power == 0:
            return xp.zeros_like(dy)
        factor = self.power * self.scale
        if self.power == 1:
            return dy * dy.dtype.type(factor)
        return dy * (dy.dtype.type(factor) * self.base ** dy.dtype.type(self.power - 1))


def _log_base(block, name: str, what: str) -> float:
    """ln(base) for Exp/Log (base -1 means e); Caffe's rule: base > 0 or -1."""
    base = block.base
    if base == -1:
        return 1.0
    if base <= 0 or (what == "Log" and base == 1):
        allowed = "> 0 and != 1" if what == "Log" else "> 0"
        raise SetupError(f"must be {allowed}, or -1 for e; got {base:g}", f"{name}.base")
    return math.log(base)


@register("Exp")
class Exp(_Elementwise):
    """``base^(shift + scale x)`` (base -1: e); safe in place: dy/dx = ln(base) scale y."""

    param_blocks = ("exp_param",)
    in_place_ok = True

    def setup(self, bottom_shapes):
        p = self.param("exp_param")
        ln_base = _log_base(p, "exp_param", "Exp")
        self.inner = ln_base * p.scale
        self.outer = math.exp(ln_base * p.shift)
        return super().setup(bottom_shapes)

    def forward(self, bottom):
        xp = self.xp
        (x,) = bottom
        self.y = xp.exp(x * x.dtype.type(self.inner))
        if self.outer != 1:
            self.y *= x.dtype.type(self.outer)
        return [self.y]

    def grad(self, dy):
        return dy * self.y * dy.dtype.type(self.inner)


@register("Log")
class Log(_Elementwise):
    """``log_base(shift + scale x)`` (base -1: e); inputs must keep shift + scale x > 0."""

    param_blocks = ("log_param",)

    def setup(self, bottom_shapes):
        p = self.param("log_param")
        self.base_scale = 1.0 / _log_base(p, "log_param", "Log")
        self.scale, self.shift = p.scale, p.shift
        return super().setup(bottom_shapes)

    def forward(self, bottom):
        xp = self.xp
        (x,) = bottom
        t = x.dtype.type
        self.inside = x * t(self.scale) + t(self.shift)
        return [xp.log(self.inside) * t(self.base_scale)]

    def grad(self, dy):
        return dy * dy.dtype.type(self.scale * self.base_scale) / self.inside
