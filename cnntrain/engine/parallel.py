"""cnntrain's own threads: GEMM rows, batch and channel slices, split over a few workers.

BLAS libraries thread a GEMM themselves, but on the skinny products of im2col
convolutions (tens of output channels, thousands of pixels) two single-threaded GEMMs
on halves of the rows are 1.3-2x faster on two cores than one GEMM on two BLAS threads,
and NumPy's copies, transposes and ufuncs are never threaded at all. NumPy releases the
GIL inside all of them, so the same work on disjoint slices in a few Python threads
really runs in parallel. The BLAS is then kept on one thread (see ``cnntrain/__init__``).

Only work that writes disjoint parts of its output goes through here (copies,
element-wise ops, GEMM rows, whole images, whole channels), so results do not depend on
the timing of the threads: a reduction is never split, it runs whole in one thread
(a channel's statistics in its worker, a sum over the batch in the caller).

How many workers: ``OMP_NUM_THREADS`` if set, else the cores this process may use.
When the BLAS runs threads of its own (``OPENBLAS_NUM_THREADS`` above 1, or NumPy
loaded before cnntrain could set it), cnntrain uses none: its threads would compete
with the BLAS workers.
"""
from __future__ import annotations

import contextvars
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable

import numpy as np

from cnntrain.backend import array_module

# Below this much work a handoff to another thread (about 20 µs) costs more than half
# the work saves: elements copied or passed through a ufunc, multiply-adds of a GEMM.
MIN_SPLIT_ELEMENTS = 1 << 16
MIN_SPLIT_MACS = 1 << 22
# Elements per chunk of a many-pass element-wise job (``over_chunks``): its
# temporaries (256 KB in float32, 512 KB in float64) then stay in a core's L2 cache, or
# near it, from one pass to the next. Each pass is a NumPy call that takes and drops the
# GIL, so chunks must not be too small either: at 16 K elements two workers fought over
# the GIL for ~2 µs passes and ran GELU slower than one (512 x 64 x 16 x 16 float32,
# tanh form: 49 ms on 2 workers, 35 on one); at 64 K, 27 and 29 ms (exact form: 113
# and 171 ms, was 166 and 186). 128 K was faster still on 2 workers, slower on one.
CACHE_CHUNK = 1 << 16

_pool: ThreadPoolExecutor | None = None
_workers: int | None = None


def worker_count() -> int:
    """How many threads split work (1: all of it runs in the caller)."""
    global _workers
    if _workers is None:
        _workers = _default_workers()
    return _workers


def set_worker_count(n: int | None) -> None:
    """Use ``n`` workers from now on (None: back to the default from the environment)."""
    global _workers, _pool
    if _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    _workers = None if n is None else max(1, int(n))


def _default_workers() -> int:
    import cnntrain
    if not cnntrain.BLAS_SINGLE_THREADED:
        return 1
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


_in_worker = threading.local()


def _mark_worker() -> None:
    _in_worker.flag = True


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(worker_count() - 1, thread_name_prefix="cnntrain-worker",
                                   initializer=_mark_worker)
    return _pool


def slices(n: int, parts: int) -> list[slice]:
    """``range(n)`` as at most ``parts`` contiguous, non-empty, near-equal slices."""
    parts = max(1, min(parts, n))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def over_slices(n: int, fn: Callable[[slice], object], elements: int,
                min_elements: int | None = None) -> None:
    """Call ``fn(s)`` for slices ``s`` covering ``range(n)``, concurrently: ``n``
    images, channels, elements or matrix rows, whatever axis ``fn`` slices.

    ``elements`` is the size of the whole job; below ``min_elements`` (default
    ``MIN_SPLIT_ELEMENTS``) it runs in the caller in one call. ``fn`` must write only
    what its slice owns. The caller's thread does the first slice, so one worker means
    no thread at all, and a call from inside any slice runs inline (from a worker it
    would otherwise wait for itself; from the caller's slice, for busy workers). An
    exception in any slice is raised here, after every slice has finished.
    """
    if _inline(elements, min_elements, worker_count()):
        fn(slice(0, n))     # the common case inside a split: keep it cheap
        return
    parts = slices(n, worker_count())
    if len(parts) == 1:
        fn(slice(0, n))
        return
    _alongside([functools.partial(fn, s) for s in parts[1:]], functools.partial(fn, parts[0]))


def _inline(elements: int, min_elements: int | None, threads: int) -> bool:
    """Whether a job runs whole in the calling thread: too small to split (below
    ``min_elements``, default ``MIN_SPLIT_ELEMENTS``), called from inside a split, or
    no second thread to give it to."""
    floor = MIN_SPLIT_ELEMENTS if min_elements is None else min_elements
    return elements < floor or getattr(_in_worker, "flag", False) or threads <= 1


