"""The fast path of one convolution: im2col + GEMM in cache-sized chunks of the batch,
or Winograd, with its layouts chosen once for a geometry and input shape.

A :class:`ConvPlan` is built when a layer's input shape is known (its ``reshape``)
and serves Convolution, Deconvolution (a convolution's adjoint) and MapCombination
(a convolution with effective weights) alike. It computes exactly the reference forms
stated in ``layers/conv.py``; what it adds is how:

- Columns are NHWC, ``(G, pixels, kh*kw*C/G)``, or channel-first (Caffe's own
  ``(G, kh*kw*C/G, pixels)``) when a layer has few channels per group: whichever
  layout copies the longer runs (``channel_first_columns``).
- A 1x1, stride-1, unpadded layer's input is its own columns: no im2col.
- dx is col2im of ``dy Wᵀ``, or, for stride 1 when it copies and multiplies at most
  twice as much, the full convolution of dy with the rotated kernel (one im2col of
  the padded dy and one GEMM instead of col2im's kh*kw strided adds).
- The batch goes in chunks of a few images (``CHUNK_BYTES`` of columns), each taken
  whole by whichever worker is free: it builds the chunk's columns, multiplies and
  writes that chunk's outputs while the columns are still in its cache. The backward
  rebuilds the columns the same way rather than keeping the forward's, which would
  send them through main memory twice. Each run of chunks sums its weight gradient
  in its own buffer and the runs' sums are added in order afterwards, so results
  depend neither on the threads' timing nor on how many there are.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from cnntrain.engine.accounting import gemm
from cnntrain.engine.im2col import (batch_chunk, channel_major_to_nchw, col2im, col2im_nchw,
                                    conv_out_size, groups_to_nchw, im2col, im2col_nchw,
                                    nchw_to_channel_major, pad_to_nhwc)
from cnntrain.engine.parallel import (MIN_SPLIT_MACS, copy_over_batch, fill_over_batch,
                                      over_items)
from cnntrain.engine.winograd import (WinogradConvolution, best_tile, winograd_applies,
                                      winograd_pays)
from cnntrain.engine.workspace import Workspace

# Columns per chunk: few enough to stay in cache between im2col and the GEMMs that
# read them. Measured on cifar10_quick (2 workers, whole steps alternating in one
# process): 2 MB beat 8 MB chunks split between the workers by 12-15 %, 1 MB by 3 %
# (smaller GEMMs) and 4 MB by 12 %.
CHUNK_BYTES = 2 << 20
# Room for the per-run weight gradients of one backward (see ``ConvPlan.backward``).
WEIGHT_PARTS_BYTES = 32 << 20


class ConvGeometry(NamedTuple):
    """Kernel, stride, pad and dilation per axis, groups and output channels."""

    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    group: int
    cout: int


def channel_first_columns(kw: int, channels_per_group: int, wo: int) -> bool:
    """Whether a layer's columns are channel-first (``engine.im2col_nchw``): when an
    NHWC column run (kw*C/G floats) is shorter than an output row (wo floats), the run
    the channel-first layout copies at a time."""
    return kw * channels_per_group < wo


def winograd_tile(geo: ConvGeometry, c: int, ho: int, wo: int, engine: str) -> int | None:
    """The tile size m of Winograd's F(m, 3) for ``engine`` (DEFAULT, CAFFE or WINOGRAD),
    or None for im2col. Raises ValueError when WINOGRAD is asked of a layer it cannot
    run."""
    fits = winograd_applies(geo.kh, geo.kw, geo.sh, geo.sw, geo.dh, geo.dw, geo.group,
                            geo.ph, geo.pw)
    if engine == "WINOGRAD" and not fits:
        raise ValueError("engine WINOGRAD needs a 3x3 kernel, stride 1, no dilation, "
                         "group 1 and pad <= 2")
    if engine == "CAFFE" or not fits:
        return None
    if engine == "DEFAULT" and not winograd_pays(c, geo.cout):
        return None
    return best_tile(ho, wo)


class ConvPlan:
    """How a convolution of geometry ``geo`` runs on inputs (N, C, H, W) = ``in_shape``.

    ``forward`` and ``backward`` take NCHW arrays and compute the reference forms of
    ``layers/conv.py``; the batch size may differ from ``in_shape``'s, the rest not.
    ``winograd``: a tile size from :func:`winograd_tile`, or None for im2col.
    """

    def __init__(self, geo: ConvGeometry, in_shape, dtype, workspace: Workspace,
                 winograd: int | None = None):
        n, c, h, w = in_shape
        self.geo = geo
        (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw, self.group,
         self.cout) = geo
        self.c, self.h, self.w = c, h, w
        self.span_h, self.span_w = self.dh * (self.kh - 1) + 1, self.dw * (self.kw - 1) + 1
        self.ho = conv_out_size(h, self.kh, self.sh, self.ph, self.dh)
        self.wo = conv_out_size(w, self.kw, self.sw, self.pw, self.dw)
        self.ws = workspace
        self.itemsize = np.dtype(dtype).itemsize
        self.winograd = (WinogradConvolution(n, c, h, w, self.cout, (self.ph, self.pw),
                                             winograd, dtype, workspace)
                         if winograd is not None else None)
        self.one_by_one = (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw) == (1, 1, 1, 1, 0, 0)
        self.channel_first = (not self.one_by_one
                              and channel_first_columns(self.kw, c // self.group, self.wo))
        # How dx is found (a 1x1 layer's is one GEMM whatever this says).
        self.full_convolution = not self.one_by_one and self._full_convolution_pays()

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """(Cout, Ho, Wo) of one image's output."""
        return self.cout, self.ho, self.wo

    # --- layouts -------------------------------------------------------------------
    # Caffe's weights are (Cout, C/G, kh, kw). The GEMMs want them per group with the
    # receptive field in the columns' order: (G, Cout/G, kh*kw*C/G), (i, j, c) for NHWC
    # columns, Caffe's own (c, i, j) for channel-first ones. The matrices live in the
    # workspace so that every GEMM operand sits at the same alignment (see
    # ``engine.workspace``).
    #
    # Each product is oriented so that the long side (pixels) runs down the rows of
    # the GEMM's output and of its left operand, as the columns lie: OpenBLAS does
    # cifar10_quick's conv2 6-11 % faster so (col @ Wᵀ, (M, 800) x (800, 32)) than as
    # W @ colᵀ, which writes the same numbers transposed. Pixel-major products then
    # take one transposing copy into NCHW (``engine.groups_to_nchw``), channel-major
    # ones (channel-first columns, whose own best order that is) a copy of whole image
    # planes (``engine.channel_major_to_nchw``).
    def _weight_matrix(self, weights: np.ndarray) -> np.ndarray:
        g, cog = self.group, self.cout // self.group
        if self.channel_first:
            out = self.ws.get("wmat", (g, cog, weights[0].size), weights.dtype)
            np.copyto(out, weights.reshape(out.shape))
            return out
        w = weights.reshape(g, cog, -1, self.kh, self.kw)
        out = self.ws.get("wmat", (g, cog, self.kh, self.kw, w.shape[2]), w.dtype)
        np.copyto(out, w.transpose(0, 1, 3, 4, 2))
        return out.reshape(g, cog, -1)

    def _rotated_weights(self, weights: np.ndarray) -> np.ndarray:
        """The full convolution's weights (G, C/G, kh*kw*Cout/G), (i, j, o) order:
        rotated[g, c, (i, j, o)] = W[g*Cout/G + o, c, kh-1-i, kw-1-j]."""
        g, cog = self.group, self.cout // self.group
        w = weights.reshape(g, cog, -1, self.kh, self.kw)
        out = self.ws.get("rotated", (g, w.shape[2], self.kh, self.kw, cog), w.dtype)
        np.copyto(out, w[:, :, :, ::-1, ::-1].transpose(0, 2, 3, 4, 1))
        return out.reshape(g, w.shape[2], -1)

    def _columns(self, x_pad: np.ndarray, a: int, m: int, worker: int) -> np.ndarray:
        """Columns (G, m*ho*wo, kh*kw*C/G) of images a..a+m of padded ``x_pad``, in the
        buffer of ``worker``; channel-first layers: (G, kh*kw*C/G, m*ho*wo)."""
        chunk = x_pad[a:a + m]
        if self.channel_first:
            k = self.kh * self.kw * x_pad.shape[1] // self.group
            col = self.ws.get(f"col{worker}", (self.group, k, m * self.ho * self.wo), x_pad.dtype)
            return im2col_nchw(chunk, self.kh, self.kw, self.sh, self.sw, self.ho, self.wo,
                               col, self.dh, self.dw)
        if self.one_by_one and self.group == 1:
            return chunk.reshape(1, m * self.ho * self.wo, -1)   # already the columns
        k = self.kh * self.kw * x_pad.shape[3] // self.group
        col = self.ws.get(f"col{worker}", (self.group, m * self.ho * self.wo, k), x_pad.dtype)
        return im2col(chunk, self.kh, self.kw, self.sh, self.sw, self.ho, self.wo, col,
                      self.dh, self.dw)

    def _chunk_bounds(self, n: int) -> list[int]:
        """Where the batch's chunks start (and, last, ``n``): about ``CHUNK_BYTES`` of
        columns each, near-equal, and an even number of them (unless one image makes
        a chunk), so that two workers get the same number of images."""
        step = batch_chunk(self.c * self.kh * self.kw * self.ho * self.wo, n, CHUNK_BYTES,
                           self.itemsize)
        count = -(-n // step)
        count = min(n, count + count % 2)
        return [n * i // count for i in range(count + 1)]

    def _over_chunks(self, n: int, fn: Callable[..., None], groups: int | None = None) -> None:
        """``fn(group, first, image, images, worker)`` for every chunk of the batch.

        The chunks form ``groups`` runs (default: one run per chunk) that depend only
        on the batch and the layer, never on the worker count or timing; whichever
        worker is free takes the next whole run, its chunks in order. ``first``: the
        chunk starts its run."""
        chunks = self._chunk_bounds(n)
        count = len(chunks) - 1
        groups = count if groups is None else groups
        bounds = [count * g // groups for g in range(groups + 1)]

        def run(g: int, worker: int) -> None:
            for i in range(bounds[g], bounds[g + 1]):
                fn(g, i == bounds[g], chunks[i], chunks[i + 1] - chunks[i], worker)
        macs = n * self.ho * self.wo * self.cout * self.kh * self.kw * self.c // self.group
        over_items(groups, run, macs, min_elements=MIN_SPLIT_MACS)

    # --- forward / backward ----------------------------------------------------------
    def prepare(self, x: np.ndarray) -> None:
        """Keep a padded copy of input ``x`` for ``backward``'s weight gradient (the
        forward does this itself)."""
        n, c, h, w = x.shape
        if self.winograd is not None:
            raise RuntimeError("a Winograd plan keeps its input in its forward")
        if self.channel_first:
            x_pad = self.ws.get("x_pad", (n, c, h + 2 * self.ph, w + 2 * self.pw), x.dtype,
                             zero=True)
            copy_over_batch(x_pad[:, :, self.ph:self.ph + h, self.pw:self.pw + w], x)
        else:
            x_pad = self.ws.get("x_pad", (n, h + 2 * self.ph, w + 2 * self.pw, c), x.dtype,
                             zero=True)
            pad_to_nhwc(x, self.ph, self.pw, x_pad)
        self.x_pad = x_pad

    def forward(self, x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None,
                y: np.ndarray) -> np.ndarray:
        """``y = conv(x, weights) + bias`` into ``y`` (N, Cout, Ho, Wo); returns ``y``."""
        n = x.shape[0]
        if self.winograd is not None:
            return self.winograd.forward(x, weights, bias, y)
        self.prepare(x)
        x_pad, wmat = self.x_pad, self._weight_matrix(weights)
        rows = (self.group, self.cout // self.group)

        def chunk(_: int, __: bool, a: int, m: int, worker: int) -> None:
            pixels = m * self.ho * self.wo
            col = self._columns(x_pad, a, m, worker)
            if self.channel_first:
                yb = self.ws.get(f"out{worker}", rows + (pixels,), x.dtype)
                channel_major_to_nchw(gemm(wmat, col, out=yb), y[a:a + m], bias)
            else:
                yb = self.ws.get(f"out{worker}", (rows[0], pixels, rows[1]), x.dtype)
                groups_to_nchw(gemm(col, wmat.transpose(0, 2, 1), out=yb), y[a:a + m], bias)
        self._over_chunks(n, chunk)
        return y

    def backward(self, dy: np.ndarray, weights: np.ndarray, dweights: np.ndarray | None,
                 dx: np.ndarray | None) -> None:
        """Add the weight gradient to ``dweights`` (unless None; the input is that of the
        last ``forward`` or ``prepare``) and write the input gradient into ``dx`` (unless
        None). The bias gradient is the caller's (a channel sum of ``dy``)."""
        n = dy.shape[0]
        if self.winograd is not None:
            self.winograd.backward(dy, dweights, dx)
            return
        want_dw, want_dx = dweights is not None, dx is not None
        wmat = self._weight_matrix(weights)
        rotated = self._rotated_weights(weights) if want_dx and self.full_convolution else None
        # Each run of chunks sums its weight gradient in its own buffer; the runs' sums
        # are added in order at the end. As many runs as chunks while their buffers fit
        # WEIGHT_PARTS_BYTES (the small weights of most layers), else fewer, longer runs.
        chunks = len(self._chunk_bounds(n)) - 1
        groups = max(1, min(chunks, WEIGHT_PARTS_BYTES // wmat.nbytes)) if want_dw else None
        # Weight gradients come out transposed, (G, K, Cout/G): the pixels, the GEMM's
        # depth, then lie along the columns' rows as they were built (see layouts).
        dw_shape = wmat.transpose(0, 2, 1).shape
        dw_parts = self.ws.get("dw_parts", (groups,) + dw_shape, dy.dtype) if want_dw else None
        rows = (self.group, self.cout // self.group)

        def chunk(g: int, first: bool, a: int, m: int, worker: int) -> None:
            dyb = nchw_to_channel_major(dy[a:a + m], self.group, self.ws.get(
                f"dy{worker}", rows + (m * self.ho * self.wo,), dy.dtype))
            if want_dw:
                product = (dw_parts[g] if first
                           else self.ws.get(f"dw{worker}", dw_shape, dy.dtype))
                col = self._columns(self.x_pad, a, m, worker)
                gemm(col if self.channel_first else col.transpose(0, 2, 1),
                     dyb.transpose(0, 2, 1), out=product)
                if not first:
                    dw_parts[g] += product
            if want_dx:
                self._input_grad(dyb, dy[a:a + m], dx[a:a + m], wmat, rotated, worker)
        self._over_chunks(n, chunk, groups)
        if not want_dw:
            return
        g, cog = self.group, self.cout // self.group
        dw = dw_parts.sum(axis=0).transpose(0, 2, 1)      # (G, Cout/G, K) like wmat
        if self.channel_first:
            dweights.reshape(dw.shape)[...] += dw
        else:
            dweights.reshape(g, cog, -1, self.kh, self.kw)[...] += \
                dw.reshape(g, cog, self.kh, self.kw, -1).transpose(0, 1, 4, 2, 3)

    def _input_grad(self, dyb, dy_chunk, dx_chunk, wmat, rotated, worker: int) -> None:
        """dx for one chunk of the batch into ``dx_chunk``, from its ``dy_chunk`` (NCHW)
        or the same as ``dyb`` (G, Cout/G, m*ho*wo), in ``worker``'s buffers."""
        m, c, h, w = dx_chunk.shape
        if self.one_by_one:
            dxb = self.ws.get(f"dxb{worker}", (self.group, m * h * w, c // self.group),
                              dyb.dtype)
            gemm(dyb.transpose(0, 2, 1), wmat, out=dxb)
        elif self.full_convolution:
            dxb = self._full_convolution(dy_chunk, rotated, worker)
        elif self.channel_first:
            dxp = self.ws.get(f"dxp{worker}", (m, c, h + 2 * self.ph, w + 2 * self.pw),
                              dyb.dtype)
            dcol = self.ws.get(f"dcol{worker}", wmat.shape[:1] + wmat.shape[2:]
                               + (m * self.ho * self.wo,), dyb.dtype)
            gemm(wmat.transpose(0, 2, 1), dyb, out=dcol)
            fill_over_batch(dxp, 0)
            col2im_nchw(dcol, self.kh, self.kw, self.sh, self.sw, self.ho, self.wo, dxp,
                        self.dh, self.dw)
            copy_over_batch(dx_chunk, dxp[:, :, self.ph:self.ph + h, self.pw:self.pw + w])
            return
        else:
            kg = wmat.shape[2]
            dxp = self.ws.get(f"dxp{worker}", (m, h + 2 * self.ph, w + 2 * self.pw, c),
                              dyb.dtype)
            dcol = self.ws.get(f"dcol{worker}", (self.group, m * self.ho * self.wo, kg),
                               dyb.dtype)
            gemm(dyb.transpose(0, 2, 1), wmat, out=dcol)
            fill_over_batch(dxp, 0)
            col2im(dcol, self.kh, self.kw, self.sh, self.sw, self.ho, self.wo, dxp,
                   self.dh, self.dw)
            copy_over_batch(dx_chunk, dxp[:, self.ph:self.ph + h, self.pw:self.pw + w, :]
                            .transpose(0, 3, 1, 2))
            return
        groups_to_nchw(dxb, dx_chunk)

    def _full_convolution_pays(self) -> bool:
        """Stride 1 allows the full-convolution form of dx. Its columns hold Cout*H*W
        values per kernel offset against C*Ho*Wo for col2im's, so it is chosen only when
        it copies and multiplies at most twice as much: "same" convolutions, up to one
        that doubles the channels (cifar10_quick's conv3, 32 -> 64: 3 % of a step
        faster than col2im), not a valid one that widens many channels (LeNet's conv2,
        20 -> 50: 4.9 x as much, slower)."""
        if (self.channel_first or self.sh != 1 or self.sw != 1 or self.ph >= self.span_h
                or self.pw >= self.span_w):
            return False
        return self.cout * self.h * self.w <= 2 * self.c * self.ho * self.wo

    def _full_convolution(self, dy_chunk, rotated, worker: int) -> np.ndarray:
        """Stride 1: dx is the *full* convolution of dy with the kernel rotated by 180°
        (and input/output channels swapped): im2col of the padded dy, then one GEMM.
        One strided copy replaces col2im's kh*kw strided adds. A dilated kernel stays
        dilated: tap i of the rotated kernel reads dy i*dh pixels further on.
        Returns (G, m*h*w, C/G)."""
        m, h, w = dy_chunk.shape[0], self.h, self.w
        g, cog, cg = self.group, self.cout // self.group, self.c // self.group
        qh, qw = self.span_h - 1 - self.ph, self.span_w - 1 - self.pw
        dyp = self.ws.get(f"dyp{worker}", (m, self.ho + 2 * qh, self.wo + 2 * qw, self.cout),
                          dy_chunk.dtype, zero=True)
        pad_to_nhwc(dy_chunk, qh, qw, dyp)
        col = self.ws.get(f"dycol{worker}", (g, m * h * w, self.kh * self.kw * cog),
                          dy_chunk.dtype)
        im2col(dyp, self.kh, self.kw, 1, 1, h, w, col, self.dh, self.dw)
        dxb = self.ws.get(f"dxb{worker}", (g, m * h * w, cg), dy_chunk.dtype)
        return gemm(col, rotated.transpose(0, 2, 1), out=dxb)
