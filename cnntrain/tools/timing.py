"""``cnntrain time``: where a training iteration's time goes, layer by layer (like ``caffe time``).

The TRAIN net is built without data (Data layers become Input layers holding a fixed
random batch, see :mod:`cnntrain.tools.inputs`), so the numbers are the engine's alone:
the data pipeline runs in a background thread during real training. Each iteration is
what the trainer does: clear the gradients, forward, backward, solver update. Every
layer's forward and backward is clocked on its own, the engine's kernels are
accounted by kind (GEMM, im2col/col2im), and whatever is left of the measured
iteration (the net's bookkeeping: summing diffs, seeding the loss) is reported as
such, so the rows add up to the measured total.

On a GPU (``--device gpu``) each clock waits for the device's queue before it stops,
so a layer's time is that of its kernels (as ``caffe time`` does with CUDA events);
the GEMM and im2col split is not made there, and the peak is cuBLAS's.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from cnntrain.backend import CPU, Device
from cnntrain.engine import kernel_time
from cnntrain.tools.summary import forward_macs


@dataclass
class LayerTime:
    name: str
    type: str
    forward_ms: float = 0.0
    backward_ms: float = 0.0
    flops: float = 0.0          # GEMM flops of one iteration (2 per multiply-accumulate)

    @property
    def total_ms(self) -> float:
        return self.forward_ms + self.backward_ms


@dataclass
class TimingReport:
    """Means over the timed iterations, in milliseconds per iteration."""

    net: str
    batch: int
    iterations: int
    warmup: int
    layers: list[LayerTime] = field(default_factory=list)
    clear_ms: float = 0.0            # zeroing the parameter gradients
    update_ms: float = 0.0           # the solver's update
    total_ms: float = 0.0            # the measured iteration, mean
    median_ms: float = 0.0
    min_ms: float = 0.0
    gemm_ms: float | None = 0.0      # None: not split (on a GPU)
    im2col_ms: float | None = 0.0
    sgemm_peak: float = 0.0          # GFLOP/s of a large square GEMM on the same threads
    device: str = "cpu"

    @property
    def layers_ms(self) -> float:
        return sum(r.total_ms for r in self.layers)

    @property
    def overhead_ms(self) -> float:
        """The measured iteration less the layers, gradient clearing and the update."""
        return self.total_ms - self.layers_ms - self.clear_ms - self.update_ms

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.total_ms / 1e3) if self.total_ms else 0.0

    @property
    def gflops(self) -> float:
        return sum(r.flops for r in self.layers) / (self.total_ms / 1e3) / 1e9 \
            if self.total_ms else 0.0

    @property
    def other_ms(self) -> float | None:
        if self.gemm_ms is None or self.im2col_ms is None:
            return None
        return self.total_ms - self.gemm_ms - self.im2col_ms

    def as_dict(self) -> dict:
        return {"net": self.net, "device": self.device, "batch": self.batch,
                "iterations": self.iterations,
                "warmup": self.warmup,
                "layers": [{"name": r.name, "type": r.type, "forward_ms": r.forward_ms,
                            "backward_ms": r.backward_ms, "gflop": r.flops / 1e9}
                           for r in self.layers],
                "clear_ms": self.clear_ms, "update_ms": self.update_ms,
                "overhead_ms": self.overhead_ms, "total_ms": self.total_ms,
                "median_ms": self.median_ms, "min_ms": self.min_ms,
                "images_per_s": self.images_per_s, "gflops_per_s": self.gflops,
                "gemm_ms": self.gemm_ms, "im2col_ms": self.im2col_ms,
                "other_ms": self.other_ms, "sgemm_peak_gflops_per_s": self.sgemm_peak}


def sgemm_peak(dtype=np.float32, size: int = 2048, repeats: int = 3,
               device: Device = CPU) -> float:
    """GFLOP/s of the best of ``repeats`` square ``size`` GEMMs through the engine's
    ``gemm`` (so on the same threads as the layers', or on ``device``): the practical
    peak, which a whole step's GEMM-shaped work is measured against."""
    from cnntrain.engine import gemm

    rng = np.random.default_rng(0)
    a, b = (device.to_device(rng.standard_normal((size, size), dtype=np.float32).astype(dtype))
            for _ in "ab")
    out = device.xp.empty((size, size), dtype)
    gemm(a, b, out=out)                           # warm-up: threads, pages
    best = min(_seconds(lambda: gemm(a, b, out=out), device) for _ in range(repeats))
    return 2.0 * size ** 3 / best / 1e9


def _seconds(fn: Callable, device: Device = CPU) -> float:
    start = time.perf_counter()
    fn()
    device.synchronize()
    return time.perf_counter() - start


def _gemm_flops(node, net) -> float:
    """GEMM flops of one training iteration of a layer: forward, the weight gradient,
    and the input gradient where the net asks for it (2 flops per MAC)."""
    bottoms = [net.shapes[b] for b in node.bottoms]
    tops = [net.shapes[t] for t in node.tops]
    macs = forward_macs(node.layer, bottoms, tops) * (bottoms[0][0] if bottoms and bottoms[0] else 1)
    if not macs:
        return 0.0
    passes = 1 + (1 if node.run_backward else 0) + (1 if node.run_backward and any(node.propagate_down) else 0)
    return 2.0 * macs * passes


def _clocked(fn: Callable, add: Callable[[float], None], device: Device) -> Callable:
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            device.synchronize()
            add(time.perf_counter() - start)
    return timed


def time_experiment(exp, *, iterations: int = 20, warmup: int = 3,
                    batch: int | None = None, seed: int = 0,
                    device: Device = CPU) -> TimingReport:
    """Time ``iterations`` training iterations of ``exp``'s TRAIN net after ``warmup``,
    on ``device``."""
    from cnntrain.solvers import make_solver
    from cnntrain.tools.inputs import net_with_random_inputs

    net, _ = net_with_random_inputs(exp, batch=batch, seed=seed, dtype=np.float32,
                                    device=device)
    solver = make_solver(exp.solver.values, net.params)
    inputs = [n for n in net.nodes if n.layer.type_name == "Input"]
    used_batch = net.shapes[inputs[0].tops[0]][0] if inputs and net.shapes[inputs[0].tops[0]] \
        else (batch or 1)
    report = TimingReport(exp.net.name, used_batch, iterations, warmup)
    rows: dict[str, LayerTime] = {}
    sums = {"clear": 0.0, "update": 0.0}
    for node in net.nodes:
        row = rows.setdefault(node.layer.name, LayerTime(node.layer.name, node.layer.type_name))
        row.flops += _gemm_flops(node, net)

    def adder(row: LayerTime, attr: str) -> Callable[[float], None]:
        def add(seconds: float) -> None:
            setattr(row, attr, getattr(row, attr) + seconds * 1e3)
        return add

    # Clock each layer through instance attributes that shadow its methods: the net
    # itself stays free of timing code.
    for node in net.nodes:
        layer, row = node.layer, rows[node.layer.name]
        layer.forward = _clocked(layer.forward, adder(row, "forward_ms"), device)
        layer.backward = _clocked(layer.backward, adder(row, "backward_ms"), device)

    def iteration() -> None:
        sums["clear"] += _seconds(net.clear_param_diffs, device)
        net.forward()
        net.backward()
        sums["update"] += _seconds(solver.apply_update, device)

    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(warmup):
            iteration()
        for row in rows.values():
            row.forward_ms = row.backward_ms = 0.0
        sums["clear"] = sums["update"] = 0.0
        steps = []
        with kernel_time() as kernels:
            for _ in range(iterations):
                start = time.perf_counter()
                iteration()
                steps.append((time.perf_counter() - start) * 1e3)
    for row in rows.values():
        row.forward_ms /= iterations
        row.backward_ms /= iterations
    report.layers = list(rows.values())
    report.clear_ms = sums["clear"] * 1e3 / iterations
    report.update_ms = sums["update"] * 1e3 / iterations
    report.total_ms = sum(steps) / iterations
    report.median_ms = statistics.median(steps)
    report.min_ms = min(steps)
    if device.is_cpu:
        report.gemm_ms = kernels["gemm"] * 1e3 / iterations
        report.im2col_ms = kernels["im2col"] * 1e3 / iterations
    else:
        report.gemm_ms = report.im2col_ms = None    # kernels queue: not split on a GPU
    report.sgemm_peak = sgemm_peak(device=device)
    report.device = str(device)
    return report


def format_report(report: TimingReport, threads: str) -> list[str]:
    """The table ``cnntrain time`` prints."""
    total = report.total_ms or 1.0
    width = max([len(f"{r.name} ({r.type})") for r in report.layers] + [26])
    lines = [f"{report.net}: TRAIN net, batch {report.batch}, mean of {report.iterations} "
             f"iterations after {report.warmup} warm-up; {threads}",
             f"{'layer':<{width}}  {'forward ms':>10}  {'backward ms':>11}  {'share':>6}"]
    for r in report.layers:
        lines.append(f"{r.name + ' (' + r.type + ')':<{width}}  {r.forward_ms:10.2f}  "
                     f"{r.backward_ms:11.2f}  {r.total_ms / total:6.1%}")
    for label, ms in (("clearing gradients", report.clear_ms),
                      ("solver update", report.update_ms),
                      ("net bookkeeping (rest)", report.overhead_ms)):
        lines.append(f"{label:<{width}}  {ms:10.2f}  {'':>11}  {ms / total:6.1%}")
    forward = sum(r.forward_ms for r in report.layers)
    backward = sum(r.backward_ms for r in report.layers)
    lines += [f"total: {report.total_ms:.1f} ms per iteration (forward {forward:.1f}, backward "
              f"{backward:.1f}, the rest {report.total_ms - forward - backward:.1f}); median "
              f"{report.median_ms:.1f}, min {report.min_ms:.1f}",
              f"throughput: {report.images_per_s:,.0f} images/s, {report.gflops:.1f} GFLOP/s "
              "achieved in the GEMMs' arithmetic (forward, weight and input gradients, "
              "counted as im2col's)",
              f"{'host' if report.device == 'cpu' else report.device} sgemm peak: "
              f"{report.sgemm_peak:.1f} GFLOP/s (2048x2048x2048 float32 on the same "
              f"{'threads' if report.device == 'cpu' else 'device'}); the step ran its "
              f"GEMM-shaped work at {report.gflops / max(report.sgemm_peak, 1e-9):.0%} of it"]
    if report.gemm_ms is None:
        lines.append("time in GEMM and im2col/col2im: not split on a GPU")
    else:
        lines.append(f"time in GEMM {report.gemm_ms / total:.1%}, im2col/col2im "
                     f"{report.im2col_ms / total:.1%}, everything else "
                     f"{report.other_ms / total:.1%}")
    return lines


def blas_threads() -> str:
    """What a reader needs to compare timings: the threads in force (engine.parallel)."""
    import os

    import cnntrain
    from cnntrain.engine.parallel import worker_count

    if cnntrain.BLAS_SINGLE_THREADED:
        omp = os.environ.get("OMP_NUM_THREADS")
        source = f"OMP_NUM_THREADS={omp}" if omp else "all usable cores"
        return f"{worker_count()} cnntrain threads ({source}), BLAS on one thread"
    blas = os.environ.get("OPENBLAS_NUM_THREADS")
    return (f"BLAS threads: {f'OPENBLAS_NUM_THREADS={blas}' if blas else 'library default'}; "
            "cnntrain's own threads off")
