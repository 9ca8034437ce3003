"""Two layers from J. Bouvrie, "Notes on Convolutional Neural Networks" (2006) that no
framework ships: Subsampling with a trainable gain and bias per map (LeNet-5's
S-layers), and MapCombination, which learns which input maps each output map combines.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cnntrain.config import parse_layer
from cnntrain.layers.activation import sigmoid
from cnntrain.layers.base import Layer, SetupError, Shape, register
from cnntrain.layers.conv import Convolution
from cnntrain.layers.geometry import pair
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
            self.y = np.tanh(u)
        else:
            self.y = u
        return [self.y]

    def backward(self, top_diff, propagate_down):
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
        up = np.broadcast_to(g[:, :, :, None, :, None],
                             (n, c, self.ho, self.kh, self.wo, self.kw))
        return [up.reshape(self.x_shape)]


_GEOMETRY = ("kernel_size", "kernel_h", "kernel_w", "stride", "stride_h", "stride_w",
             "pad", "pad_h", "pad_w")


@register("MapCombination")
class MapCombination(Layer):
    """Output map j = ``sum_i alpha_ij (x_i * k_ij) + b_j`` with ``alpha_.j =
    softmax_i(c_.j)``: each output map learns a convex combination of its input maps,
    each convolved with its own kernel (Bouvrie's notes, section 5).

    Parameters: 0 the kernels k (num_output, C, kh, kw), 1 the free weights c
    (C, num_output), 2 the biases (num_output) if ``bias_term``. All pairs are one
    convolution with the effective weights ``W_ji = alpha_ij k_ij``: an internal
    Convolution (im2col + GEMM) runs it, and its weight gradient dW is mapped back by
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
        self.conv = self._inner_convolution(p, shape)
        self.kh, self.kw = self.conv.kh, self.conv.kw
        c, j = shape[1], p.num_output
        area = self.kh * self.kw
        self.blobs = [self.make_param((j, c, self.kh, self.kw), p.weight_filler, 0, area,
                                      j * area),
                      self.make_param((c, j), p.combination_filler, 1, c, j)]
        if p.bias_term:
            self.blobs.append(self.make_param((j,), p.bias_filler, 2, area, j * area))
            self.conv.blobs[1] = self.blobs[2]   # its bias gradient lands in ours
        self.lam, self.entropy = p.sparsity, p.sparsity_type == "ENTROPY"
        n, _, ho, wo = self.conv_top
        return [(n, j, ho, wo)] + ([()] if len(self.spec.top) > 1 else [])

    def _inner_convolution(self, p, shape: Shape) -> Convolution:
        """A private Convolution of the same geometry; its weights are overwritten with
        the effective weights before each forward, so its fillers draw nothing."""
        block = {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()
                 if k in _GEOMETRY and v is not None}
        block.update(num_output=p.num_output, bias_term=p.bias_term,
                     weight_filler={"type": "constant"})
        spec = parse_layer({"name": self.name, "type": "Convolution", "bottom": "x",
                            "top": "y", "convolution_param": block}, self.spec.where.file, 0)
        conv = Convolution(spec, self.phase, self.ctx)
        try:
            (self.conv_top,) = conv.setup([shape])
        except SetupError as err:
            field = err.field and err.field.replace("convolution_param", "map_combination_param")
            raise SetupError(str(err), field) from None
        return conv

    def default_loss_weight(self, top_index: int) -> float:
        return 1.0 if top_index == 1 else 0.0   # the penalty counts unless told otherwise

    def _log_alpha(self) -> np.ndarray:
        c = self.blobs[1].data
        shifted = c - c.max(axis=0, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=0, keepdims=True))

    def forward(self, bottom):
        (x,) = bottom
        self.alpha = softmax(self.blobs[1].data, axis=0)
        kernels = self.blobs[0].data
        self.conv.blobs[0].data[...] = kernels * self.alpha.T[:, :, None, None]
        tops = self.conv.forward([x])
        if len(self.spec.top) > 1:
            tops.append(np.asarray(self._penalty(), dtype=x.dtype))
        return tops

    def _penalty(self) -> float:
        if self.entropy:
            return -self.lam * float((self.alpha * self._log_alpha()).sum())
        return self.lam * float(np.abs(self.alpha).sum())

    def _penalty_grad(self) -> np.ndarray:
        """d penalty / d alpha."""
        if self.entropy:
            return -self.lam * (self._log_alpha() + 1)
        return self.lam * np.sign(self.alpha)

    def backward(self, top_diff, propagate_down):
        weights = self.conv.blobs[0]
        weights.diff[...] = 0
        (dx,) = self.conv.backward([top_diff[0]], propagate_down)
        dw = weights.diff
        kernels = self.blobs[0]
        kernels.diff += dw * self.alpha.T[:, :, None, None]
        dalpha = (dw * kernels.data).sum(axis=(2, 3)).T
        if len(top_diff) > 1 and self.lam:
            dalpha = dalpha + float(top_diff[1]) * self._penalty_grad()
        a = self.alpha
        self.blobs[1].diff += a * (dalpha - (a * dalpha).sum(axis=0, keepdims=True))
        return [dx]
