"""The solver block of a config: new fields, their defaults and bounds, and one-line
errors for fields the chosen solver type or lr policy would ignore."""
import pytest

from cnntrain.config import parse_solver
from cnntrain.config.yaml_lines import load_yaml_text
from cnntrain.errors import ConfigError
from test_solver import solver_values


def test_defaults_are_caffes():
    s = solver_values()
    assert (s.type, s.momentum, s.delta, s.rms_decay, s.momentum2) == (
        "SGD", 0.0, 1e-8, 0.99, 0.999)
    assert (s.clip_gradients, s.iter_size, s.regularization_type, s.weight_decay_mode) == (
        0.0, 1, "L2", "coupled")
    assert (s.min_lr, s.warmup_iter, s.warmup_start_factor) == (0.0, 0, 0.0)


@pytest.mark.parametrize("type_name, momentum", [
    ("SGD", 0.0), ("Nesterov", 0.0), ("AdaGrad", 0.0), ("RMSProp", 0.0),
    ("AdaDelta", 0.95), ("Adam", 0.9),
])
def test_momentum_default_depends_on_the_type(type_name, momentum):
    assert solver_values(type=type_name).momentum == momentum


def test_a_given_momentum_wins():
    assert solver_values(type="Adam", momentum=0.8).momentum == 0.8


def test_every_new_field_parses():
    s = solver_values(type="Adam", momentum2=0.99, delta=1e-6, clip_gradients=10.0, iter_size=4,
                      regularization_type="L1", weight_decay=1e-4, lr_policy="cosine",
                      min_lr=1e-4, warmup_iter=50, warmup_start_factor=0.1)
    assert (s.momentum2, s.iter_size, s.regularization_type, s.min_lr) == (0.99, 4, "L1", 1e-4)


@pytest.mark.parametrize("extra, field, words", [
    ({"rms_decay": 0.9}, "rms_decay", "rms_decay is only used by RMSProp (this solver is SGD)"),
    ({"type": "Adam", "rms_decay": 0.9}, "rms_decay", "only used by RMSProp"),
    ({"type": "AdaGrad", "momentum": 0.9}, "momentum",
     "momentum is only used by SGD/Nesterov/AdaDelta/Adam (this solver is AdaGrad)"),
    ({"type": "RMSProp", "momentum": 0.0}, "momentum", "only used by SGD/Nesterov/AdaDelta/Adam"),
    ({"momentum2": 0.99}, "momentum2", "momentum2 is only used by Adam"),
    ({"type": "Nesterov", "delta": 1e-6}, "delta",
     "delta is only used by AdaGrad/RMSProp/AdaDelta/Adam"),
    ({"lr_policy": "step", "gamma": 0.1, "stepsize": 10, "min_lr": 0.01}, "min_lr",
     "min_lr is only used by lr_policy cosine"),
    ({"lr_policy": "cosine", "min_lr": 0.2}, "min_lr", "must not exceed base_lr (0.1)"),
    ({"warmup_start_factor": 0.1}, "warmup_start_factor",
     "warmup_start_factor is only used with warmup_iter > 0"),
    ({"weight_decay_mode": "decoupled", "regularization_type": "L1"}, "regularization_type",
     "regularization_type is only used with weight_decay_mode coupled"),
    ({"type": "Adagrad"}, "type", "did you mean 'AdaGrad'"),
    ({"weight_decay_mode": "adamw"}, "weight_decay_mode", "must be one of coupled, decoupled"),
    ({"regularization_type": "L3"}, "regularization_type", "must be one of L2, L1"),
    ({"iter_size": 0}, "iter_size", "must be >= 1"),
    ({"iter_size": 1.5}, "iter_size", "must be an integer"),
    ({"clip_gradients": -1}, "clip_gradients", "must be >= 0"),
    ({"type": "Adam", "delta": 0}, "delta", "must be > 0"),
    ({"type": "Adam", "momentum": 1.0}, "momentum", "must be < 1"),
    ({"type": "Adam", "momentum2": 1.0}, "momentum2", "must be < 1"),
    ({"type": "RMSProp", "rms_decay": 1.0}, "rms_decay", "must be < 1"),
    ({"warmup_iter": -1}, "warmup_iter", "must be >= 0"),
    ({"warmup_iter": 5, "warmup_start_factor": 1.5}, "warmup_start_factor", "must be <= 1"),
    ({"lr_policy": "cosine", "min_lr": -0.1}, "min_lr", "must be >= 0"),
    ({"lr_policy": "piecewise", "piecewise_iters": [0, 10]}, "piecewise_factors",
     "lr_policy 'piecewise' needs 'piecewise_factors'"),
    ({"lr_policy": "piecewise", "piecewise_iters": [0, 10], "piecewise_factors": [1.0]},
     "piecewise_factors", "needs one factor per piecewise_iters entry (2), got 1"),
    ({"lr_policy": "piecewise", "piecewise_iters": [0, 10, 10], "piecewise_factors": [1, 1, 0]},
     "piecewise_iters", "must be increasing"),
    ({"lr_policy": "piecewise", "piecewise_iters": [0, 10], "piecewise_factors": [1, -1]},
     "piecewise_factors", "must be >= 0"),
    ({"piecewise_iters": [0, 10]}, "piecewise_iters", "only used by lr_policy piecewise"),
    ({"lookahead_decay": 0.5}, "lookahead_decay", "only used with lookahead_interval > 0"),
    ({"lookahead_interval": 5, "lookahead_decay": 1.0}, "lookahead_decay", "must be < 1"),
])
def test_solver_errors_are_one_line_and_name_the_field(extra, field, words):
    with pytest.raises(ConfigError) as info:
        solver_values(**extra)
    err = info.value
    assert err.field == f"solver.{field}"
    assert words in str(err) and "\n" not in str(err)


def test_error_in_a_yaml_file_has_file_and_line():
    raw = load_yaml_text("solver:\n  base_lr: 0.1\n  max_iter: 10\n  rms_decay: 0.9\n", "s.yaml")
    with pytest.raises(ConfigError) as info:
        parse_solver(raw["solver"], "s.yaml")
    assert str(info.value).startswith("s.yaml:") and info.value.line is not None
