"""Special functions NumPy lacks, vectorized: the normal CDF (through erfc)."""
from __future__ import annotations

import math

import numpy as np

# erfc(z) = t * exp(-z^2 + P(2t - 1)) with t = 1 / (1 + z/2), z >= 0: the form of
# Numerical Recipes' erfcc, whose P is smooth on the whole of t in [0, 1] (z in [0, inf)),
# so one polynomial covers every z. These coefficients (power basis in u = 2t - 1) are a
# degree-12 Chebyshev least-squares fit of P against math.erfc made for cnntrain; the
# relative error of erfc is below 6e-9 for z < 26 (measured on a grid of 10^5 points,
# beyond that erfc is subnormal in float64), ten times finer than float32's 6e-8.
_ERFC_POLY = (-0.6717940851517197, 0.6726431547745636, 0.04734341752091464,
              -0.04689364056042139, -0.009874534916251268, 0.008808825372214068,
              0.0017706661089404506, -0.002288765245454997, -0.00018278212144341957,
              0.0005737663790261477, -3.2113791366047436e-05, -8.728381276544074e-05,
              1.3371510074330507e-05)


def erfc_nonneg(z: np.ndarray) -> np.ndarray:
    """erfc(z) for z >= 0 in float64, with small *relative* error even far in the tail."""
    z = np.asarray(z, dtype=np.float64)
    t = 1.0 / (1.0 + 0.5 * z)
    u = 2.0 * t - 1.0
    acc = np.full_like(u, _ERFC_POLY[-1])
    for coef in _ERFC_POLY[-2::-1]:
        acc *= u
        acc += coef
    acc -= z * z
    return t * np.exp(acc)


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2 in float64. The lower tail is computed as
    erfc(|x|/sqrt 2) / 2 directly, so Phi(-8) keeps its relative precision."""
    x = np.asarray(x, dtype=np.float64)
    half_tail = 0.5 * erfc_nonneg(np.abs(x) * (1.0 / math.sqrt(2.0)))
    return np.where(x < 0, half_tail, 1.0 - half_tail)


def normal_pdf(x: np.ndarray) -> np.ndarray:
    """phi(x) = exp(-x^2 / 2) / sqrt(2 pi) in float64."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
