"""The GPU path (``--device gpu``): every layer of every zoo net computes on the device
what it computes on the host, nothing leaks to the host on the way, every solver
updates alike, and runs, snapshots and resumes cross between the two.

Everywhere on a NumPy-backed stand-in for CuPy (``fake_cupy``) that keeps CuPy's rules
at the host/device boundary; where CuPy and a GPU are present, on the GPU too (those
runs are skipped elsewhere, saying so)."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from cnntrain import backend
from cnntrain.config import load_experiment
from cnntrain.engine.parallel import set_worker_count
from cnntrain.tools.inputs import net_with_random_inputs
from fake_cupy import USED, FakeCupy
from test_cli_e2e import CONFIG, assert_same_weights, run, weights, write_cifar10_binary

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ZOO = sorted(CONFIGS.glob("*.yaml"))


def cupy_names() -> dict[str, set[str]]:
    """The public names of CuPy's module, ndarray and ufuncs (tests/cupy_names.txt)."""
    names: dict[str, set[str]] = {}
    section = None
    for line in (Path(__file__).parent / "cupy_names.txt").read_text().splitlines():
        if line.startswith("["):
            section = names.setdefault(line.strip("[]"), set())
        elif line and not line.startswith("#"):
            section.add(line)
    return names


CUPY = cupy_names()


def real_cupy():
    """CuPy, if it is installed and sees a GPU; else None."""
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:          # not installed, no driver, no device: CuPy's own errors
        return None


@pytest.fixture(params=["stand-in", "cupy"])
def cupy(request, monkeypatch):
    """What ``--device gpu`` imports: the stand-in, or the real CuPy where a GPU is.
    Registrations are undone afterwards; every name the code asked of the stand-in
    must be one that CuPy has."""
    if request.param == "cupy":
        module = real_cupy()
        if module is None:
            pytest.skip("no CuPy with a GPU here: the GPU path ran on the stand-in")
    else:
        module = FakeCupy()
        monkeypatch.setattr(backend, "_import_cupy", lambda: module)
    monkeypatch.setattr(backend, "DEVICE_MODULES", [])
    yield module
    set_worker_count(None)
    for kind, used in USED.items():
        missing = used - CUPY[kind]
        assert not missing, f"CuPy's {kind} has no {sorted(missing)}"


@pytest.fixture
def gpu_device(cupy):
    """``open_device("gpu")`` as a run gets it."""
    return backend.open_device("gpu")


def host(a):
    return backend.to_host(a)


def on_device(a) -> bool:
    return not isinstance(a, np.ndarray) and backend.array_module(a) is not np


@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_every_zoo_net_computes_the_same_on_the_device(path, gpu_device):
    _assert_same_on_both(load_experiment(path), gpu_device)


def _assert_same_on_both(exp, device):
    """Forward and backward of ``exp``'s net on the host and on ``device`` from the same
    seed and inputs (float64): every blob and every parameter gradient agree, and each
    stayed on the device."""
    cpu, _ = net_with_random_inputs(exp, batch=2, seed=1, dtype=np.float64, force_backward=True)
    gpu, _ = net_with_random_inputs(exp, batch=2, seed=1, dtype=np.float64, force_backward=True,
                                    device=device)
    for p in gpu.params:
        assert on_device(p.data) and on_device(p.diff), p.name
    assert cpu.forward() == pytest.approx(gpu.forward(), rel=1e-9)
    cpu.backward()
    gpu.backward()
    for blob_id, value in gpu.blobs.items():
        assert on_device(value), f"blob '{blob_id}' left the device"
        _assert_close(host(value), cpu.blobs[blob_id], blob_id)
    for p_cpu, p_gpu in zip(cpu.params, gpu.params):
        assert on_device(p_gpu.diff), p_gpu.name
        _assert_close(host(p_gpu.diff), p_cpu.diff, p_cpu.name)


def _assert_close(got, want, what):
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * scale, err_msg=what)

