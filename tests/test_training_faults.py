"""Training that survives faults: divergence, signals, kill -9, snapshot rotation,
and exact resume for every solver type."""
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from cnntrain.snapshot import load_snapshot
from test_cli_e2e import CONFIG, metrics, run, weights, write_cifar10_binary

SOLVER_LINES = {
    "SGD": "  momentum: 0.9\n",
    "Nesterov": "  type: Nesterov\n  momentum: 0.9\n",
    "AdaGrad": "  type: AdaGrad\n",
    "RMSProp": "  type: RMSProp\n  rms_decay: 0.9\n",
    "AdaDelta": "  type: AdaDelta\n  momentum: 0.95\n",
    "Adam": "  type: Adam\n  momentum: 0.9\n  momentum2: 0.999\n",
}


def config_with(solver_type: str, **fields) -> str:
    text = CONFIG.replace("  momentum: 0.9\n", SOLVER_LINES[solver_type])
    if solver_type in ("AdaDelta",):
        text = text.replace("base_lr: 0.05", "base_lr: 1.0")
    elif solver_type in ("AdaGrad", "RMSProp", "Adam"):
        text = text.replace("base_lr: 0.05", "base_lr: 0.01")
    for key, value in fields.items():
        text = text.replace("solver:\n", f"solver:\n  {key}: {value}\n")
    return text


@pytest.fixture
def data(tmp_path):
    return write_cifar10_binary(tmp_path / "data")


@pytest.mark.parametrize("solver_type", sorted(SOLVER_LINES))
def test_resume_is_exact_for_every_solver(tmp_path, data, solver_type):
    config = tmp_path / "c.yaml"
    config.write_text(config_with(solver_type))
    args = ["--data-dir", data, "--no-progress"]
    assert run("train", config, "--runs-dir", tmp_path / "a", *args).exit_code == 0
    snaps = tmp_path / "a" / "tiny" / "snapshots"
    resumed = run("train", config, "--runs-dir", tmp_path / "b", *args,
                  "--resume", snaps / "iter_6.h5")
    assert resumed.exit_code == 0, resumed.output
    a, b = weights(snaps / "iter_12.h5"), weights(tmp_path / "b" / "tiny" / "snapshots" / "iter_12.h5")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{solver_type} {key}")
    with h5py.File(snaps / "iter_12.h5") as f:
        kept = len(f["solver/history/ip/0"])
    assert kept == {"SGD": 1, "Nesterov": 1, "AdaGrad": 1, "RMSProp": 1, "AdaDelta": 2,
                    "Adam": 2}[solver_type]


def test_resume_with_another_solver_type_is_refused(tmp_path, data):
    config = tmp_path / "c.yaml"
    config.write_text(config_with("SGD"))
    assert run("train", config, "--runs-dir", tmp_path / "a", "--data-dir", data,
               "--no-progress").exit_code == 0
    config.write_text(config_with("Adam"))
    snap = tmp_path / "a" / "tiny" / "snapshots" / "iter_6.h5"
    refused = run("train", config, "--runs-dir", tmp_path / "b", "--data-dir", data,
                  "--no-progress", "--resume", snap)
    assert refused.exit_code == 4 and "SGD solver" in refused.output and "--weights" in refused.output
    allowed = run("train", config, "--runs-dir", tmp_path / "b", "--data-dir", data,
                  "--no-progress", "--weights", snap)
    assert allowed.exit_code == 0


def test_divergence_stops_with_iteration_and_layer_and_keeps_the_last_snapshot(tmp_path, data):
    config = tmp_path / "c.yaml"
    config.write_text(config_with("SGD").replace("base_lr: 0.05", "base_lr: 1.0e+8")
                      .replace("snapshot: 6", "snapshot: 1"))
    result = run("train", config, "--runs-dir", tmp_path / "r", "--data-dir", data, "--no-progress")
    assert result.exit_code == 5, result.output
    line = [x for x in result.output.splitlines() if x.startswith("error:")][0]
    assert "diverged at iteration" in line and "layer '" in line and "last good snapshot" in line
    snaps = sorted((tmp_path / "r" / "tiny" / "snapshots").glob("iter_*.h5"))
    assert snaps, "an earlier snapshot must exist"
    for path in snaps:  # every snapshot written holds only finite weights
        assert all(np.all(np.isfinite(w)) for w in weights(path).values())


