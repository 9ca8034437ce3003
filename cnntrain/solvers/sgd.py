"""The momentum rules: Caffe's SGD and Nesterov."""
from __future__ import annotations

from cnntrain.solvers.base import Solver


class SGD(Solver):
    """Stochastic gradient descent with momentum (Caffe's ``SGD``).

    ``v ← μ·v + lr·lr_mult·g``; ``w ← w − v``, where ``g`` is the prepared gradient
    (weight decay included when coupled). ``momentum`` (μ) defaults to 0, as in
    caffe.proto. State per parameter: ``[v]``.
    """

    type_name = "SGD"
    buffers = ("velocity",)
    uses = ("momentum",)

    def compute_update(self, grad, bufs, local_rate):
        (v,) = bufs
        v *= self.s.momentum
        v += local_rate * grad
        return v


class Nesterov(Solver):
    """Nesterov's accelerated gradient, in Caffe's form (``Nesterov``).

    ``v' ← μ·v + lr·lr_mult·g``; the step is ``(1 + μ)·v' − μ·v``: step back from the
    old look-ahead, then over-step along the new velocity. ``momentum`` defaults to 0
    (caffe.proto), which makes this plain SGD. State per parameter: ``[v]``.
    """

    type_name = "Nesterov"
    buffers = ("velocity",)
    uses = ("momentum",)

    def compute_update(self, grad, bufs, local_rate):
        (v,) = bufs
        momentum = self.s.momentum
        previous = v.copy()
        v *= momentum
        v += local_rate * grad
        return (1.0 + momentum) * v - momentum * previous
