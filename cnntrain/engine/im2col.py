"""im2col / col2im on plain arrays, in a channel-major "CNHW" working layout.

Blobs are NCHW (Caffe's layout). Convolution first moves a chunk of the batch to
(C, N, H, W): then the columns for all images of the chunk are one strided view whose
innermost runs are whole output rows, the copy into the column matrix is a single
NumPy call, and one GEMM ``W (Cout, C*kh*kw) @ col (C*kh*kw, N*Ho*Wo)`` convolves
the whole chunk. Rows of ``col`` are ordered (c, i, j), matching Caffe's weight
layout (Cout, C, kh, kw), so groups are contiguous row blocks.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def conv_out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of a convolution (floor rounding, as in Caffe)."""
    return (size + 2 * pad - kernel) // stride + 1


def pad_to_cnhw(x: np.ndarray, pad_h: int, pad_w: int, out: np.ndarray) -> np.ndarray:
    """Copy NCHW ``x`` into the interior of ``out`` (C, N, H+2ph, W+2pw).

    The border of ``out`` is never written here, so a buffer zeroed once stays padded.
    """
    _, _, h, w = x.shape
    out[:, :, pad_h:pad_h + h, pad_w:pad_w + w] = x.transpose(1, 0, 2, 3)
    return out


def im2col(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, ho: int, wo: int,
           out: np.ndarray) -> np.ndarray:
    """Columns of padded CNHW ``xp`` into ``out`` of shape (C*kh*kw, N*ho*wo)."""
    c, n = xp.shape[:2]
    s_c, s_n, s_h, s_w = xp.strides
    windows = as_strided(xp, (c, kh, kw, n, ho, wo), (s_c, s_h, s_w, s_n, s_h * sh, s_w * sw),
                         writeable=False)
    np.copyto(out.reshape(c, kh, kw, n, ho, wo), windows)
    return out


def col2im(col: np.ndarray, kh: int, kw: int, sh: int, sw: int, ho: int, wo: int,
           out: np.ndarray) -> np.ndarray:
    """Add columns back into padded CNHW ``out`` (C, N, Hp, Wp): the adjoint of im2col.

    One strided add per kernel offset: overlapping windows must accumulate, which a
    single scatter cannot do without a Python loop per pixel.
    """
    c, n = out.shape[:2]
    cols = col.reshape(c, kh, kw, n, ho, wo)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += cols[:, i, j]
    return out


def batch_chunk(per_image_floats: int, batch: int, budget_bytes: int = 8 << 20,
                itemsize: int = 4) -> int:
    """How many images fit one column buffer of ``budget_bytes`` (the cache-sized chunk)."""
    return max(1, min(batch, budget_bytes // max(1, per_image_floats * itemsize)))