def test_snapshot_keep_keeps_newest_and_best(tmp_path, data):
    config = tmp_path / "c.yaml"
    config.write_text(config_with("SGD", snapshot_keep=2).replace("snapshot: 6", "snapshot: 2")
                      .replace("test_interval: 6", "test_interval: 2"))
    assert run("train", config, "--runs-dir", tmp_path / "r", "--data-dir", data,
               "--no-progress").exit_code == 0
    run_dir = tmp_path / "r" / "tiny"
    tested = {int(r["iter"]): float(r["test_accuracy"]) for r in metrics(run_dir)
              if r["test_accuracy"] and int(r["iter"]) % 2 == 0 and int(r["iter"]) > 0}
    best = max(tested, key=lambda it: (tested[it], it))
    left = sorted(int(p.stem[5:]) for p in (run_dir / "snapshots").glob("iter_*.h5"))
    assert set(left) == {10, 12} | {best}


def _spawn(config, runs, data):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "cnntrain", "train", str(config), "--runs-dir",
                             str(runs), "--data-dir", str(data), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _wait_for(path_glob, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list(path_glob())
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        time.sleep(0.002)
    raise AssertionError("timed out")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_snapshots_and_resume_finishes_like_an_uninterrupted_run(tmp_path, data, sig):
    config = tmp_path / "c.yaml"
    config.write_text(config_with("SGD").replace("max_iter: 12", "max_iter: 400")
                      .replace("snapshot: 6", "snapshot: 0").replace("display: 1", "display: 10"))
    proc = _spawn(config, tmp_path / "r", data)
    _wait_for(lambda: [1] if (tmp_path / "r/tiny/metrics.csv").is_file() and
              len(metrics(tmp_path / "r/tiny")) >= 2 else [], proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 5, out
    assert "resume with: cnntrain train" in out and "Traceback" not in out
    snap = sorted((tmp_path / "r/tiny/snapshots").glob("iter_*.h5"))
    assert len(snap) == 1
    stopped_at = load_snapshot(snap[0]).iteration
    assert 0 < stopped_at < 400
    short = config_with("SGD").replace("max_iter: 12", f"max_iter: {stopped_at + 5}")
    config.write_text(short.replace("snapshot: 6", "snapshot: 0").replace("display: 1", "display: 10"))
    assert run("train", config, "--runs-dir", tmp_path / "r", "--data-dir", data, "--no-progress",
               "--resume", snap[0]).exit_code == 0
    assert run("train", config, "--runs-dir", tmp_path / "u", "--data-dir", data,
               "--no-progress").exit_code == 0
    end = f"iter_{stopped_at + 5}.h5"
    a = weights(tmp_path / "r/tiny/snapshots" / end)
    b = weights(tmp_path / "u/tiny/snapshots" / end)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_kill_9_during_a_snapshot_write_leaves_earlier_snapshots_readable(tmp_path, data):
    # A wide layer makes each snapshot write take long enough to be caught mid-write.
    config = tmp_path / "c.yaml"
    text = config_with("SGD").replace("max_iter: 12", "max_iter: 100000")
    text = text.replace("inner_product_param: {num_output: 10}",
                        "inner_product_param: {num_output: 10}\n"
                        "    - name: wide\n      type: InnerProduct\n      bottom: ip\n"
                        "      top: wide\n      inner_product_param: {num_output: 400000}")
    config.write_text(text.replace("snapshot: 6", "snapshot: 1").replace("display: 1", "display: 0")
                      .replace("test_interval: 6", "test_interval: 0"))
    snaps = tmp_path / "r/tiny/snapshots"
    proc = _spawn(config, tmp_path / "r", data)
    try:
        _wait_for(lambda: [p for p in snaps.glob("iter_*.h5")], proc)
        _wait_for(lambda: [p for p in snaps.glob(".iter_*.tmp-*")], proc)  # a write under way
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    done = sorted(snaps.glob("iter_*.h5"))
    assert done
    for path in done:
        assert load_snapshot(path).resumable
    newest = max(done, key=lambda p: int(p.stem[5:]))
    config.write_text(config.read_text().replace("max_iter: 100000",
                                                 f"max_iter: {int(newest.stem[5:]) + 1}"))
    resumed = run("train", config, "--runs-dir", tmp_path / "r", "--data-dir", data,
                  "--no-progress", "--resume", newest)
    assert resumed.exit_code == 0, resumed.output


def test_schedule_command_prints_the_curve(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    result = run("schedule", config, "--points", 3)
    assert result.exit_code == 0
    rows = [line.split() for line in result.output.splitlines()[1:]]
    assert rows == [["0", "0.05"], ["6", "0.025"], ["12", "0.0125"]]