def _alongside(jobs: list[Callable[[], object]], own: Callable[[], object]) -> None:
    """Run ``jobs`` on the workers and ``own`` in the caller, then wait for them all.

    The caller's part, like a worker's, splits no further. An exception in any part
    is raised here, after every part has finished."""
    # Each job runs in a copy of the caller's context: NumPy keeps np.errstate there, so
    # a caller that handles overflow itself gets no warnings from the workers either.
    futures = [_executor().submit(contextvars.copy_context().run, job) for job in jobs]
    _in_worker.flag = True
    try:
        own()
    finally:
        _in_worker.flag = False
        wait(futures)
    for future in futures:
        future.result()


def over_items(n: int, fn: Callable[[int, int], object], elements: int,
               min_elements: int | None = None) -> None:
    """Call ``fn(i, worker)`` for every ``i`` in ``range(n)``, each item handed to
    whichever thread is free next (the caller is worker 0). Unlike ``over_slices``'
    fixed halves, a worker that the system pauses for a while holds up only the item
    it has, not half the job.

    ``fn`` must write only what item ``i`` owns, so results never depend on which
    thread ran what; ``worker`` (below the worker count) names per-thread scratch space.
    Small jobs and calls from inside a split run inline, in order, as worker 0.
    """
    threads = min(worker_count(), n)
    if _inline(elements, min_elements, threads):
        for i in range(n):
            fn(i, 0)
        return
    lock, items = threading.Lock(), iter(range(n))

    def drain(worker: int) -> None:
        while True:
            with lock:
                i = next(items, None)
            if i is None:
                return
            fn(i, worker)

    _alongside([functools.partial(drain, w) for w in range(1, threads)],
               functools.partial(drain, 0))


def over_chunks(size: int, fn: Callable[[slice, int], object],
                chunk: int = CACHE_CHUNK) -> None:
    """``fn(s, worker)`` for consecutive slices ``s`` of ``range(size)``, ``chunk``
    elements each (the last may be shorter), each handed to whichever thread is free.

    For element-wise work of many passes (a polynomial, an exp): run over a whole
    array, each pass would stream it through main memory; run chunk by chunk, the
    passes after the first read what the one before left in the cache."""
    count = -(-size // chunk)
    over_items(count, lambda i, worker: fn(slice(i * chunk, min(size, (i + 1) * chunk)),
                                           worker), size)


def copy_over_batch(dst: np.ndarray, src: np.ndarray, axis: int = 0) -> np.ndarray:
    """``dst[...] = src`` (same shapes), split along ``axis``; returns ``dst``."""
    def part(s: slice) -> None:
        index = (slice(None),) * axis + (s,)
        np.copyto(dst[index], src[index])
    over_slices(dst.shape[axis], part, dst.size)
    return dst


def fill_over_batch(dst: np.ndarray, value: float) -> np.ndarray:
    """``dst.fill(value)`` split along axis 0; returns ``dst``."""
    over_slices(dst.shape[0], lambda s: dst[s].fill(value), dst.size)
    return dst


def ufunc_over_batch(ufunc: Callable, out: np.ndarray, *operands: np.ndarray) -> np.ndarray:
    """``ufunc(*operands, out=out)`` split along axis 0. Operands have ``out``'s batch
    size or broadcast over it (scalars, a leading axis of 1). Returns ``out``."""
    if out.ndim == 0:
        return ufunc(*operands, out=out)

    def part(s: slice) -> None:
        ufunc(*(a[s] if np.ndim(a) and np.shape(a)[0] == out.shape[0] else a
                for a in operands), out=out[s])
    over_slices(out.shape[0], part, out.size)
    return out


def channel_sums(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=(0, 2, 3, ...))`` of an (N, C, ...) array: one total per channel,
    the channels split over the workers (each channel's sum runs whole in one)."""
    sums = array_module(a).empty(a.shape[1], a.dtype)
    axes = (0,) + tuple(range(2, a.ndim))

    def part(s: slice) -> None:
        sums[s] = a[:, s].sum(axis=axes)
    over_slices(a.shape[1], part, a.size)
    return sums


def split_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``np.matmul(a, b, out=out)`` (stacks of matrices included) with the longer of
    ``out``'s two matrix axes split over the workers: the rows of ``a``, or the columns
    of ``b``. Convolution products are long on one side (pixels) and short on the other
    (channels), either way round."""
    rows, cols, depth = out.shape[-2], out.shape[-1], a.shape[-1]
    if rows >= cols:
        def part(s: slice) -> None:
            np.matmul(a[..., s, :], b, out=out[..., s, :])
    else:
        def part(s: slice) -> None:
            np.matmul(a, b[..., s], out=out[..., s])
    over_slices(max(rows, cols), part, out.size * depth, min_elements=MIN_SPLIT_MACS)
    return out
