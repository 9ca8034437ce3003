"""Softmax, the losses, and Accuracy."""
from __future__ import annotations

import math

import numpy as np

from cnntrain.backend import array_module
from cnntrain.errors import TrainingError
from cnntrain.layers.activation import sigmoid
from cnntrain.layers.base import Layer, SetupError, register
from cnntrain.layers.inner_product import canonical_axis


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Numerically stable softmax: shift by the max so exp never overflows."""
    e = array_module(x).exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def _as_rows(x: np.ndarray, axis: int) -> np.ndarray:
    """(M, C) view/copy with the class axis last."""
    return array_module(x).moveaxis(x, axis, -1).reshape(-1, x.shape[axis])


def _check_label_shape(layer: Layer, scores: tuple, labels: tuple, axis: int) -> bool:
    """Raise unless ``labels`` fit ``scores``; True when they are mixed targets, i.e. a
    trailing axis of 3 holding (label_a, label_b, lam) per position (mixup, CutMix:
    see data/augment.py)."""
    want = tuple(scores[:axis]) + tuple(scores[axis + 1:])
    if tuple(labels) == want + (3,):
        return True
    if tuple(labels) != want and not (len(labels) == len(want) + 1 and labels[-1] == 1
                                      and tuple(labels[:-1]) == want):
        raise SetupError(f"label shape {tuple(labels)} does not fit scores {tuple(scores)} "
                         f"(expected {want}, or {want + (3,)} for mixed targets)", "bottom")
    return False


def _mixed(layer: Layer, label: np.ndarray, classes: int, ignore: int | None):
    """Mixed targets (..., 3) as (label_a, label_b, lam, valid) per position; a
    position is valid when neither of its labels is ignored."""
    pairs = label.reshape(-1, 3)
    a = _labels(layer, pairs[:, 0], classes, ignore)
    b = _labels(layer, pairs[:, 1], classes, ignore)
    return a, b, pairs[:, 2].astype(np.float64), _valid(a, ignore) & _valid(b, ignore)


def _valid(lab: np.ndarray, ignore: int | None) -> np.ndarray:
    return lab != ignore if ignore is not None else array_module(lab).ones(lab.shape, bool)


def _labels(layer: Layer, label: np.ndarray, classes: int, ignore: int | None) -> np.ndarray:
    lab = label.reshape(-1).astype(np.int64)
    valid = _valid(lab, ignore)
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


def loss_normalizer(mode: str, outer: int, inner: int, valid: int) -> float:
    """Caffe's divisor of a summed loss: FULL (every position), VALID (those not
    ignored), BATCH_SIZE (the outer count) or NONE; at least 1, so a batch whose labels
    are all ignored gives 0 rather than NaN."""
    value = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(value))


def loss_options(layer: Layer, default_normalization: str,
                 smoothing: bool = False) -> tuple[int | None, str, float]:
    """(ignore_label, normalization, label_smoothing) of a layer's ``loss_param``; the
    normalization default differs by layer in Caffe, hence the argument."""
    p = layer.param("loss_param")
    if p.label_smoothing and not smoothing:
        raise SetupError(f"{layer.type_name} has no label smoothing (SoftmaxWithLoss has)",
                         "loss_param.label_smoothing")
    return p.ignore_label, p.normalization or default_normalization, p.label_smoothing


class _SoftmaxCrossEntropy(Layer):
    """Softmax over ``axis``, then cross-entropy against a target row per position:
    ``loss = -sum_k T[n, k] log p[n, k] / normalizer`` with ``T[n] = targets(label_n)``,
    and ``d loss / d x[n] = p[n] * sum_k T[n, k] - T[n]`` (times 1/normalizer).
    Log-probabilities come from log-sum-exp, so huge scores are no problem; an
    optional second top holds the probabilities (and, unlike in Caffe, passes its
    gradient back). Subclasses give the targets."""

    num_bottom = (2, 2)
    num_top = (1, 2)
    is_loss = True
    takes_class_labels = True
    axis_field = "softmax_param.axis"
    log_floor: float | None = None     # clip log p from below (InfogainLoss, as Caffe)

    def setup(self, bottom_shapes):
        scores, labels = bottom_shapes[:2]
        block, field = self.axis_field.split(".")
        self.axis = canonical_axis(self.param(block).axis, len(scores), self.axis_field)
        self.mixed = _check_label_shape(self, scores, labels, self.axis)
        self.classes = scores[self.axis]
        self.outer = math.prod(scores[:self.axis])
        self.inner = math.prod(scores[self.axis + 1:])
        return [()] + ([tuple(scores)] if len(self.spec.top) > 1 else [])

    def targets(self, lab: np.ndarray, bottom) -> np.ndarray:
        """(M, K) target rows for labels ``lab`` (ignored positions hold label 0)."""
        raise NotImplementedError

    def forward(self, bottom):
        xp = self.xp
        x, label = bottom[:2]
        rows = _as_rows(x, self.axis)
        shifted = rows - rows.max(axis=1, keepdims=True)
        logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        if self.mixed:
            # lam * T(a) + (1 - lam) * T(b): the loss is linear in the target, so this is
            # exactly lam * CE(a) + (1 - lam) * CE(b), and the gradient p - T still holds.
            a, b, lam, valid = _mixed(self, label, rows.shape[1], self.ignore)
            lam = lam[:, None]
            target = (lam * self.targets(xp.where(valid, a, 0), bottom)
                      + (1 - lam) * self.targets(xp.where(valid, b, 0), bottom))
            target = target.astype(x.dtype, copy=False)
        else:
            lab = _labels(self, label, rows.shape[1], self.ignore)
            valid = _valid(lab, self.ignore)
            target = self.targets(xp.where(valid, lab, 0), bottom).astype(x.dtype, copy=False)
        target *= valid[:, None]
        self.norm = loss_normalizer(self.normalization, self.outer, self.inner,
                                    int(valid.sum()))
        self.prob, self.target, self.x_shape = xp.exp(logp), target, x.shape
        if self.log_floor is not None:
            logp = xp.maximum(logp, self.log_floor)
        loss = xp.asarray(-(target * logp).sum() / self.norm, dtype=x.dtype)
        tops = [loss]
        if len(self.spec.top) > 1:
            tops.append(self._unrows(self.prob))
        return tops

    def _unrows(self, rows: np.ndarray) -> np.ndarray:
        shape = self.x_shape
        moved = shape[:self.axis] + shape[self.axis + 1:] + (shape[self.axis],)
        return self.xp.moveaxis(rows.reshape(moved), -1, self.axis)

    def backward(self, top_diff, propagate_down):
        nones = [None] * (len(propagate_down) - 1)
        if not propagate_down[0]:
            return [None] + nones
        grad = self.prob * self.target.sum(axis=1, keepdims=True) - self.target
        grad *= grad.dtype.type(float(top_diff[0]) / self.norm)
        if len(top_diff) > 1 and self.xp.any(top_diff[1]):
            # Caffe ignores the probabilities' gradient; it is the softmax's backward.
            dp = _as_rows(top_diff[1], self.axis)
            grad += self.prob * (dp - (dp * self.prob).sum(axis=1, keepdims=True))
        return [self._unrows(grad)] + nones


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(_SoftmaxCrossEntropy):
    """Softmax + multinomial logistic loss in one step (stable: log-sum-exp).

    ``loss_param.label_smoothing: eps`` replaces the one-hot target by
    ``(1 - eps) one-hot + eps/K`` (Szegedy et al. 2016, "Rethinking the Inception
    architecture"); the gradient is then ``p - target``.
    """

    param_blocks = ("softmax_param", "loss_param")

    def setup(self, bottom_shapes):
        self.ignore, self.normalization, self.smoothing = loss_options(self, "VALID", True)
        return super().setup(bottom_shapes)

    def targets(self, lab, bottom):
        k = self.classes
        rows = self.xp.full((len(lab), k), self.smoothing / k)
        rows[self.xp.arange(len(lab)), lab] += 1.0 - self.smoothing
        return rows


@register("InfogainLoss")
class InfogainLoss(_SoftmaxCrossEntropy):
    """Caffe's InfogainLoss: ``-sum_k H[l, k] log p_k`` per position, ``p`` the softmax
    of the scores over ``infogain_loss_param.axis`` (Caffe 1.0 applies the softmax
    inside the layer; before, it took probabilities). H (K x K) comes from
    ``infogain_loss_param.source`` (a .npy file) or a third bottom. As in Caffe, log p
    is clipped at log(1e-20) in the loss (the gradient is that of the unclipped loss),
    and H = identity gives SoftmaxWithLoss exactly."""

    param_blocks = ("infogain_loss_param", "loss_param")
    num_bottom = (2, 3)
    axis_field = "infogain_loss_param.axis"
    log_floor = math.log(1e-20)

    def setup(self, bottom_shapes):
        self.ignore, self.normalization, _ = loss_options(self, "VALID")
        tops = super().setup(bottom_shapes)
        k = self.classes
        source = self.param("infogain_loss_param").source
        if len(bottom_shapes) == 3:
            if source is not None:
                raise SetupError("give H either as the third bottom or as source, not both",
                                 "infogain_loss_param.source")
            if math.prod(bottom_shapes[2]) != k * k:
                raise SetupError(f"the third bottom (H) has shape {tuple(bottom_shapes[2])}: "
                                 f"it needs {k}x{k} values for {k} classes", "bottom")
            self.h = None
        elif source is None:
            raise SetupError("is required (a .npy file of the K x K matrix H), unless H is "
                             "the third bottom", "infogain_loss_param.source")
        else:
            self.h = self._load(source, k)
        return tops

    def _load(self, source: str, k: int) -> np.ndarray:
        field = "infogain_loss_param.source"
        if source.endswith(".binaryproto"):
            raise SetupError(f"'{source}' is a Caffe binaryproto; cnntrain reads H from a .npy "
                             "file (numpy.save)", field)
        from cnntrain.safe_npy import NpyError, read_npy

        try:
            h = read_npy(source, shape=(k, k))
        except NpyError as err:
            raise SetupError(f"cannot read '{source}' as H: {err} (the scores have {k} "
                             f"classes, so H must be {k}x{k})", field) from None
        if not np.all(np.isfinite(h)):
            raise SetupError(f"'{source}' holds values that are not finite", field)
        return self.device.to_device(h.astype(self.dtype))

    def targets(self, lab, bottom):
        h = self.h if self.h is not None else bottom[2].reshape(self.classes, self.classes)
        return h[lab]


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(Layer):
    """Cross-entropy of targets t in [0, 1] against sigmoid(x), element by element:
    ``max(x, 0) - x t + log(1 + exp(-|x|))`` (no overflow for any x); gradient
    ``sigmoid(x) - t``. As in Caffe, ``loss_param.normalization`` defaults to
    BATCH_SIZE here, and targets equal to ``ignore_label`` count for nothing (compared
    exactly, where Caffe truncates the target to an integer first)."""

    param_blocks = ("loss_param",)
    num_bottom = (2, 2)
    is_loss = True

    def setup(self, bottom_shapes):
        scores, targets = bottom_shapes
        if math.prod(scores) != math.prod(targets) or scores[0] != targets[0]:
            raise SetupError(f"scores {tuple(scores)} and targets {tuple(targets)} must have "
                             "the same number of values", "bottom")
        self.ignore, self.normalization, _ = loss_options(self, "BATCH_SIZE")
        self.outer, self.inner = scores[0], math.prod(scores[1:])
        return [()]

    def forward(self, bottom):
        x, t = bottom
        t = t.reshape(x.shape)
        valid = _valid(t, self.ignore)
        self.norm = loss_normalizer(self.normalization, self.outer, self.inner,
                                    int(valid.sum()))
        xp = self.xp
        per = xp.maximum(x, 0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))
        self.grad = (sigmoid(x) - t) * valid
        self.t_shape = bottom[1].shape
        return [xp.asarray((per * valid).sum() / self.norm, dtype=x.dtype)]

    def backward(self, top_diff, propagate_down):
        if not propagate_down[0]:
            return [None, None]
        return [self.grad * self.grad.dtype.type(float(top_diff[0]) / self.norm), None]


@register("HingeLoss")
class HingeLoss(Layer):
    """One-vs-all hinge loss, as Caffe: per image and class k, ``max(0, 1 - t_k x_k)``
    with t_k = +1 for the true class and -1 otherwise; L1 sums these, L2 their squares;
    divided by the batch size. Scores are (N, ...) with everything after N the classes."""

    param_blocks = ("hinge_loss_param",)
    num_bottom = (2, 2)
    is_loss = True
    takes_class_labels = True

    def setup(self, bottom_shapes):
        scores, labels = bottom_shapes
        self.axis = 1
        self.n, self.classes = scores[0], math.prod(scores[1:])
        if math.prod(labels) != self.n:
            raise SetupError(f"needs one label per image: scores {tuple(scores)}, labels "
                             f"{tuple(labels)}", "bottom")
        self.l2 = self.param("hinge_loss_param").norm == "L2"
        return [()]

    def forward(self, bottom):
        x, label = bottom
        rows = x.reshape(self.n, -1)
        lab = _labels(self, label, self.classes, None)
        xp = self.xp
        sign = xp.ones_like(rows)
        sign[xp.arange(self.n), lab] = -1
        margin = xp.maximum(0, 1 + sign * rows)
        self.x_shape = x.shape
        if self.l2:
            self.dloss = 2 * sign * margin
            loss = (margin * margin).sum()
        else:
            self.dloss = sign * (margin > 0)
            loss = margin.sum()
        return [xp.asarray(loss / self.n, dtype=x.dtype)]

    def backward(self, top_diff, propagate_down):
        if not propagate_down[0]:
            return [None, None]
        scale = self.dloss.dtype.type(float(top_diff[0]) / self.n)
        return [(self.dloss * scale).reshape(self.x_shape), None]


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
        return [self.xp.asarray((self.diff * self.diff).sum() / (2 * self.n), dtype=a.dtype)]

    def backward(self, top_diff, propagate_down):
        g = self.diff * (float(top_diff[0]) / self.n)
        return [g if propagate_down[0] else None,
                -g.reshape(self.b_shape) if propagate_down[1] else None]


def _per_class(hits, counts, dtype):
    """Per-class accuracy: hits over counts, 0 for a class with no (valid) labels."""
    xp = array_module(hits, counts)
    return (hits / xp.maximum(counts, 1e-300)).astype(dtype)


def label_rank(rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """How many classes score strictly higher than each row's label; a row is a top-k
    hit when this is below k (Caffe's rule, so ties count in the label's favour).

    A row with a NaN or an infinity anywhere ranks last (see :func:`scored_rows`): NaN
    compares false with everything and +inf ties with +inf, so by the plain rule an
    overflowed net would have no class above its labels and score 100 %.
    """
    xp = array_module(rows)
    target = rows[xp.arange(len(labels)), labels]
    higher = (rows > target[:, None]).sum(axis=1)
    return xp.where(scored_rows(rows), higher, rows.shape[1])


def scored_rows(rows: np.ndarray) -> np.ndarray:
    """Which rows of (N, classes) scores make a prediction at all: those whose scores are
    all finite. Any other row is a miss wherever accuracy is counted."""
    return array_module(rows).isfinite(rows).all(axis=1)


@register("Accuracy")
class Accuracy(Layer):
    """Top-k accuracy; an optional second top holds per-class accuracy (Caffe's layout)."""

    param_blocks = ("accuracy_param",)
    num_bottom = (2, 2)
    num_top = (1, 2)
    takes_class_labels = True

    def setup(self, bottom_shapes):
        scores, labels = bottom_shapes
        p = self.param("accuracy_param")
        self.axis = canonical_axis(p.axis, len(scores), "accuracy_param.axis")
        self.mixed = _check_label_shape(self, scores, labels, self.axis)
        self.top_k, self.ignore = p.top_k, p.ignore_label
        self.classes = scores[self.axis]
        if self.top_k > self.classes:
            raise SetupError(f"top_k {self.top_k} exceeds the {self.classes} classes",
                             "accuracy_param.top_k")
        return [()] + ([(self.classes,)] if len(self.spec.top) > 1 else [])

    def forward(self, bottom):
        x, label = bottom
        rows = _as_rows(x, self.axis)
        if self.mixed:
            return self._mixed_forward(x, rows, label)
        xp = self.xp
        lab = _labels(self, label, self.classes, self.ignore)
        valid = _valid(lab, self.ignore)
        hit = (label_rank(rows, xp.where(valid, lab, 0)) < self.top_k) & valid
        acc = xp.asarray(hit.sum() / max(int(valid.sum()), 1), dtype=x.dtype)
        tops = [acc]
        if len(self.spec.top) > 1:
            counts = xp.bincount(lab[valid], minlength=self.classes)
            hits = xp.bincount(lab[hit], minlength=self.classes)
            tops.append(_per_class(hits, counts, x.dtype))
        return tops

    def _mixed_forward(self, x, rows, label):
        """Accuracy against mixed targets: a hit on label_a counts lam, one on label_b
        counts 1 - lam (so an unmixed image, lam = 1, counts as usual)."""
        xp = self.xp
        a, b, lam, valid = _mixed(self, label, self.classes, self.ignore)
        hit_a = (label_rank(rows, xp.where(valid, a, 0)) < self.top_k) & valid
        hit_b = (label_rank(rows, xp.where(valid, b, 0)) < self.top_k) & valid
        score = lam * hit_a + (1 - lam) * hit_b
        tops = [xp.asarray(score.sum() / max(int(valid.sum()), 1), dtype=x.dtype)]
        if len(self.spec.top) > 1:
            k = self.classes
            counts = (xp.bincount(a[valid], lam[valid], k)
                      + xp.bincount(b[valid], (1 - lam)[valid], k))
            hits = xp.bincount(a[hit_a], lam[hit_a], k) + xp.bincount(b[hit_b], (1 - lam)[hit_b], k)
            tops.append(_per_class(hits, counts, x.dtype))
        return tops

    def backward(self, top_diff, propagate_down):
        return [None, None]
