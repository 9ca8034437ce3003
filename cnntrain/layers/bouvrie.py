"""Two layers from J. Bouvrie, "Notes on Convolutional Neural Networks" (2006) that no
framework ships: Subsampling with a trainable gain and bias per map (LeNet-5's
S-layers), and MapCombination, which learns which input maps each output map combines.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cnntrain.engine.conv_plan import winograd_tile
from cnntrain.engine.parallel import channel_sums
from cnntrain.layers.activation import sigmoid
from cnntrain.layers.base import Layer, SetupError, Shape, register
from cnntrain.layers.conv import conv_plan
from cnntrain.layers.geometry import check_kernel_fits, pair, window_geometry
from cnntrain.layers.loss import softmax


def _four_d(shape: Shape) -> None:
    if len(shape) != 4:
        raise SetupError(f"needs a 4-D bottom (N, C, H, W), got shape {tuple(shape)}", "bottom")


@register("Subsampling")
class Subsampling(Layer):
    """``y_j = f(beta_j down(x_j) + b_j)``, per map j; down() sums (or averages, with
    ``method: MEAN``) each non-overlapping kh x kw block, and f is NONE, SIGMOID or TANH.

    Backward, as in the notes: with ``delta = dy f'(u)``,
    ``d beta_j = sum(delta_j down(x_j))``, ``d b_j = sum(delta_j)`` and
    ``dx_j = beta_j up(delta_j)``, up() being the Kronecker product with a block of
    ones. The input's height and width must be multiples of the kernel: a partial
    block at the border would be summed over fewer pixels than the others, and the
    notes define down() on whole blocks only, so such a size is a config error.
    """

    param_blocks = ("subsampling_param",)

    def setup(self, bottom_shapes):
        (shape,) = bottom_shapes
        _four_d(shape)
        p = self.param("subsampling_param")
        n, c, h, w = shape
        self.kh, self.kw = pair(p, "subsampling_param", "kernel", None)
        if h % self.kh or w % self.kw:
            raise SetupError(f"the input is {h}x{w}, not a multiple of the kernel "
                             f"{self.kh}x{self.kw}: down() sums whole blocks; pick a kernel "
                             "that divides the input, or crop/pad before this layer",
                             "subsampling_param.kernel_size")
        self.ho, self.wo = h // self.kh, w // self.kw
        self.mean = p.method == "MEAN"
        self.activation = p.activation
        area = self.kh * self.kw
        self.blobs = [self.make_param((c,), p.scale_filler, 0, area, 1)]
        if p.bias_term:
            self.blobs.append(self.make_param((c,), p.bias_filler, 1, area, 1))
        return [(n, c, self.ho, self.wo)]

    def _per_map(self, param_index: int) -> np.ndarray:
        return self.blobs[param_index].data.reshape(1, -1, 1, 1)

    def forward(self, bottom):
        xp = self.xp
        (x,) = bottom
        n, c, h, w = x.shape
        down = x.reshape(n, c, self.ho, self.kh, self.wo, self.kw).sum(axis=(3, 5))
        if self.mean:
            down *= down.dtype.type(1.0 / (self.kh * self.kw))
        self.down, self.x_shape = down, x.shape
        u = self._per_map(0) * down
        if len(self.blobs) > 1:
            u += self._per_map(1)
        if self.activation == "SIGMOID":
            self.y = sigmoid(u)
        elif self.activation == "TANH":
            self.y = xp.tanh(u)
        else:
            self.y = u
        return [self.y]

    def backward(self, top_diff, propagate_down):
        xp = self.xp
        (dy,) = top_diff
        if self.activation == "SIGMOID":
            delta = dy * self.y * (1 - self.y)
        elif self.activation == "TANH":
            delta = dy * (1 - self.y * self.y)
        else:
            delta = dy
        self.blobs[0].diff += (delta * self.down).sum(axis=(0, 2, 3))
        if len(self.blobs) > 1:
            self.blobs[1].diff += delta.sum(axis=(0, 2, 3))
        if not propagate_down[0]:
            return [None]
        g = delta * self._per_map(0)
        if self.mean:
            g *= g.dtype.type(1.0 / (self.kh * self.kw))
        n, c = g.shape[:2]
        up = xp.broadcast_to(g[:, :, :, None, :, None],
                             (n, c, self.ho, self.kh, self.wo, self.kw))
        return [up.reshape(self.x_shape)]


@register("MapCombination")
class MapCombination(Layer):
    """Output map j = ``sum_i alpha_ij (x_i * k_ij) + b_j`` with ``alpha_.j =
    softmax_i(c_.j)``: each output map learns a convex combination of its input maps,
    each convolved with its own kernel (Bouvrie's notes, section 5).

    Parameters: 0 the kernels k (num_output, C, kh, kw), 1 the free weights c
    (C, num_output), 2 the biases (num_output) if ``bias_term``. All pairs are one
    convolution with the effective weights ``W_ji = alpha_ij k_ij``, run on a
    Convolution's plan (``engine.conv_plan``), and its weight gradient dW is mapped back by
    the chain rule: ``dk_ji = alpha_ij dW_ji``, ``d alpha_ij = sum(dW_ji k_ji)``, and
    ``dc_.j = alpha_.j (d alpha_.j - <alpha_.j, d alpha_.j>)``, the softmax Jacobian
    of the notes. The default kernel filler's fan-in is kh*kw: each k_ij convolves one
    map, and with constant c (uniform alpha) the output averages those convolutions.

    Sparsity (``sparsity`` = lambda > 0) needs a second top: a scalar penalty that
    enters the loss with weight 1 unless ``loss_weight`` says otherwise. The notes'
    penalty ``lambda sum_ij |alpha_ij|`` (``sparsity_type: L1``) is implemented as
    written, but under the softmax every alpha is positive and each column sums to 1,
    so it is the constant lambda * num_output and its gradient through the softmax is
    exactly zero: it cannot make anything sparse. ``sparsity_type: ENTROPY`` penalizes
    ``lambda sum_j H(alpha_.j) = -lambda sum_ij alpha_ij log alpha_ij`` instead, which
    is smallest when each output map draws on a single input map.
    """

    param_blocks = ("map_combination_param",)
    num_top = (1, 2)
    group = 1     # for tools.summary's MAC count, as Convolution

    def setup(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        (shape,) = bottom_shapes
        _four_d(shape)
        p = self.param("map_combination_param")
        if p.sparsity and len(self.spec.top) < 2:
            raise SetupError("sparsity needs a second top, the penalty that goes into the "
                             "loss (e.g. top: [out, sparsity])", "map_combination_param.sparsity")
        c, j = shape[1], p.num_output
        self.geometry = window_geometry(p, "map_combination_param", j)
        self.kh, self.kw, self.sh, self.sw, self.ph, self.pw = self.geometry[:6]
        self.reshape(bottom_shapes)
        area = self.kh * self.kw
        self.blobs = [self.make_param((j, c, self.kh, self.kw), p.weight_filler, 0, area,
                                      j * area),
                      self.make_param((c, j), p.combination_filler, 1, c, j)]
        if p.bias_term:
            self.blobs.append(self.make_param((j,), p.bias_filler, 2, area, j * area))
        self.lam, self.entropy = p.sparsity, p.sparsity_type == "ENTROPY"
        return [(shape[0], j, self.ho, self.wo)] + ([()] if len(self.spec.top) > 1 else [])

    def reshape(self, bottom_shapes: Sequence[Shape]) -> None:
        """The plan of the convolution with the effective weights, for this input shape
        (the engine a Convolution of this geometry would take by default)."""
        (shape,) = bottom_shapes
        _four_d(shape)
        n, c, h, w = shape
        self.ho, self.wo = check_kernel_fits(self.geometry, h, w, "map_combination_param")
        tile = winograd_tile(self.geometry, c, self.ho, self.wo, "DEFAULT")
        self.plan = conv_plan(self, self.geometry, shape, tile)

    def default_loss_weight(self, top_index: int) -> float:
        return 1.0 if top_index == 1 else 0.0   # the penalty counts unless told otherwise

    def _log_alpha(self) -> np.ndarray:
        xp = self.xp
        c = self.blobs[1].data
        shifted = c - c.max(axis=0, keepdims=True)
        return shifted - xp.log(xp.exp(shifted).sum(axis=0, keepdims=True))

    def forward(self, bottom):
        xp = self.xp
        (x,) = bottom
        self.x_shape = x.shape
        self.alpha = softmax(self.blobs[1].data, axis=0)
        kernels = self.blobs[0].data
        self.effective = self.buffer("effective", kernels.shape, kernels.dtype)
        xp.multiply(kernels, self.alpha.T[:, :, None, None], out=self.effective)
        bias = self.blobs[2].data if len(self.blobs) > 2 else None
        y = self.buffer("y", (x.shape[0],) + self.plan.out_shape, x.dtype)
        tops = [self.plan.forward(x, self.effective, bias, y)]
        if len(self.spec.top) > 1:
            tops.append(self.xp.asarray(self._penalty(), dtype=x.dtype))
        return tops

    def _penalty(self) -> float:
        xp = self.xp
        if self.entropy:
            return -self.lam * float((self.alpha * self._log_alpha()).sum())
        return self.lam * float(xp.abs(self.alpha).sum())

    def _penalty_grad(self) -> np.ndarray:
        """d penalty / d alpha."""
        xp = self.xp
        if self.entropy:
            return -self.lam * (self._log_alpha() + 1)
        return self.lam * xp.sign(self.alpha)

    def backward(self, top_diff, propagate_down):
        dy = top_diff[0]
        if len(self.blobs) > 2:
            self.blobs[2].diff += channel_sums(dy)
        dw = self.buffer("dw", self.effective.shape, dy.dtype)
        dw[...] = 0
        dx = self.buffer("dx", self.x_shape, dy.dtype) if propagate_down[0] else None
        self.plan.backward(dy, self.effective, dw, dx)
        kernels = self.blobs[0]
        kernels.diff += dw * self.alpha.T[:, :, None, None]
        dalpha = (dw * kernels.data).sum(axis=(2, 3)).T
        if len(top_diff) > 1 and self.lam:
            dalpha = dalpha + float(top_diff[1]) * self._penalty_grad()
        a = self.alpha
        self.blobs[1].diff += a * (dalpha - (a * dalpha).sum(axis=0, keepdims=True))
        return [dx]
