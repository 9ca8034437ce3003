"""Weight initializers by Caffe name (constant, gaussian, uniform, xavier, msra), Dirac
identity filters, and the data-dependent whitening filler."""
from __future__ import annotations

from typing import Any

import numpy as np

# Fillers whose values come from the training data: a layer draws a stand-in at setup
# (so a net builds without data), and the trainer fills them from the data
# (``Net.init_from_data``) before the first iteration.
DATA_FILLERS = ("whitening",)


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
    nets built from one seed start from the same values. A data filler draws
    xavier's values as its stand-in.
    """
    kind = filler["type"]
    if kind == "constant":
        data = np.full(shape, filler["value"])
    elif kind == "gaussian":
        data = rng.normal(filler["mean"], filler["std"], shape)
    elif kind == "uniform":
        data = rng.uniform(filler["min"], filler["max"], shape)
    elif kind in ("xavier",) + DATA_FILLERS:
        scale = np.sqrt(3.0 / _fan(filler, fan_in, fan_out))
        data = rng.uniform(-scale, scale, shape)
    elif kind == "msra":
        data = rng.normal(0.0, np.sqrt(2.0 / _fan(filler, fan_in, fan_out)), shape)
    else:  # the schema admits only the names above
        raise ValueError(f"unknown filler {kind}")
    if filler.get("dirac"):
        dirac(data)
    return np.ascontiguousarray(data, dtype=dtype)


def dirac(weights: np.ndarray) -> None:
    """Make filter i (i < min(Cout, C)) of convolution ``weights`` (Cout, C, kh, kw) the
    identity on channel i, in place: a 1 at the kernel's centre tap, 0 elsewhere. A
    layer so filled starts by passing its first channels on unchanged, which lets a
    deep plain net train like a residual one (airbench's Dirac initialization)."""
    if weights.ndim != 4:
        raise ValueError("dirac fills convolution weights (Cout, C, kh, kw)")
    n = min(weights.shape[0], weights.shape[1])
    weights[:n] = 0
    idx = np.arange(n)
    weights[idx, idx, weights.shape[2] // 2, weights.shape[3] // 2] = 1


def whitening_filters(second_moment: np.ndarray, shape: tuple[int, ...], eps: float
                      ) -> np.ndarray:
    """Filters (Cout, C, kh, kw) that whiten patches whose second-moment matrix
    E[p pᵀ] (K x K, K = C*kh*kw, patches flattened in (c, i, j) order) is given.

    Each filter is an eigenvector v of that matrix divided by sqrt(λ + eps), largest
    eigenvalue first, so the convolution's outputs are decorrelated with unit variance
    (``eps`` keeps the tiny eigenvalues of near-constant directions from blowing up).
    With Cout = 2K the filters are followed by their negatives, so a one-sided
    activation after them loses nothing (airbench's patch whitening)."""
    cout = shape[0]
    k = int(np.prod(shape[1:]))
    values, vectors = np.linalg.eigh(second_moment)
    order = np.argsort(values)[::-1]
    filters = (vectors[:, order] / np.sqrt(values[order] + eps)).T.reshape((k,) + shape[1:])
    if cout == 2 * k:
        filters = np.concatenate([filters, -filters])
    return filters
