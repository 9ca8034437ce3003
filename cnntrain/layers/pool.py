"""Max and average pooling with Caffe's output size (ceil, or floor with ``round_mode``)
and border divisors: the math in reference form, and the layer, which runs it on an
``engine.pool_plan.PoolPlan``."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from cnntrain.backend import array_module
from cnntrain.engine.pool_plan import PoolGeometry, PoolPlan, ave_divisor, padded_size
from cnntrain.layers.base import Layer, SetupError, Shape, register
from cnntrain.layers.geometry import pair


def pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool = True) -> int:
    """Caffe's rule: round up (``round_mode: CEIL``, the default) or down (``FLOOR``, as
    PyTorch and cuDNN do), but the last window must start inside the input or its top pad.

    Caffe checks that last condition only when ``pad > 0``. Without padding it can fail
    only when the stride exceeds the kernel, and Caffe then emits a window with no pixel
    in it (-FLT_MAX for MAX). cnntrain checks it always, which changes nothing else.
    """
    rounded = math.ceil if ceil else math.floor
    out = int(rounded((size + 2 * pad - kernel) / stride)) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


# --- the math, in reference form ---------------------------------------------------
# What the layer computes, written for reading: every window as one row of kh*kw
# values, kernel offsets in row-major order. The tests hold the fast path
# (``engine.pool_plan``) to these functions; the gradient checks hold these to the
# chain rule.
#
#     MAX:  y = max over the window;  dx[argmax] += dy  (the *first* maximum, as
#           Caffe's argmax; padding is -inf and never wins unless the whole window
#           is -inf or NaN, when the gradient goes to the window's first element)
#     AVE:  y = sum over the window / divisor;  every window element += dy / divisor
#           (padding counts in the divisor, overhang past the pad does not)


def _tap_slices(geo: PoolGeometry):
    """Kernel offset k = i*kw + j with the slices of the padded input it reads."""
    for i in range(geo.kh):
        for j in range(geo.kw):
            yield i * geo.kw + j, (slice(i, i + geo.sh * (geo.ho - 1) + 1, geo.sh),
                                   slice(j, j + geo.sw * (geo.wo - 1) + 1, geo.sw))


def _pad_for_windows(x: np.ndarray, geo: PoolGeometry, fill: float) -> np.ndarray:
    n, c, h, w = x.shape
    x_pad = array_module(x).full((n, c, padded_size(h, geo.kh, geo.sh, geo.ph, geo.ho),
                                  padded_size(w, geo.kw, geo.sw, geo.pw, geo.wo)), fill, x.dtype)
    x_pad[:, :, geo.ph:geo.ph + h, geo.pw:geo.pw + w] = x
    return x_pad


def pool_windows(x: np.ndarray, geo: PoolGeometry, fill: float) -> np.ndarray:
    """(N, C, Ho, Wo, kh*kw): each output's window of ``x`` padded with ``fill``."""
    x_pad = _pad_for_windows(x, geo, fill)
    return array_module(x).stack([x_pad[:, :, rows, cols] for _, (rows, cols) in _tap_slices(geo)],
                                 axis=-1)


def _add_back(per_tap, in_shape: Shape, geo: PoolGeometry, like: np.ndarray) -> np.ndarray:
    """dx from ``per_tap(k)``, the gradient each window sends through kernel offset k:
    added onto the padded input where that offset reads, then cropped (dtype and array
    module those of ``like``)."""
    n, c, h, w = in_shape
    dxp = array_module(like).zeros((n, c, padded_size(h, geo.kh, geo.sh, geo.ph, geo.ho),
                    padded_size(w, geo.kw, geo.sw, geo.pw, geo.wo)), like.dtype)
    for k, (rows, cols) in _tap_slices(geo):
        dxp[:, :, rows, cols] += per_tap(k)
    return dxp[:, :, geo.ph:geo.ph + h, geo.pw:geo.pw + w]


