"""Winograd's minimal filtering F(m x m, 3 x 3) for 3x3, stride-1 convolutions.

Lavin & Gray ("Fast Algorithms for Convolutional Neural Networks", 2016): cut the
padded input into (m+2) x (m+2) tiles that overlap by 2 pixels, one per m x m block of
the output. For a tile d and a kernel g the block is

    Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A

so the 9 m² multiply-adds per (tile, input channel, output channel) of the direct
convolution become (m+2)² products: 2.25x fewer for m = 2, 4x for m = 4. Summed over
the input channels, the products are (m+2)² independent matrix products, one per
tile position ξ: ``M[ξ] = V[ξ] @ U[ξ]``, (tiles, C) x (C, Cout), where
``V = Bᵀ d B`` (the transformed input tiles) and ``U = G g Gᵀ`` (the transformed
kernels). That is the GEMM work; the transforms around it are small fixed matrices.

Each 2-D transform is one matrix product on flattened tiles: for row-major
flattening, vec(P X Q) = (P ⊗ Qᵀ) vec(X), so ``Bᵀ d B`` is ``kron(Bᵀ, Bᵀ) @ vec(d)``.
The transforms are then single GEMMs over every tile and channel at once, and the
middle products a batched GEMM over ξ, ``M[ξ] = Uᵀ[ξ] @ V[ξ]ᵀ``, (Cout, C) x (C, tiles).
Input tiles are gathered from a channel-last copy of the input, (t², tiles, C), so each
copy moves whole runs of C channels (in NCHW the runs would be a tile's 4 pixels); the
products come out channel-major, (t², Cout, tiles), so that blocks go back into NCHW
a whole block row at a time.

The backward passes follow from the forward by the chain rule, on the same tiles:
``dM = kron(A, A) @ dY`` (the output transform's transpose), then
``dUᵀ[ξ] = dM[ξ] @ V[ξ]`` and ``dV[ξ] = dM[ξ]ᵀ @ Uᵀ[ξ]``; the kernel gradient is
``Gᵀ dU G`` and the input gradient is ``B dV Bᵀ`` added back onto the overlapping
tiles (the overlap-add is col2im's counterpart). This is the full convolution with
the rotated kernel of the textbook, computed on Winograd tiles.

Larger m saves more multiplies but amplifies float32 rounding (the transforms'
entries grow with the interpolation points: 0, ±1, ±2 for m = 4); the tests bound
the error against the direct convolution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cnntrain.engine.accounting import accounted, gemm
from cnntrain.engine.im2col import pad_to_nhwc
from cnntrain.engine.parallel import MIN_SPLIT_MACS, over_items, slices

# Bᵀ, G, Aᵀ for F(2, 3) (points 0, ±1, ∞) and F(4, 3) (points 0, ±1, ±2, ∞).
_MATRICES = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
         [0, 1, -1, 8, -8, 1]]),
}

# Bytes of transformed tiles per chunk: the chunk's V, M and their gradients then stay
# in cache from one transform to the next (as im2col's columns do, see layers/conv.py).
CHUNK_BYTES = 1 << 22
# Room for the per-run kernel gradients of one backward (see ``backward``).
KERNEL_PARTS_BYTES = 32 << 20


@dataclass(frozen=True)
class Transforms:
    """The three transforms of F(m x m, 3 x 3) as matrices on flattened tiles."""

    m: int
    input: np.ndarray       # (t², t²): kron(Bᵀ, Bᵀ), vec(d) -> vec(Bᵀ d B)
    kernel: np.ndarray      # (t², 9): kron(G, G), vec(g) -> vec(G g Gᵀ)
    output: np.ndarray      # (m², t²): kron(Aᵀ, Aᵀ), vec(M) -> vec(Aᵀ M A)

    @property
    def t(self) -> int:
        return self.m + 2


def transforms(m: int, dtype) -> Transforms:
    """The transforms of F(m x m, 3 x 3), m = 2 or 4, in ``dtype``."""
    bt, g, at = (np.array(a, np.float64) for a in _MATRICES[m])
    return Transforms(m, np.kron(bt, bt).astype(dtype), np.kron(g, g).astype(dtype),
                      np.kron(at, at).astype(dtype))


def transform_kernels(weight: np.ndarray, tr: Transforms, out: np.ndarray) -> np.ndarray:
    """Uᵀ = (G g Gᵀ)ᵀ of every kernel of ``weight`` (Cout, C, 3, 3), into ``out``
    (t², Cout, C): the left operands of the products ``M[ξ] = Uᵀ[ξ] @ V[ξ]``."""
    cout, c = weight.shape[:2]
    gemm(tr.kernel, weight.reshape(cout * c, 9).T, out=out.reshape(-1, cout * c))
    return out


def kernel_gradient(du: np.ndarray, tr: Transforms) -> np.ndarray:
    """dW (Cout, C, 3, 3) from dUᵀ (t², Cout, C): ``Gᵀ dU G`` per kernel."""
    t2, cout, c = du.shape
    return (tr.kernel.T @ du.reshape(t2, cout * c)).T.reshape(cout, c, 3, 3)


@dataclass(frozen=True)
class Tiling:
    """How an output of ``ho`` x ``wo`` pixels is covered by m x m blocks: ``th`` x
    ``tw`` of them per image, reading a padded input of ``rows`` x ``cols``."""

    m: int
    ho: int
    wo: int
    th: int
    tw: int

    @property
    def rows(self) -> int:
        return self.th * self.m + 2

    @property
    def cols(self) -> int:
        return self.tw * self.m + 2

    def tiles(self, images: int) -> int:
        return images * self.th * self.tw

    def block_offsets(self):
        """(a, b, rows, cols) for each position (a, b) within an m x m block: the
        output pixels (a + m*ty, b + m*tx) that exist, ty < rows, tx < cols (the last
        blocks of a row or column may overhang the output)."""
        m = self.m
        for a in range(m):
            for b in range(m):
                yield a, b, -(-(self.ho - a) // m), -(-(self.wo - b) // m)


def tiling(ho: int, wo: int, m: int) -> Tiling:
    return Tiling(m, ho, wo, -(-ho // m), -(-wo // m))


def _tile_view(x_pad: np.ndarray, tl: Tiling) -> np.ndarray:
    """(t, t, n, th, tw, C) view of the overlapping input tiles of padded NHWC ``x_pad``."""
    s_n, s_h, s_w, s_c = x_pad.strides
    n, c = x_pad.shape[0], x_pad.shape[3]
    t = tl.m + 2
    return as_strided(x_pad, (t, t, n, tl.th, tl.tw, c),
                      (s_h, s_w, s_n, s_h * tl.m, s_w * tl.m, s_c), writeable=False)


@accounted("im2col")
def gather_tiles(x_pad: np.ndarray, tl: Tiling, out: np.ndarray) -> np.ndarray:
    """The input tiles of padded NHWC ``x_pad`` (n, rows, cols, C) into ``out``
    (t², n*th*tw, C)."""
    view = _tile_view(x_pad, tl)
    np.copyto(out.reshape(view.shape), view)
    return out


@accounted("im2col")
def scatter_tiles(tiles: np.ndarray, tl: Tiling, out: np.ndarray) -> np.ndarray:
    """Add tiles (t², n*th*tw, C) onto padded NHWC ``out`` (n, rows, cols, C), which
    must start zeroed: ``gather_tiles``' adjoint (tiles overlap by two pixels)."""
    n, c, m, t = out.shape[0], out.shape[3], tl.m, tl.m + 2
    parts = tiles.reshape(t, t, n, tl.th, tl.tw, c)
    for i in range(t):
        for j in range(t):
            out[:, i:i + m * (tl.th - 1) + 1:m, j:j + m * (tl.tw - 1) + 1:m] += parts[i, j]
    return out


