"""The fast path of one pooling layer: stride phases and kernel-offset passes, laid out
once for a geometry and input shape.

A :class:`PoolPlan` is built when a Pooling layer's input shape is known (its
``reshape``) and computes exactly the reference forms stated in ``layers/pool.py``
(MAX: the window's maximum, its gradient routed to the window's first maximum; AVE:
the window's mean, its gradient spread evenly). What it adds is how:

The input is copied once into its stride phases: plane (a, b) holds the padded
pixels (a + sh*r, b + sw*q), padding included as -inf (MAX) or 0 (AVE). Window
offset (i, j) of every window is then a shifted slice of phase (i % sh, j % sw), so
pooling is kh*kw element-wise passes: a loop over kernel offsets, never over pixels.
Stride 1 has one phase, the padded input.

When windows overlap and the output nearly fills the phase planes (3x3/2, 3x3/1),
the passes run over the planes' whole flat extent, windows that fall off the edge
included, into an output pitched like a plane: one long contiguous run per pass
instead of one per output row (9 passes of cifar10_quick's pool1: 4.5 -> 1.5 ms). The
real outputs are read out of it at the end. Other pooling (2x2/2, global) runs its
passes over output-shaped views.

The AVE backward runs the same passes the other way: each kernel offset adds its
share of the output gradient into the phases, and the phases' real pixels are copied
out into dx. The MAX backward finds each window's argmax and scatters (see
``PoolPlan._max_backward`` for why not by passes).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cnntrain.engine.parallel import over_slices
from cnntrain.engine.workspace import Workspace


class PoolGeometry(NamedTuple):
    """One pooling layer's windows: kernel, stride, pad and output size per axis."""

    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    ho: int
    wo: int


def padded_size(size: int, kernel: int, stride: int, pad: int, out: int) -> int:
    """The padded extent every window fits in (ceil rounding can overhang the far side)."""
    return max(size + pad, (out - 1) * stride + kernel - pad) + pad


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


