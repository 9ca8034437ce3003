"""Finite-difference gradient checks in float64, for one layer or a whole net.

The objective for a layer is ``sum_i <top_i, R_i>`` with fixed random ``R_i`` (as in
Caffe's GradientChecker), so every output element is checked at once; its analytic
gradient is backward() with ``top_diff = R``. Each input and parameter element is
then nudged by ±eps and the central difference compared with the analytic value.
With ``max_elements``, big arrays are checked on a random subset of their elements
(the same subset every time for a given seed); by default every element is.

:func:`gradcheck_experiment` (the ``cnntrain gradcheck`` command) builds a config's
TRAIN net in float64 on random inputs and runs these checks on it.
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
    checked: int | None = None   # elements compared; None: all ``size`` of them
    retried: int = 0             # elements differenced again with smaller steps (kinks)

    def ok(self, tol: float = 1e-5) -> bool:
        """Relative error (over max(|analytic|, |numeric|, 1e-3)) within ``tol``."""
        return self.max_rel_err <= tol

    def __str__(self) -> str:
        count = (f"{self.size} values" if self.checked is None
                 else f"{self.checked} of {self.size} values")
        if self.retried:
            count += f", {self.retried} retried with smaller steps"
        return (f"{self.name}: max rel err {self.max_rel_err:.2e} at {self.worst_index} "
                f"(analytic {self.analytic:.6g}, numeric {self.numeric:.6g}, {count})")


def checked_indices(size: int, max_elements: int | None, seed: int = 0) -> np.ndarray | None:
    """The flat indices a check with ``max_elements`` looks at: None (all of them) when
    the array is small enough, else a sorted random subset drawn from ``seed``."""
    if max_elements is None or size <= max_elements:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(size, size=max_elements, replace=False))


def _relative(analytic: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """|a - n| / max(|a|, |n|, 1e-3): relative, but absolute for tiny gradients."""
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), 1e-3)
    return np.abs(analytic - numeric) / scale


def _central(objective: Callable[[], float], flat: np.ndarray, i: int, eps: float) -> float:
    keep = flat[i]
    flat[i] = keep + eps
    plus = objective()
    flat[i] = keep - eps
    minus = objective()
    flat[i] = keep
    return (plus - minus) / (2 * eps)


def _compare(name: str, analytic: np.ndarray, numeric: np.ndarray,
             indices: np.ndarray | None = None) -> GradResult:
    shape = np.shape(analytic)
    a, n = np.asarray(analytic).reshape(-1), np.asarray(numeric).reshape(-1)
    if indices is not None:
        a, n = a[indices], n[indices]
    abs_err = np.abs(a - n)
    rel = _relative(a, n)
    if rel.size:
        k = int(np.argmax(rel))
        flat = int(indices[k]) if indices is not None else k
        worst = tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()
    else:
        k, worst = 0, ()
    return GradResult(name, int(np.prod(shape, dtype=np.int64)), float(abs_err.max(initial=0.0)),
                      float(rel.max(initial=0.0)), worst,
                      float(a[k]) if rel.size else 0.0, float(n[k]) if rel.size else 0.0,
                      None if indices is None else int(len(indices)))


def numeric_gradient(objective: Callable[[], float], array: np.ndarray, eps: float,
                     max_elements: int | None = None, seed: int = 0) -> np.ndarray:
    """Central differences of ``objective`` w.r.t. the elements of ``array`` (in place).

    Every element by default; with ``max_elements``, only ``checked_indices(size,
    max_elements, seed)``, and the other entries of the result are NaN.
    """
    grad = np.zeros_like(array, dtype=np.float64)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    indices = checked_indices(flat.size, max_elements, seed)
    if indices is not None:
        gflat[...] = np.nan
    for i in (range(flat.size) if indices is None else indices):
        gflat[i] = _central(objective, flat, i, eps)
    return grad


def _check_array(name: str, analytic: np.ndarray, objective: Callable[[], float],
                 array: np.ndarray, eps: float, max_elements: int | None, seed: int,
                 retry_above: float | None = None) -> GradResult:
    """Compare one array; with ``retry_above``, elements whose relative error exceeds
    it are differenced again with steps eps/10 and eps/100, and the closest of the
    three differences counts. A ReLU or max-pool kink within eps of some activation
    makes an isolated miss that a smaller step avoids; a wrong gradient stays wrong."""
    numeric = numeric_gradient(objective, array, eps, max_elements, seed)
    indices = checked_indices(array.size, max_elements, seed)
    retried = 0
    if retry_above is not None:
        a, n = np.asarray(analytic).reshape(-1), numeric.reshape(-1)
        flat = array.reshape(-1)
        for i in (range(flat.size) if indices is None else indices):
            if _relative(a[i], n[i]) <= retry_above:
                continue
            retried += 1
            for step in (eps / 10, eps / 100):
                value = _central(objective, flat, i, step)
                if _relative(a[i], value) < _relative(a[i], n[i]):
                    n[i] = value
    result = _compare(name, analytic, numeric, indices)
    result.retried = retried
    return result


def check_layer(layer: Layer, bottoms: Sequence[np.ndarray], *, eps: float = 1e-6,
                check_bottoms: Sequence[bool] | None = None, seed: int = 0,
                max_elements: int | None = None, retry_above: float | None = None
                ) -> list[GradResult]:
    """Check a set-up float64 layer's gradients w.r.t. its bottoms and parameters.

    Random streams (dropout masks) are rewound before every forward, so the objective
    is a fixed function of the inputs. ``max_elements`` limits how many elements of
    each array are differenced (a random subset); None checks them all.
    ``retry_above``: see :func:`_check_array` (off by default).
    """
    bottoms = [np.array(b, dtype=np.float64) for b in bottoms]
    check_bottoms = list(check_bottoms) if check_bottoms is not None else [True] * len(bottoms)
    tops = layer.forward(bottoms)
    rng_state = layer.rngs.state()   # after a forward: streams are created on first use
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
        results.append(_check_array(f"{layer.name}.param[{i}]", p.diff.copy(), objective,
                                    p.data, eps, max_elements, seed + i, retry_above))
    for i, (b, wanted) in enumerate(zip(bottoms, check_bottoms)):
        if wanted:
            results.append(_check_array(f"{layer.name}.bottom[{i}]", np.asarray(analytic[i]),
                                        objective, b, eps, max_elements, seed + 100 + i,
                                        retry_above))
    return results


def check_net(net, *, eps: float = 1e-6, max_elements: int | None = None,
              seed: int = 0, retry_above: float | None = None) -> list[GradResult]:
    """Check a float64 net's loss gradient w.r.t. every parameter (and Input blobs).

    ``max_elements`` limits how many elements of each array are differenced;
    ``retry_above`` re-differences misses with smaller steps (see :func:`_check_array`).
    """
    net.forward()                     # creates the random streams (dropout) before
    rng_state = net.ctx.rngs.state()  # their state is kept
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
    for k, (layer_name, i, p) in enumerate(net.param_keys):
        results.append(_check_array(f"{layer_name}.param[{i}]", p.diff.copy(), objective,
                                    p.data, eps, max_elements, seed + k, retry_above))
    for layer in input_layers:
        tops = next(n for n in net.nodes if n.layer is layer).tops
        for j, (top_id, value) in enumerate(zip(tops, layer.values)):
            if top_id in net.input_diffs:  # needs a net built with force_backward
                results.append(_check_array(f"{layer.name}.{top_id}",
                                            net.input_diffs[top_id].copy(), objective, value,
                                            eps, max_elements, seed + 1000 + j,
                                            retry_above))
    return results


def distinct_values(shape, seed: int = 0, spread: float = 1.0) -> np.ndarray:
    """Random values in [-spread, spread], spread out and away from 0 (n values are
    about 2*spread/n apart, none within 1e-3 of 0), so ReLU and max-pool kinks are
    rarely within eps of an input."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    values = (rng.permutation(n) - n / 2) / n * 2 * spread + rng.uniform(-2e-4, 2e-4, n)
    values[np.abs(values) < 1e-3] += 2e-3
    return values.reshape(shape)


