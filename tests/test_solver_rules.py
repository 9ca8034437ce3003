"""Every update rule and the shared update loop against numbers worked out by hand
from the formulas. Parameters are float64, so only rounding separates the two."""
import math

import numpy as np
import pytest

from cnntrain.blob import Param
from cnntrain.solvers import make_solver
from test_solver import solver_values

CLOSE = dict(rtol=1e-12, atol=1e-15)


def make(type_name, params, **kw):
    return make_solver(solver_values(type=type_name, **kw), params)


def step(solver, *diffs, iter_size=1):
    """Set each parameter's diff (as if backward had summed them) and update."""
    for p, d in zip(solver.params, diffs):
        p.diff[...] = d
    return solver.apply_update(iter_size)


# --- the rules -----------------------------------------------------------------------

def test_sgd_l1_iter_size_and_momentum_by_hand():
    w = Param(np.array([0.5, -1.0, 0.0]), decay_mult=2.0)
    sgd = make("SGD", [w], momentum=0.5, weight_decay=0.1, regularization_type="L1")
    step(sgd, [0.4, 0.6, 0.0], iter_size=2)
    # g = diff/2 + 0.1*2*sign(w) = [0.2+0.2, 0.3-0.2, 0+0] = [0.4, 0.1, 0]; v = 0.1*g
    np.testing.assert_allclose(w.data, [0.5 - 0.04, -1.0 - 0.01, 0.0], **CLOSE)
    step(sgd, [-0.2, 0.0, 0.0], iter_size=2)
    # g = [-0.1+0.2, 0-0.2, 0] = [0.1, -0.2, 0]; v = 0.5*[0.04, 0.01, 0] + 0.1*g = [0.03, -0.015, 0]
    np.testing.assert_allclose(w.data, [0.46 - 0.03, -1.01 + 0.015, 0.0], **CLOSE)
    np.testing.assert_allclose(sgd.state()[0][0], [0.03, -0.015, 0.0], **CLOSE)


def test_nesterov_l2_and_multipliers_by_hand():
    w = Param(np.array([1.0, -2.0]), lr_mult=2.0, decay_mult=0.5)
    frozen = Param(np.array([3.0]), lr_mult=0.0)
    nag = make("Nesterov", [w, frozen], momentum=0.9, weight_decay=0.01)
    # local rate 0.1*2 = 0.2, local decay 0.01*0.5 = 0.005
    step(nag, [0.5, 0.25], [7.0])
    # g = [0.5+0.005, 0.25-0.01] = [0.505, 0.24]; v = 0.2*g = [0.101, 0.048]
    # step = 1.9*v - 0.9*0 = [0.1919, 0.0912]
    np.testing.assert_allclose(w.data, [0.8081, -2.0912], **CLOSE)
    step(nag, [0.0, 0.0], [7.0])
    # g = 0.005*w = [0.0040405, -0.010456]; v' = 0.9*v + 0.2*g = [0.0917081, 0.0411088]
    # step = 1.9*v' - 0.9*v = [0.17424539-0.0909, 0.07810672-0.0432]
    np.testing.assert_allclose(w.data, [0.8081 - 0.08334539, -2.0912 - 0.03490672], **CLOSE)
    assert frozen.data[0] == 3.0 and not nag.state()[1][0].any() and nag.iter == 2


def test_adagrad_with_global_gradient_clipping_by_hand():
    a, b = Param(np.array([1.0, 2.0])), Param(np.array([-1.0]))
    ada = make("AdaGrad", [a, b], clip_gradients=1.0)
    d = 1e-8  # caffe.proto's default delta
    step(ada, [3.0, 0.0], [4.0])
    # the norm of all diffs is 5 > 1: scale by 0.2 -> g = [0.6, 0], [0.8]; h = g^2
    a1 = 1.0 - 0.1 * 0.6 / (0.6 + d)
    b1 = -1.0 - 0.1 * 0.8 / (0.8 + d)
    np.testing.assert_allclose(a.data, [a1, 2.0], **CLOSE)
    np.testing.assert_allclose(b.data, [b1], **CLOSE)
    step(ada, [0.3, 0.4], [0.0])
    # norm 0.5 <= 1: no clipping; h = [0.36+0.09, 0+0.16], [0.64]
    np.testing.assert_allclose(a.data, [a1 - 0.1 * 0.3 / (math.sqrt(0.45) + d),
                                        2.0 - 0.1 * 0.4 / (0.4 + d)], **CLOSE)
    np.testing.assert_allclose(b.data, [b1], **CLOSE)
    np.testing.assert_allclose(ada.state()[0][0], [0.45, 0.16], **CLOSE)


def test_rmsprop_iter_size_and_l2_by_hand():
    w0 = np.array([1.0, -2.0])
    w = Param(w0.copy(), decay_mult=0.5)
    rms = make("RMSProp", [w], rms_decay=0.9, delta=1e-6, weight_decay=0.1)
    step(rms, [2.0, -4.0], iter_size=4)
    # g = diff/4 + 0.1*0.5*w; h = 0.9*0 + 0.1*g^2
    g1 = np.array([2.0, -4.0]) / 4 + 0.05 * w0
    h1 = 0.1 * g1 ** 2
    w1 = w0 - 0.1 * g1 / (np.sqrt(h1) + 1e-6)
    np.testing.assert_allclose(g1, [0.55, -1.1], **CLOSE)  # the numbers above, spelled out
    np.testing.assert_allclose(w.data, w1, **CLOSE)
    step(rms, [0.4, 0.4], iter_size=4)
    g2 = np.array([0.1, 0.1]) + 0.05 * w1
    h2 = 0.9 * h1 + 0.1 * g2 ** 2
    np.testing.assert_allclose(w.data, w1 - 0.1 * g2 / (np.sqrt(h2) + 1e-6), **CLOSE)
    np.testing.assert_allclose(rms.state()[0][0], h2, **CLOSE)


