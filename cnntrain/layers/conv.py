"""Convolution as im2col + GEMM, in cache-sized chunks of the batch that each worker
takes whole."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from cnntrain.engine import (batch_chunk, channel_major_to_nchw, col2im, col2im_nchw,
                             conv_out_size, gemm, groups_to_nchw, im2col, im2col_nchw,
                             nchw_to_channel_major, pad_to_nhwc)
from cnntrain.engine.parallel import (MIN_SPLIT_MACS, channel_sums, copy_over_batch,
                                      fill_over_batch, over_items)
from cnntrain.engine.winograd import (WinogradConvolution, best_tile, winograd_applies,
                                      winograd_pays)
from cnntrain.layers.base import Layer, SetupError, Shape, register
from cnntrain.layers.geometry import ConvGeometry, conv_geometry, nchw

# Columns per chunk: few enough to stay in cache between im2col and the GEMMs that
# read them. Measured on cifar10_quick (2 workers, whole steps alternating in one
# process): 2 MB beat 8 MB chunks split between the workers by 12-15 %, 1 MB by 3 %
# (smaller GEMMs) and 4 MB by 12 %.
CHUNK_BYTES = 2 << 20
# Room for the per-run weight gradients of one layer's backward (see ``backward``).
WEIGHT_PARTS_BYTES = 32 << 20


def channel_first_columns(kw: int, channels_per_group: int, wo: int) -> bool:
    """Whether a layer's columns are channel-first (``engine.im2col_nchw``): when an
    NHWC column run (kw*C/G floats) is shorter than an output row (wo floats), the run
    the channel-first layout copies at a time."""
    return kw * channels_per_group < wo


# --- the math, in reference form ---------------------------------------------------
# What the layer computes, written for reading: plain NumPy over a padded NCHW input,
# no layout tricks, no chunking. The tests hold the fast path (``engine.conv_plan``)
# to these functions; the gradient checks hold these functions to the chain rule.
#
# With ``cols = im2col(pad(x))``, (N, C*kh*kw, Ho*Wo), one column per output pixel
# holding its receptive field in (c, i, j) order, and W as (G, Cout/G, C/G*kh*kw):
#
#     y  = W @ cols + b                     (forward, one GEMM per group)
#     dW = sum over images of dy @ colsᵀ    (weight gradient)
#     dx = crop(col2im(Wᵀ @ dy))            (input gradient)
#
# col2im is im2col's adjoint (it adds each column back onto the pixels it was read
# from), so col2im(Wᵀ dy) is the textbook "full convolution of dy with the kernel
# rotated by 180°, input and output channels swapped": for each input pixel it sums
# dy over every output whose window covered it, weighted by the tap that covered it.
# ``conv_input_grad_full_reference`` writes that second form out (dy spread out by
# the stride, padded by span - 1 - pad, correlated with rot180(W)) and the tests
# check the two agree.


def im2col_reference(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                     dilation: tuple[int, int], out: tuple[int, int]) -> np.ndarray:
    """Columns (N, C*kh*kw, Ho*Wo) of the padded NCHW ``xp``: entry ((c, i, j), (y, x))
    is ``xp[c, y*sh + i*dh, x*sw + j*dw]``."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out
    n, c = xp.shape[:2]
    cols = np.empty((n, c, kh, kw, ho, wo), xp.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                                  j * dw:j * dw + sw * (wo - 1) + 1:sw]
    return cols.reshape(n, c * kh * kw, ho * wo)