# Blocks and NCHW planes are exchanged a few channels at a time, so that the 16
# strided copies (one per position within a block) revisit the same ~512 KB of the
# NCHW side while it is in cache instead of streaming a whole chunk's output through
# it 16 times. One thread, float32, blocks_to_nchw on two Xeon hosts (2 MB L2 a core):
# 16 x 256 x 15 x 15 2.07 -> 1.32 and 2.82 -> 1.79 ms, 24 x 64 x 31 x 31 2.84 -> 1.44
# and 3.55 -> 1.97 ms, 64 x 256 x 7 x 7 2.10 -> 1.78 and 2.97 -> 2.43 ms.
PLANES_BYTES = 512 << 10


def _channel_slices(nchw: np.ndarray) -> list[slice]:
    """Near-equal slices of the channels of ``nchw`` (n, k, h, w), each of about
    ``PLANES_BYTES`` at most (one channel at least)."""
    return slices(nchw.shape[1], -(-nchw.nbytes // PLANES_BYTES))


def blocks_to_nchw(y: np.ndarray, tl: Tiling, out: np.ndarray,
                   bias: np.ndarray | None = None) -> np.ndarray:
    """Output blocks (m², Cout, n*th*tw) into NCHW ``out`` (n, Cout, ho, wo), adding
    ``bias`` per channel: one strided copy per position within a block, the blocks'
    overhang past the output left out."""
    n, k = out.shape[:2]
    blocks = y.reshape(tl.m, tl.m, k, n, tl.th, tl.tw)
    for ch in _channel_slices(out):
        for a, b, rows, cols in tl.block_offsets():
            src = blocks[a, b, ch, :, :rows, :cols].transpose(1, 0, 2, 3)
            dst = out[:, ch, a::tl.m, b::tl.m]
            if bias is None:
                np.copyto(dst, src)
            else:
                np.add(src, bias[ch].reshape(1, -1, 1, 1), out=dst)
    return out


def nchw_to_blocks(dy: np.ndarray, tl: Tiling, out: np.ndarray) -> np.ndarray:
    """NCHW ``dy`` (n, Cout, ho, wo) as output blocks ``out`` (m², Cout, n*th*tw):
    ``blocks_to_nchw``' adjoint, zero where a block overhangs the output."""
    n, k = dy.shape[:2]
    blocks = out.reshape(tl.m, tl.m, k, n, tl.th, tl.tw)
    for ch in _channel_slices(dy):
        for a, b, rows, cols in tl.block_offsets():
            part = blocks[a, b, ch]
            part[:, :, rows:].fill(0)
            part[:, :, :rows, cols:].fill(0)
            np.copyto(part[:, :, :rows, :cols], dy[:, ch, a::tl.m, b::tl.m].transpose(1, 0, 2, 3))
    return out


class WinogradConvolution:
    """A 3x3, stride-1, undilated, ungrouped convolution of one geometry by F(m, 3).

    ``forward``/``backward`` take and give NCHW arrays as ``layers.conv.Convolution``
    does, and work through the batch in chunks of images that each worker takes
    whole (as the im2col path does): a chunk's tiles are gathered, transformed,
    multiplied and written back while they are in its cache. The backward gathers
    the input tiles again rather than keeping the forward's (they would go through
    main memory twice), and adds each run of chunks' kernel gradients in a fixed
    order, so the bits do not depend on the threads.
    """

    def __init__(self, n: int, c: int, h: int, w: int, cout: int, pad: tuple[int, int],
                 m: int, dtype, workspace):
        self.n, self.c, self.h, self.w, self.cout = n, c, h, w, cout
        self.ph, self.pw = pad
        self.ho, self.wo = h + 2 * self.ph - 2, w + 2 * self.pw - 2
        self.tr = transforms(m, dtype)
        self.tl = tiling(self.ho, self.wo, m)
        self.dtype = np.dtype(dtype)
        self.ws = workspace
        per_image = self.tr.t ** 2 * self.tl.th * self.tl.tw * max(c, cout) * self.dtype.itemsize
        self.step = max(1, min(n, CHUNK_BYTES // per_image))

    def _chunks(self, n: int) -> list[int]:
        count = -(-n // self.step)
        count = min(n, count + count % 2)        # even: two workers get equal shares
        return [n * i // count for i in range(count + 1)]

    def _transformed_tiles(self, x_pad: np.ndarray, a: int, m: int, worker: int) -> np.ndarray:
        """V (t², tiles, C) of images a..a+m of padded NHWC ``x_pad``."""
        t2, p = self.tr.t ** 2, self.tl.tiles(m)
        d = gather_tiles(x_pad[a:a + m], self.tl,
                         self.ws.get(f"wino_d{worker}", (t2, p, self.c), x_pad.dtype))
        v = self.ws.get(f"wino_v{worker}", (t2, p, self.c), x_pad.dtype)
        gemm(self.tr.input, d.reshape(t2, -1), out=v.reshape(t2, -1))
        return v

    def forward(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                out: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        t2, m2, tl = self.tr.t ** 2, self.tr.m ** 2, self.tl
        # The border (padding, and the last tiles' overhang) is zero from the start
        # and never written.
        self.x_pad = x_pad = pad_to_nhwc(x, self.ph, self.pw, self.ws.get(
            "wino_xp", (n, tl.rows, tl.cols, self.c), x.dtype, zero=True))
        self.ut = ut = transform_kernels(
            weight, self.tr, self.ws.get("wino_u", (t2, self.cout, self.c), x.dtype))
        chunks = self._chunks(n)

        def chunk(i: int, worker: int) -> None:
            a, m = chunks[i], chunks[i + 1] - chunks[i]
            p = tl.tiles(m)
            v = self._transformed_tiles(x_pad, a, m, worker)
            prod = self.ws.get(f"wino_m{worker}", (t2, self.cout, p), x.dtype)
            gemm(ut, v.transpose(0, 2, 1), out=prod)
            y = self.ws.get(f"wino_y{worker}", (m2, self.cout, p), x.dtype)
            gemm(self.tr.output, prod.reshape(t2, -1), out=y.reshape(m2, -1))
            blocks_to_nchw(y, tl, out[a:a + m], bias)
        over_items(len(chunks) - 1, chunk, self._macs(n), min_elements=MIN_SPLIT_MACS)
        return out

    def _macs(self, n: int) -> int:
        return self.tl.tiles(n) * self.tr.t ** 2 * self.c * self.cout

    def backward(self, dy: np.ndarray, dweight: np.ndarray, dx: np.ndarray | None) -> None:
        """Add the kernel gradient to ``dweight``; write the input gradient into ``dx``
        (unless None). Uses the input and kernels of the last forward."""
        n = dy.shape[0]
        t2, m2, tl = self.tr.t ** 2, self.tr.m ** 2, self.tl
        x_pad, ut = self.x_pad, self.ut
        chunks = self._chunks(n)
        count = len(chunks) - 1
        # Runs of chunks, each summing its kernel gradient in a buffer of its own: as
        # many as the buffers' budget allows, an even number for two workers.
        du_bytes = ut.nbytes
        runs = max(1, min(count, KERNEL_PARTS_BYTES // du_bytes))
        runs = min(count, runs + runs % 2)
        bounds = [count * r // runs for r in range(runs + 1)]
        du_parts = self.ws.get("wino_du", (runs,) + ut.shape, dy.dtype)

        def run(r: int, worker: int) -> None:
            for i in range(bounds[r], bounds[r + 1]):
                first = i == bounds[r]
                du = du_parts[r] if first else self.ws.get(f"wino_du{worker}", ut.shape,
                                                           dy.dtype)
                chunk(i, du, worker)
                if not first:
                    du_parts[r] += du

        def chunk(i: int, du: np.ndarray, worker: int) -> None:
            a, m = chunks[i], chunks[i + 1] - chunks[i]
            p = tl.tiles(m)
            v = self._transformed_tiles(x_pad, a, m, worker)
            dyb = nchw_to_blocks(dy[a:a + m], tl,
                                 self.ws.get(f"wino_dy{worker}", (m2, self.cout, p), dy.dtype))
            dm = self.ws.get(f"wino_dm{worker}", (t2, self.cout, p), dy.dtype)
            gemm(self.tr.output.T, dyb.reshape(m2, -1), out=dm.reshape(t2, -1))
            gemm(dm, v, out=du)
            if dx is None:
                return
            dv = self.ws.get(f"wino_dv{worker}", (t2, p, self.c), dy.dtype)
            gemm(dm.transpose(0, 2, 1), ut, out=dv)
            dd = self.ws.get(f"wino_dd{worker}", (t2, p, self.c), dy.dtype)
            gemm(self.tr.input.T, dv.reshape(t2, -1), out=dd.reshape(t2, -1))
            dxp = self.ws.get(f"wino_dxp{worker}", (m, tl.rows, tl.cols, self.c), dy.dtype)
            dxp.fill(0)
            scatter_tiles(dd, tl, dxp)
            np.copyto(dx[a:a + m], dxp[:, self.ph:self.ph + self.h, self.pw:self.pw + self.w]
                      .transpose(0, 3, 1, 2))
        over_items(runs, run, 3 * self._macs(n), min_elements=MIN_SPLIT_MACS)
        dweight += kernel_gradient(du_parts.sum(axis=0), self.tr)


def winograd_applies(kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, group: int,
                     ph: int, pw: int) -> bool:
    """Whether F(m, 3) computes this convolution: 3x3, stride 1, no dilation, one
    group, and a pad of at most 2 (the tiles' overlap)."""
    return ((kh, kw, sh, sw, dh, dw, group) == (3, 3, 1, 1, 1, 1, 1)
            and 0 <= ph <= 2 and 0 <= pw <= 2)


# Below this many input or output channels the transforms cost more than the
# multiplies they save (the GEMMs' depth is C, not 9C as im2col's). Measured on 2
# threads (fwd + bwd, AMD EPYC Zen 2, bench/RESULTS.md): 16 -> 16 channels at
# 32x32 0.85x im2col's speed, 32 -> 32 at 16x16 1.0x, 24 -> 64 at 31x31 1.16x,
# 64 -> 64 at 15x15 1.2x, 256 -> 256 at 7x7 1.47x, 64 -> 256 at 15x15 1.47x.
MIN_CHANNELS = 24


def winograd_pays(c: int, cout: int) -> bool:
    """Whether a qualifying layer of ``c`` -> ``cout`` channels runs faster by Winograd."""
    return min(c, cout) >= MIN_CHANNELS


def best_tile(ho: int, wo: int) -> int:
    """m = 4 where the output has room for 4x4 blocks, else 2: fewer products per
    output pixel, counting the blocks' overhang past the output's edge."""
    def products(m: int) -> float:
        return (m + 2) ** 2 * math.ceil(ho / m) * math.ceil(wo / m)
    return min((4, 2), key=products)
