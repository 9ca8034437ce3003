"""cnntrain's own threads (engine.parallel): the splitting itself, and every layer that
splits its work, re-run with three workers and no size threshold so that the split
paths run even on the suite's tiny arrays."""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cnntrain.engine import parallel
import test_layers_conv_pool as conv_pool
import test_layers_deconv as deconv
import test_layers_norm as norm
import test_layers_other as other
import test_layers_structure as structure


@pytest.fixture
def split_everything(monkeypatch):
    """Three workers (an odd count, so slices are uneven), whatever the size."""
    monkeypatch.setattr(parallel, "MIN_SPLIT_ELEMENTS", 0)
    monkeypatch.setattr(parallel, "MIN_SPLIT_MACS", 0)
    parallel.set_worker_count(3)
    yield
    parallel.set_worker_count(None)


@pytest.mark.parametrize("n, parts", [(10, 3), (2, 3), (1, 1), (7, 7), (100, 2)])
def test_slices_cover_the_range_in_order_and_near_equal(n, parts):
    s = parallel.slices(n, parts)
    assert [i for part in s for i in range(part.start, part.stop)] == list(range(n))
    sizes = [part.stop - part.start for part in s]
    assert len(s) == min(n, parts) and max(sizes) - min(sizes) <= 1


def test_over_batch_runs_each_slice_once_on_several_threads(split_everything):
    seen, threads = [], set()
    barrier = threading.Barrier(3, timeout=10)

    def part(s):
        barrier.wait()      # all three slices must be running at once
        seen.append((s.start, s.stop))
        threads.add(threading.get_ident())
    parallel.over_slices(9, part, elements=9)
    assert sorted(seen) == [(0, 3), (3, 6), (6, 9)] and len(threads) == 3


def test_over_items_hands_every_item_out_once_to_whichever_thread_is_free(split_everything):
    seen = []
    lock = threading.Lock()
    stalled = []

    def item(i, worker):
        with lock:
            first = not stalled
            if first:
                stalled.append(worker)
        if first:
            time.sleep(0.2)             # this thread stalls: the others take the rest
        with lock:
            seen.append((i, worker))
    parallel.over_items(30, item, elements=30)
    assert sorted(i for i, _ in seen) == list(range(30))
    by_worker = {w: [i for i, v in seen if v == w] for _, w in seen}
    assert set(by_worker) <= {0, 1, 2} and len(by_worker) >= 2
    assert len(by_worker[stalled[0]]) == 1


def test_over_items_runs_inline_in_order_inside_a_split(split_everything):
    calls = []
    parallel.over_slices(2, lambda s: parallel.over_items(
        3, lambda i, w: calls.append((s.start, i, w, threading.get_ident())), elements=3),
        elements=2)
    for start in (0, 1):
        mine = [c for c in calls if c[0] == start]
        assert [c[1] for c in mine] == [0, 1, 2] and {c[2] for c in mine} == {0}
        assert len({c[3] for c in mine}) == 1


def test_small_jobs_and_one_worker_stay_in_the_caller(monkeypatch):
    calls = []
    parallel.set_worker_count(3)
    try:
        parallel.over_slices(8, lambda s: calls.append((s, threading.get_ident())),
                            elements=parallel.MIN_SPLIT_ELEMENTS - 1)
    finally:
        parallel.set_worker_count(None)
    assert calls == [(slice(0, 8), threading.get_ident())]


def test_an_error_in_a_worker_reaches_the_caller_after_all_slices(split_everything):
    done = []

    def part(s):
        if s.start == 3:
            raise ValueError("slice 3 failed")
        done.append(s.start)
    with pytest.raises(ValueError, match="slice 3 failed"):
        parallel.over_slices(9, part, elements=9)
    assert sorted(done) == [0, 6]


def test_a_split_inside_a_worker_runs_inline_instead_of_deadlocking(split_everything):
    out = np.zeros(12)

    def inner(s):
        parallel.ufunc_over_batch(np.add, out[s], out[s], 1.0)
    parallel.over_slices(12, inner, elements=12)
    np.testing.assert_array_equal(out, np.ones(12))


@pytest.mark.parametrize("a_shape, b_shape, transpose_a", [
    ((37, 5), (5, 4), False),             # split by rows
    ((4, 5), (5, 37), False),             # split by columns
    ((3, 11, 6), (3, 6, 2), False),       # a stack of matrices (groups)
    ((3, 6, 11), (3, 6, 2), True),        # rows of a transposed view (the weight gradient)
    ((2, 1, 9), (2, 9, 23), False),       # one row per group (depth-wise): by columns
])
def test_split_matmul_is_matmul(split_everything, a_shape, b_shape, transpose_a):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    if transpose_a:
        a = a.swapaxes(-1, -2)
    out = np.empty(a.shape[:-1] + b.shape[-1:])
    np.testing.assert_allclose(parallel.split_matmul(a, b, out), a @ b, rtol=1e-13)


def test_ufunc_over_batch_broadcasts_a_per_channel_operand(split_everything):
    y = np.arange(5 * 3 * 2, dtype=float).reshape(5, 3, 2)
    bias = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1)
    expected = y + bias
    np.testing.assert_array_equal(parallel.ufunc_over_batch(np.add, y, y, bias), expected)


# --- the layers, split ----------------------------------------------------------------
@pytest.mark.parametrize("channel_first", [True, False])
@pytest.mark.parametrize("params", conv_pool.CONV_CASES)
def test_convolution_split_over_workers(split_everything, monkeypatch, params, channel_first):
    conv_pool.test_convolution_in_either_column_layout(monkeypatch, params, channel_first)


