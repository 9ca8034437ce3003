"""Numerical faults: NaN inputs, huge and growing learning rates, zero-variance batches
for BatchNorm. Training stops with one ``error:`` line (exit 5) that names the
iteration and the layer, every snapshot on disk holds finite numbers only, and the
last good one, named in the message, resumes.

The divergence test of the tiny config with ``base_lr: 1e8`` is in
``test_training_faults.py``; these add the other routes to a non-finite number.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import fault_figures
from cnntrain.data.transforms import Transformer
from cnntrain.layers import LAYER_TYPES
from cnntrain.snapshot import load_snapshot
from test_cli_e2e import CONFIG, weights, write_cifar10_binary
from test_training_faults import SOLVER_LINES, config_with
from tool_helpers import run


@pytest.fixture
def data(tmp_path):
    return write_cifar10_binary(tmp_path / "data")


def diverged(result, runs) -> tuple[int, str]:
    """Check the one-line divergence error and the snapshots left; returns the
    iteration it names and the line."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        fault_figures.add("tracebacks")
        raise AssertionError(repr(result.exception)) from result.exception
    lines = result.stderr.splitlines()
    assert result.exit_code == 5, result.output
    assert len(lines) == 1 and lines[0].startswith("error: training diverged at iteration "), \
        result.stderr
    line = lines[0]
    assert "layer '" in line, line
    at = int(re.search(r"at iteration (\d+)", line).group(1))
    snaps = sorted((runs / "tiny" / "snapshots").glob("iter_*.h5"))
    for path in snaps:   # no snapshot of a diverged state
        assert int(path.stem[5:]) <= at, (path, line)
        assert all(np.all(np.isfinite(w)) for w in weights(path).values()), path
    if snaps:
        last = max(snaps, key=lambda p: int(p.stem[5:]))
        assert f"last good snapshot: {last}" in line, line
    else:
        assert "no snapshot was written yet" in line
    fault_figures.add("numerical")
    return at, line


def test_nan_in_an_input_batch_stops_and_the_last_good_snapshot_resumes_exactly(
        tmp_path, data, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.replace("snapshot: 6", "snapshot: 2"))
    args = ["--data-dir", data, "--no-progress"]
    assert run("train", config, "--runs-dir", tmp_path / "ref", *args).exit_code == 0

    real, calls = Transformer.__call__, []

    def corrupt(self, images, rng, *where):
        out = real(self, images, rng, *where)
        if self.train:
            calls.append(1)
            if len(calls) == 6:          # one pixel of one training batch is NaN
                out[1, 2, 3, 4] = np.nan
        return out

    monkeypatch.setattr(Transformer, "__call__", corrupt)
    runs = tmp_path / "r"
    at, line = diverged(run("train", config, "--runs-dir", runs, *args), runs)
    assert "first non-finite output: layer 'cifar' (top 'data')" in line, line
    assert at == 5
    monkeypatch.undo()
    last = runs / "tiny" / "snapshots" / "iter_4.h5"
    resumed = run("train", config, "--runs-dir", runs, *args, "--resume", last)
    assert resumed.exit_code == 0, resumed.output
    a, b = weights(runs / "tiny/snapshots/iter_12.h5"), weights(tmp_path / "ref/tiny/snapshots/iter_12.h5")
    for key in b:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("solver_type", sorted(SOLVER_LINES))
def test_huge_learning_rate_stops_every_solver(tmp_path, data, solver_type):
    config = tmp_path / "c.yaml"
    text = re.sub(r"base_lr: [0-9.e+]+", "base_lr: 1.0e+30", config_with(solver_type))
    config.write_text(text.replace("snapshot: 6", "snapshot: 1").replace("max_iter: 12",
                                                                         "max_iter: 30"))
    runs = tmp_path / "r"
    diverged(run("train", config, "--runs-dir", runs, "--data-dir", data, "--no-progress"), runs)


def test_learning_rate_growing_past_float32_never_writes_inf_weights(tmp_path, data):
    """An update can overflow the weights while the loss that led to it was finite: the
    snapshot of that iteration must not be written."""
    config = tmp_path / "c.yaml"
    text = CONFIG.replace("lr_policy: step\n  gamma: 0.5\n  stepsize: 5",
                          "lr_policy: exp\n  gamma: 1.0e+4")
    config.write_text(text.replace("snapshot: 6", "snapshot: 1").replace("max_iter: 12",
                                                                         "max_iter: 40")
                      .replace("momentum: 0.9", "momentum: 0.0").replace("test_interval: 6",
                                                                         "test_interval: 0"))
    runs = tmp_path / "r"
    at, line = diverged(run("train", config, "--runs-dir", runs, "--data-dir", data,
                            "--no-progress"), runs)
    assert at > 3, line     # it did train for a while and snapshot good states
    last = max((runs / "tiny" / "snapshots").glob("iter_*.h5"), key=lambda p: int(p.stem[5:]))
    assert load_snapshot(last).resumable


def test_weights_overflowing_in_an_update_are_never_snapshotted(tmp_path, data, monkeypatch):
    """The update itself overflows (the loss and gradient that led to it were finite):
    the snapshot due at that iteration is not written and the error says why."""
    from cnntrain.solvers.base import Solver

    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.replace("snapshot: 6", "snapshot: 1"))
    real = Solver.apply_update

    def overflowing(self, *args, **kwargs):
        lr = real(self, *args, **kwargs)
        if self.iter == 3:
            self.params[-1].data[0] = np.inf
        return lr

    monkeypatch.setattr(Solver, "apply_update", overflowing)
    runs = tmp_path / "r"
    at, line = diverged(run("train", config, "--runs-dir", runs, "--data-dir", data,
                            "--no-progress"), runs)
    assert at == 3 and "a weight is not finite after the update" in line, line
    assert "layer 'ip' param 1" in line and "iter_2.h5" in line, line


BATCHNORM_CONFIG = CONFIG.replace(
    "      convolution_param: {num_output: 4, kernel_size: 3, stride: 2, pad: 1}\n",
    "      convolution_param: {num_output: 4, kernel_size: 3, stride: 2, pad: 1,\n"
    "                          weight_filler: {type: constant, value: 0},\n"
    "                          bias_filler: {type: constant, value: 1}}\n"
    "    - name: bn1\n      type: BatchNorm\n      bottom: conv1\n      top: bn1\n"
).replace("bottom: conv1\n      top: pool1", "bottom: bn1\n      top: pool1")


def test_zero_variance_batches_for_batchnorm_stay_finite_or_stop_clearly(tmp_path, data):
    """Every channel entering BatchNorm is constant (zero weights, bias 1): its variance
    is exactly 0. Training goes on with finite numbers (eps), or stops with the
    divergence error; never a traceback, never a NaN snapshot."""
    if "BatchNorm" not in LAYER_TYPES:
        pytest.skip("the BatchNorm layer is not in this build yet")
    config = tmp_path / "c.yaml"
    config.write_text(BATCHNORM_CONFIG.replace("snapshot: 6", "snapshot: 2"))
    runs = tmp_path / "r"
    result = run("train", config, "--runs-dir", runs, "--data-dir", data, "--no-progress")
    if result.exit_code == 0:
        for path in (runs / "tiny" / "snapshots").glob("iter_*.h5"):
            assert all(np.all(np.isfinite(w)) for w in weights(path).values()), path
        fault_figures.add("numerical")
    else:
        diverged(result, runs)