# --- the ``cnntrain gradcheck`` command: a config's TRAIN net on random inputs ----------
NO_GRADIENT = ("Input", "Data", "Accuracy")


def label_blobs(net) -> dict[str, int]:
    """Blobs that loss/accuracy layers read as labels, with their class counts (the
    channel count of the scores they are compared with)."""
    labels: dict[str, int] = {}
    for node in net.nodes:
        if node.layer.takes_class_labels:
            classes = net.shapes[node.bottoms[0]][node.layer.axis]
            labels[node.bottoms[1]] = min(classes, labels.get(node.bottoms[1], classes))
    return labels


def _pixel_range(transform) -> tuple[float, float]:
    """(centre, half-width) of what a Data layer feeds: pixels 0..255, minus the mean
    if there is one, times the scale."""
    half = 127.5 * abs(transform.scale)
    centred = transform.mean_image or transform.mean_value is not None
    return (0.0 if centred else 127.5 * transform.scale), half


def check_net_for(exp, *, batch: int = 2, seed: int = 0):
    """The float64 TRAIN net of an experiment with Data layers replaced by Input layers,
    ``force_backward`` on, and random inputs: labels are random valid classes, other
    inputs are spread away from kinks (:func:`distinct_values`) over the range the
    Data layer's transform would produce (pixels 0..255, mean subtracted, scaled), so
    the activations have their real scale; inputs of Input layers lie in [-1, 1]."""
    from cnntrain.layers import BuildContext
    from cnntrain.net import Net
    from cnntrain.rng import RngStreams
    from cnntrain.tools.inputs import replace_data_layers

    spec, stand_ins = replace_data_layers(exp.net, batch)
    ranges = {s.data_top: _pixel_range(s.transform_param) for s in stand_ins}
    ctx = BuildContext(RngStreams(exp.solver.random_seed), np.float64, notify=lambda _: None)
    net = Net(spec, "TRAIN", ctx, force_backward=True)
    labels = label_blobs(net)
    rng = np.random.default_rng(seed)
    k = 0
    for node in net.nodes:
        if node.layer.type_name != "Input":
            continue
        for top_id, value in zip(node.tops, node.layer.values):
            if top_id in labels:
                value[...] = rng.integers(0, labels[top_id], value.shape)
            else:
                centre, half = ranges.get(top_id, (0.0, 1.0))
                value[...] = centre + distinct_values(value.shape, seed + k, half)
                k += 1
    return net, labels


