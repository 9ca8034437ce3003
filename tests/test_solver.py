"""SGD's update rule against hand-computed numbers, Caffe's lr policies, cosine and warmup."""
import math

import numpy as np
import pytest

from cnntrain.blob import Param
from cnntrain.config import parse_solver
from cnntrain.solvers import SGD, learning_rate


def solver_values(**kw):
    return parse_solver({"base_lr": 0.1, "max_iter": 100, **kw}, "test").values


def test_sgd_momentum_weight_decay_and_multipliers_by_hand():
    w = Param(np.array([1.0, -2.0]), lr_mult=2.0, decay_mult=0.5)
    frozen = Param(np.array([3.0]), lr_mult=0.0)
    sgd = SGD(solver_values(momentum=0.9, weight_decay=0.01), [w, frozen])
    w.diff[...] = [0.5, 0.25]
    sgd.apply_update()
    # v = 0.9*0 + 0.1*2*(g + 0.01*0.5*w) = 0.2*[0.505, 0.24] = [0.101, 0.048]
    np.testing.assert_allclose(w.data, [1.0 - 0.101, -2.0 - 0.048])
    w.diff[...] = [0.0, 0.0]
    sgd.apply_update()
    # v = 0.9*[0.101, 0.048] + 0.2*(0.005*w) with w = [0.899, -2.048]
    v2 = 0.9 * np.array([0.101, 0.048]) + 0.2 * 0.005 * np.array([0.899, -2.048])
    np.testing.assert_allclose(w.data, [0.899, -2.048] - v2)
    assert frozen.data[0] == 3.0 and sgd.iter == 2


def test_sgd_lowers_a_quadratic():
    w = Param(np.array([5.0, -3.0]))
    sgd = SGD(solver_values(momentum=0.9, base_lr=0.05), [w])
    for _ in range(200):
        w.diff[...] = w.data  # gradient of |w|^2 / 2
        sgd.apply_update()
    assert np.abs(w.data).max() < 1e-3


@pytest.mark.parametrize("policy, extra, it, expected", [
    ("fixed", {}, 50, 0.1),
    ("step", {"gamma": 0.5, "stepsize": 20}, 45, 0.1 * 0.5 ** 2),
    ("multistep", {"gamma": 0.1, "stepvalue": [10, 30]}, 9, 0.1),
    ("multistep", {"gamma": 0.1, "stepvalue": [10, 30]}, 10, 0.01),
    ("multistep", {"gamma": 0.1, "stepvalue": [10, 30]}, 31, 0.001),
    ("exp", {"gamma": 0.99}, 7, 0.1 * 0.99 ** 7),
    ("inv", {"gamma": 0.0001, "power": 0.75}, 1000, 0.1 * (1 + 0.1) ** -0.75),
    ("poly", {"power": 2.0}, 25, 0.1 * (1 - 25 / 100) ** 2),
    ("sigmoid", {"gamma": -0.1, "stepsize": 50}, 60, 0.1 / (1 + math.exp(0.1 * 10))),
])
def test_lr_policies(policy, extra, it, expected):
    assert learning_rate(solver_values(lr_policy=policy, **extra), it) == pytest.approx(expected)


def cosine(it, base=0.1, low=0.0, max_iter=100):
    return low + (base - low) * 0.5 * (1 + math.cos(math.pi * it / max_iter))


