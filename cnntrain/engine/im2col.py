"""im2col / col2im on plain arrays, in a channel-last (NHWC) working layout, and in
Caffe's channel-first one for layers with few channels per group (see below).

Blobs are NCHW (Caffe's layout). Convolution first copies a padded NHWC version of its
input: then one receptive field's values for one kernel row, ``kw * C`` floats, are
contiguous in memory, so im2col is a single NumPy copy of a strided view whose inner
runs are long (in NCHW they would be one output row, often 8-16 floats), and the
whole chunk is convolved by one GEMM.

Column buffers are ``(G, M, K)``: ``G`` groups, ``M = N*Ho*Wo`` output pixels in
(n, y, x) order, ``K = kh*kw*C/G`` values per receptive field in (i, j, c) order. One
batched ``np.matmul`` then serves every group at once (depth-wise convolution is
``G = C`` small GEMMs in one call, not a Python loop over groups).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cnntrain.engine.accounting import accounted
from cnntrain.engine.parallel import copy_over_batch, over_slices, ufunc_over_batch


def conv_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output length of a convolution (floor rounding, as in Caffe)."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def pad_to_nhwc(x: np.ndarray, pad_h: int, pad_w: int, out: np.ndarray) -> np.ndarray:
    """Copy NCHW ``x`` into the interior of ``out`` (N, H+2ph, W+2pw, C).

    The border of ``out`` is never written here, so a buffer zeroed once stays padded.
    """
    _, _, h, w = x.shape
    copy_over_batch(out[:, pad_h:pad_h + h, pad_w:pad_w + w, :], x.transpose(0, 2, 3, 1))
    return out


def nchw_to_groups(a: np.ndarray, groups: int, out: np.ndarray) -> np.ndarray:
    """NCHW ``a`` (m, G*k, h, w) as GEMM rows ``out`` (G, m*h*w, k): pixels in (n, y, x)
    order, the k channels of each group in the columns."""
    m, _, h, w = a.shape
    copy_over_batch(out.reshape(groups, m, h, w, -1),
                    a.reshape(m, groups, -1, h, w).transpose(1, 0, 3, 4, 2), axis=1)
    return out


def groups_to_nchw(a: np.ndarray, out: np.ndarray,
                   bias: np.ndarray | None = None) -> np.ndarray:
    """GEMM rows ``a`` (G, m*h*w, k) into NCHW ``out`` (m, G*k, h, w): the inverse. With
    ``bias`` (G*k,), each channel's bias is added in the same pass."""
    m, _, h, w = out.shape
    groups = a.shape[0]
    return _to_nchw(out.reshape(m, groups, -1, h * w),
                    a.reshape(groups, m, h * w, -1).transpose(1, 0, 3, 2), bias, out)


def nchw_to_channel_major(a: np.ndarray, groups: int, out: np.ndarray) -> np.ndarray:
    """NCHW ``a`` (m, G*k, h, w) as ``out`` (G, k, m*h*w): each channel's pixels of all m
    images in one row. The copy moves whole image planes (h*w floats at a time), so it
    runs near memory speed, unlike a transpose to channel-last."""
    m, _, h, w = a.shape
    copy_over_batch(out.reshape(groups, -1, m, h * w),
                    a.reshape(m, groups, -1, h * w).transpose(1, 2, 0, 3), axis=2)
    return out


def channel_major_to_nchw(a: np.ndarray, out: np.ndarray,
                          bias: np.ndarray | None = None) -> np.ndarray:
    """``a`` (G, k, m*h*w) into NCHW ``out`` (m, G*k, h, w): the inverse. With ``bias``
    (G*k,), each channel's bias is added in the same pass (no second pass over ``out``)."""
    m, _, h, w = out.shape
    groups = a.shape[0]
    return _to_nchw(out.reshape(m, groups, -1, h * w),
                    a.reshape(groups, -1, m, h * w).transpose(2, 0, 1, 3), bias, out)


def _to_nchw(dst: np.ndarray, src: np.ndarray, bias: np.ndarray | None,
             out: np.ndarray) -> np.ndarray:
    """``dst[...] = src (+ bias per channel)``, both (m, G, k, h*w); returns ``out``."""
    if bias is None:
        copy_over_batch(dst, src)
    else:
        ufunc_over_batch(np.add, dst, src, bias.reshape(1, dst.shape[1], -1, 1))
    return out


