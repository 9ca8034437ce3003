"""Parameter blobs: what layers and solvers share."""
from __future__ import annotations

import numpy as np

from cnntrain.backend import array_module


class Param:
    """A learnable array with its gradient and Caffe's per-parameter multipliers.

    Activations are plain arrays owned by the net; only parameters need this object,
    because the TRAIN and TEST nets and the solver all hold the same ones.
    """

    __slots__ = ("data", "diff", "lr_mult", "decay_mult", "name", "freeze_iter")

    def __init__(self, data: np.ndarray, lr_mult: float = 1.0, decay_mult: float = 1.0,
                 name: str = "", freeze_iter: int | None = None):
        self.data = data
        self.diff = array_module(data).zeros_like(data)
        self.lr_mult = lr_mult
        self.decay_mult = decay_mult
        self.name = name
        #: From this iteration on the solver leaves the parameter alone (None: never).
        self.freeze_iter = freeze_iter

    def learns_at(self, iteration: int) -> bool:
        """Whether the solver updates this parameter at ``iteration``."""
        return self.lr_mult > 0 and (self.freeze_iter is None or iteration < self.freeze_iter)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def astype(self, dtype) -> None:
        """Convert in place (used by gradient checks in float64)."""
        self.data = self.data.astype(dtype)
        self.diff = array_module(self.data).zeros_like(self.data)

    def __repr__(self) -> str:
        return f"Param({self.name}, shape={self.data.shape})"


def _always_zero(field: str) -> property:
    """A multiplier that reads 0 and refuses any other value."""

    def get(self) -> float:
        return 0.0

    def set(self, value: float) -> None:
        if value:
            raise ValueError(f"{self.name}: a running statistic cannot have {field} {value}")

    return property(get, set)


class Statistic(Param):
    """An array a layer *accumulates* rather than learns (BatchNorm's running mean and
    variance): kept with the parameters, so snapshots save it and the TEST net shares
    it by key, but its ``lr_mult`` and ``decay_mult`` are 0 for good. Solvers skip
    parameters with ``lr_mult == 0``, so no config can make one update it."""

    __slots__ = ()
    lr_mult = _always_zero("lr_mult")
    decay_mult = _always_zero("decay_mult")

    def __init__(self, data: np.ndarray, name: str = ""):
        super().__init__(data, lr_mult=0.0, decay_mult=0.0, name=name)