@pytest.mark.parametrize("extra, it, expected", [
    ({}, 0, 0.1),
    ({}, 25, 0.1 * 0.5 * (1 + math.sqrt(0.5))),
    ({}, 50, 0.05),
    ({}, 100, 0.0),
    ({}, 130, 0.0),  # held at the floor past max_iter
    ({"min_lr": 0.01}, 0, 0.1),
    ({"min_lr": 0.01}, 25, 0.01 + 0.09 * 0.5 * (1 + math.sqrt(0.5))),
    ({"min_lr": 0.01}, 50, 0.055),
    ({"min_lr": 0.01}, 100, 0.01),
])
def test_cosine_policy(extra, it, expected):
    values = solver_values(lr_policy="cosine", **extra)
    assert learning_rate(values, it) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("extra, it, expected", [
    # step halves every 5 iterations; the warmup factor is (it + 1)/10 below it = 10
    ({"lr_policy": "step", "gamma": 0.5, "stepsize": 5}, 0, 0.1 * 1 / 10),
    ({"lr_policy": "step", "gamma": 0.5, "stepsize": 5}, 4, 0.1 * 5 / 10),
    ({"lr_policy": "step", "gamma": 0.5, "stepsize": 5}, 7, 0.05 * 8 / 10),
    ({"lr_policy": "step", "gamma": 0.5, "stepsize": 5}, 9, 0.05),
    ({"lr_policy": "step", "gamma": 0.5, "stepsize": 5}, 10, 0.025),
    # from 0.2 of the rate: factor 0.2 + 0.8*(it + 1)/10
    ({"lr_policy": "cosine", "warmup_start_factor": 0.2}, 0, cosine(0) * 0.28),
    ({"lr_policy": "cosine", "warmup_start_factor": 0.2}, 4, cosine(4) * 0.6),
    ({"lr_policy": "cosine", "warmup_start_factor": 0.2}, 9, cosine(9)),
    ({"lr_policy": "cosine", "warmup_start_factor": 0.2}, 60, cosine(60)),
    ({"lr_policy": "cosine", "min_lr": 0.02}, 2, cosine(2, low=0.02) * 3 / 10),
])
def test_warmup_ramps_up_to_any_policy(extra, it, expected):
    values = solver_values(warmup_iter=10, **extra)
    assert learning_rate(values, it) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("it, factor", [(0, 0.2), (5, 0.2 + 0.8 * 5 / 23), (23, 1.0),
                                        (61, 1.0 - 0.93 * 38 / 77), (100, 0.07), (150, 0.07)])
def test_piecewise_policy_interpolates_between_its_points(it, factor):
    """airbench's schedule: from 0.2 up to 1 at 23 % of the run, then down to 0.07."""
    values = solver_values(lr_policy="piecewise", piecewise_iters=[0, 23, 100],
                           piecewise_factors=[0.2, 1.0, 0.07])
    assert learning_rate(values, it) == pytest.approx(0.1 * factor, rel=1e-12)


def test_a_parameter_stops_learning_at_its_freeze_iter():
    w = Param(np.array([1.0]), freeze_iter=3)
    sgd = SGD(solver_values(momentum=0.5), [w])
    seen = []
    for _ in range(6):
        w.diff[...] = 1.0
        sgd.apply_update()
        seen.append(float(w.data[0]))
    # v: 0.1, 0.15, 0.175 over the first three updates; then nothing moves
    np.testing.assert_allclose(seen, [0.9, 0.75, 0.575, 0.575, 0.575, 0.575])


def test_lookahead_by_hand():
    """k = 2, d = 0.5: after updates 2 and 4, slow ← (slow + w)/2 and w ← slow; at
    max_iter = 5 the weights become the slow weights again."""
    w = Param(np.array([1.0]))
    sgd = SGD(solver_values(base_lr=0.1, max_iter=5, lookahead_interval=2,
                            lookahead_decay=0.5), [w])
    seen = []
    for _ in range(5):
        w.diff[...] = 1.0          # each update moves w by -0.1
        sgd.apply_update()
        seen.append(float(w.data[0]))
    # 0.9; 0.8 -> slow (1 + 0.8)/2 = 0.9, w = 0.9; 0.8; 0.7 -> slow (0.9 + 0.7)/2 = 0.8;
    # 0.7 at the fifth update, then w <- slow = 0.8 (max_iter)
    np.testing.assert_allclose(seen, [0.9, 0.9, 0.8, 0.8, 0.8])
    assert sgd.state_names == ("velocity", "slow")
    np.testing.assert_allclose(sgd.state()[0][1], [0.8])


def test_lookahead_decay_ramps_with_the_iteration():
    w = Param(np.array([0.0]))
    sgd = SGD(solver_values(base_lr=1.0, max_iter=4, lookahead_interval=2,
                            lookahead_decay=0.8, lookahead_decay_power=2), [w])
    for _ in range(2):
        w.diff[...] = -1.0         # w rises by 1 per update
        sgd.apply_update()
    d = 0.8 * (2 / 4) ** 2         # 0.2: slow = 0.2*0 + 0.8*2
    assert w.data[0] == pytest.approx((1 - d) * 2.0)
