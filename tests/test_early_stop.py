"""solver.early_stop: the rule, its config checks, and a stopped run that resumes exactly."""
import json

import h5py
import numpy as np
import pytest

from cnntrain.callbacks import EarlyStop
from test_cli_e2e import CONFIG, metrics, weights, write_cifar10_binary
from tool_helpers import run

SOLVER_TAIL = """\
  max_iter: 12
  display: 1
  test_interval: 6
  snapshot: 6
  random_seed: 3
"""


def config_with(early_stop: str, max_iter=24, test_interval=2, snapshot=2) -> str:
    assert SOLVER_TAIL in CONFIG
    return CONFIG.replace(SOLVER_TAIL, f"""\
  max_iter: {max_iter}
  display: 1
  test_interval: {test_interval}
  snapshot: {snapshot}
  random_seed: 3
  early_stop: {early_stop}
""")


@pytest.fixture
def data(tmp_path):
    return write_cifar10_binary(tmp_path / "data")


def train(tmp_path, data, text, runs="runs", *extra):
    config = tmp_path / "tiny.yaml"
    config.write_text(text)
    return run("train", config, "--data-dir", data, "--runs-dir", tmp_path / runs,
               "--no-progress", *extra)


def reference_stop(values, patience, min_delta, higher_is_better=True):
    """The iteration the rule stops at, from (iteration, value) pairs of every test."""
    best, waited = None, 0
    for it, value in values:
        better = best is None or (value > best + min_delta if higher_is_better
                                  else value < best - min_delta)
        if better:
            best, waited = value, 0
        else:
            waited += 1
            if waited == patience:
                return it
    return None


class FakeTrainer:
    def __init__(self):
        self.solver = type("S", (), {"iter": 0})()


class FakeEval:
    def __init__(self, accuracy, loss):
        self.accuracy, self.loss = accuracy, loss


@pytest.mark.parametrize("metric, values, patience, delta", [
    ("test_accuracy", [0.1, 0.3, 0.3, 0.31, 0.2, 0.5, 0.5, 0.49, 0.5], 3, 0.0),
    ("test_accuracy", [0.1, 0.3, 0.305, 0.31, 0.2, 0.5], 2, 0.01),
    ("test_loss", [2.0, 1.5, 1.6, 1.49, 1.2, 1.3, 1.25, 1.21], 3, 0.0),
    ("test_loss", [2.0, 1.95, 1.9, 1.0], 2, 0.1),
])
def test_rule_matches_a_plain_loop(metric, values, patience, delta):
    stop = EarlyStop(metric, patience, delta)
    trainer, got = FakeTrainer(), None
    for i, value in enumerate(values):
        trainer.solver.iter = 10 * i
        reason = stop.on_test(trainer, FakeEval(value, value))
        if reason:
            got = trainer.solver.iter
            assert f"{metric} has not improved" in reason and f"in {patience} tests" in reason
            break
    expected = reference_stop([(10 * i, v) for i, v in enumerate(values)], patience, delta,
                              metric == "test_accuracy")
    assert got == expected and expected is not None


def test_state_round_trips_and_bad_state_is_refused():
    stop = EarlyStop("test_loss", 4, 0.5)
    stop.best, stop.best_iter, stop.waited = 1.25, 300, 2
    other = EarlyStop("test_loss", 4, 0.5)
    other.load_state(json.loads(json.dumps(stop.state())))
    assert (other.best, other.best_iter, other.waited) == (1.25, 300, 2)
    fresh = EarlyStop("test_accuracy", 4)
    fresh.load_state(stop.state())          # another metric: its state does not apply
    assert (fresh.best, fresh.waited) == (None, 0)
    with pytest.raises(ValueError, match="early-stopping state"):
        other.load_state({"metric": "test_loss", "best": "x", "best_iter": 1, "waited": 0})