def test_convolution_chunks_split_over_workers(split_everything, monkeypatch):
    conv_pool.test_convolution_chunks_agree_with_one_chunk(monkeypatch)


@pytest.mark.parametrize("channel_first", [True, False])
@pytest.mark.parametrize("params", conv_pool.CONV_CASES)
def test_convolution_gives_the_same_bits_with_any_worker_count(monkeypatch, params,
                                                                channel_first):
    """Workers take whole chunks, each chunk's GEMMs run whole in one worker, in
    buffers that all start on a cache line, and the weight gradient's runs are fixed
    by the batch alone: 1 and 3 workers must agree bit for bit."""
    import cnntrain.engine.conv_plan as conv

    monkeypatch.setattr(conv, "MIN_SPLIT_MACS", 0)
    monkeypatch.setattr(conv, "CHUNK_BYTES", 1)                     # one image per chunk
    monkeypatch.setattr(conv, "channel_first_columns", lambda *_: channel_first)
    shape = (5, 4, 7, 6)
    x = np.random.default_rng(4).standard_normal(shape)
    results = []
    for workers in (1, 3):
        parallel.set_worker_count(workers)
        try:
            layer, (top,) = conv_pool.make_layer("Convolution", [shape],
                                                 convolution_param=params)
            dy = np.random.default_rng(5).standard_normal(top)
            (y,) = layer.forward([x])
            (dx,) = layer.backward([dy], [True])
            results.append([y.copy(), dx.copy()] + [b.diff.copy() for b in layer.blobs])
        finally:
            parallel.set_worker_count(None)
    for one, three in zip(*results):
        np.testing.assert_array_equal(one, three)


@pytest.mark.parametrize("params", conv_pool.POOL_CASES)
def test_pooling_split_over_workers(split_everything, params):
    conv_pool.test_pooling_matches_reference_and_gradients(params)


@pytest.mark.parametrize("params", [dict(kernel_size=3, stride=2, pad=1), dict(kernel_size=2)])
def test_max_pool_ties_split_over_workers(split_everything, params):
    conv_pool.test_max_pool_routes_ties_to_the_first_maximum_like_caffe(params)


@pytest.mark.parametrize("params", deconv.DECONV_CASES)
def test_deconvolution_split_over_workers(split_everything, params):
    deconv.test_deconvolution_matches_reference_and_gradients(params)


@pytest.mark.parametrize("shape, params", [((5, 4, 2, 3), dict(num_output=5)),
                                           ((7, 3), dict(num_output=2, bias_term=False))])
def test_inner_product_split_over_workers(split_everything, shape, params):
    other.test_inner_product(shape, params)


def test_relu_split_over_workers(split_everything):
    other.test_activations("ReLU", {}, lambda x: np.maximum(x, 0))


@pytest.mark.parametrize("shape", [(4, 3, 2, 3), (3, 2, 5)])
def test_batchnorm_split_over_workers(split_everything, shape):
    norm.test_batchnorm_train_uses_biased_batch_statistics(shape)


def test_batchnorm_global_statistics_split_over_workers(split_everything):
    norm.test_batchnorm_global_statistics_is_an_affine_map_with_checked_gradients()


@pytest.mark.parametrize("shape, params, operand, axis", norm.SCALE_CASES)
def test_scale_split_over_workers(split_everything, shape, params, operand, axis):
    norm.test_scale_learned(shape, params, operand, axis)


@pytest.mark.parametrize("params", [{}, {"operation": "SUM", "coeff": [1, -1, 0.5]}])
def test_eltwise_sum_split_over_workers(split_everything, params):
    reference = (lambda a, b, c: a + b + c) if not params else (lambda a, b, c: a - b + 0.5 * c)
    structure.test_eltwise(params, reference)


@pytest.mark.parametrize("env, numpy_first, expected", [
    ({"OMP_NUM_THREADS": "3"}, False, "3 True"),              # workers follow OMP_NUM_THREADS
    ({"OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "2"}, False, "1 False"),  # BLAS threads
    ({"OMP_NUM_THREADS": "3"}, True, "1 False"),              # NumPy loaded too early
    ({"OMP_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "1"}, True, "3 True"),
])
def test_who_threads_depends_on_the_environment_and_import_order(env, numpy_first, expected):
    """cnntrain's workers run only when the BLAS is known to run on one thread."""
    code = ("import numpy\n" if numpy_first else "") + (
        "import cnntrain\n"
        "from cnntrain.engine.parallel import worker_count\n"
        "print(worker_count(), cnntrain.BLAS_SINGLE_THREADED)\n")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout.split()
    assert " ".join(out) == expected


def test_workspace_buffers_all_start_at_the_same_place_in_a_cache_line():
    """OpenBLAS rounds by operand alignment: every scratch buffer must share one."""
    from cnntrain.engine.workspace import ALIGNMENT, OFFSET, Workspace

    ws = Workspace()
    places = {ws.get(f"b{i}", (size,), dtype, zero=bool(i % 2)).ctypes.data % ALIGNMENT
              for i, (size, dtype) in enumerate([(1, np.float32), (1000, np.float64),
                                                 (3 << 20, np.float32), (7, np.uint8)])}
    assert places == {OFFSET}
    grown = ws.get("b0", (5000,), np.float32)
    assert grown.ctypes.data % ALIGNMENT == OFFSET and grown.size == 5000
