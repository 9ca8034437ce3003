"""The update loop every rule shares: Caffe's ``SGDSolver::ApplyUpdate``."""
from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import numpy as np

from cnntrain.backend import array_module
from cnntrain.blob import Param
from cnntrain.solvers.lr_policy import learning_rate


class Solver:
    """Turns each parameter's gradient (its ``diff``) into a step, the way Caffe does.

    One :meth:`apply_update`, over the parameters with ``lr_mult > 0``:

    1. clip: if ``clip_gradients > 0`` and the L2 norm of all their diffs taken
       together exceeds it, every diff is scaled by ``clip_gradients / norm``;
    2. for each parameter: normalize (``diff /= iter_size``), regularize (coupled
       weight decay: ``diff += λ·decay_mult·w`` for L2, ``·sign(w)`` for L1), then
       ``w -= compute_update(...)``, the rule's own step;
    3. ``iter += 1``.

    Clipping comes first, on the raw accumulated diffs and before weight decay,
    because that is Caffe's order: a ``clip_gradients`` copied from a Caffe solver
    then means the same threshold here.

    With ``weight_decay_mode: decoupled`` (AdamW, Loshchilov & Hutter) step 2 skips
    the regularizer and instead shrinks the weights beside the rule's step:
    ``w ← w − lr·lr_mult·λ·decay_mult·w − update``, both from the same old ``w``.

    Subclasses set ``type_name`` (Caffe's name), ``buffers`` (the names of the state
    arrays each parameter gets, all shaped like it and zero at the start), ``uses``
    (the solver fields the rule reads beyond the shared ones; the config validator
    rejects the others), ``default_momentum``, and implement :meth:`compute_update`.
    Frozen parameters (``lr_mult == 0``, or past their ``freeze_iter``) are skipped
    entirely: their buffers stay as they are and their diffs count in no clipping norm.

    With ``lookahead_interval`` k > 0 (Zhang et al., "Lookahead Optimizer: k steps
    forward, 1 step back"), every parameter and running statistic also keeps slow
    weights φ, starting as the weights. After every k-th update
    ``φ ← d·φ + (1 − d)·w`` and then ``w ← φ``, with ``d = lookahead_decay``, ramped
    as ``d·(iter/max_iter)^p`` by ``lookahead_decay_power`` p; at ``max_iter`` the
    weights become the slow weights. The fast weights explore, the slow ones average
    them: the tested net is an average of recent weights (airbench's "lookahead/EMA").
    """

    type_name: ClassVar[str]
    buffers: ClassVar[tuple[str, ...]]
    uses: ClassVar[tuple[str, ...]] = ()
    default_momentum: ClassVar[float] = 0.0

    def __init__(self, values: Any, params: Sequence[Param]):
        self.s = values
        self.params = list(params)
        self.lookahead = values.lookahead_interval
        #: This solver's buffers per parameter: the rule's, then the slow weights.
        self.state_names = self.buffers + (("slow",) if self.lookahead else ())
        self.history = [[array_module(p.data).zeros_like(p.data) for _ in self.state_names]
                        for p in self.params]
        self.iter = 0

    def rate(self) -> float:
        """The learning rate of the coming update (the lr policy at ``iter``)."""
        return learning_rate(self.s, self.iter)

    def apply_update(self, iter_size: int = 1) -> float:
        """Update every parameter from its ``diff``, advance ``iter``; return the rate used.

        ``iter_size`` is the number of forward/backward passes whose gradients were
        summed into the diffs. The diffs are consumed: afterwards they hold the
        clipped, normalized, regularized gradient.
        """
        lr = self.rate()
        if self.lookahead and self.iter == 0:
            self._start_slow_weights()
        live = [(p, bufs) for p, bufs in zip(self.params, self.history)
                if p.learns_at(self.iter)]
        self._clip(live)
        decoupled = self.s.weight_decay_mode == "decoupled"
        for p, bufs in live:
            if iter_size > 1:
                p.diff *= 1.0 / iter_size
            local_rate = lr * p.lr_mult
            local_decay = self.s.weight_decay * p.decay_mult
            if local_decay and not decoupled:
                self._regularize(p, local_decay)
            update = self.compute_update(p.diff, bufs[:len(self.buffers)], local_rate)
            if local_decay and decoupled:
                p.data *= 1.0 - local_rate * local_decay
            p.data -= update
        self.iter += 1
        if self.lookahead:
            self._lookahead_sync()
        return lr

    def _start_slow_weights(self) -> None:
        for p, bufs in zip(self.params, self.history):
            bufs[-1][...] = p.data

    def _lookahead_sync(self) -> None:
        """Every ``lookahead_interval`` updates: slow weights toward the weights, then
        the weights to the slow ones; at ``max_iter``, the weights to the slow ones."""
        s = self.s
        last = self.iter >= s.max_iter
        if self.iter % self.lookahead and not last:
            return
        if self.iter % self.lookahead == 0:
            decay = s.lookahead_decay * (min(self.iter, s.max_iter) / s.max_iter) \
                ** s.lookahead_decay_power
            for p, bufs in zip(self.params, self.history):
                # slow + (1 - d)(w - slow), torch's lerp: exactly slow where w == slow
                # (a frozen parameter stays put, bit for bit).
                slow = bufs[-1]
                slow += (1.0 - decay) * (p.data - slow)
        for p, bufs in zip(self.params, self.history):
            p.data[...] = bufs[-1]

    def compute_update(self, grad: np.ndarray, bufs: list[np.ndarray],
                       local_rate: float) -> np.ndarray:
        """The rule: the step to subtract from ``w``, given the prepared gradient,
        this parameter's buffers (updated in place) and ``lr·lr_mult``."""
        raise NotImplementedError

    def _clip(self, live: list[tuple[Param, list[np.ndarray]]]) -> None:
        clip = self.s.clip_gradients
        if clip <= 0 or not live:
            return
        norm = math.sqrt(sum(float(array_module(p.diff).vdot(p.diff, p.diff)) for p, _ in live))
        if norm > clip:
            scale = clip / norm
            for p, _ in live:
                p.diff *= scale

    def _regularize(self, p: Param, local_decay: float) -> None:
        if self.s.regularization_type == "L1":
            p.diff += local_decay * array_module(p.data).sign(p.data)
        else:
            p.diff += local_decay * p.data

    def state(self) -> list[list[np.ndarray]]:
        """For each parameter, in ``params`` order, its buffers in ``state_names`` order:
        what a snapshot must keep to resume exactly. These are the live arrays."""
        return self.history

    def load_state(self, history: Sequence[Sequence[np.ndarray]], iteration: int) -> None:
        """Restore what :meth:`state` returned (host arrays, copied in, onto the device
        the parameters are on) and the iteration count."""
        if len(history) != len(self.history):
            raise ValueError(f"solver state has {len(history)} parameters, "
                             f"the net has {len(self.history)}")
        for i, (bufs, saved) in enumerate(zip(self.history, history)):
            if len(saved) != len(bufs):
                raise ValueError(f"parameter {i}: {self.type_name} keeps {len(bufs)} buffer(s) "
                                 f"({', '.join(self.state_names)}), got {len(saved)}")
            for buf, value in zip(bufs, saved):
                if np.shape(value) != buf.shape:
                    raise ValueError(f"parameter {i}: solver buffer has shape "
                                     f"{np.shape(value)}, expected {buf.shape}")
                buf[...] = array_module(buf).asarray(value)
        self.iter = iteration
