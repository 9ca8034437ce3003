"""Learning-rate policies, as pure functions of the iteration: Caffe's, plus cosine
and a linear warmup that combines with any of them."""
from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np


def learning_rate(s: Any, it: int) -> float:
    """The rate at iteration ``it`` for solver values ``s``: the policy's rate times
    the warmup factor."""
    return policy_rate(s, it) * warmup_factor(s, it)


def policy_rate(s: Any, it: int) -> float:
    """The rate ``s.lr_policy`` gives at iteration ``it`` (Caffe's formulas, and cosine).

    ``cosine``: ``min_lr + (base_lr − min_lr)·½·(1 + cos(π·it/max_iter))``, from
    ``base_lr`` at 0 down to ``min_lr`` at ``max_iter``, held there beyond it.
    ``piecewise``: ``base_lr`` times the factor interpolated linearly between the
    (``piecewise_iters``, ``piecewise_factors``) points: a warm-up then a linear decay
    (the one-cycle schedules of the fast CIFAR-10 recipes) is three points.
    """
    base, policy = s.base_lr, s.lr_policy
    if policy == "fixed":
        return base
    if policy == "step":
        return base * s.gamma ** (it // s.stepsize)
    if policy == "multistep":
        return base * s.gamma ** bisect.bisect_right(list(s.stepvalue), it)
    if policy == "exp":
        return base * s.gamma ** it
    if policy == "inv":
        return base * (1 + s.gamma * it) ** (-s.power)
    if policy == "poly":
        return base * max(0.0, 1 - it / s.max_iter) ** s.power
    if policy == "sigmoid":
        return base / (1 + math.exp(-s.gamma * (it - s.stepsize)))
    if policy == "piecewise":
        # np.interp holds the end values beyond the first and last iteration given.
        return base * float(np.interp(it, s.piecewise_iters, s.piecewise_factors))
    if policy == "cosine":
        progress = min(it, s.max_iter) / s.max_iter
        return s.min_lr + (base - s.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr_policy {policy}")


def warmup_factor(s: Any, it: int) -> float:
    """``f0 + (1 − f0)·(it + 1)/warmup_iter`` while ``it < warmup_iter``, else 1.

    ``f0`` is ``warmup_start_factor`` (default 0). Counting ``it + 1`` makes the first
    update move even with ``f0 = 0`` and gives the full rate at the last warmup
    iteration, so the ramp joins the policy without a jump.
    """
    if it >= s.warmup_iter:
        return 1.0
    start = s.warmup_start_factor
    return start + (1.0 - start) * (it + 1) / s.warmup_iter
