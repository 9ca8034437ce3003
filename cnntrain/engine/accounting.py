"""Opt-in accounting of the time spent in the engine's kernels (``cnntrain time``).

Off by default: a kernel then pays one global lookup per call (a few per layer), not a
clock read. Inside ``kernel_time()`` each GEMM and each im2col/col2im adds its elapsed
time to a total by kind, so a step's time can be split into GEMM, column copies and
the rest.
"""
from __future__ import annotations

import functools
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

from cnntrain.engine.parallel import split_matmul

KINDS = ("gemm", "im2col")
_totals: dict[str, float] | None = None


@contextmanager
def kernel_time() -> Iterator[dict[str, float]]:
    """Seconds spent per kernel kind while the block runs (the dict fills as it goes)."""
    global _totals
    outer, _totals = _totals, dict.fromkeys(KINDS, 0.0)
    try:
        yield _totals
    finally:
        _totals = outer


def accounted(kind: str) -> Callable[[Callable], Callable]:
    """Decorator: count ``fn``'s time under ``kind`` while ``kernel_time`` is active."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if _totals is None:
                return fn(*args, **kwargs)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _totals[kind] += time.perf_counter() - start
        return timed
    return wrap


@accounted("gemm")
def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul`` (stacks of matrices included), split over cnntrain's workers: the
    one entry point of the layers' matrix products, so that their time can be accounted."""
    if out is None:
        shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
        out = np.empty(shape, np.result_type(a, b))
    return split_matmul(a, b, out)