def test_adadelta_local_rate_and_decoupled_decay_by_hand():
    w0 = np.array([1.0, -2.0])
    w = Param(w0.copy(), lr_mult=0.5)
    ada = make("AdaDelta", [w], base_lr=1.0, delta=1e-6, weight_decay=0.1,
               weight_decay_mode="decoupled")
    assert ada.s.momentum == 0.95  # the default rho
    d, shrink = 1e-6, 1 - 1.0 * 0.5 * 0.1  # decoupled: w *= 1 - lr*lr_mult*wd*decay_mult
    g1 = np.array([0.1, -0.2])
    step(ada, g1)
    eg1 = 0.05 * g1 ** 2
    s1 = g1 * np.sqrt((0 + d) / (eg1 + d))
    eu1 = 0.05 * s1 ** 2
    w1 = shrink * w0 - 0.5 * s1
    np.testing.assert_allclose(w.data, w1, **CLOSE)
    g2 = np.array([0.1, 0.1])
    step(ada, g2)
    eg2 = 0.95 * eg1 + 0.05 * g2 ** 2
    s2 = g2 * np.sqrt((eu1 + d) / (eg2 + d))
    eu2 = 0.95 * eu1 + 0.05 * s2 ** 2
    np.testing.assert_allclose(w.data, shrink * w1 - 0.5 * s2, **CLOSE)
    sq_grad, sq_update = ada.state()[0]
    np.testing.assert_allclose(sq_grad, eg2, **CLOSE)
    np.testing.assert_allclose(sq_update, eu2, **CLOSE)


def test_adam_bias_correction_and_decoupled_decay_by_hand():
    w0 = np.array([1.0, -2.0])
    w = Param(w0.copy())
    adam = make("Adam", [w], base_lr=0.01, weight_decay=0.1, weight_decay_mode="decoupled")
    assert (adam.s.momentum, adam.s.momentum2, adam.s.delta) == (0.9, 0.999, 1e-8)
    grads = [np.array([0.5, -1.0]), np.array([0.1, 0.3]), np.array([-0.2, 0.0])]
    m = v = np.zeros(2)
    expected = w0
    for t, g in enumerate(grads, start=1):
        step(adam, g)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g ** 2
        correction = math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        expected = expected * (1 - 0.01 * 0.1) - 0.01 * correction * m / (np.sqrt(v) + 1e-8)
        np.testing.assert_allclose(w.data, expected, **CLOSE)
        if t == 1:  # Adam's first step is lr*sign(g), whatever the gradient's size
            np.testing.assert_allclose(w.data, w0 * 0.999 - 0.01 * np.sign(g), rtol=1e-6)
    np.testing.assert_allclose(adam.state()[0][0], m, **CLOSE)
    np.testing.assert_allclose(adam.state()[0][1], v, **CLOSE)


# --- the shared loop ---------------------------------------------------------------

def test_clipping_comes_before_normalization_and_weight_decay_as_in_caffe():
    w = Param(np.array([1.0]))
    sgd = make("SGD", [w], clip_gradients=1.0, weight_decay=0.1)
    step(sgd, [4.0], iter_size=2)
    # Caffe: clip 4 -> 1, then /2 -> 0.5, then + 0.1*1 -> 0.6 (normalizing or adding the
    # decay first would give min(2.1, 1) = 1 instead)
    np.testing.assert_allclose(w.data, [1.0 - 0.1 * 0.6], **CLOSE)


def test_frozen_params_are_untouched_and_out_of_the_clipping_norm():
    w = Param(np.array([1.0, 1.0]))
    frozen = Param(np.array([5.0]), lr_mult=0.0)
    adam = make("Adam", [w, frozen], clip_gradients=1.0, weight_decay=0.5,
                weight_decay_mode="decoupled")
    step(adam, [0.3, -0.4], [100.0])  # norm 0.5 without the frozen diff: no clipping
    np.testing.assert_array_equal(w.diff, [0.3, -0.4])
    assert frozen.data[0] == 5.0 and frozen.diff[0] == 100.0
    assert not any(buf.any() for buf in adam.state()[1])


def test_decoupled_decay_matches_coupled_without_momentum_and_differs_with_it():
    def run(mode, momentum):
        w = Param(np.array([1.0]))
        sgd = make("SGD", [w], momentum=momentum, weight_decay=0.1, weight_decay_mode=mode)
        step(sgd, [1.0])
        step(sgd, [0.0])
        return w.data[0]

    # plain SGD: w - lr*(g + wd*w) == w*(1 - lr*wd) - lr*g
    assert run("coupled", 0.0) == pytest.approx(run("decoupled", 0.0), rel=1e-14)
    # with momentum 0.9, lr 0.1, wd 0.1:
    # coupled:   v = 0.1*1.1 = 0.11, w = 0.89; v = 0.9*0.11 + 0.1*0.089 = 0.1079, w = 0.7821
    # decoupled: v = 0.1, w = 0.99*1 - 0.1 = 0.89; v = 0.09, w = 0.99*0.89 - 0.09 = 0.7911
    assert run("coupled", 0.9) == pytest.approx(0.7821, rel=1e-12)
    assert run("decoupled", 0.9) == pytest.approx(0.7911, rel=1e-12)


def test_apply_update_returns_the_rate_it_used():
    w = Param(np.array([1.0]))
    sgd = make("SGD", [w], warmup_iter=4)
    assert [step(sgd, [1.0]) for _ in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    assert w.data[0] == pytest.approx(1.0 - 0.35)
