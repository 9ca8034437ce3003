"""Caffe's learning-rate policies, as pure functions of the iteration."""
from __future__ import annotations

import bisect
import math
from typing import Any


def learning_rate(s: Any, it: int) -> float:
    """The rate at iteration ``it`` for solver values ``s`` (Caffe's formulas)."""
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
    raise ValueError(f"unknown lr_policy {policy}")
