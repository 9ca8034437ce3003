"""The per-coordinate adaptive rules: Caffe's AdaGrad, RMSProp, AdaDelta and Adam.

``delta`` defaults to caffe.proto's 1e-8 for all of them. Caffe forbids momentum
with AdaGrad and RMSProp, so their configs may not set it.
"""
from __future__ import annotations

import math

from cnntrain.backend import array_module
from cnntrain.solvers.base import Solver


class AdaGrad(Solver):
    """AdaGrad (Duchi et al.), Caffe's ``AdaGrad``.

    ``h ← h + g²``; step ``lr·lr_mult·g / (√h + δ)``. State per parameter: ``[h]``.
    """

    type_name = "AdaGrad"
    buffers = ("sum_sq_grad",)
    uses = ("delta",)

    def compute_update(self, grad, bufs, local_rate):
        (h,) = bufs
        h += grad * grad
        return local_rate * grad / (array_module(grad).sqrt(h) + self.s.delta)


class RMSProp(Solver):
    """RMSProp (Tieleman & Hinton), Caffe's ``RMSProp``.

    ``h ← ρ·h + (1 − ρ)·g²`` with ρ = ``rms_decay`` (default 0.99, caffe.proto);
    step ``lr·lr_mult·g / (√h + δ)``. State per parameter: ``[h]``.
    """

    type_name = "RMSProp"
    buffers = ("mean_sq_grad",)
    uses = ("rms_decay", "delta")

    def compute_update(self, grad, bufs, local_rate):
        (h,) = bufs
        decay = self.s.rms_decay
        h *= decay
        h += (1.0 - decay) * (grad * grad)
        return local_rate * grad / (array_module(grad).sqrt(h) + self.s.delta)


class AdaDelta(Solver):
    """AdaDelta (Zeiler), Caffe's ``AdaDelta``.

    With ρ = ``momentum`` (default 0.95, the value of Caffe's AdaDelta example)::

        E[g²] ← ρ·E[g²] + (1 − ρ)·g²
        s     ← g·√((E[Δ²] + δ) / (E[g²] + δ))
        E[Δ²] ← ρ·E[Δ²] + (1 − ρ)·s²
        step  = lr·lr_mult·s

    As in Caffe, the learning rate scales the step after ``E[Δ²]`` has been updated
    (Zeiler's paper has no rate: use ``base_lr: 1``). State per parameter:
    ``[E[g²], E[Δ²]]``.
    """

    type_name = "AdaDelta"
    buffers = ("mean_sq_grad", "mean_sq_update")
    uses = ("momentum", "delta")
    default_momentum = 0.95

    def compute_update(self, grad, bufs, local_rate):
        sq_grad, sq_update = bufs
        rho, delta = self.s.momentum, self.s.delta
        sq_grad *= rho
        sq_grad += (1.0 - rho) * (grad * grad)
        step = grad * array_module(grad).sqrt((sq_update + delta) / (sq_grad + delta))
        sq_update *= rho
        sq_update += (1.0 - rho) * (step * step)
        step *= local_rate
        return step


class Adam(Solver):
    """Adam (Kingma & Ba), Caffe's ``Adam``.

    With β1 = ``momentum`` (default 0.9, the value of Caffe's Adam example),
    β2 = ``momentum2`` (default 0.999) and ε = ``delta`` (default 1e-8)::

        m ← β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g²
        step = lr·lr_mult·√(1 − β2ᵗ)/(1 − β1ᵗ) · m / (√v + ε),   t = iter + 1

    The bias correction goes through the rate, as in Caffe (and the paper's final
    form), so ε is added to the uncorrected √v. Decoupled weight decay (AdamW) uses
    the uncorrected ``lr·lr_mult``. State per parameter: ``[m, v]``.
    """

    type_name = "Adam"
    buffers = ("mean_grad", "mean_sq_grad")
    uses = ("momentum", "momentum2", "delta")
    default_momentum = 0.9

    def compute_update(self, grad, bufs, local_rate):
        m, v = bufs
        beta1, beta2 = self.s.momentum, self.s.momentum2
        t = self.iter + 1
        correction = math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
        m *= beta1
        m += (1.0 - beta1) * grad
        v *= beta2
        v += (1.0 - beta2) * (grad * grad)
        return (local_rate * correction) * m / (array_module(grad).sqrt(v) + self.s.delta)