def max_pool_reference(x: np.ndarray, geo: PoolGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(y, argmax): each window's maximum and the kernel offset of its first maximum
    (offset 0 for a window whose maximum is NaN)."""
    xp = array_module(x)
    windows = pool_windows(x, geo, -np.inf)
    y = windows.max(axis=-1)
    return y, xp.where(xp.isnan(y), 0, windows.argmax(axis=-1))


def max_pool_backward_reference(dy: np.ndarray, argmax: np.ndarray, in_shape: Shape,
                                geo: PoolGeometry) -> np.ndarray:
    """Each output's gradient routed to its window's argmax."""
    xp = array_module(dy)
    return _add_back(lambda k: xp.where(argmax == k, dy, 0), in_shape, geo, dy)


def ave_divisors(h: int, w: int, geo: PoolGeometry, xp=np) -> np.ndarray:
    """(Ho, Wo) window sizes, padding counted, overhang past the pad not (worked out on
    the host, handed to ``xp``)."""
    return xp.asarray(np.outer(ave_divisor(h, geo.kh, geo.sh, geo.ph, geo.ho),
                               ave_divisor(w, geo.kw, geo.sw, geo.pw, geo.wo)))


def ave_pool_reference(x: np.ndarray, geo: PoolGeometry) -> np.ndarray:
    """Each window's sum over its divisor."""
    return (pool_windows(x, geo, 0.0).sum(axis=-1)
            / ave_divisors(*x.shape[2:], geo, array_module(x)))


def ave_pool_backward_reference(dy: np.ndarray, in_shape: Shape,
                                geo: PoolGeometry) -> np.ndarray:
    """Each output's gradient spread evenly over its window (padding included)."""
    share = dy / ave_divisors(*in_shape[2:], geo, array_module(dy))
    return _add_back(lambda k: share, in_shape, geo, dy)


class ReferencePoolPlan:
    """The reference forms above with a plan's interface (``engine.pool_plan.PoolPlan``),
    for a GPU (see ``layers.conv.ReferenceConvPlan``)."""

    def __init__(self, geo: PoolGeometry, method: str):
        self.geo, self.method = geo, method

    def forward(self, x, y):
        self.in_shape = x.shape
        if self.method == "MAX":
            out, self.argmax = max_pool_reference(x, self.geo)
        else:
            out = ave_pool_reference(x, self.geo)
        y[...] = out
        return y

    def backward(self, dy, dx):
        if self.method == "MAX":
            dx[...] = max_pool_backward_reference(dy, self.argmax, self.in_shape, self.geo)
        else:
            dx[...] = ave_pool_backward_reference(dy, self.in_shape, self.geo)
        return dx


@register("Pooling")
class Pooling(Layer):
    """Caffe's Pooling, MAX or AVE: the reference form above (MAX routes each output's
    gradient to its window's first maximum, AVE spreads it evenly), run on a
    :class:`~cnntrain.engine.pool_plan.PoolPlan` built by ``reshape`` for each input
    shape.
    """

    param_blocks = ("pooling_param",)

    def setup(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        (shape,) = bottom_shapes
        if len(shape) != 4:
            raise SetupError(f"needs a 4-D bottom (N, C, H, W), got shape {shape}", "bottom")
        p = self.param("pooling_param")
        n, c, h, w = shape
        self.method = p.pool
        if p.global_pooling:
            for f in ("kernel_size", "kernel_h", "stride", "stride_h", "pad", "pad_h"):
                if p.get(f) not in (None, 1 if f.startswith("stride") else None):
                    raise SetupError("global_pooling sets the kernel to the whole input; "
                                     f"remove {f}", f"pooling_param.{f}")
            self.kh, self.kw, self.sh, self.sw, self.ph, self.pw = h, w, 1, 1, 0, 0
        else:
            self.kh, self.kw = pair(p, "pooling_param", "kernel", None)
            self.sh, self.sw = pair(p, "pooling_param", "stride", 1)
            self.ph, self.pw = pair(p, "pooling_param", "pad", 0)
        if self.ph >= self.kh or self.pw >= self.kw:
            raise SetupError(f"pad ({self.ph}, {self.pw}) must be smaller than the kernel "
                             f"({self.kh}, {self.kw})", "pooling_param.pad")
        self.ceil = p.round_mode == "CEIL"
        self.reshape(bottom_shapes)
        return [(n, c, self.ho, self.wo)]

    def reshape(self, bottom_shapes: Sequence[Shape]) -> None:
        """The output size for this input, and the plan of the passes over it."""
        (shape,) = bottom_shapes
        n, c, h, w = shape
        if h + 2 * self.ph < self.kh or w + 2 * self.pw < self.kw:
            raise SetupError(f"kernel {self.kh}x{self.kw} is larger than the padded input "
                             f"{h + 2 * self.ph}x{w + 2 * self.pw}", "pooling_param.kernel_size")
        self.ho = pooled_size(h, self.kh, self.sh, self.ph, self.ceil)
        self.wo = pooled_size(w, self.kw, self.sw, self.pw, self.ceil)
        self.geometry = PoolGeometry(self.kh, self.kw, self.sh, self.sw, self.ph, self.pw,
                                     self.ho, self.wo)
        self.plan = (PoolPlan(self.geometry, shape, self.method, self.ws) if self.device.is_cpu
                     else ReferencePoolPlan(self.geometry, self.method))

    def forward(self, bottom):
        (x,) = bottom
        self.in_shape = x.shape
        y = self.buffer("y", (x.shape[0], x.shape[1], self.ho, self.wo), x.dtype)
        return [self.plan.forward(x, y)]

    def backward(self, top_diff, propagate_down):
        if not propagate_down[0]:
            return [None]
        (dy,) = top_diff
        return [self.plan.backward(dy, self.buffer("dx", self.in_shape, dy.dtype))]
