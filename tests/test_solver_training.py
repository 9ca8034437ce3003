"""Every rule on a small least-squares problem: the loss falls, and a run stopped and
resumed from ``state()`` matches an uninterrupted one bit for bit."""
import copy

import numpy as np
import pytest

from cnntrain.blob import Param
from cnntrain.solvers import SOLVERS, make_solver
from test_solver import solver_values

# Rates that suit each rule on this problem (AdaDelta as in Caffe's example: lr 1, δ 1e-6).
SETTINGS = {
    "SGD": dict(base_lr=0.1, momentum=0.9),
    "Nesterov": dict(base_lr=0.1, momentum=0.9),
    "AdaGrad": dict(base_lr=0.5),
    "RMSProp": dict(base_lr=0.01),
    "AdaDelta": dict(base_lr=1.0, delta=1e-6),
    "Adam": dict(base_lr=0.05),
}


class LeastSquares:
    """``½·mean((X·w + b − y)²)`` on 300 fixed random points in 5 dimensions."""

    def __init__(self, dtype=np.float64):
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(300, 5)).astype(dtype)
        self.y = (self.x @ rng.normal(size=5) + 0.5 + 0.1 * rng.normal(size=300)).astype(dtype)
        self.w = Param(np.zeros(5, dtype))
        self.b = Param(np.zeros(1, dtype), lr_mult=2.0, decay_mult=0.0)  # Caffe's usual bias

    @property
    def params(self):
        return [self.w, self.b]

    def loss(self) -> float:
        r = self.x @ self.w.data + self.b.data[0] - self.y
        return 0.5 * float(np.mean(r * r))

    def backward(self, passes: int = 1) -> None:
        """Sum the gradient of ``passes`` identical batches into the diffs, as
        ``iter_size`` forward/backward passes would."""
        r = self.x @ self.w.data + self.b.data[0] - self.y
        self.w.diff[...] = passes * (self.x.T @ r) / len(r)
        self.b.diff[...] = passes * r.mean()


def test_solver_types_match_the_config_choices():
    from cnntrain.config import schema

    assert set(SOLVERS) == set(SETTINGS) == set(schema.SOLVER["type"].choices)


@pytest.mark.parametrize("type_name", SETTINGS)
def test_loss_falls(type_name):
    problem = LeastSquares()
    solver = make_solver(solver_values(type=type_name, max_iter=300, **SETTINGS[type_name]),
                         problem.params)
    start = problem.loss()
    for _ in range(300):
        problem.backward()
        solver.apply_update()
    assert problem.loss() < 0.05 * start


def run(solver, problem, steps, iter_size):
    for _ in range(steps):
        problem.backward(iter_size)
        solver.apply_update(iter_size)


@pytest.mark.parametrize("mode, lookahead", [("coupled", 0), ("decoupled", 0),
                                             ("coupled", 4)])
@pytest.mark.parametrize("type_name", SETTINGS)
def test_resume_from_state_is_exact(type_name, mode, lookahead):
    # float32 as in training; every stateful path on: warmup, cosine, clipping, decay,
    # and Lookahead's slow weights (syncs at 4 and 8, one each side of the stop at 6)
    values = solver_values(type=type_name, max_iter=12, lr_policy="cosine", warmup_iter=3,
                           clip_gradients=0.5, weight_decay=0.01, weight_decay_mode=mode,
                           iter_size=2, lookahead_interval=lookahead,
                           **({"lookahead_decay": 0.6} if lookahead else {}),
                           **SETTINGS[type_name])
    steps, iter_size = 6, values.iter_size

    whole = LeastSquares(np.float32)
    whole_solver = make_solver(values, whole.params)
    run(whole_solver, whole, 2 * steps, iter_size)

    first = LeastSquares(np.float32)
    first_solver = make_solver(values, first.params)
    run(first_solver, first, steps, iter_size)
    saved = copy.deepcopy(first_solver.state()), first_solver.iter
    weights = [p.data.copy() for p in first.params]
    assert [len(bufs) for bufs in saved[0]] == \
        [len(SOLVERS[type_name].buffers) + bool(lookahead)] * 2

    second = LeastSquares(np.float32)
    for p, w in zip(second.params, weights):
        p.data[...] = w
    second_solver = make_solver(values, second.params)
    second_solver.load_state(*saved)
    run(second_solver, second, steps, iter_size)

    assert second_solver.iter == whole_solver.iter == 2 * steps
    for resumed, straight in zip(second.params, whole.params):
        assert resumed.data.dtype == np.float32
        np.testing.assert_array_equal(resumed.data, straight.data)
    for resumed, straight in zip(second_solver.state(), whole_solver.state()):
        for a, b in zip(resumed, straight):
            np.testing.assert_array_equal(a, b)


def test_load_state_rejects_another_rules_buffers():
    problem = LeastSquares()
    adam = make_solver(solver_values(type="Adam"), problem.params)
    sgd_state = [[np.zeros(5)], [np.zeros(1)]]
    with pytest.raises(ValueError, match="Adam keeps 2 buffer"):
        adam.load_state(sgd_state, 3)
    with pytest.raises(ValueError, match="shape"):
        adam.load_state([[np.zeros(4), np.zeros(4)], [np.zeros(1), np.zeros(1)]], 3)
