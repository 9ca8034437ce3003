"""Max and average pooling with Caffe's output size (ceil) and border divisors."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from cnntrain.engine import Workspace
from cnntrain.layers.base import Layer, SetupError, Shape, register
from cnntrain.layers.geometry import pair


def pooled_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's rule: round up, but the last window must start inside the input or its top pad."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def ave_divisor(size: int, kernel: int, stride: int, pad: int, out: int) -> np.ndarray:
    """Per-output window sizes along one axis: padding counts, overhang past the pad does not."""
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)
    return (end - start).astype(np.float64)


@register("Pooling")
class Pooling(Layer):
    """MAX routes each output's gradient to its argmax; AVE spreads it evenly.

    Windows are visited as kh*kw strided views of a padded copy: a loop over kernel
    offsets, never over pixels. MAX routes to the first maximum of each window, as
    Caffe's argmax does.
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
        if h + 2 * self.ph < self.kh or w + 2 * self.pw < self.kw:
            raise SetupError(f"kernel {self.kh}x{self.kw} is larger than the padded input "
                             f"{h + 2 * self.ph}x{w + 2 * self.pw}", "pooling_param.kernel_size")
        self.ho = pooled_size(h, self.kh, self.sh, self.ph)
        self.wo = pooled_size(w, self.kw, self.sw, self.pw)
        # The padded extent every window fits in (ceil rounding can overhang the far side).
        self.hp = max(h + self.ph, (self.ho - 1) * self.sh + self.kh - self.ph) + self.ph
        self.wp = max(w + self.pw, (self.wo - 1) * self.sw + self.kw - self.pw) + self.pw
        if self.method == "AVE":
            div = np.outer(ave_divisor(h, self.kh, self.sh, self.ph, self.ho),
                           ave_divisor(w, self.kw, self.sw, self.pw, self.wo))
            self.inv_divisor = (1.0 / div)
        self.ws = Workspace()
        return [(n, c, self.ho, self.wo)]

    def _windows(self, xp: np.ndarray):
        """(offset index, view of every window's element at that offset)."""
        for i in range(self.kh):
            for j in range(self.kw):
                yield i * self.kw + j, xp[:, :, i:i + self.sh * (self.ho - 1) + 1:self.sh,
                                          j:j + self.sw * (self.wo - 1) + 1:self.sw]

    def _padded(self, x: np.ndarray, name: str, fill: float) -> np.ndarray:
        n, c, h, w = x.shape
        xp = self.ws.get(name, (n, c, self.hp, self.wp), x.dtype)
        if (self.hp, self.wp) != (h, w):
            xp.fill(fill)
        xp[:, :, self.ph:self.ph + h, self.pw:self.pw + w] = x
        return xp

    def forward(self, bottom):
        (x,) = bottom
        self.in_shape = x.shape
        n, c = x.shape[:2]
        if self.method == "MAX":
            xp = self._padded(x, "xp", -np.inf)
            windows = self._windows(xp)
            y = next(windows)[1].copy()
            for _, view in windows:
                np.maximum(y, view, out=y)
            self.xp, self.y = xp, y
            return [y]
        xp = self._padded(x, "xp", 0.0)
        y = np.zeros((n, c, self.ho, self.wo), x.dtype)
        for _, view in self._windows(xp):
            y += view
        y *= self.inv_divisor.astype(x.dtype)
        return [y]

    def backward(self, top_diff, propagate_down):
        if not propagate_down[0]:
            return [None]
        (dy,) = top_diff
        n, c, h, w = self.in_shape
        dxp = self.ws.get("dxp", (n, c, self.hp, self.wp), dy.dtype)
        dxp.fill(0)
        if self.method == "MAX":
            # Route each output's gradient to the first window element equal to the max
            # (Caffe's argmax, found here rather than stored by a slower forward).
            taken = np.zeros(dy.shape, bool)
            hit = np.empty(dy.shape, bool)
            routed = np.empty_like(dy)
            for (_, view), (_, dview) in zip(self._windows(self.xp), self._windows(dxp)):
                np.equal(view, self.y, out=hit)
                np.greater(hit, taken, out=hit)   # hit and not yet taken
                taken |= hit
                np.multiply(dy, hit, out=routed)
                dview += routed
        else:
            share = dy * self.inv_divisor.astype(dy.dtype)
            for _, view in self._windows(dxp):
                view += share
        return [dxp[:, :, self.ph:self.ph + h, self.pw:self.pw + w].copy()]
