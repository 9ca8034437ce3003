"""Convolution as im2col + one GEMM per cache-sized chunk of the batch."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cnntrain.engine import Workspace, batch_chunk, col2im, conv_out_size, im2col, pad_to_cnhw
from cnntrain.layers.base import Layer, SetupError, Shape, register
from cnntrain.layers.geometry import pair


@register("Convolution")
class Convolution(Layer):
    """Caffe's Convolution: weights (Cout, C/group, kh, kw), optional bias (Cout,).

    Forward: ``y = W @ im2col(x) + b``. Backward: ``dW = dy @ colᵀ`` and
    ``dx = col2im(Wᵀ @ dy)``; col2im of ``Wᵀ dy`` is exactly the "full convolution
    with the kernel rotated by 180°" of the textbook derivation. Columns are rebuilt
    chunk by chunk in the backward rather than kept from the forward: the chunk stays
    in cache, and memory does not grow with depth × batch.
    """

    param_blocks = ("convolution_param",)

    def setup(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        (shape,) = bottom_shapes
        if len(shape) != 4:
            raise SetupError(f"needs a 4-D bottom (N, C, H, W), got shape {shape}", "bottom")
        p = self.param("convolution_param")
        n, c, h, w = shape
        self.kh, self.kw = pair(p, "convolution_param", "kernel", None)
        self.sh, self.sw = pair(p, "convolution_param", "stride", 1)
        self.ph, self.pw = pair(p, "convolution_param", "pad", 0)
        self.group, self.cout = p.group, p.num_output
        if c % self.group or self.cout % self.group:
            raise SetupError(f"group {self.group} must divide the input channels ({c}) and "
                             f"num_output ({self.cout})", "convolution_param.group")
        if h + 2 * self.ph < self.kh or w + 2 * self.pw < self.kw:
            raise SetupError(f"kernel {self.kh}x{self.kw} is larger than the padded input "
                             f"{h + 2 * self.ph}x{w + 2 * self.pw}", "convolution_param.kernel_size")
        self.ho = conv_out_size(h, self.kh, self.sh, self.ph)
        self.wo = conv_out_size(w, self.kw, self.sw, self.pw)
        cin_g = c // self.group
        fan_in = cin_g * self.kh * self.kw
        fan_out = self.cout // self.group * self.kh * self.kw
        self.blobs = [self.make_param((self.cout, cin_g, self.kh, self.kw), p.weight_filler, 0,
                                      fan_in, fan_out)]
        if p.bias_term:
            self.blobs.append(self.make_param((self.cout,), p.bias_filler, 1, fan_in, fan_out))
        self.ws = Workspace()
        self.one_by_one = (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw) == (1, 1, 1, 1, 0, 0)
        return [(n, self.cout, self.ho, self.wo)]

    # The column rows of one group are contiguous: rows g*K .. (g+1)*K, K = C/g * kh * kw.
    def _group_slices(self, c: int):
        k = c // self.group * self.kh * self.kw
        co = self.cout // self.group
        return [(slice(g * k, (g + 1) * k), slice(g * co, (g + 1) * co)) for g in range(self.group)]

    def _columns(self, xp_chunk: np.ndarray, n: int) -> np.ndarray:
        if self.one_by_one:
            return xp_chunk.reshape(xp_chunk.shape[0], -1)
        c = xp_chunk.shape[0]
        col = self.ws.get("col", (c * self.kh * self.kw, n * self.ho * self.wo), xp_chunk.dtype)
        return im2col(xp_chunk, self.kh, self.kw, self.sh, self.sw, self.ho, self.wo, col)

    def _chunk(self, c: int, n: int) -> int:
        return batch_chunk(c * self.kh * self.kw * self.ho * self.wo, n,
                           itemsize=self.blobs[0].data.itemsize)

    def forward(self, bottom: Sequence[np.ndarray]) -> list[np.ndarray]:
        (x,) = bottom
        n, c, h, w = x.shape
        xp = self.ws.get("xp", (c, n, h + 2 * self.ph, w + 2 * self.pw), x.dtype, zero=True)
        pad_to_cnhw(x, self.ph, self.pw, xp)
        self.xp = xp
        weight = self.blobs[0].data.reshape(self.cout, -1)
        y = np.empty((n, self.cout, self.ho, self.wo), x.dtype)
        step = self._chunk(c, n)
        out = self.ws.get("out", (self.cout, step * self.ho * self.wo), x.dtype)
        groups = self._group_slices(c)
        for a in range(0, n, step):
            m = min(step, n - a)
            col = self._columns(xp[:, a:a + m], m)
            yb = out[:, :m * self.ho * self.wo]
            for rows, outs in groups:
                np.matmul(weight[outs], col[rows], out=yb[outs])
            y[a:a + m] = yb.reshape(self.cout, m, self.ho, self.wo).transpose(1, 0, 2, 3)
        if len(self.blobs) > 1:
            y += self.blobs[1].data.reshape(1, -1, 1, 1)
        return [y]

    def backward(self, top_diff, propagate_down):
        (dy,) = top_diff
        xp = self.xp
        c, n = xp.shape[:2]
        weight = self.blobs[0].data.reshape(self.cout, -1)
        dweight = self.blobs[0].diff.reshape(self.cout, -1)
        if len(self.blobs) > 1:
            self.blobs[1].diff += dy.sum(axis=(0, 2, 3))
        want_dx = propagate_down[0]
        h, w = xp.shape[2] - 2 * self.ph, xp.shape[3] - 2 * self.pw
        dx = np.empty((n, c, h, w), dy.dtype) if want_dx else None
        step = self._chunk(c, n)
        groups = self._group_slices(c)
        hw = self.ho * self.wo
        dyb_all = self.ws.get("dy", (self.cout, step * hw), dy.dtype)
        dw_tmp = self.ws.get("dw", dweight.shape, dy.dtype)
        for a in range(0, n, step):
            m = min(step, n - a)
            dyb = dyb_all[:, :m * hw]
            dyb.reshape(self.cout, m, self.ho, self.wo)[...] = dy[a:a + m].transpose(1, 0, 2, 3)
            col = self._columns(xp[:, a:a + m], m)
            for rows, outs in groups:
                np.matmul(dyb[outs], col[rows].T, out=dw_tmp[outs, :])
            dweight += dw_tmp
            if want_dx:
                self._input_grad(weight, dyb, groups, m, dx[a:a + m])
        return [dx]

    def _input_grad(self, weight, dyb, groups, m, dx_chunk) -> None:
        """dx for one chunk of the batch, written into ``dx_chunk``."""
        c, (h, w) = dx_chunk.shape[1], dx_chunk.shape[2:]
        if self.one_by_one:
            dxb = self.ws.get("dxb", (c, m * h * w), dyb.dtype)
            for rows, outs in groups:
                np.matmul(weight[outs].T, dyb[outs], out=dxb[rows])
        elif self.sh == self.sw == 1 and self.ph < self.kh and self.pw < self.kw:
            dxb = self._full_convolution(dyb, m, c, h, w)
        else:
            dxp = self.ws.get("dxp", (c, m, h + 2 * self.ph, w + 2 * self.pw), dyb.dtype)
            dcol = self.ws.get("dcol", (c * self.kh * self.kw, m * self.ho * self.wo), dyb.dtype)
            for rows, outs in groups:
                np.matmul(weight[outs].T, dyb[outs], out=dcol[rows])
            dxp[...] = 0
            col2im(dcol, self.kh, self.kw, self.sh, self.sw, self.ho, self.wo, dxp)
            dx_chunk[...] = dxp[:, :, self.ph:self.ph + h, self.pw:self.pw + w].transpose(1, 0, 2, 3)
            return
        dx_chunk[...] = dxb.reshape(c, m, h, w).transpose(1, 0, 2, 3)

    def _full_convolution(self, dyb, m, c, h, w) -> np.ndarray:
        """Stride 1: dx is the *full* convolution of dy with the kernel rotated by 180°
        (and input/output channels swapped): im2col of the padded dy, then one GEMM.
        One strided copy replaces col2im's kh*kw strided adds, which is faster."""
        qh, qw = self.kh - 1 - self.ph, self.kw - 1 - self.pw
        dyp = self.ws.get("dyp", (self.cout, m, self.ho + 2 * qh, self.wo + 2 * qw), dyb.dtype,
                          zero=True)
        pad_to_cnhw(dyb.reshape(self.cout, m, self.ho, self.wo).transpose(1, 0, 2, 3), qh, qw, dyp)
        col = self.ws.get("col", (self.cout * self.kh * self.kw, m * h * w), dyb.dtype)
        im2col(dyp, self.kh, self.kw, 1, 1, h, w, col)
        dxb = self.ws.get("dxb", (c, m * h * w), dyb.dtype)
        cg, cog = c // self.group, self.cout // self.group
        rotated = self.blobs[0].data[:, :, ::-1, ::-1]            # (Cout, C/g, kh, kw)
        k = cog * self.kh * self.kw
        for g in range(self.group):
            wr = rotated[g * cog:(g + 1) * cog].transpose(1, 0, 2, 3).reshape(cg, k)
            np.matmul(wr, col[g * k:(g + 1) * k], out=dxb[g * cg:(g + 1) * cg])
        return dxb