# The layer types no zoo net has, in one net (with the zoo, every registered type), and
# the exact GELU (the zoo's is the tanh form).
EVERY_OTHER_LAYER = """
name: every_other_layer
net:
  layer:
    - {name: in, type: Input, top: [data, label, target, H],
       input_param: {shape: [{dim: [2, 3, 6, 6]}, {dim: [2]}, {dim: [2, 10]}, {dim: [10, 10]}]}}
    - {name: up, type: Deconvolution, bottom: data, top: up,
       convolution_param: {num_output: 4, kernel_size: 3, stride: 2, pad: 1,
                           weight_filler: {type: xavier}}}
    - {name: crop, type: Crop, bottom: [up, data], top: crop, crop_param: {axis: 2, offset: 1}}
    - {name: prelu, type: PReLU, bottom: crop, top: a}
    - {name: elu, type: ELU, bottom: a, top: b}
    - {name: abs, type: AbsVal, bottom: b, top: c}
    - {name: bnll, type: BNLL, bottom: c, top: d}
    - {name: softplus, type: Softplus, bottom: d, top: e}
    - {name: swish, type: Swish, bottom: e, top: f}
    - {name: sigmoid, type: Sigmoid, bottom: f, top: g}
    - {name: exp, type: Exp, bottom: g, top: h}
    - {name: log, type: Log, bottom: h, top: h2}
    - {name: gelu, type: GELU, bottom: h2, top: i, gelu_param: {approximate: none}}
    - {name: slice, type: Slice, bottom: i, top: [i1, i2], slice_param: {axis: 1, slice_point: [1]}}
    - {name: split, type: Split, bottom: i2, top: [s1, s2]}
    - {name: concat, type: Concat, bottom: [i1, s1, s2], top: j}
    - {name: flat, type: Flatten, bottom: j, top: k}
    - {name: reshape, type: Reshape, bottom: k, top: l, reshape_param: {shape: {dim: [0, -1]}}}
    - {name: fc, type: InnerProduct, bottom: l, top: scores,
       inner_product_param: {num_output: 10, weight_filler: {type: xavier}}}
    - {name: scores_split, type: Split, bottom: scores, top: [s_a, s_b, s_c, s_d]}
    - {name: prob, type: Softmax, bottom: s_a, top: prob}
    - {name: l2, type: EuclideanLoss, bottom: [prob, target], top: l2}
    - {name: hinge, type: HingeLoss, bottom: [s_b, label], top: hinge}
    - {name: infogain, type: InfogainLoss, bottom: [s_c, label, H], top: infogain}
    - {name: sce, type: SigmoidCrossEntropyLoss, bottom: [s_d, target], top: sce}
solver: {base_lr: 0.01, max_iter: 1}
"""


def test_every_other_layer_type_computes_the_same_on_the_device(tmp_path, gpu_device):
    from cnntrain.layers import LAYER_TYPES

    path = tmp_path / "every.yaml"
    path.write_text(EVERY_OTHER_LAYER)
    exp = load_experiment(path)
    covered = {layer.type for p in ZOO + [path] for layer in load_experiment(p).net.layers}
    assert covered == set(LAYER_TYPES), set(LAYER_TYPES) - covered
    _assert_same_on_both(exp, gpu_device)