def gradcheck_experiment(exp, *, layer: str | None = None, batch: int = 2,
                         max_elements: int | None = 50, eps: float = 1e-6, seed: int = 0,
                         retry_above: float | None = None) -> list[GradResult]:
    """Check the whole TRAIN net of ``exp`` (every parameter and the data inputs), or
    one layer of it on random bottoms of the shapes it has in that net."""
    from cnntrain.errors import ConfigError

    net, labels = check_net_for(exp, batch=batch, seed=seed)
    file = exp.net.where.file
    if layer is None:
        if not any(w for n in net.nodes for w in n.loss_weights):
            raise ConfigError("the TRAIN net has no loss layer to check gradients of", file=file)
        return check_net(net, eps=eps, max_elements=max_elements, seed=seed,
                         retry_above=retry_above)
    node = next((n for n in net.nodes if n.layer.name == layer), None)
    if node is None:
        names = ", ".join(n.layer.name for n in net.nodes)
        raise ConfigError(f"no layer '{layer}' in the TRAIN net (layers: {names})", file=file)
    if node.layer.type_name in NO_GRADIENT:
        kind = next(s.type for s in exp.net.layers if s.name == layer and s.in_phase("TRAIN"))
        raise ConfigError(f"layer '{layer}' is {kind}: it has no gradient to check", file=file)
    net.forward()
    bottoms, wanted = [], []
    for i, blob in enumerate(node.bottoms):
        if blob in labels:
            bottoms.append(net.blobs[blob].copy())
            wanted.append(False)
        else:
            bottoms.append(distinct_values(net.shapes[blob], seed + 10 + i))
            wanted.append(True)
    return check_layer(node.layer, bottoms, eps=eps, check_bottoms=wanted, seed=seed,
                       max_elements=max_elements, retry_above=retry_above)
