"""cnntrain lr-find and cnntrain sweep, on generated CIFAR-10 files."""
import csv
import json
import math

import numpy as np
import pytest

from cnntrain.tools.lr_find import rate_at, smooth, suggest
from cnntrain.tools.sweep import split_values, trial_name, Axis
from test_cli_e2e import metrics, run, setup, weights  # noqa: F401 (setup is a fixture)


# --- lr-find: the pieces --------------------------------------------------------------
def test_the_ramp_is_exponential_from_start_to_end():
    rates = [rate_at(i, 5, 1e-4, 1.0) for i in range(5)]
    np.testing.assert_allclose(rates, [1e-4, 1e-3, 1e-2, 1e-1, 1.0], rtol=1e-12)


def test_smoothing_is_bias_corrected():
    assert smooth([3.0] * 5, 0.9) == pytest.approx([3.0] * 5)
    # One step: the plain average would be 0.1 * 3; the corrected one is the value.
    s = smooth([1.0, 2.0], 0.5)
    assert s == pytest.approx([1.0, (0.25 * 1 + 0.5 * 2) / 0.75])


def test_suggestions_on_known_curves():
    rates = list(np.logspace(-6, 0, 121))
    x = np.log(rates)
    bowl = list((x - math.log(1e-2)) ** 2)
    assert suggest(rates, bowl)["min/10"] == pytest.approx(1e-3, rel=0.06)
    cliff = list(-np.tanh(x - math.log(1e-3)))
    assert suggest(rates, cliff)["steepest"] == pytest.approx(1e-3, rel=0.15)
    assert suggest(rates[:3], cliff[:3]) == {"min/10": None, "steepest": None}