class PoolPlan:
    """How MAX or AVE pooling of geometry ``geo`` runs on inputs (N, C, H, W) =
    ``in_shape`` (a layer builds a new plan when that changes: its ``reshape``)."""

    def __init__(self, geo: PoolGeometry, in_shape, method: str, workspace: Workspace):
        n, c, h, w = in_shape
        self.geo, self.method, self.ws = geo, method, workspace
        self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.ho, self.wo = geo
        self.hp = padded_size(h, self.kh, self.sh, self.ph, self.ho)
        self.wp = padded_size(w, self.kw, self.sw, self.pw, self.wo)
        self.plane = (-(-self.hp // self.sh), -(-self.wp // self.sw))
        self.phases = [(a, b) for a in range(min(self.sh, self.kh))
                       for b in range(min(self.sw, self.kw))]
        # Each kernel offset as (phase, row and column shift within the phase plane).
        self.taps = [(self.phases.index((i % self.sh, j % self.sw)), i // self.sh, j // self.sw)
                     for i in range(self.kh) for j in range(self.kw)]
        # Flat passes pay when windows overlap (several taps read each phase) and the
        # planes hold little besides real outputs.
        self.flat = ((self.kh > self.sh or self.kw > self.sw)
                     and self.plane[0] * self.plane[1] <= 2 * self.ho * self.wo)
        if method == "AVE":
            div = np.outer(ave_divisor(h, self.kh, self.sh, self.ph, self.ho),
                           ave_divisor(w, self.kw, self.sw, self.pw, self.wo))
            self.inv_divisor = 1.0 / div
        else:
            padded = bool(self.ph or self.pw)
            self._base, self._distance = self._scatter_base(
                n, c, *((self.hp, self.wp) if padded else (h, w)))
        self._bordered = None      # the phase layout whose borders hold the fill value

    # --- phases and taps ---------------------------------------------------------------
    def _phase_buffer(self, name: str, n: int, c: int, dtype) -> np.ndarray:
        """(phases, n*c*plane + slack) flat buffer: slack lets the last plane's flat taps
        run past its end (into values that only reach the discarded outputs)."""
        hq, wq = self.plane
        slack = max(r * wq + q for _, r, q in self.taps)
        return self.ws.get(name, (len(self.phases), n * c * hq * wq + slack), dtype, zero=True)

    def _planes(self, buffer: np.ndarray, n: int, c: int) -> list[np.ndarray]:
        hq, wq = self.plane
        return [row[:n * c * hq * wq].reshape(n, c, hq, wq) for row in buffer]

    def _output_buffer(self, name: str, n: int, c: int, dtype) -> np.ndarray:
        """Where the passes write: pitched like a phase plane (flat mode) or the output
        shape itself."""
        shape = (n, c) + (self.plane if self.flat else (self.ho, self.wo))
        return self.ws.get(name, shape, dtype)

    def _taps(self, phases: np.ndarray, n: int, c: int, s: slice, clip: bool = False):
        """For images ``s``: (region of a phase, index of the matching region of an
        output-shaped buffer, see ``_region``) for every kernel offset. ``clip`` (when
        adding into the phases): a flat tap's last elements reach into the next image,
        which another worker owns; they carry only discarded outputs, so they are cut."""
        hq, wq = self.plane
        if not self.flat:
            planes = self._planes(phases, n, c)
            for p, r, q in self.taps:
                yield planes[p][s, :, r:r + self.ho, q:q + self.wo], s
            return
        lo, hi = s.start * c * hq * wq, s.stop * c * hq * wq
        for p, r, q in self.taps:
            shift = r * wq + q
            if clip:
                yield phases[p][lo + shift:hi], slice(lo, hi - shift)
            else:
                yield phases[p][lo + shift:hi + shift], slice(lo, hi)

    def _region(self, buffer: np.ndarray, index) -> np.ndarray:
        return buffer.reshape(-1)[index] if self.flat else buffer[index]

    def _valid(self, out: np.ndarray, s: slice) -> np.ndarray:
        """The real outputs of images ``s`` in ``out``."""
        return out[s, :, :self.ho, :self.wo]

    def _phase_pixels(self, planes, h: int, w: int):
        """For each phase plane: (plane, its rows and columns that hold input pixels,
        those pixels' rows and columns in the input), as pairs of slices; None for a
        phase that holds no input pixel."""
        for (a, b), plane in zip(self.phases, planes):
            r0, top, rows = phase_span(a, self.sh, self.ph, h, plane.shape[2])
            c0, left, cols = phase_span(b, self.sw, self.pw, w, plane.shape[3])
            if not (rows and cols):
                yield plane, (slice(r0, r0), slice(c0, c0)), None
                continue
            yield (plane, (slice(r0, r0 + rows), slice(c0, c0 + cols)),
                   (slice(top, top + self.sh * (rows - 1) + 1, self.sh),
                    slice(left, left + self.sw * (cols - 1) + 1, self.sw)))

    def _fill_phases(self, x: np.ndarray, planes, fill: float | None, s: slice) -> None:
        """Copy images ``s`` of ``x`` into the phase planes; with ``fill``, write it into
        the planes' borders (padding, overhang) too."""
        for plane, (rows, cols), pixels in self._phase_pixels(planes, *x.shape[2:]):
            p = plane[s]
            if fill is not None:
                for border in (p[:, :, :rows.start], p[:, :, rows.stop:],
                               p[:, :, rows, :cols.start], p[:, :, rows, cols.stop:]):
                    border.fill(fill)
            if pixels is not None:
                p[:, :, rows, cols] = x[s, :, pixels[0], pixels[1]]

    def _unfill_phases(self, planes, dx: np.ndarray, s: slice) -> None:
        """``_fill_phases`` backwards: each input pixel's gradient from its phase."""
        if self.sh > self.kh or self.sw > self.kw:
            dx[s].fill(0)           # pixels no window reaches
        for plane, (rows, cols), pixels in self._phase_pixels(planes, *dx.shape[2:]):
            if pixels is not None:
                dx[s, :, pixels[0], pixels[1]] = plane[s, :, rows, cols]

    # --- forward / backward ------------------------------------------------------------
    def forward(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Pool ``x`` into ``y`` (N, C, Ho, Wo); returns ``y``."""
        n, c = x.shape[:2]
        self.in_shape = x.shape
        is_max = self.method == "MAX"
        phases = self._phase_buffer("phases", n, c, x.dtype)
        planes = self._planes(phases, n, c)
        out = self._output_buffer("out", n, c, x.dtype) if self.flat else y
        scale = None if is_max else self.inv_divisor.astype(x.dtype)
        # Nothing else writes the planes' borders, so they are filled only when the
        # buffer is new or laid out anew: 1x1-wide strips, slow to fill (a quarter of
        # pool1's phase fill on cifar10_quick).
        fill = -np.inf if is_max else 0.0
        layout = (phases.ctypes.data, phases.shape, fill)
        borders = fill if layout != self._bordered else None

        def images(s: slice) -> None:
            # Flat taps read a little of the next image's planes, perhaps while another
            # worker fills them: that reaches only discarded outputs.
            self._fill_phases(x, planes, borders, s)
            for k, (tap, index) in enumerate(self._taps(phases, n, c, s)):
                dst = self._region(out, index)
                if k == 0:
                    np.copyto(dst, tap)
                elif is_max:
                    np.maximum(dst, tap, out=dst)
                else:
                    dst += tap
            if scale is not None:
                np.multiply(self._valid(out, s), scale, out=y[s])
            elif self.flat:
                y[s] = self._valid(out, s)
        over_slices(n, images, out.size * len(self.taps))
        self._bordered = layout
        if is_max:
            self.kept = phases, out
        return y

    def backward(self, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        """The input gradient of the last ``forward`` into ``dx``; returns ``dx``."""
        if self.method == "MAX":
            self._max_backward(dy, dx)
            return dx
        n, c = self.in_shape[:2]
        scale = self.inv_divisor.astype(dy.dtype)
        dphases = self._phase_buffer("dphases", n, c, dy.dtype)
        dplanes = self._planes(dphases, n, c)
        share = self._output_buffer("share", n, c, dy.dtype)

        def images(s: slice) -> None:
            if self.flat:
                share[s].fill(0)      # discarded outputs must add nothing
            np.multiply(dy[s], scale, out=self._valid(share, s))
            for plane in dplanes:
                plane[s].fill(0)
            for tap, index in self._taps(dphases, n, c, s, clip=True):
                tap += self._region(share, index)
            self._unfill_phases(dplanes, dx, s)
        over_slices(n, images, share.size * len(self.taps))
        return dx

    # MAX backward: routing by passes over the kernel offsets, as AVE does (per offset:
    # find the windows whose first maximum it holds, add their gradient into the
    # phases), ran 3-10x slower than what follows on cifar10_quick's pools and 2x2/2
    # pools (float32, one thread, NumPy 2.4): a masked add is slow, and so is a
    # bool-to-float multiply on strided views. Finding the argmax in narrow unsigned
    # arithmetic and then scattering once over the outputs (``np.add.at``, fast since
    # NumPy 1.25) is cheaper, so that stays, here and only here.
    def _max_backward(self, dy: np.ndarray, dx: np.ndarray) -> None:
        """Each output's gradient goes to the first window element equal to its max
        (Caffe's argmax), found here rather than stored by a slower forward: visiting
        the offsets last to first and overwriting leaves the first match. What is kept
        per output is that element's distance from the window's first one, so that its
        flat index is one add away. Then one scatter-add, since overlapping windows can
        share a pixel.

        Without padding the scatter goes straight into ``dx``: every window starts on a
        real pixel, and past the far edge lies only -inf, which is never the first
        maximum. With padding it goes into a padded copy (a window of NaN or -inf routes
        to its first element, which may be padding)."""
        n, c, h, w = self.in_shape
        phases, out = self.kept
        padded = bool(self.ph or self.pw)
        target = self.ws.get("dxp", (n, c, self.hp, self.wp), dy.dtype) if padded else dx
        base, distance = self._base, self._distance
        if base.shape[:2] != (n, c):
            raise ValueError(f"a pooling plan for {base.shape[:2]} images x channels got "
                             f"{(n, c)}: reshape the layer first")
        # The distances in the narrowest unsigned type that holds them: the search
        # below is wrapping arithmetic on it, cheaper the narrower.
        kind = next(t for t in (np.uint8, np.uint16, np.uint32) if distance[-1] <= np.iinfo(t).max)
        arg = self.ws.get("arg", out.shape, kind)
        step = self.ws.get("step", out.shape, kind)
        hit = self.ws.get("hit", out.shape, np.uint8)
        index = self.ws.get("index", base.shape, base.dtype)
        flat = target.reshape(-1)

        def images(s: slice) -> None:
            taps = list(self._taps(phases, n, c, s))
            region = self._region
            region(arg, taps[0][1]).fill(0)   # a NaN window matches nothing: offset 0
            for k in reversed(range(len(taps))):
                tap, where = taps[k]
                arg_k, hit_k, step_k = region(arg, where), region(hit, where), region(step, where)
                np.equal(tap, region(out, where), out=hit_k.view(bool))
                # arg = distance k where hit, else unchanged: unsigned arithmetic
                # (wrapping) is much faster than a masked copy.
                np.subtract(int(distance[k]), arg_k, out=step_k)
                step_k *= hit_k
                arg_k += step_k
            np.add(base[s], self._valid(arg, s) if self.flat else arg[s], out=index[s])
            target[s].fill(0)
            np.add.at(flat, index[s].reshape(-1), dy[s].reshape(-1))
            if padded:
                dx[s] = target[s, :, self.ph:self.ph + h, self.pw:self.pw + w]
        over_slices(n, images, arg.size * len(self.taps))

    def _scatter_base(self, n: int, channels: int, rows: int, pitch: int):
        """Flat index, in the scatter target (``n`` images of ``channels`` planes of
        ``rows`` x ``pitch``), of every window's first element: (n, channels, ho, wo);
        and each kernel offset's distance from it, in kernel order."""
        size = n * channels * rows * pitch
        dtype = np.int32 if size < 2 ** 31 else np.int64
        corner = (np.arange(self.ho)[:, None] * self.sh * pitch
                  + np.arange(self.wo)[None, :] * self.sw)
        plane = np.arange(n * channels).reshape(n, channels, 1, 1) * (rows * pitch)
        i, j = np.divmod(np.arange(self.kh * self.kw), self.kw)
        return (plane + corner).astype(dtype), i * pitch + j
