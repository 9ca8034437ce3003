"""Stochastic gradient descent with momentum, Caffe's update rule."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cnntrain.blob import Param
from cnntrain.solvers.lr_policy import learning_rate


class SGD:
    """``v ← μ v + lr·lr_mult·(∇ + λ·decay_mult·w)``; ``w ← w − v``.

    The solver sees parameter blobs only, never layers. ``history`` holds one
    momentum buffer per parameter, in the order the net lists them; it is what a
    snapshot must keep to resume exactly.
    """

    type_name = "SGD"

    def __init__(self, values: Any, params: Sequence[Param]):
        self.s = values
        self.params = list(params)
        self.history = [np.zeros_like(p.data) for p in self.params]
        self.iter = 0

    def rate(self) -> float:
        return learning_rate(self.s, self.iter)

    def apply_update(self) -> float:
        """Update every parameter from its ``diff`` and advance the iteration."""
        lr = self.rate()
        momentum, decay = self.s.momentum, self.s.weight_decay
        for p, v in zip(self.params, self.history):
            if p.lr_mult == 0:
                continue
            grad = p.diff
            if decay and p.decay_mult:
                grad = grad + p.data.dtype.type(decay * p.decay_mult) * p.data
            v *= p.data.dtype.type(momentum)
            v += p.data.dtype.type(lr * p.lr_mult) * grad
            p.data -= v
        self.iter += 1
        return lr

    def state(self) -> list[np.ndarray]:
        return self.history

    def load_state(self, history: Sequence[np.ndarray], iteration: int) -> None:
        for buf, saved in zip(self.history, history):
            buf[...] = saved
        self.iter = iteration
