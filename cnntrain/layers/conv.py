"""Convolution as im2col + one GEMM per cache-sized chunk of the batch."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cnntrain.engine import (batch_chunk, channel_major_to_nchw, col2im,
                             conv_out_size, gemm, im2col, nchw_to_channel_major, pad_to_nhwc)
from cnntrain.engine.parallel import channel_sums, copy_over_batch, fill_over_batch
from cnntrain.layers.base import Layer, SetupError, Shape, register
from cnntrain.layers.geometry import conv_geometry, nchw


@register("Convolution")
class Convolution(Layer):
    """Caffe's Convolution: weights (Cout, C/group, kh, kw), optional bias (Cout,);
    stride, padding, groups and dilation (kernel taps spread ``dilation`` pixels apart).

    Forward: ``y = im2col(x) @ W + b`` (columns in NHWC order, see ``engine.im2col``).
    Backward: ``dW = colᵀ @ dy`` and ``dx = col2im(dy @ Wᵀ)``; col2im of ``dy Wᵀ`` is
    exactly the "full convolution with the kernel rotated by 180°" of the textbook
    derivation, which stride-1 layers compute in that form when it is cheaper. Columns
    are rebuilt chunk by chunk in the backward rather than kept from the forward: the
    chunk stays in cache, and memory does not grow with depth × batch.
    """

    param_blocks = ("convolution_param",)

    def setup(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        n, c, h, w = nchw(bottom_shapes)
        p = self.param("convolution_param")
        (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw, self.group,
         self.cout) = conv_geometry(p, "convolution_param", c)
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
        fan_in = cin_g * self.kh * self.kw
        fan_out = self.cout // self.group * self.kh * self.kw
        self.blobs = [self.make_param((self.cout, cin_g, self.kh, self.kw), p.weight_filler, 0,
                                      fan_in, fan_out)]
        if p.bias_term:
            self.blobs.append(self.make_param((self.cout,), p.bias_filler, 1, fan_in, fan_out))
        self.one_by_one = (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw) == (1, 1, 1, 1, 0, 0)
        # A TRAIN net keeps the forward's columns for the weight gradient while its
        # budget lasts (a 1x1 convolution's columns are its input: nothing to keep).
        column_bytes = n * self.ho * self.wo * self.kh * self.kw * c * self.dtype.itemsize
        self.keep_columns = (self.phase == "TRAIN" and not (self.one_by_one and self.group == 1)
                             and self.ctx.columns.take(column_bytes))
        return [(n, self.cout, self.ho, self.wo)]

    # --- layouts -------------------------------------------------------------------
    # Caffe's weights are (Cout, C/G, kh, kw). The GEMMs want them per group with the
    # receptive field in the columns' (i, j, c) order: (G, Cout/G, kh*kw*C/G). Products
    # come out channel-major, (G, Cout/G, pixels), which turns into NCHW by moving whole
    # image planes (see ``engine.nchw_to_channel_major``).
    def _weight_matrix(self) -> np.ndarray:
        g, cog = self.group, self.cout // self.group
        w = self.blobs[0].data.reshape(g, cog, -1, self.kh, self.kw)
        return np.ascontiguousarray(w.transpose(0, 1, 3, 4, 2)).reshape(g, cog, -1)

    def _columns(self, xp: np.ndarray, a: int, m: int, built: bool = False) -> np.ndarray:
        """Columns (G, m*ho*wo, kh*kw*C/G) of images a..a+m of padded ``xp``. Kept
        columns live in one buffer for the whole batch; ``built``: the forward made them."""
        chunk = xp[a:a + m]
        if self.one_by_one and self.group == 1:
            return chunk.reshape(1, m * self.ho * self.wo, -1)   # already the columns
        hw, k = self.ho * self.wo, self.kh * self.kw * xp.shape[3] // self.group
        if self.keep_columns:
            col = self.ws.get("kept", (self.group, xp.shape[0] * hw, k), xp.dtype)[
                :, a * hw:(a + m) * hw]
            if built:
                return col
        else:
            col = self.ws.get("col", (self.group, m * hw, k), xp.dtype)
        return im2col(chunk, self.kh, self.kw, self.sh, self.sw, self.ho, self.wo, col,
                      self.dh, self.dw)

    def _chunk(self, c: int, n: int) -> int:
        return batch_chunk(c * self.kh * self.kw * self.ho * self.wo, n,
                           itemsize=self.blobs[0].data.itemsize)

    # --- forward / backward ----------------------------------------------------------
    def forward(self, bottom: Sequence[np.ndarray]) -> list[np.ndarray]:
        (x,) = bottom
        n, c, h, w = x.shape
        xp = self.ws.get("xp", (n, h + 2 * self.ph, w + 2 * self.pw, c), x.dtype, zero=True)
        self.xp = pad_to_nhwc(x, self.ph, self.pw, xp)
        self.wmat = self._weight_matrix()
        y = self.buffer("y", (n, self.cout, self.ho, self.wo), x.dtype)
        step = self._chunk(c, n)
        hw = self.ho * self.wo
        out = self.ws.get("out", (self.group, self.cout // self.group, step * hw), x.dtype)
        bias = self.blobs[1].data if len(self.blobs) > 1 else None
        for a in range(0, n, step):
            m = min(step, n - a)
            yb = out[:, :, :m * hw]
            gemm(self.wmat, self._columns(xp, a, m).transpose(0, 2, 1), out=yb)
            channel_major_to_nchw(yb, y[a:a + m], bias)
        return [y]

    def backward(self, top_diff, propagate_down):
        (dy,) = top_diff
        xp = self.xp
        n, hp, wp, c = xp.shape
        h, w = hp - 2 * self.ph, wp - 2 * self.pw
        if len(self.blobs) > 1:
            self.blobs[1].diff += channel_sums(dy)
        want_dx = propagate_down[0]
        dx = self.buffer("dx", (n, c, h, w), dy.dtype) if want_dx else None
        step = self._chunk(c, n)
        hw = self.ho * self.wo
        dyb_all = self.ws.get("dy", (self.group, self.cout // self.group, step * hw), dy.dtype)
        dw_sum = self.ws.get("dw_sum", self.wmat.shape, dy.dtype)
        dw_sum[...] = 0
        dw_tmp = self.ws.get("dw", self.wmat.shape, dy.dtype)
        for a in range(0, n, step):
            m = min(step, n - a)
            dyb = nchw_to_channel_major(dy[a:a + m], self.group, dyb_all[:, :, :m * hw])
            gemm(dyb, self._columns(xp, a, m, built=True), out=dw_tmp)
            dw_sum += dw_tmp
            if want_dx:
                self._input_grad(dyb, dy[a:a + m], dx[a:a + m])
        g, cog = self.group, self.cout // self.group
        self.blobs[0].diff.reshape(g, cog, -1, self.kh, self.kw)[...] += \
            dw_sum.reshape(g, cog, self.kh, self.kw, -1).transpose(0, 1, 4, 2, 3)
        return [dx]

    def _input_grad(self, dyb, dy_chunk, dx_chunk) -> None:
        """dx for one chunk of the batch into ``dx_chunk``, from its ``dy_chunk`` (NCHW)
        or the same as ``dyb`` (G, Cout/G, m*ho*wo)."""
        m, c, h, w = dx_chunk.shape
        if self.one_by_one:
            dxb = self.ws.get("dxb", (self.group, c // self.group, m * h * w), dyb.dtype)
            gemm(self.wmat.transpose(0, 2, 1), dyb, out=dxb)
        elif self._full_convolution_pays(c, h, w):
            dxb = self._full_convolution(dy_chunk, c, h, w)
        else:
            kg = self.wmat.shape[2]
            dxp = self.ws.get("dxp", (m, h + 2 * self.ph, w + 2 * self.pw, c), dyb.dtype)
            dcol = self.ws.get("dcol", (self.group, m * self.ho * self.wo, kg), dyb.dtype)
            gemm(dyb.transpose(0, 2, 1), self.wmat, out=dcol)
            fill_over_batch(dxp, 0)
            col2im(dcol, self.kh, self.kw, self.sh, self.sw, self.ho, self.wo, dxp,
                   self.dh, self.dw)
            copy_over_batch(dx_chunk, dxp[:, self.ph:self.ph + h, self.pw:self.pw + w, :]
                            .transpose(0, 3, 1, 2))
            return
        channel_major_to_nchw(dxb, dx_chunk)

    def _full_convolution_pays(self, c: int, h: int, w: int) -> bool:
        """Stride 1 allows the full-convolution form of dx. Its columns hold Cout*H*W
        values per kernel offset against C*Ho*Wo for col2im's, so it is chosen only when
        it copies and multiplies about as much (1.5 x at most): "same" convolutions, not
        a valid one that widens many channels (measured on LeNet's conv2, 20 -> 50)."""
        if self.sh != 1 or self.sw != 1 or self.ph >= self.span_h or self.pw >= self.span_w:
            return False
        return self.cout * h * w <= 1.5 * c * self.ho * self.wo

    def _full_convolution(self, dy_chunk, c: int, h: int, w: int) -> np.ndarray:
        """Stride 1: dx is the *full* convolution of dy with the kernel rotated by 180°
        (and input/output channels swapped): im2col of the padded dy, then one GEMM.
        One strided copy replaces col2im's kh*kw strided adds. A dilated kernel stays
        dilated: tap i of the rotated kernel reads dy i*dh pixels further on.
        Returns (G, C/G, m*h*w)."""
        m = dy_chunk.shape[0]
        g, cog, cg = self.group, self.cout // self.group, c // self.group
        qh, qw = self.span_h - 1 - self.ph, self.span_w - 1 - self.pw
        dyp = self.ws.get("dyp", (m, self.ho + 2 * qh, self.wo + 2 * qw, self.cout),
                          dy_chunk.dtype, zero=True)
        pad_to_nhwc(dy_chunk, qh, qw, dyp)
        col = self.ws.get("col", (g, m * h * w, self.kh * self.kw * cog), dy_chunk.dtype)
        im2col(dyp, self.kh, self.kw, 1, 1, h, w, col, self.dh, self.dw)
        # rotated[g, c, (i, j, o)] = W[g*cog + o, c, kh-1-i, kw-1-j]
        rotated = self.blobs[0].data.reshape(g, cog, cg, self.kh, self.kw)[:, :, :, ::-1, ::-1]
        rotated = np.ascontiguousarray(rotated.transpose(0, 2, 3, 4, 1)).reshape(g, cg, -1)
        dxb = self.ws.get("dxb", (g, cg, m * h * w), dy_chunk.dtype)
        return gemm(rotated, col.transpose(0, 2, 1), out=dxb)
