"""Max and average pooling with Caffe's output size (ceil) and border divisors."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from cnntrain.engine.parallel import over_slices
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


def phase_span(phase: int, stride: int, pad: int, size: int, length: int) -> tuple[int, int, int]:
    """Where input pixels land in one stride phase of a padded axis: the phase holds
    padded positions ``phase + stride*r`` for r < ``length``. Returns (first r that is a
    real pixel, that pixel's index in the input, how many real pixels follow)."""
    first = max(0, -(-(pad - phase) // stride))
    source = phase + stride * first - pad
    if first >= length or source >= size:
        return min(first, length), 0, 0
    return first, source, min(length - first, (size - 1 - source) // stride + 1)


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
        return [(n, c, self.ho, self.wo)]

    def _windows(self, xp: np.ndarray):
        """(offset index, view of every window's element at that offset) of padded ``xp``."""
        for i in range(self.kh):
            for j in range(self.kw):
                yield i * self.kw + j, xp[:, :, i:i + self.sh * (self.ho - 1) + 1:self.sh,
                                          j:j + self.sw * (self.wo - 1) + 1:self.sw]

    def _read_views(self, x: np.ndarray, fill: float):
        """The kh*kw views that hold every window's element at each offset, and the
        function that fills what they view for one batch slice.

        Stride 1: views of a padded copy of ``x``. Stride > 1: a strided view would make
        every pass gather every other float. Instead ``x`` is copied once into its stride
        phases (plane (a, b) holds padded pixels (a + sh*r, b + sw*q)), and window offset
        (i, j) is a plain shifted slice of phase (i % sh, j % sw): the kh*kw passes that
        follow run over contiguous rows (3x faster for 3x3/2 pooling). The phases are
        filled from ``x`` directly; the padding exists only in their borders.
        """
        n, c = x.shape[:2]
        if self.sh == self.sw == 1:
            xp = self.ws.get("xp", (n, c, self.hp, self.wp), x.dtype)
            return ((lambda s: self._fill_padded(x, xp, fill, s)),
                    [view for _, view in self._windows(xp)])
        phases = {(a, b): self.ws.get(f"phase{a}_{b}", (n, c, -(-(self.hp - a) // self.sh),
                                                        -(-(self.wp - b) // self.sw)), x.dtype)
                  for a in range(min(self.sh, self.kh)) for b in range(min(self.sw, self.kw))}
        views = [phases[i % self.sh, j % self.sw][:, :, i // self.sh:i // self.sh + self.ho,
                                                  j // self.sw:j // self.sw + self.wo]
                 for i in range(self.kh) for j in range(self.kw)]
        return (lambda s: self._fill_phases(x, phases, fill, s)), views

    def _fill_phases(self, x: np.ndarray, phases, fill: float, s: slice) -> None:
        h, w = x.shape[2:]
        for (a, b), plane in phases.items():
            r0, top, rows = phase_span(a, self.sh, self.ph, h, plane.shape[2])
            c0, left, cols = phase_span(b, self.sw, self.pw, w, plane.shape[3])
            p = plane[s]
            for border in (p[:, :, :r0], p[:, :, r0 + rows:],
                           p[:, :, r0:r0 + rows, :c0], p[:, :, r0:r0 + rows, c0 + cols:]):
                border.fill(fill)
            if rows and cols:
                p[:, :, r0:r0 + rows, c0:c0 + cols] = \
                    x[s, :, top:top + self.sh * (rows - 1) + 1:self.sh,
                      left:left + self.sw * (cols - 1) + 1:self.sw]

    def _fill_padded(self, x: np.ndarray, xp: np.ndarray, fill: float, s: slice) -> None:
        h, w = x.shape[2:]
        if (self.hp, self.wp) != (h, w):
            xp[s].fill(fill)
        xp[s, :, self.ph:self.ph + h, self.pw:self.pw + w] = x[s]

    def forward(self, bottom):
        (x,) = bottom
        n, c = x.shape[:2]
        self.in_shape = x.shape
        is_max = self.method == "MAX"
        fill_views, views = self._read_views(x, -np.inf if is_max else 0.0)
        y = self.buffer("y", (n, c, self.ho, self.wo), x.dtype)
        scale = None if is_max else self.inv_divisor.astype(x.dtype)

        def images(s: slice) -> None:
            fill_views(s)
            ys = y[s]
            ys[...] = views[0][s]
            for view in views[1:]:
                if is_max:
                    np.maximum(ys, view[s], out=ys)
                else:
                    ys += view[s]
            if not is_max:
                ys *= scale
        over_slices(n, images, x.size)
        if is_max:
            self.views, self.y = views, y
        return [y]

    def backward(self, top_diff, propagate_down):
        if not propagate_down[0]:
            return [None]
        (dy,) = top_diff
        n, c, h, w = self.in_shape
        dxp = self.ws.get("dxp", (n, c, self.hp, self.wp), dy.dtype)
        dx = self.buffer("dx", self.in_shape, dy.dtype)
        if self.method == "MAX":
            route = self._max_router(dy, dxp)
        else:
            scale = self.inv_divisor.astype(dy.dtype)
            window_views = [view for _, view in self._windows(dxp)]

            def route(s: slice) -> None:
                share = dy[s] * scale
                for view in window_views:
                    view[s] += share

        def images(s: slice) -> None:
            dxp[s].fill(0)
            route(s)
            dx[s] = dxp[s, :, self.ph:self.ph + h, self.pw:self.pw + w]
        over_slices(n, images, dxp.size)
        return [dx]

    def _max_router(self, dy: np.ndarray, dxp: np.ndarray):
        """A function that adds one batch slice's gradient into ``dxp``.

        Each output's gradient goes to the first window element equal to its max
        (Caffe's argmax), found here rather than stored by a slower forward: visiting
        the offsets last to first and overwriting leaves the first match. Then one
        scatter-add into the padded input, since overlapping windows can share a pixel."""
        n, c = self.in_shape[:2]
        arg = self.ws.get("arg", dy.shape, np.uint8)
        hit = self.ws.get("hit", dy.shape, np.uint8)
        step = self.ws.get("step", dy.shape, np.uint8)
        base = self._scatter_base(c)[:, None, :]
        flat = dxp.reshape(n, -1)

        def route(s: slice) -> None:
            arg_s, hit_s, step_s = arg[s], hit[s], step[s]
            arg_s.fill(0)       # a NaN window matches nothing; it routes to offset 0
            for k in reversed(range(len(self.views))):
                np.equal(self.views[k][s], self.y[s], out=hit_s.view(bool))
                # arg = k where hit, else unchanged: uint8 arithmetic (wrapping) is much
                # faster than a masked copy.
                np.subtract(k, arg_s, out=step_s)
                step_s *= hit_s
                arg_s += step_s
            # Indices within each image, offset by the image's row of ``flat``.
            m = arg_s.shape[0]
            image = np.arange(m, dtype=base.dtype if flat[s].size < 2 ** 31 else np.int64)
            target = (base + self.offset_table[arg_s.reshape(m, c, 1, -1)]
                      + (image * flat.shape[1]).reshape(m, 1, 1, 1))
            np.add.at(flat[s].reshape(-1), target.reshape(-1), dy[s].reshape(-1))
        return route

    def _scatter_base(self, channels: int) -> np.ndarray:
        """Flat index, in one image of the padded input, of every window's first element:
        (channels, ho*wo). Also sets ``offset_table``: each window offset's distance."""
        cached = getattr(self, "_base", None)
        if cached is None or cached.shape[0] != channels:
            dtype = np.int32 if channels * self.hp * self.wp < 2 ** 31 else np.int64
            corner = (np.arange(self.ho)[:, None] * self.sh * self.wp
                      + np.arange(self.wo)[None, :] * self.sw).reshape(1, -1)
            plane = np.arange(channels)[:, None] * (self.hp * self.wp)
            self._base = (plane + corner).astype(dtype)
            i, j = np.divmod(np.arange(self.kh * self.kw), self.kw)
            self.offset_table = (i * self.wp + j).astype(dtype)
        return self._base