# --- lr-find: the command -----------------------------------------------------------------
def test_lr_find_json_leaves_nothing_behind(setup, monkeypatch):
    tmp, data, config = setup
    monkeypatch.chdir(tmp)
    before = sorted(p.name for p in tmp.iterdir())
    result = run("lr-find", config, "--data-dir", data, "--iters", 20, "--start-lr", 1e-4,
                 "--end-lr", 1e-1, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    rates = doc["rates"]
    assert len(rates) == 20 and rates[0] == pytest.approx(1e-4) and rates[-1] == pytest.approx(0.1)
    np.testing.assert_allclose(np.diff(np.log(rates)), math.log(1000) / 19, rtol=1e-9)
    assert all(math.isfinite(v) for v in doc["losses"]) and doc["stopped"] is None
    assert doc["method"] == "min/10" and doc["suggested_base_lr"] == doc["suggestions"]["min/10"]
    assert 1e-5 <= doc["suggested_base_lr"] <= 1.0001e-2
    assert sorted(p.name for p in tmp.iterdir()) == before      # no runs/ folder


def test_lr_find_stops_when_the_loss_diverges_and_keeps_what_is_asked(setup, monkeypatch):
    tmp, data, config = setup
    monkeypatch.chdir(tmp)
    result = run("lr-find", config, "--data-dir", data, "--iters", 60, "--start-lr", 1e-3,
                 "--end-lr", 1e6, "--runs-dir", tmp / "kept", "--rows", 5)
    assert result.exit_code == 0, result.output
    assert "stopped early:" in result.output and "suggested base_lr:" in result.output
    folder = tmp / "kept" / "tiny-lr-find"
    with open(folder / "lr_find.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert 5 <= len(rows) < 60
    assert (folder / "config.yaml").read_text().startswith("name: tiny")
    assert not (tmp / "runs").exists()
    assert not list(folder.glob(".*tmp*"))


def test_lr_find_png(setup):
    pytest.importorskip("matplotlib", reason="the PNG needs the plot extra (matplotlib)")
    tmp, data, config = setup
    result = run("lr-find", config, "--data-dir", data, "--iters", 10, "-o", tmp / "lr.png",
                 "--quiet")
    assert result.exit_code == 0, result.output
    assert (tmp / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.output.strip().startswith("suggested base_lr:")


@pytest.mark.parametrize("args,code,words", [
    (["--start-lr", 1, "--end-lr", 0.1], 2, "must be above 0 and below --end-lr"),
    (["--iters", 2], 1, "--iters"),   # a usage error (exit 1; 2 means an invalid config)
    (["--set", "solver.base_lr=abc"], 2, "solver.base_lr"),
])
def test_lr_find_bad_input_is_one_line(setup, monkeypatch, args, code, words):
    tmp, data, config = setup
    monkeypatch.chdir(tmp)
    result = run("lr-find", config, "--data-dir", data, *args)
    assert result.exit_code == code and words in result.output
    assert "Traceback" not in result.output and not (tmp / "runs").exists()


def test_lr_find_missing_config(tmp_path):
    result = run("lr-find", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "nope.yaml" in result.output


# --- sweep: the pieces ----------------------------------------------------------------------
@pytest.mark.parametrize("text,parts", [
    ("0.01,0.05", ["0.01", "0.05"]),
    ("[4000,6000],[8000]", ["[4000,6000]", "[8000]"]),
    ("{type: gaussian, std: 0.01},{type: xavier}",
     ["{type: gaussian, std: 0.01}", "{type: xavier}"]),
    ("'a,b',c", ["'a,b'", "c"]),
    ("1", ["1"]),
])
def test_values_split_on_top_level_commas(text, parts):
    assert split_values(text) == parts


def test_trial_names_are_safe_folder_names():
    name = trial_name(3, 12, [Axis("solver.stepvalue", ()), Axis("solver.base_lr", ())],
                      ["[4000, 6000]", "1e-3"])
    assert name == "trial-03-stepvalue=_4000_6000_-base_lr=1e-3"


# --- sweep: the command -------------------------------------------------------------------
SETS = ["--set", "solver.base_lr=0.01,0.05", "--set", "solver.momentum=0,0.9"]


def test_sweep_dry_run_lists_the_grid_and_writes_nothing(setup):
    tmp, data, config = setup
    result = run("sweep", config, "--runs-dir", tmp / "runs", "--dry-run", *SETS,
                 "--set", "solver.stepvalue=[4,8],[6]", "--fix", "solver.lr_policy=multistep")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("8 trials in") and "each with solver.lr_policy=multistep" in lines[0]
    assert "1. trial-1-base_lr=0.01-momentum=0-stepvalue=_4_8: " \
           "solver.base_lr=0.01 solver.momentum=0 solver.stepvalue=[4,8]" in lines[1]
    assert "8. trial-8-base_lr=0.05-momentum=0.9-stepvalue=_6:" in lines[8]
    assert not (tmp / "runs").exists()


def _table(root):
    with open(root / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_runs_every_trial_and_a_second_start_skips_them(setup):
    tmp, data, config = setup
    result = run("sweep", config, "--data-dir", data, "--runs-dir", tmp / "runs", *SETS)
    assert result.exit_code == 0, result.output
    root = tmp / "runs" / "tiny-sweep"
    rows = _table(root)
    assert [(r["base_lr"], r["momentum"], r["status"]) for r in rows] == [
        ("0.01", "0", "done"), ("0.01", "0.9", "done"), ("0.05", "0", "done"),
        ("0.05", "0.9", "done")]
    for row, trial in zip(rows, sorted(root.glob("trial-*"))):
        tested = [float(r["test_accuracy"]) for r in metrics(trial) if r["test_accuracy"]]
        assert float(row["best_test_accuracy"]) == pytest.approx(max(tested), abs=1e-4)
        assert float(row["final_loss"]) == pytest.approx(float(metrics(trial)[-1]["loss"] or
                                                               metrics(trial)[-2]["loss"]), abs=1e-4)
        text = (trial / "config.yaml").read_text()
        assert f"name: {trial.name}" in text and (trial / "snapshots" / "iter_12.h5").is_file()
    assert "base_lr: 0.05" in (root / "trial-4-base_lr=0.05-momentum=0.9" / "config.yaml").read_text()
    assert (root / "results.md").read_text().startswith("| trial | base_lr | momentum |")
    logs = {p: p.read_text() for p in root.glob("trial-*/train.log")}
    again = run("sweep", config, "--data-dir", data, "--runs-dir", tmp / "runs", *SETS)
    assert again.exit_code == 0 and "4 of 4 trials finished" in again.output
    assert {p: p.read_text() for p in root.glob("trial-*/train.log")} == logs
    # Another grid in the same folder is refused, not mixed in.
    other = run("sweep", config, "--data-dir", data, "--runs-dir", tmp / "runs",
                "--set", "solver.base_lr=0.02")
    assert other.exit_code == 1 and "holds another sweep" in other.output


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no handler sees it."""


def test_a_killed_sweep_resumes_where_it_stopped(setup, monkeypatch):
    from cnntrain.trainer import Trainer

    tmp, data, config = setup
    sets = ["--set", "solver.base_lr=0.01,0.05"]
    full = run("sweep", config, "--data-dir", data, "--runs-dir", tmp / "a", *sets)
    assert full.exit_code == 0, full.output

    real_snapshot = Trainer._snapshot

    def snapshot_then_die(self):
        path = real_snapshot(self)
        if self.exp.name.startswith("trial-2") and self.solver.iter == 6:
            raise Killed
        return path

    monkeypatch.setattr(Trainer, "_snapshot", snapshot_then_die)
    with pytest.raises(Killed):
        run("sweep", config, "--data-dir", data, "--runs-dir", tmp / "b", *sets)
    monkeypatch.setattr(Trainer, "_snapshot", real_snapshot)
    root_a, root_b = tmp / "a" / "tiny-sweep", tmp / "b" / "tiny-sweep"
    state = json.loads((root_b / "sweep.json").read_text())
    assert [t["status"] for t in state["trials"]] == ["done", "pending"]
    first_log = (root_b / "trial-1-base_lr=0.01" / "train.log").read_text()

    again = run("sweep", config, "--data-dir", data, "--runs-dir", tmp / "b", *sets)
    assert again.exit_code == 0, again.output
    assert "1 of 2 trials finished" in again.output and "resuming trial-2" in again.output
    assert (root_b / "trial-1-base_lr=0.01" / "train.log").read_text() == first_log
    for trial in ("trial-1-base_lr=0.01", "trial-2-base_lr=0.05"):
        wa = weights(root_a / trial / "snapshots" / "iter_12.h5")
        wb = weights(root_b / trial / "snapshots" / "iter_12.h5")
        assert wa.keys() == wb.keys()
        for key in wa:
            np.testing.assert_array_equal(wa[key], wb[key])
    assert [r["best_test_accuracy"] for r in _table(root_a)] == \
        [r["best_test_accuracy"] for r in _table(root_b)]


def test_a_diverging_trial_is_marked_failed_and_the_sweep_goes_on(setup):
    tmp, data, config = setup
    result = run("sweep", config, "--data-dir", data, "--runs-dir", tmp / "runs", "--json",
                 "--set", "solver.base_lr=1e30,0.01")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [t["status"] for t in doc["trials"]] == ["failed", "done"]
    assert "not finite" in doc["trials"][0]["note"] or "loss" in doc["trials"][0]["note"]


@pytest.mark.parametrize("args,words", [
    (["--set", "solver.base_lr"], "expected PATH=V1,V2"),
    (["--set", "solver.base_lr=0.1,,0.2"], "empty value"),
    (["--set", "solver.stepvalue=[4,8"], "unclosed"),
    (["--set", "solver.base_lr=0.1", "--set", "solver.base_lr=0.2"], "set twice"),
    (["--set", "solver.base_lr=0.1,oops"], "solver.base_lr"),
    ([], "at least one --set"),
])
def test_sweep_bad_input_is_one_line_and_writes_nothing(setup, args, words):
    tmp, data, config = setup
    result = run("sweep", config, "--data-dir", data, "--runs-dir", tmp / "runs", *args)
    assert result.exit_code == 2, result.output
    assert words in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp / "runs").exists()


def test_a_stop_signal_ends_the_sweep_with_exit_5_and_it_continues_later(setup, monkeypatch):
    import os
    import signal

    from cnntrain.trainer import Trainer

    tmp, data, config = setup
    sets = ["--set", "solver.base_lr=0.01,0.05"]
    real_step = Trainer._accumulate_gradients

    def step_then_signal(self, passes):
        loss = real_step(self, passes)
        if self.exp.name.startswith("trial-2") and self.solver.iter == 3:
            os.kill(os.getpid(), signal.SIGINT)       # as Ctrl-C would
        return loss

    monkeypatch.setattr(Trainer, "_accumulate_gradients", step_then_signal)
    stopped = run("sweep", config, "--data-dir", data, "--runs-dir", tmp / "runs", *sets)
    assert stopped.exit_code == 5, stopped.output
    assert "sweep stopped in trial-2-base_lr=0.05" in stopped.output
    root = tmp / "runs" / "tiny-sweep"
    assert (root / "trial-2-base_lr=0.05" / "snapshots" / "iter_4.h5").is_file()
    monkeypatch.setattr(Trainer, "_accumulate_gradients", real_step)
    again = run("sweep", config, "--data-dir", data, "--runs-dir", tmp / "runs", *sets)
    assert again.exit_code == 0 and "resuming trial-2-base_lr=0.05 at iteration 4" in again.output
    assert [r["status"] for r in _table(root)] == ["done", "done"]