def test_stops_where_the_rule_says_with_reason_and_final_snapshot(tmp_path, data):
    full = train(tmp_path, data, config_with("null", snapshot=0), "full")
    assert full.exit_code == 0, full.output
    tests = [(int(r["iter"]), float(r["test_accuracy"])) for r in metrics(tmp_path / "full" / "tiny")
             if r["test_accuracy"]]
    expected = reference_stop(tests, 1, 0.0)
    assert expected is not None and expected < 24, tests       # the case must stop early

    result = train(tmp_path, data, config_with("{metric: test_accuracy, patience: 1}",
                                               snapshot=5), "es", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["iterations"] == expected
    assert doc["early_stop"].startswith(f"early stop at iteration {expected}: test_accuracy "
                                        "has not improved in 1 tests")
    assert doc["early_stop"] in result.stderr                       # printed as it happened
    run_dir = tmp_path / "es" / "tiny"
    assert doc["early_stop"] in (run_dir / "train.log").read_text()
    assert doc["snapshot"] == str(run_dir / "snapshots" / f"iter_{expected}.h5")
    rows = metrics(run_dir)
    assert max(int(r["iter"]) for r in rows) == expected
    assert [r for r in rows if r["test_accuracy"]][-1]["iter"] == str(expected)   # one test there
    assert sum(1 for r in rows if r["test_accuracy"] and int(r["iter"]) == expected) == 1
    # until it stopped, the run is the uninterrupted one
    full_losses = {r["iter"]: r["loss"] for r in metrics(tmp_path / "full" / "tiny") if r["loss"]}
    assert all(full_losses[r["iter"]] == r["loss"] for r in rows if r["loss"])


def test_resumed_run_stops_at_the_same_iteration_with_the_same_weights(tmp_path, data):
    # No change of the loss counts (min_delta 100): tests at 0, 2, 4, 6 stop the run at 6.
    # Resumed from iteration 4, it must remember the two tests without improvement.
    text = config_with("{metric: test_loss, patience: 3, min_delta: 100}")
    whole = train(tmp_path, data, text, "a")
    assert whole.exit_code == 0, whole.output
    assert "early stop at iteration 6: test_loss has not improved by more than 100 in 3 tests" \
        in whole.output
    snaps = tmp_path / "a" / "tiny" / "snapshots"
    assert sorted(p.name for p in snaps.iterdir()) == ["iter_2.h5", "iter_4.h5", "iter_6.h5"]
    with h5py.File(snaps / "iter_4.h5") as f:
        state = json.loads(f.attrs["callbacks"])["early_stop"]
    assert state["waited"] == 2 and state["best_iter"] == 0 and state["metric"] == "test_loss"

    resumed = train(tmp_path, data, text, "b", "--resume", snaps / "iter_4.h5")
    assert resumed.exit_code == 0, resumed.output
    assert "early stop at iteration 6" in resumed.output
    final = tmp_path / "b" / "tiny" / "snapshots" / "iter_6.h5"
    wa, wb = weights(snaps / "iter_6.h5"), weights(final)
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key])

    # A snapshot without the state (a run started without early stopping) starts afresh.
    plain = train(tmp_path, data, config_with("null"), "c")
    assert plain.exit_code == 0
    again = train(tmp_path, data, text, "d", "--resume",
                  tmp_path / "c" / "tiny" / "snapshots" / "iter_4.h5")
    assert again.exit_code == 0, again.output
    assert "holds no early stop state; it starts afresh here" in again.output
    assert "early stop at iteration 12" in again.output


@pytest.mark.parametrize("block, extra, words", [
    ("{metric: test_accuracy, patience: 2}", "test_interval: 0", "needs test_interval > 0"),
    ("{patience: 0}", "", "field 'solver.early_stop.patience': must be >= 1"),
    ("{metric: accuracy, patience: 2}", "", "must be one of test_accuracy, test_loss"),
    ("{metric: test_loss}", "", "field 'solver.early_stop.patience': is required"),
    ("{patience: 2, min_delta: -1}", "", "must be >= 0"),
    ("{patience: 2, wait: 3}", "", "unknown field"),
    ("5", "", "must be a mapping of fields"),
])
def test_config_errors_are_the_same_for_dry_run_and_train(tmp_path, data, block, extra, words):
    text = config_with(block)
    if extra:
        text = text.replace("test_interval: 2", extra)
    for args in (("--dry-run",), ()):
        result = train(tmp_path, data, text, "runs", *args)
        assert result.exit_code == 2, result.output
        assert words in result.stderr and result.stderr.count("\n") == 1
        assert result.stderr.startswith(f"error: {tmp_path / 'tiny.yaml'}:")


def test_test_accuracy_needs_an_accuracy_layer(tmp_path, data):
    text = config_with("{patience: 2}").replace("    - name: accuracy\n      type: Accuracy\n"
                                                "      bottom: [ip, label]\n      top: accuracy\n"
                                                "      include: {phase: TEST}\n", "")
    assert "Accuracy" not in text
    result = train(tmp_path, data, text, "runs", "--dry-run")
    assert result.exit_code == 2
    assert "metric test_accuracy needs an Accuracy layer" in result.stderr
    ok = train(tmp_path, data, text.replace("{patience: 2}", "{metric: test_loss, patience: 2}"),
               "runs", "--dry-run")
    assert ok.exit_code == 0, ok.output
