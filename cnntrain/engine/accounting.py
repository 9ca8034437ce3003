"""Opt-in accounting of the time spent in the engine's kernels (``cnntrain time``).

Off by default: a kernel then pays one global lookup per call (a few per layer), not a
clock read. Inside ``kernel_time()`` each GEMM and each im2col/col2im adds its elapsed
time to a total by kind, so a step's time can be split into GEMM, column copies and
the rest.
"""
from __future__ import annotations

import functools
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

from cnntrain.backend import array_module
from cnntrain.engine.parallel import split_matmul

KINDS = ("gemm", "im2col")
_totals: dict[str, float] | None = None
_thread: int | None = None


@contextmanager
def kernel_time() -> Iterator[dict[str, float]]:
    """Seconds spent per kernel kind while the block runs (the dict fills as it goes).

    Only calls on this thread count. A kernel the workers share (split inside it) is
    timed whole here; a pipeline that hands each worker whole chunks (Convolution) is
    timed by this thread's own chunks, which run side by side with the workers' for
    about as long: either way the totals are wall time, comparable to the step's."""
    global _totals, _thread
    outer = _totals, _thread
    _totals, _thread = dict.fromkeys(KINDS, 0.0), threading.get_ident()
    try:
        yield _totals
    finally:
        _totals, _thread = outer


def accounted(kind: str) -> Callable[[Callable], Callable]:
    """Decorator: count ``fn``'s time under ``kind`` while ``kernel_time`` is active."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if _totals is None or threading.get_ident() != _thread:
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
    one entry point of the layers' matrix products, so that their time can be accounted.
    On a device, one ``matmul`` of its own (cuBLAS on a GPU)."""
    xp = array_module(a, b)
    if xp is not np:
        return xp.matmul(a, b) if out is None else xp.matmul(a, b, out=out)
    if out is None:
        shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
        out = np.empty(shape, np.result_type(a, b))
    return split_matmul(a, b, out)
