"""Max and average pooling with Caffe's output size (ceil) and border divisors."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from cnntrain.engine import Workspace
from cnntrain.layers.base import Layer, SetupError, Shape, register
from cnntrain.layers.geometry import pair


def pooled_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's rule: round up, but the last window must start inside the input or its top pad.

    Caffe checks that last condition only when ``pad > 0``. Without padding it can fail
    only when the stride exceeds the kernel, and Caffe then emits a window with no pixel
    in it (-FLT_MAX for MAX). cnntrain checks it always, which changes nothing else.
    """
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if (out - 1) * stride >= size + pad:
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

    Windows are visited as kh*kw views of a padded copy: a loop over kernel offsets,
    never over pixels. MAX routes to the first maximum of each window, as Caffe's
    argmax does.
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
        """(offset index, view of every window's element at that offset) of padded ``xp``."""
        for i in range(self.kh):
            for j in range(self.kw):
                yield i * self.kw + j, xp[:, :, i:i + self.sh * (self.ho - 1) + 1:self.sh,
                                          j:j + self.sw * (self.wo - 1) + 1:self.sw]

    def _unit_stride_windows(self, xp: np.ndarray) -> list[np.ndarray]:
        """The views of ``_windows`` for reading, made unit-stride when the stride is > 1.

        A strided view makes every pass over it gather every other float. Copying ``xp``
        once into its stride phases ``xp[:, :, a::sh, b::sw]`` makes each window offset
        (i, j) a plain shifted slice of phase (i % sh, j % sw): the kh*kw passes that
        follow then run over contiguous rows (3x faster for 3x3/2 pooling).
        """
        if self.sh == self.sw == 1:
            return [view for _, view in self._windows(xp)]
        n, c = xp.shape[:2]
        phases = {}
        for a in range(min(self.sh, self.kh)):
            for b in range(min(self.sw, self.kw)):
                plane = self.ws.get(f"phase{a}_{b}", (n, c, -(-(self.hp - a) // self.sh),
                                                      -(-(self.wp - b) // self.sw)), xp.dtype)
                plane[...] = xp[:, :, a::self.sh, b::self.sw]
                phases[a, b] = plane
        return [phases[i % self.sh, j % self.sw][:, :, i // self.sh:i // self.sh + self.ho,
                                                 j // self.sw:j // self.sw + self.wo]
                for i in range(self.kh) for j in range(self.kw)]

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
        if self.method == "MAX":
            views = self._unit_stride_windows(self._padded(x, "xp", -np.inf))
            y = views[0].copy()
            for view in views[1:]:
                np.maximum(y, view, out=y)
            self.views, self.y = views, y
            return [y]
        views = self._unit_stride_windows(self._padded(x, "xp", 0.0))
        y = views[0].copy()
        for view in views[1:]:
            y += view
        y *= self.inv_divisor.astype(x.dtype)
        return [y]

    def backward(self, top_diff, propagate_down):
        if not propagate_down[0]:
            return [None]
        (dy,) = top_diff
        n, c, h, w = self.in_shape
        if self.method == "MAX":
            dxp = self._max_backward(dy)
        else:
            dxp = self.ws.get("dxp", (n, c, self.hp, self.wp), dy.dtype)
            dxp.fill(0)
            share = dy * self.inv_divisor.astype(dy.dtype)
            for _, view in self._windows(dxp):
                view += share
        return [dxp[:, :, self.ph:self.ph + h, self.pw:self.pw + w].copy()]

    def _max_backward(self, dy: np.ndarray) -> np.ndarray:
        """Route each output's gradient to the first window element equal to its max
        (Caffe's argmax), found here rather than stored by a slower forward: visiting
        the offsets last to first and overwriting leaves the first match. Then one
        scatter-add into the padded input, since overlapping windows can share a pixel."""
        n, c = self.in_shape[:2]
        arg = self.ws.get("arg", dy.shape, np.uint8)
        arg.fill(0)       # a NaN window matches nothing; it routes to offset 0
        hit = self.ws.get("hit", dy.shape, np.uint8)
        step = self.ws.get("step", dy.shape, np.uint8)
        for k in reversed(range(len(self.views))):
            np.equal(self.views[k], self.y, out=hit.view(bool))
            # arg = k where hit, else unchanged: uint8 arithmetic (wrapping) is much
            # faster than a masked copy.
            np.subtract(k, arg, out=step)
            step *= hit
            arg += step
        target = self._scatter_base(n * c)[:, None, :] + self.offset_table[arg.reshape(n * c, 1, -1)]
        dxp = self.ws.get("dxp", (n, c, self.hp, self.wp), dy.dtype)
        dxp.fill(0)
        np.add.at(dxp.reshape(-1), target.reshape(-1), dy.reshape(-1))
        return dxp

    def _scatter_base(self, planes: int) -> np.ndarray:
        """Flat index, in the padded input, of every window's first element: (planes, ho*wo)."""
        cached = getattr(self, "_base", None)
        if cached is None or cached.shape[0] != planes:
            dtype = np.int32 if planes * self.hp * self.wp < 2 ** 31 else np.int64
            corner = (np.arange(self.ho)[:, None] * self.sh * self.wp
                      + np.arange(self.wo)[None, :] * self.sw).reshape(1, -1)
            plane = np.arange(planes)[:, None] * (self.hp * self.wp)
            self._base = (plane + corner).astype(dtype)
            i, j = np.divmod(np.arange(self.kh * self.kw), self.kw)
            self.offset_table = (i * self.wp + j).astype(dtype)
        return self._base