def col2im_reference(cols: np.ndarray, padded_shape: Shape, kernel: tuple[int, int],
                     stride: tuple[int, int], dilation: tuple[int, int],
                     out: tuple[int, int]) -> np.ndarray:
    """im2col's adjoint: every column entry added back onto the pixel it came from."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out
    n, c = padded_shape[:2]
    xp = np.zeros(padded_shape, cols.dtype)
    cols = cols.reshape(n, c, kh, kw, ho, wo)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh,
               j * dw:j * dw + sw * (wo - 1) + 1:sw] += cols[:, :, i, j]
    return xp


def _per_group(a: np.ndarray, groups: int) -> np.ndarray:
    """(N, G*k, P) -> (N, G, k, P)."""
    return a.reshape(a.shape[0], groups, -1, a.shape[-1])


def conv_forward_reference(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None,
                           geo: ConvGeometry) -> np.ndarray:
    """``y = W @ im2col(pad(x)) + b``, per group."""
    n, _, h, w = x.shape
    ho = conv_out_size(h, geo.kh, geo.sh, geo.ph, geo.dh)
    wo = conv_out_size(w, geo.kw, geo.sw, geo.pw, geo.dw)
    xp = np.pad(x, ((0, 0), (0, 0), (geo.ph, geo.ph), (geo.pw, geo.pw)))
    cols = _per_group(im2col_reference(xp, (geo.kh, geo.kw), (geo.sh, geo.sw),
                                       (geo.dh, geo.dw), (ho, wo)), geo.group)
    wmat = weights.reshape(geo.group, geo.cout // geo.group, -1)
    y = (wmat @ cols).reshape(n, geo.cout, ho, wo)
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


def conv_weight_grad_reference(x: np.ndarray, dy: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """``dW = sum over images of dy @ colsᵀ``, per group: (Cout, C/G, kh, kw)."""
    xp = np.pad(x, ((0, 0), (0, 0), (geo.ph, geo.ph), (geo.pw, geo.pw)))
    cols = _per_group(im2col_reference(xp, (geo.kh, geo.kw), (geo.sh, geo.sw),
                                       (geo.dh, geo.dw), dy.shape[2:]), geo.group)
    dyg = _per_group(dy.reshape(dy.shape[0], geo.cout, -1), geo.group)
    dw = (dyg @ cols.transpose(0, 1, 3, 2)).sum(axis=0)
    return dw.reshape(geo.cout, -1, geo.kh, geo.kw)


def conv_input_grad_reference(dy: np.ndarray, weights: np.ndarray, geo: ConvGeometry,
                              in_shape: Shape) -> np.ndarray:
    """``dx = crop(col2im(Wᵀ @ dy))``, per group."""
    n, c, h, w = in_shape
    wmat = weights.reshape(geo.group, geo.cout // geo.group, -1)
    dyg = _per_group(dy.reshape(n, geo.cout, -1), geo.group)
    dcols = (wmat.transpose(0, 2, 1) @ dyg).reshape(n, -1, dy.shape[2] * dy.shape[3])
    dxp = col2im_reference(dcols, (n, c, h + 2 * geo.ph, w + 2 * geo.pw), (geo.kh, geo.kw),
                           (geo.sh, geo.sw), (geo.dh, geo.dw), dy.shape[2:])
    return dxp[:, :, geo.ph:geo.ph + h, geo.pw:geo.pw + w]


def conv_input_grad_full_reference(dy: np.ndarray, weights: np.ndarray, geo: ConvGeometry,
                                   in_shape: Shape) -> np.ndarray:
    """The same dx as the textbook writes it: spread dy out by the stride (stride-1
    zeros between its pixels), pad it by ``span - 1 - pad`` (``span``: the dilated
    kernel's extent), and correlate that with the kernels rotated by 180°, input and
    output channels swapped. Rows and columns of x that no window reached (a stride
    that does not divide the padded size) get a zero gradient."""
    n, c, h, w = in_shape
    ho, wo = dy.shape[2:]
    span_h, span_w = geo.dh * (geo.kh - 1) + 1, geo.dw * (geo.kw - 1) + 1
    spread = np.zeros((n, geo.cout, geo.sh * (ho - 1) + 1, geo.sw * (wo - 1) + 1), dy.dtype)
    spread[:, :, ::geo.sh, ::geo.sw] = dy
    # Padding by span - 1 - pad can be negative (a pad wider than the kernel): crop then.
    qh, qw = span_h - 1 - geo.ph, span_w - 1 - geo.pw
    spread = np.pad(spread, ((0, 0), (0, 0), (max(qh, 0),) * 2, (max(qw, 0),) * 2))
    spread = spread[:, :, max(-qh, 0):spread.shape[2] - max(-qh, 0),
                    max(-qw, 0):spread.shape[3] - max(-qw, 0)]
    g, cog = geo.group, geo.cout // geo.group
    rotated = (weights.reshape(g, cog, c // g, geo.kh, geo.kw)[:, :, :, ::-1, ::-1]
               .transpose(0, 2, 1, 3, 4).reshape(c, cog, geo.kh, geo.kw))
    full = conv_forward_reference(spread, rotated, None, geo._replace(
        sh=1, sw=1, ph=0, pw=0, cout=c))
    dx = np.zeros(in_shape, dy.dtype)
    rows, cols = min(h, full.shape[2]), min(w, full.shape[3])
    dx[:, :, :rows, :cols] = full[:, :, :rows, :cols]
    return dx


@register("Convolution")
class Convolution(Layer):
    """Caffe's Convolution: weights (Cout, C/group, kh, kw), optional bias (Cout,);
    stride, padding, groups and dilation (kernel taps spread ``dilation`` pixels apart).

    Forward: ``y = im2col(x) @ W + b`` (columns in NHWC order, see ``engine.im2col``,
    or channel-first when a layer has few channels per group). Backward:
    ``dW = colᵀ @ dy`` and ``dx = col2im(dy @ Wᵀ)``; col2im of ``dy Wᵀ`` is exactly the
    "full convolution with the kernel rotated by 180°" of the textbook derivation,
    which stride-1 layers compute in that form when it is cheaper.

    The batch goes in chunks of a few images (``CHUNK_BYTES`` of columns), each taken
    whole by whichever worker is free: it builds the chunk's columns, multiplies and
    writes that chunk's outputs while the columns are still in its cache. The backward
    rebuilds the columns the same way rather than keeping the forward's, which would
    send them through main memory twice. Each chunk's weight gradient is its own GEMM,
    and the products are added in chunk order afterwards, so results depend neither on
    the threads' timing nor on how many there are.
    """

    param_blocks = ("convolution_param",)

    def setup(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        n, c, h, w = nchw(bottom_shapes)
        p = self.param("convolution_param")
        self.geometry = conv_geometry(p, "convolution_param", c)
        (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw, self.group,
         self.cout) = self.geometry
        # The extent a dilated kernel spans: its taps are dh (dw) pixels apart.
        self.span_h, self.span_w = self.dh * (self.kh - 1) + 1, self.dw * (self.kw - 1) + 1
        if h + 2 * self.ph < self.span_h or w + 2 * self.pw < self.span_w:
            dilated = (f" (dilated to {self.span_h}x{self.span_w})"
                       if (self.dh, self.dw) != (1, 1) else "")
            raise SetupError(f"kernel {self.kh}x{self.kw}{dilated} is larger than the padded "
                             f"input {h + 2 * self.ph}x{w + 2 * self.pw}",
                             "convolution_param.kernel_size")
        self.ho = conv_out_size(h, self.kh, self.sh, self.ph, self.dh)
        self.wo = conv_out_size(w, self.kw, self.sw, self.pw, self.dw)
        cin_g = c // self.group
        if p.weight_filler["type"] == "whitening":
            k = c * self.kh * self.kw
            if self.group != 1 or self.cout not in (k, 2 * k):
                raise SetupError(f"the whitening filler needs group 1 and num_output {k} "
                                 f"(C*kh*kw: one filter per eigenvector) or {2 * k} (with "
                                 f"their negatives), got group {self.group} and "
                                 f"num_output {self.cout}", "convolution_param.weight_filler")
        fan_in = cin_g * self.kh * self.kw
        fan_out = self.cout // self.group * self.kh * self.kw
        self.blobs = [self.make_param((self.cout, cin_g, self.kh, self.kw), p.weight_filler, 0,
                                      fan_in, fan_out)]
        if p.bias_term:
            self.blobs.append(self.make_param((self.cout,), p.bias_filler, 1, fan_in, fan_out))
        self.winograd = self._winograd_tile(p.engine, c)
        self.one_by_one = (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw) == (1, 1, 1, 1, 0, 0)
        self.channel_first = (not self.one_by_one
                              and channel_first_columns(self.kw, cin_g, self.wo))
        # How dx is found (a 1x1 layer's is one GEMM whatever this says).
        self.full_convolution = not self.one_by_one and self._full_convolution_pays(c, h, w)
        return [(n, self.cout, self.ho, self.wo)]

    def _winograd_tile(self, engine: str, c: int) -> int | None:
        """The tile size m of Winograd's F(m, 3) this layer runs on, or None for im2col."""
        fits = winograd_applies(self.kh, self.kw, self.sh, self.sw, self.dh, self.dw,
                                self.group, self.ph, self.pw)
        if engine == "WINOGRAD" and not fits:
            raise SetupError("engine WINOGRAD needs a 3x3 kernel, stride 1, no dilation, "
                             "group 1 and pad <= 2", "convolution_param.engine")
        if engine == "CAFFE" or not fits:
            return None
        if engine == "DEFAULT" and not winograd_pays(c, self.cout):
            return None
        return best_tile(self.ho, self.wo)

    def _winograd(self, shape) -> WinogradConvolution:
        """The Winograd convolution of this input shape (built again when it changes)."""
        key = (shape, self.blobs[0].data.dtype)
        if getattr(self, "_wino_key", None) != key:
            n, c, h, w = shape
            self._wino = WinogradConvolution(n, c, h, w, self.cout, (self.ph, self.pw),
                                             self.winograd, key[1], self.ws)
            self._wino_key = key
        return self._wino

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
    def _weight_matrix(self) -> np.ndarray:
        g, cog = self.group, self.cout // self.group
        weights = self.blobs[0].data
        if self.channel_first:
            out = self.ws.get("wmat", (g, cog, weights[0].size), weights.dtype)
            np.copyto(out, weights.reshape(out.shape))
            return out
        w = weights.reshape(g, cog, -1, self.kh, self.kw)
        out = self.ws.get("wmat", (g, cog, self.kh, self.kw, w.shape[2]), w.dtype)
        np.copyto(out, w.transpose(0, 1, 3, 4, 2))
        return out.reshape(g, cog, -1)

    def _rotated_weights(self) -> np.ndarray:
        """The full convolution's weights (G, C/G, kh*kw*Cout/G), (i, j, o) order:
        rotated[g, c, (i, j, o)] = W[g*Cout/G + o, c, kh-1-i, kw-1-j]."""
        g, cog = self.group, self.cout // self.group
        w = self.blobs[0].data.reshape(g, cog, -1, self.kh, self.kw)
        out = self.ws.get("rotated", (g, w.shape[2], self.kh, self.kw, cog), w.dtype)
        np.copyto(out, w[:, :, :, ::-1, ::-1].transpose(0, 2, 3, 4, 1))
        return out.reshape(g, w.shape[2], -1)

    def _columns(self, xp: np.ndarray, a: int, m: int, worker: int) -> np.ndarray:
        """Columns (G, m*ho*wo, kh*kw*C/G) of images a..a+m of padded ``xp``, in the
        buffer of ``worker``; channel-first layers: (G, kh*kw*C/G, m*ho*wo)."""
        chunk = xp[a:a + m]
        if self.channel_first:
            k = self.kh * self.kw * xp.shape[1] // self.group
            col = self.ws.get(f"col{worker}", (self.group, k, m * self.ho * self.wo), xp.dtype)
            return im2col_nchw(chunk, self.kh, self.kw, self.sh, self.sw, self.ho, self.wo,
                               col, self.dh, self.dw)
        if self.one_by_one and self.group == 1:
            return chunk.reshape(1, m * self.ho * self.wo, -1)   # already the columns
        k = self.kh * self.kw * xp.shape[3] // self.group
        col = self.ws.get(f"col{worker}", (self.group, m * self.ho * self.wo, k), xp.dtype)
        return im2col(chunk, self.kh, self.kw, self.sh, self.sw, self.ho, self.wo, col,
                      self.dh, self.dw)

    def _chunk_bounds(self, n: int, c: int) -> list[int]:
        """Where the batch's chunks start (and, last, ``n``): about ``CHUNK_BYTES`` of
        columns each, near-equal, and an even number of them (unless one image makes
        a chunk), so that two workers get the same number of images."""
        step = batch_chunk(c * self.kh * self.kw * self.ho * self.wo, n, CHUNK_BYTES,
                           self.blobs[0].data.itemsize)
        count = -(-n // step)
        count = min(n, count + count % 2)
        return [n * i // count for i in range(count + 1)]

    def _over_chunks(self, n: int, c: int, fn: Callable[..., None],
                     groups: int | None = None) -> None:
        """``fn(group, first, image, images, worker)`` for every chunk of the batch.

        The chunks form ``groups`` runs (default: one run per chunk) that depend only
        on the batch and the layer, never on the worker count or timing; whichever
        worker is free takes the next whole run, its chunks in order. ``first``: the
        chunk starts its run."""
        chunks = self._chunk_bounds(n, c)
        count = len(chunks) - 1
        groups = count if groups is None else groups
        bounds = [count * g // groups for g in range(groups + 1)]

        def run(g: int, worker: int) -> None:
            for i in range(bounds[g], bounds[g + 1]):
                fn(g, i == bounds[g], chunks[i], chunks[i + 1] - chunks[i], worker)
        macs = n * self.ho * self.wo * self.cout * self.kh * self.kw * c // self.group
        over_items(groups, run, macs, min_elements=MIN_SPLIT_MACS)

    # --- forward / backward ----------------------------------------------------------
    def forward(self, bottom: Sequence[np.ndarray]) -> list[np.ndarray]:
        (x,) = bottom
        n, c, h, w = self.in_shape = x.shape
        if self.winograd is not None:
            y = self.buffer("y", (n, self.cout, self.ho, self.wo), x.dtype)
            bias = self.blobs[1].data if len(self.blobs) > 1 else None
            return [self._winograd(x.shape).forward(x, self.blobs[0].data, bias, y)]
        if self.channel_first:
            xp = self.ws.get("xp", (n, c, h + 2 * self.ph, w + 2 * self.pw), x.dtype,
                             zero=True)
            copy_over_batch(xp[:, :, self.ph:self.ph + h, self.pw:self.pw + w], x)
        else:
            xp = self.ws.get("xp", (n, h + 2 * self.ph, w + 2 * self.pw, c), x.dtype,
                             zero=True)
            pad_to_nhwc(x, self.ph, self.pw, xp)
        self.xp = xp
        self.wmat = self._weight_matrix()
        y = self.buffer("y", (n, self.cout, self.ho, self.wo), x.dtype)
        bias = self.blobs[1].data if len(self.blobs) > 1 else None
        rows = (self.group, self.cout // self.group)

        def chunk(_: int, __: bool, a: int, m: int, worker: int) -> None:
            pixels = m * self.ho * self.wo
            col = self._columns(xp, a, m, worker)
            if self.channel_first:
                yb = self.ws.get(f"out{worker}", rows + (pixels,), x.dtype)
                channel_major_to_nchw(gemm(self.wmat, col, out=yb), y[a:a + m], bias)
            else:
                yb = self.ws.get(f"out{worker}", (rows[0], pixels, rows[1]), x.dtype)
                groups_to_nchw(gemm(col, self.wmat.transpose(0, 2, 1), out=yb), y[a:a + m],
                               bias)
        self._over_chunks(n, c, chunk)
        return [y]

    def backward(self, top_diff, propagate_down):
        (dy,) = top_diff
        n, c, h, w = self.in_shape
        if len(self.blobs) > 1:
            self.blobs[1].diff += channel_sums(dy)
        want_dx = propagate_down[0]
        dx = self.buffer("dx", (n, c, h, w), dy.dtype) if want_dx else None
        if self.winograd is not None:
            self._winograd(self.in_shape).backward(dy, self.blobs[0].diff, dx)
            return [dx]
        xp = self.xp
        if want_dx and self.full_convolution:
            self.rotated = self._rotated_weights()
        # Each run of chunks sums its weight gradient in its own buffer; the runs' sums
        # are added in order at the end. As many runs as chunks while their buffers fit
        # WEIGHT_PARTS_BYTES (the small weights of most layers), else fewer, longer runs.
        chunks = len(self._chunk_bounds(n, c)) - 1
        groups = max(1, min(chunks, WEIGHT_PARTS_BYTES // self.wmat.nbytes))
        # Weight gradients come out transposed, (G, K, Cout/G): the pixels, the GEMM's
        # depth, then lie along the columns' rows as they were built (see layouts).
        dw_shape = self.wmat.transpose(0, 2, 1).shape
        dw_parts = self.ws.get("dw_parts", (groups,) + dw_shape, dy.dtype)
        rows = (self.group, self.cout // self.group)

        def chunk(g: int, first: bool, a: int, m: int, worker: int) -> None:
            dyb = nchw_to_channel_major(dy[a:a + m], self.group, self.ws.get(
                f"dy{worker}", rows + (m * self.ho * self.wo,), dy.dtype))
            product = dw_parts[g] if first else self.ws.get(f"dw{worker}", dw_shape, dy.dtype)
            col = self._columns(xp, a, m, worker)
            gemm(col if self.channel_first else col.transpose(0, 2, 1), dyb.transpose(0, 2, 1),
                 out=product)
            if not first:
                dw_parts[g] += product
            if want_dx:
                self._input_grad(dyb, dy[a:a + m], dx[a:a + m], worker)
        self._over_chunks(n, c, chunk, groups)
        g, cog = self.group, self.cout // self.group
        dw = dw_parts.sum(axis=0).transpose(0, 2, 1)      # (G, Cout/G, K) like wmat
        if self.channel_first:
            self.blobs[0].diff.reshape(dw.shape)[...] += dw
        else:
            self.blobs[0].diff.reshape(g, cog, -1, self.kh, self.kw)[...] += \
                dw.reshape(g, cog, self.kh, self.kw, -1).transpose(0, 1, 4, 2, 3)
        return [dx]

    def _input_grad(self, dyb, dy_chunk, dx_chunk, worker: int) -> None:
        """dx for one chunk of the batch into ``dx_chunk``, from its ``dy_chunk`` (NCHW)
        or the same as ``dyb`` (G, Cout/G, m*ho*wo), in ``worker``'s buffers."""
        m, c, h, w = dx_chunk.shape
        if self.one_by_one:
            dxb = self.ws.get(f"dxb{worker}", (self.group, m * h * w, c // self.group),
                              dyb.dtype)
            gemm(dyb.transpose(0, 2, 1), self.wmat, out=dxb)
        elif self.full_convolution:
            dxb = self._full_convolution(dy_chunk, c, h, w, worker)
        elif self.channel_first:
            dxp = self.ws.get(f"dxp{worker}", (m, c, h + 2 * self.ph, w + 2 * self.pw),
                              dyb.dtype)
            dcol = self.ws.get(f"dcol{worker}", self.wmat.shape[:1] + self.wmat.shape[2:]
                               + (m * self.ho * self.wo,), dyb.dtype)
            gemm(self.wmat.transpose(0, 2, 1), dyb, out=dcol)
            fill_over_batch(dxp, 0)
            col2im_nchw(dcol, self.kh, self.kw, self.sh, self.sw, self.ho, self.wo, dxp,
                        self.dh, self.dw)
            copy_over_batch(dx_chunk, dxp[:, :, self.ph:self.ph + h, self.pw:self.pw + w])
            return
        else:
            kg = self.wmat.shape[2]
            dxp = self.ws.get(f"dxp{worker}", (m, h + 2 * self.ph, w + 2 * self.pw, c),
                              dyb.dtype)
            dcol = self.ws.get(f"dcol{worker}", (self.group, m * self.ho * self.wo, kg),
                               dyb.dtype)
            gemm(dyb.transpose(0, 2, 1), self.wmat, out=dcol)
            fill_over_batch(dxp, 0)
            col2im(dcol, self.kh, self.kw, self.sh, self.sw, self.ho, self.wo, dxp,
                   self.dh, self.dw)
            copy_over_batch(dx_chunk, dxp[:, self.ph:self.ph + h, self.pw:self.pw + w, :]
                            .transpose(0, 3, 1, 2))
            return
        groups_to_nchw(dxb, dx_chunk)

    def _full_convolution_pays(self, c: int, h: int, w: int) -> bool:
        """Stride 1 allows the full-convolution form of dx. Its columns hold Cout*H*W
        values per kernel offset against C*Ho*Wo for col2im's, so it is chosen only when
        it copies and multiplies at most twice as much: "same" convolutions, up to one
        that doubles the channels (cifar10_quick's conv3, 32 -> 64: 3 % of a step
        faster than col2im), not a valid one that widens many channels (LeNet's conv2,
        20 -> 50: 4.9 x as much, slower)."""
        if (self.channel_first or self.sh != 1 or self.sw != 1 or self.ph >= self.span_h
                or self.pw >= self.span_w):
            return False
        return self.cout * h * w <= 2 * c * self.ho * self.wo

    def _full_convolution(self, dy_chunk, c: int, h: int, w: int, worker: int) -> np.ndarray:
        """Stride 1: dx is the *full* convolution of dy with the kernel rotated by 180°
        (and input/output channels swapped): im2col of the padded dy, then one GEMM.
        One strided copy replaces col2im's kh*kw strided adds. A dilated kernel stays
        dilated: tap i of the rotated kernel reads dy i*dh pixels further on.
        Returns (G, m*h*w, C/G)."""
        m = dy_chunk.shape[0]
        g, cog, cg = self.group, self.cout // self.group, c // self.group
        qh, qw = self.span_h - 1 - self.ph, self.span_w - 1 - self.pw
        dyp = self.ws.get(f"dyp{worker}", (m, self.ho + 2 * qh, self.wo + 2 * qw, self.cout),
                          dy_chunk.dtype, zero=True)
        pad_to_nhwc(dy_chunk, qh, qw, dyp)
        col = self.ws.get(f"dycol{worker}", (g, m * h * w, self.kh * self.kw * cog),
                          dy_chunk.dtype)
        im2col(dyp, self.kh, self.kw, 1, 1, h, w, col, self.dh, self.dw)
        dxb = self.ws.get(f"dxb{worker}", (g, m * h * w, cg), dy_chunk.dtype)
        return gemm(col, self.rotated.transpose(0, 2, 1), out=dxb)
