"""Weight initializers by Caffe name (constant, gaussian, uniform, xavier, msra)."""
from __future__ import annotations

from typing import Any

import numpy as np


def _fan(filler: Any, fan_in: int, fan_out: int) -> float:
    norm = filler["variance_norm"]
    if norm == "FAN_OUT":
        return fan_out
    if norm == "AVERAGE":
        return (fan_in + fan_out) / 2.0
    return fan_in


def fill(filler: Any, shape: tuple[int, ...], fan_in: int, fan_out: int,
         rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """A new array drawn as Caffe's filler of that type would.

    ``fan_in``/``fan_out`` follow Caffe: inputs (C*kh*kw) and outputs (Cout*kh*kw)
    of one unit. Draws happen in float64 and are then cast, so float32 and float64
    nets built from one seed start from the same values.
    """
    kind = filler["type"]
    if kind == "constant":
        data = np.full(shape, filler["value"])
    elif kind == "gaussian":
        data = rng.normal(filler["mean"], filler["std"], shape)
    elif kind == "uniform":
        data = rng.uniform(filler["min"], filler["max"], shape)
    elif kind == "xavier":
        scale = np.sqrt(3.0 / _fan(filler, fan_in, fan_out))
        data = rng.uniform(-scale, scale, shape)
    elif kind == "msra":
        data = rng.normal(0.0, np.sqrt(2.0 / _fan(filler, fan_in, fan_out)), shape)
    else:  # the schema admits only the names above
        raise ValueError(f"unknown filler {kind}")
    return np.ascontiguousarray(data, dtype=dtype)
