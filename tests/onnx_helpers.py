"""Snapshots of zoo configs with random weights, for the export and import tests."""
from pathlib import Path

import numpy as np

from cnntrain.blob import Statistic
from cnntrain.config import load_experiment
from cnntrain.layers import BuildContext
from cnntrain.net import Net
from cnntrain.rng import RngStreams
from cnntrain.snapshot import save_snapshot
from cnntrain.solvers import make_solver
from cnntrain.tools.inputs import replace_data_layers


def random_snapshot(config: Path, out: Path, seed: int = 0) -> Path:
    """A snapshot of ``config``'s net as its fillers draw it, with every parameter
    moved off its constant start (biases, scales) and BatchNorm statistics that are
    not trivial (a mean, a variance and a count of their own per channel), so that
    each layer's arithmetic shows in the outputs."""
    exp = load_experiment(config)
    spec, _ = replace_data_layers(exp.net, 1)
    net = Net(spec, "TRAIN", BuildContext(RngStreams(exp.solver.random_seed), np.float32,
                                          notify=lambda _: None))
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        stats = [p for p in layer.blobs if isinstance(p, Statistic)]
        if len(stats) == 3:
            count = rng.uniform(0.5, 2.0)
            c = stats[0].data.shape
            stats[0].data[...] = rng.normal(0, 0.5, c) * count
            stats[1].data[...] = rng.uniform(0.5, 2.0, c) * count
            stats[2].data[...] = count
    for _, _, p in net.param_keys:
        if not isinstance(p, Statistic):
            p.data += rng.normal(0, 0.05, p.data.shape).astype(p.data.dtype)
    solver = make_solver(exp.solver.values, net.params)
    save_snapshot(out, params=net.param_keys, config=exp.text, iteration=0,
                  solver_type=solver.type_name, history=solver.state(),
                  rng=RngStreams(exp.solver.random_seed).state(), data_state={})
    return out