def _windows(x_pad: np.ndarray, groups: int, kh: int, kw: int, sh: int, sw: int, ho: int,
             wo: int, dh: int, dw: int) -> np.ndarray:
    """Read-only view (G, N, ho, wo, kh, kw, C/G) of every receptive field of NHWC ``x_pad``
    (kernel taps ``dh``/``dw`` pixels apart: dilation)."""
    n, _, _, c = x_pad.shape
    s_n, s_h, s_w, s_c = x_pad.strides
    shape = (groups, n, ho, wo, kh, kw, c // groups)
    strides = (c // groups * s_c, s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c)
    if x_pad.flags.c_contiguous:
        # The plain constructor: a few µs less than as_strided, once per chunk.
        view = np.ndarray(shape, x_pad.dtype, buffer=x_pad, strides=strides)
        view.flags.writeable = False
        return view
    return as_strided(x_pad, shape, strides, writeable=False)


@accounted("im2col")
def im2col(x_pad: np.ndarray, kh: int, kw: int, sh: int, sw: int, ho: int, wo: int,
           out: np.ndarray, dh: int = 1, dw: int = 1) -> np.ndarray:
    """Columns of padded NHWC ``x_pad`` into ``out`` (G, N*ho*wo, kh*kw*C/G); G = out.shape[0]."""
    groups = out.shape[0]
    view = _windows(x_pad, groups, kh, kw, sh, sw, ho, wo, dh, dw)
    copy_over_batch(out.reshape(view.shape), view, axis=1)
    return out


@accounted("im2col")
def col2im(col: np.ndarray, kh: int, kw: int, sh: int, sw: int, ho: int, wo: int,
           out: np.ndarray, dh: int = 1, dw: int = 1) -> np.ndarray:
    """Add columns (G, N*ho*wo, kh*kw*C/G) back into padded NHWC ``out``: im2col's adjoint.

    One strided add per kernel offset: overlapping windows must accumulate, which a
    single scatter cannot do without a Python loop per pixel.
    """
    n, hp, wp, c = out.shape
    groups = col.shape[0]
    cols = col.reshape(groups, n, ho, wo, kh, kw, c // groups)
    grouped = out.reshape(n, hp, wp, groups, c // groups)

    def images(s: slice) -> None:
        for i in range(kh):
            for j in range(kw):
                top, left = i * dh, j * dw
                grouped[s, top:top + sh * (ho - 1) + 1:sh, left:left + sw * (wo - 1) + 1:sw] += \
                    cols[:, s, :, :, i, j].transpose(1, 2, 3, 0, 4)
    over_slices(n, images, col.size)
    return out


# --- channel-first columns -------------------------------------------------------------
# With few channels per group (an RGB input, depth-wise layers), NHWC columns copy runs
# of only kw*C/G floats; channel-first (Caffe's own) columns copy whole output rows of
# wo floats instead (cifar10_quick's conv1: 5.6 -> 3.2 ms per pass on one thread).
# Columns are then (G, kh*kw*C/G, N*ho*wo), the receptive field in (c, i, j) order:
# Caffe's weight layout as it is.

def _windows_nchw(x_pad: np.ndarray, groups: int, kh: int, kw: int, sh: int, sw: int,
                  ho: int, wo: int, dh: int, dw: int) -> np.ndarray:
    """Read-only view (G, C/G, kh, kw, N, ho, wo) of every receptive field of NCHW ``x_pad``."""
    n, c = x_pad.shape[:2]
    s_n, s_c, s_h, s_w = x_pad.strides
    return as_strided(x_pad, (groups, c // groups, kh, kw, n, ho, wo),
                      (c // groups * s_c, s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw),
                      writeable=False)


@accounted("im2col")
def im2col_nchw(x_pad: np.ndarray, kh: int, kw: int, sh: int, sw: int, ho: int, wo: int,
                out: np.ndarray, dh: int = 1, dw: int = 1) -> np.ndarray:
    """Channel-first columns of padded NCHW ``x_pad`` into ``out`` (G, kh*kw*C/G, N*ho*wo)."""
    view = _windows_nchw(x_pad, out.shape[0], kh, kw, sh, sw, ho, wo, dh, dw)
    copy_over_batch(out.reshape(view.shape), view, axis=4)
    return out


@accounted("im2col")
def col2im_nchw(col: np.ndarray, kh: int, kw: int, sh: int, sw: int, ho: int, wo: int,
                out: np.ndarray, dh: int = 1, dw: int = 1) -> np.ndarray:
    """Add channel-first columns (G, kh*kw*C/G, N*ho*wo) back into padded NCHW ``out``:
    ``im2col_nchw``'s adjoint, one strided add per kernel offset."""
    n, c, hp, wp = out.shape
    groups = col.shape[0]
    cols = col.reshape(groups, c // groups, kh, kw, n, ho, wo)
    grouped = out.reshape(n, groups, c // groups, hp, wp)

    def images(s: slice) -> None:
        for i in range(kh):
            for j in range(kw):
                top, left = i * dh, j * dw
                grouped[s, :, :, top:top + sh * (ho - 1) + 1:sh,
                        left:left + sw * (wo - 1) + 1:sw] += cols[:, :, i, j, s].transpose(2, 0, 1, 3, 4)
    over_slices(n, images, col.size)
    return out


def batch_chunk(per_image_floats: int, batch: int, budget_bytes: int = 8 << 20,
                itemsize: int = 4) -> int:
    """How many images fit one column buffer of ``budget_bytes`` (the cache-sized chunk)."""
    return max(1, min(batch, budget_bytes // max(1, per_image_floats * itemsize)))
