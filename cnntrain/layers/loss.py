"""Softmax, the losses, and Accuracy."""
from __future__ import annotations

import numpy as np

from cnntrain.errors import TrainingError
from cnntrain.layers.base import Layer, SetupError, register
from cnntrain.layers.inner_product import canonical_axis


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Numerically stable softmax: shift by the max so exp never overflows."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def _as_rows(x: np.ndarray, axis: int) -> np.ndarray:
    """(M, C) view/copy with the class axis last."""
    return np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])


def _check_label_shape(layer: Layer, scores: tuple, labels: tuple, axis: int) -> None:
    want = tuple(scores[:axis]) + tuple(scores[axis + 1:])
    if tuple(labels) != want and not (len(labels) == len(want) + 1 and labels[-1] == 1
                                      and tuple(labels[:-1]) == want):
        raise SetupError(f"label shape {tuple(labels)} does not fit scores {tuple(scores)} "
                         f"(expected {want})", "bottom")


def _labels(layer: Layer, label: np.ndarray, classes: int, ignore: int | None) -> np.ndarray:
    lab = label.reshape(-1).astype(np.int64)
    valid = lab != ignore if ignore is not None else np.ones(lab.shape, bool)
    bad = valid & ((lab < 0) | (lab >= classes))
    if bad.any():
        raise TrainingError(f"layer '{layer.name}': label {int(lab[bad][0])} is outside 0..{classes - 1}"
                            f" ({classes} classes): does num_output match the dataset's classes?")
    return lab


@register("Softmax")
class Softmax(Layer):
    param_blocks = ("softmax_param",)

    def setup(self, bottom_shapes):
        self.axis = canonical_axis(self.param("softmax_param").axis, len(bottom_shapes[0]),
                                   "softmax_param.axis")
        return [tuple(bottom_shapes[0])]

    def forward(self, bottom):
        self.y = softmax(bottom[0], self.axis)
        return [self.y]

    def backward(self, top_diff, propagate_down):
        if not propagate_down[0]:
            return [None]
        dy = top_diff[0]
        return [self.y * (dy - (dy * self.y).sum(axis=self.axis, keepdims=True))]


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(Layer):
    """Softmax + multinomial logistic loss in one step (stable: log-sum-exp)."""

    param_blocks = ("softmax_param", "loss_param")
    num_bottom = (2, 2)
    num_top = (1, 2)
    is_loss = True

    def setup(self, bottom_shapes):
        scores, labels = bottom_shapes
        self.axis = canonical_axis(self.param("softmax_param").axis, len(scores),
                                   "softmax_param.axis")
        _check_label_shape(self, scores, labels, self.axis)
        self.ignore = self.param("loss_param").ignore_label
        self.normalization = self.param("loss_param").normalization
        return [()] + ([tuple(scores)] if len(self.spec.top) > 1 else [])

    def forward(self, bottom):
        x, label = bottom
        rows = _as_rows(x, self.axis)
        shifted = rows - rows.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        logp = shifted - log_z
        lab = _labels(self, label, rows.shape[1], self.ignore)
        valid = lab != self.ignore if self.ignore is not None else np.ones(lab.shape, bool)
        picked = logp[np.arange(len(lab)), np.where(valid, lab, 0)]
        self.norm = self._normalizer(x, int(valid.sum()))
        self.prob, self.lab, self.valid, self.x_shape = np.exp(logp), lab, valid, x.shape
        loss = np.asarray(-(picked * valid).sum() / self.norm, dtype=x.dtype)
        tops = [loss]
        if len(self.spec.top) > 1:
            tops.append(np.moveaxis(self.prob.reshape(np.moveaxis(x, self.axis, -1).shape),
                                    -1, self.axis))
        return tops

    def _normalizer(self, x: np.ndarray, valid: int) -> float:
        outer = x.size // x.shape[self.axis]
        return {"VALID": max(valid, 1), "BATCH_SIZE": x.shape[0], "FULL": outer,
                "NONE": 1}[self.normalization]

    def backward(self, top_diff, propagate_down):
        if not propagate_down[0]:
            return [None, None]
        grad = self.prob.copy()
        grad[np.arange(len(self.lab)), np.where(self.valid, self.lab, 0)] -= 1
        grad *= (self.valid / self.norm * top_diff[0]).astype(grad.dtype)[:, None]
        moved = np.moveaxis(np.empty(self.x_shape, grad.dtype), self.axis, -1).shape
        return [np.moveaxis(grad.reshape(moved), -1, self.axis), None]


@register("EuclideanLoss")
class EuclideanLoss(Layer):
    """``sum((a - b)^2) / (2N)``, the squared-error loss of Bouvrie's notes."""

    num_bottom = (2, 2)
    is_loss = True

    def setup(self, bottom_shapes):
        a, b = bottom_shapes
        if int(np.prod(a)) != int(np.prod(b)) or a[0] != b[0]:
            raise SetupError(f"bottoms must have the same size, got {tuple(a)} and {tuple(b)}",
                             "bottom")
        return [()]

    def forward(self, bottom):
        a, b = bottom
        self.diff = a - b.reshape(a.shape)
        self.n, self.b_shape = a.shape[0], b.shape
        return [np.asarray((self.diff * self.diff).sum() / (2 * self.n), dtype=a.dtype)]

    def backward(self, top_diff, propagate_down):
        g = self.diff * (top_diff[0] / self.n)
        return [g if propagate_down[0] else None,
                -g.reshape(self.b_shape) if propagate_down[1] else None]


@register("Accuracy")
class Accuracy(Layer):
    """Top-k accuracy; an optional second top holds per-class accuracy (Caffe's layout)."""

    param_blocks = ("accuracy_param",)
    num_bottom = (2, 2)
    num_top = (1, 2)

    def setup(self, bottom_shapes):
        scores, labels = bottom_shapes
        p = self.param("accuracy_param")
        self.axis = canonical_axis(p.axis, len(scores), "accuracy_param.axis")
        _check_label_shape(self, scores, labels, self.axis)
        self.top_k, self.ignore = p.top_k, p.ignore_label
        self.classes = scores[self.axis]
        if self.top_k > self.classes:
            raise SetupError(f"top_k {self.top_k} exceeds the {self.classes} classes",
                             "accuracy_param.top_k")
        return [()] + ([(self.classes,)] if len(self.spec.top) > 1 else [])

    def forward(self, bottom):
        x, label = bottom
        rows = _as_rows(x, self.axis)
        lab = _labels(self, label, self.classes, self.ignore)
        valid = lab != self.ignore if self.ignore is not None else np.ones(lab.shape, bool)
        target = rows[np.arange(len(lab)), np.where(valid, lab, 0)]
        # Correct when fewer than k classes score strictly higher than the label (Caffe's rule).
        higher = (rows > target[:, None]).sum(axis=1)
        hit = (higher < self.top_k) & valid
        acc = np.asarray(hit.sum() / max(int(valid.sum()), 1), dtype=x.dtype)
        tops = [acc]
        if len(self.spec.top) > 1:
            per = np.zeros(self.classes, x.dtype)
            counts = np.bincount(lab[valid], minlength=self.classes)
            hits = np.bincount(lab[hit], minlength=self.classes)
            np.divide(hits, counts, out=per, where=counts > 0)
            tops.append(per)
        return tops

    def backward(self, top_diff, propagate_down):
        return [None, None]