# --- whole runs through the CLI ------------------------------------------------------
@pytest.fixture
def tiny(tmp_path):
    """The end-to-end test's tiny net (conv, max pool, ReLU, dropout, fc; momentum, weight
    decay, step policy) and its generated CIFAR-10."""
    data = write_cifar10_binary(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    return tmp_path, data, config


def _train(tmp, data, *args):
    result = run("train", *args, "--data-dir", data, "--no-progress")
    assert result.exit_code == 0, result.output
    return result


def _assert_weights_close(a, b, rtol=2e-5):
    """float32 runs: the GPU path's convolutions and pooling are the reference forms,
    the CPU's the engine's plans; their sums run in other orders, so the weights agree
    to float32 rounding carried through 12 steps, not bit for bit."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        scale = float(np.abs(wa[key]).max())
        np.testing.assert_allclose(wb[key], wa[key], rtol=0, atol=rtol * scale, err_msg=key)


def test_a_gpu_run_trains_tests_and_resumes_like_a_cpu_run(tiny, cupy):
    tmp, data, config = tiny
    cpu = _train(tmp, data, config, "--runs-dir", tmp / "cpu")
    gpu = _train(tmp, data, config, "--runs-dir", tmp / "gpu", "--device", "gpu")
    assert "computing on gpu:0 (" in gpu.stdout
    snaps = {name: tmp / name / "tiny" / "snapshots" for name in ("cpu", "gpu")}
    _assert_weights_close(snaps["cpu"] / "iter_12.h5", snaps["gpu"] / "iter_12.h5")
    # The final test lines agree (the same images, nearly the same weights).
    last = [line for line in cpu.stdout.splitlines() if line.startswith("final test")]
    assert last == [line for line in gpu.stdout.splitlines() if line.startswith("final test")]

    # A GPU snapshot tests on the CPU and on the GPU, a CPU one on the GPU: same scores.
    outputs = [run("test", snaps[made] / "iter_12.h5", "--data-dir", data, "--device", where,
                   "--json", "--no-progress") for made, where in
               (("gpu", "cpu"), ("gpu", "gpu"), ("cpu", "gpu"), ("cpu", "cpu"))]
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    docs = [json.loads(r.stdout) for r in outputs]
    for doc in docs:
        del doc["snapshot"]
        doc["loss"] = round(doc["loss"], 5)
        doc["outputs"] = {k: round(v, 5) for k, v in doc["outputs"].items()}
    assert docs[0] == docs[1] and docs[2] == docs[3]

    # Resumed on the CPU from the GPU run's iteration 6, and the other way round: each
    # ends where the uninterrupted runs did.
    _train(tmp, data, "--resume", snaps["gpu"] / "iter_6.h5", "--runs-dir", tmp / "gpu")
    _assert_weights_close(snaps["cpu"] / "iter_12.h5", snaps["gpu"] / "iter_12.h5")
    _train(tmp, data, "--resume", snaps["cpu"] / "iter_6.h5", "--runs-dir", tmp / "cpu",
           "--device", "gpu")
    _assert_weights_close(snaps["gpu"] / "iter_12.h5", snaps["cpu"] / "iter_12.h5")


def test_a_gpu_run_resumes_on_the_gpu_exactly(tiny, cupy):
    """On one device a resume is exact, as on the CPU (the printed command keeps
    --device gpu)."""
    tmp, data, config = tiny
    full = _train(tmp, data, config, "--runs-dir", tmp / "full", "--device", "gpu")
    assert "computing on gpu:0" in full.stdout
    snaps = tmp / "full" / "tiny" / "snapshots"
    _train(tmp, data, "--resume", snaps / "iter_6.h5", "--runs-dir", tmp / "again",
           "--device", "gpu")
    assert_same_weights(snaps / "iter_12.h5", tmp / "again" / "tiny" / "snapshots" / "iter_12.h5")


def test_without_cupy_a_gpu_run_is_one_line_and_exit_1(tiny, monkeypatch):
    tmp, data, config = tiny

    def missing():
        raise ImportError("No module named 'cupy'")
    monkeypatch.setattr(backend, "_import_cupy", missing)
    for extra in ((), ("--dry-run",)):        # the dry run gives train's verdict
        result = run("train", config, "--data-dir", data, "--runs-dir", tmp / "runs",
                     "--device", "gpu", *extra)
        assert result.exit_code == 1, result.output
        assert result.stderr.strip().splitlines() == [
            "error: --device gpu needs CuPy, which is not installed (No module named 'cupy'): "
            "pip install 'cnntrain[gpu]' (CuPy for CUDA 12)"]
        assert not (tmp / "runs" / "tiny").exists()
    result = run("train", config, "--device", "tpu", "--dry-run")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: unknown device 'tpu': use cpu, gpu or gpu:N (N: the GPU's number, from 0)"]


def test_a_gpu_that_is_not_there_is_named(tiny, monkeypatch):
    tmp, data, config = tiny
    monkeypatch.setattr(backend, "_import_cupy", FakeCupy)      # one GPU
    monkeypatch.setattr(backend, "DEVICE_MODULES", [])
    result = run("train", config, "--device", "gpu:3", "--data-dir", data,
                 "--runs-dir", tmp / "runs")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: --device gpu:3: this machine has 1 GPU (gpu:0)"]


@pytest.mark.parametrize("extra", [
    {"type": "SGD", "momentum": 0.9, "weight_decay": 0.01, "clip_gradients": 0.5},
    {"type": "Nesterov", "momentum": 0.9, "weight_decay": 0.01, "regularization_type": "L1"},
    {"type": "AdaGrad"}, {"type": "RMSProp"}, {"type": "AdaDelta", "momentum": 0.95},
    {"type": "Adam", "weight_decay": 0.01, "weight_decay_mode": "decoupled"},
    {"type": "SGD", "momentum": 0.9, "lookahead_interval": 2}],
    ids=lambda e: "-".join(str(v) for v in e.values()))
def test_every_solver_updates_the_same_on_the_device(extra, gpu_device):
    from cnntrain.blob import Param
    from cnntrain.config import parse_solver
    from cnntrain.solvers import make_solver

    values = parse_solver({"base_lr": 0.1, "max_iter": 10, **extra}, "test").values
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(s) for s in ((3, 4), (4,))]
    grads = [[rng.standard_normal(w.shape) for w in start] for _ in range(5)]
    cpu = [Param(w.copy(), lr_mult=m) for w, m in zip(start, (1.0, 2.0))]
    gpu = [Param(gpu_device.to_device(w), lr_mult=m) for w, m in zip(start, (1.0, 2.0))]
    solvers = make_solver(values, cpu), make_solver(values, gpu)
    for step in grads:
        for params, solver in zip((cpu, gpu), solvers):
            for p, g in zip(params, step):
                p.diff[...] = gpu_device.to_device(g) if params is gpu else g
            solver.apply_update()
    for p_cpu, p_gpu, bufs in zip(cpu, gpu, solvers[1].state()):
        assert on_device(p_gpu.data) and all(on_device(b) for b in bufs)
        _assert_close(host(p_gpu.data), p_cpu.data, p_cpu.name)


def test_time_clocks_the_layers_on_the_device(cupy):
    result = run("time", CONFIGS / "cifar10_quick.yaml", "--device", "gpu", "--batch", "4",
                 "--iterations", "2", "--warmup", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "; gpu:0 (" in lines[0], lines[0]
    assert re.search(r"^gpu:0 \(.*\) sgemm peak:", result.stdout, re.M)
    assert lines[-1] == "time in GEMM and im2col/col2im: not split on a GPU"
    doc = json.loads(run("time", CONFIGS / "cifar10_quick.yaml", "--device", "gpu", "--batch",
                         "4", "--iterations", "1", "--warmup", "0", "--json").stdout)
    assert doc["device"].startswith("gpu:0") and doc["gemm_ms"] is None
    assert {row["name"] for row in doc["layers"]} >= {"conv1", "pool1", "ip2", "loss"}


def test_the_mpi_allreduce_takes_a_gpus_gradients_through_the_host(gpu_device):
    """Under mpiexec with --device gpu, MPI's buffer is on the host: the gradients and
    running statistics go there in one copy and come back in one, and stay on the GPU."""
    from cnntrain.blob import Param, Statistic
    from cnntrain.distributed import GradientAllreduce

    class TwoRanks:
        """MPI's sum, as if the other rank's buffer held this one's values plus 1."""
        size = 2

        def sum_in_place(self, buffer, what):
            assert isinstance(buffer, np.ndarray)
            buffer[:] = 2 * buffer + 1

    rng = np.random.default_rng(0)
    grad, stat = rng.standard_normal((3, 4)), rng.standard_normal(5)
    learned = Param(gpu_device.to_device(np.zeros((3, 4))))
    learned.diff = gpu_device.to_device(grad)
    running = Statistic(gpu_device.to_device(stat))
    loss, stop = GradientAllreduce(TwoRanks(), [learned, running])(0.5, False, 0)
    assert on_device(learned.diff) and on_device(running.data)
    _assert_close(host(learned.diff), grad + 0.5, "mean gradient")
    _assert_close(host(running.data), stat + 0.5, "mean statistic")
    assert loss == pytest.approx(1.0) and stop     # the other rank asked to stop


def test_dry_run_on_a_gpu_gives_trains_verdict(tiny, cupy):
    tmp, data, config = tiny
    result = run("train", config, "--device", "gpu", "--dry-run")
    assert result.exit_code == 0, result.output
    assert not (tmp / "runs").exists()


def test_lr_find_and_sweep_run_on_the_device(tiny, cupy):
    tmp, data, config = tiny
    found = run("lr-find", config, "--data-dir", data, "--iters", "6", "--device", "gpu",
                "--json")
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)["rates"]) == 6
    swept = run("sweep", config, "--data-dir", data, "--runs-dir", tmp / "sweeps",
                "--set", "solver.base_lr=0.05,0.1", "--fix", "solver.max_iter=2",
                "--device", "gpu", "--json")
    assert swept.exit_code == 0, swept.output
    assert [t["status"] for t in json.loads(swept.stdout)["trials"]] == ["done", "done"]


def test_the_run_report_is_drawn_from_a_gpu_run(tiny, cupy):
    """train --report reads filters and activation maps off the live net: on a GPU they
    come back to the host for the pictures."""
    tmp, data, config = tiny
    _train(tmp, data, config, "--runs-dir", tmp / "runs", "--device", "gpu", "--report",
           "--set", "solver.max_iter=6")
    page = (tmp / "runs" / "tiny" / "report.html").read_text()
    assert "conv1" in page and "<img" in page
