"""Finite-difference gradient checks in float64, for one layer or a whole net.

The objective for a layer is ``sum_i <top_i, R_i>`` with fixed random ``R_i`` (as in
Caffe's GradientChecker), so every output element is checked at once; its analytic
gradient is backward() with ``top_diff = R``. Each input and parameter element is
then nudged by ±eps and the central difference compared with the analytic value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from cnntrain.layers.base import Layer


@dataclass
class GradResult:
    """How well one array's analytic gradient matched the numeric one."""

    name: str
    size: int
    max_abs_err: float
    max_rel_err: float
    worst_index: tuple[int, ...]
    analytic: float
    numeric: float

    def ok(self, tol: float = 1e-5) -> bool:
        """Relative error (over max(|analytic|, |numeric|, 1e-3)) within ``tol``."""
        return self.max_rel_err <= tol

    def __str__(self) -> str:
        return (f"{self.name}: max rel err {self.max_rel_err:.2e} at {self.worst_index} "
                f"(analytic {self.analytic:.6g}, numeric {self.numeric:.6g}, {self.size} values)")


def _compare(name: str, analytic: np.ndarray, numeric: np.ndarray) -> GradResult:
    abs_err = np.abs(analytic - numeric)
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), 1e-3)
    rel = abs_err / scale
    worst = np.unravel_index(int(np.argmax(rel)), rel.shape) if rel.size else ()
    return GradResult(name, analytic.size, float(abs_err.max(initial=0.0)),
                      float(rel.max(initial=0.0)), tuple(int(i) for i in worst),
                      float(analytic[worst]) if rel.size else 0.0,
                      float(numeric[worst]) if rel.size else 0.0)


def numeric_gradient(objective: Callable[[], float], array: np.ndarray, eps: float) -> np.ndarray:
    """Central differences of ``objective`` w.r.t. every element of ``array`` (in place)."""
    grad = np.zeros_like(array, dtype=np.float64)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + eps
        plus = objective()
        flat[i] = keep - eps
        minus = objective()
        flat[i] = keep
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def check_layer(layer: Layer, bottoms: Sequence[np.ndarray], *, eps: float = 1e-6,
                check_bottoms: Sequence[bool] | None = None, seed: int = 0) -> list[GradResult]:
    """Check a set-up float64 layer's gradients w.r.t. its bottoms and parameters.

    Random streams (dropout masks) are rewound before every forward, so the objective
    is a fixed function of the inputs.
    """
    bottoms = [np.array(b, dtype=np.float64) for b in bottoms]
    check_bottoms = list(check_bottoms) if check_bottoms is not None else [True] * len(bottoms)
    rng_state = layer.rngs.state()
    tops = layer.forward(bottoms)
    weights = [np.random.default_rng(seed + i).standard_normal(np.shape(t)) for i, t in
               enumerate(tops)]

    def objective() -> float:
        layer.rngs.set_state(rng_state)
        outs = layer.forward(bottoms)
        return float(sum(np.sum(o * w) for o, w in zip(outs, weights)))

    objective()
    for p in layer.blobs:
        p.diff[...] = 0
    analytic = layer.backward([w.astype(np.float64) for w in weights], check_bottoms)
    results = []
    for i, p in enumerate(layer.blobs):
        grad = p.diff.copy()
        results.append(_compare(f"{layer.name}.param[{i}]", grad,
                                numeric_gradient(objective, p.data, eps)))
    for i, (b, wanted) in enumerate(zip(bottoms, check_bottoms)):
        if wanted:
            results.append(_compare(f"{layer.name}.bottom[{i}]", np.asarray(analytic[i]),
                                    numeric_gradient(objective, b, eps)))
    return results


def check_net(net, *, eps: float = 1e-6) -> list[GradResult]:
    """Check a float64 net's loss gradient w.r.t. every parameter (and Input blobs)."""
    rng_state = net.ctx.rngs.state()
    input_layers = [n.layer for n in net.nodes if n.layer.type_name == "Input"]
    data_state = [(layer, layer.extra_state()) for layer in net.data_layers()]

    def objective() -> float:
        net.ctx.rngs.set_state(rng_state)
        for layer, state in data_state:
            layer.load_extra_state(state)
        return net.forward()

    objective()
    net.clear_param_diffs()
    net.backward()
    results = []
    for layer_name, i, p in net.param_keys:
        grad = p.diff.copy()
        results.append(_compare(f"{layer_name}.param[{i}]", grad,
                                numeric_gradient(objective, p.data, eps)))
    for layer in input_layers:
        tops = next(n for n in net.nodes if n.layer is layer).tops
        for top_id, value in zip(tops, layer.values):
            if top_id in net.input_diffs:  # needs a net built with force_backward
                results.append(_compare(f"{layer.name}.{top_id}", net.input_diffs[top_id].copy(),
                                        numeric_gradient(objective, value, eps)))
    return results
