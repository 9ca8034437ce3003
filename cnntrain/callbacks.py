"""Hooks of the training loop: a short list of objects the Trainer calls at fixed
points, so that extras (curves, the run report, TensorBoard, early stopping) live
beside the loop instead of inside it.

A callback's ``state()`` is saved in every snapshot under its ``state_key`` and
given back to ``load_state`` on ``--resume``, so a resumed run behaves exactly as an
uninterrupted one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from cnntrain.evaluate import Evaluation
    from cnntrain.trainer import Trainer


class Callback:
    """Does nothing at every point; subclasses override what they need."""

    state_key: str | None = None     # its name in snapshots; None: it keeps no state

    def on_train_start(self, trainer: "Trainer") -> None:
        """When the loop starts, after the run folder is set up (and after a resume)."""

    def on_metrics(self, row: dict) -> None:
        """After each row written to metrics.csv (display rows and test rows)."""

    def on_test(self, trainer: "Trainer", evaluation: "Evaluation") -> str | None:
        """After each test and its metrics row. A text returned asks the loop to stop
        early, with that text as the reason."""
        return None

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        """Restore what :meth:`state` returned (from a snapshot, on resume)."""

    def close(self) -> None:
        """At the end of training, whether it finished, stopped or failed."""


class OnTest(Callback):
    """Calls ``fn()`` after each test (``train --plot`` redraws its curves there)."""

    def __init__(self, fn: Callable[[], None]):
        self.fn = fn

    def on_test(self, trainer, evaluation):
        self.fn()
        return None


class EarlyStop(Callback):
    """Stops training when a test metric has not improved for ``patience`` tests.

    An improvement is a value better than the best so far by more than
    ``min_delta`` (higher for test_accuracy, lower for test_loss). The test at
    iteration 0 (``test_initialization``) counts: it sets the first best.
    """

    state_key = "early_stop"
    METRICS = {"test_accuracy": "max", "test_loss": "min"}

    def __init__(self, metric: str, patience: int, min_delta: float = 0.0):
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.higher_is_better = self.METRICS[metric] == "max"
        self.best: float | None = None
        self.best_iter: int | None = None
        self.waited = 0            # tests since the last improvement

    @classmethod
    def from_config(cls, block) -> "EarlyStop":
        return cls(block["metric"], block["patience"], block["min_delta"])

    def value(self, evaluation: "Evaluation") -> float | None:
        return evaluation.accuracy if self.metric == "test_accuracy" else evaluation.loss

    def improves(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.higher_is_better:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_test(self, trainer, evaluation):
        value = self.value(evaluation)
        if value is None:
            return None
        iteration = trainer.solver.iter
        if self.improves(value):
            self.best, self.best_iter, self.waited = float(value), iteration, 0
            return None
        self.waited += 1
        if self.waited < self.patience:
            return None
        by = f" by more than {self.min_delta:g}" if self.min_delta else ""
        return (f"early stop at iteration {iteration}: {self.metric} has not improved{by} "
                f"in {self.waited} tests (best {self.best:.4f} at iteration {self.best_iter}, "
                f"now {value:.4f})")

    def state(self) -> dict:
        return {"metric": self.metric, "best": self.best, "best_iter": self.best_iter,
                "waited": self.waited}

    def load_state(self, state: dict) -> None:
        if state.get("metric") != self.metric:
            return       # the config now watches another metric: start counting afresh
        best, best_iter, waited = state.get("best"), state.get("best_iter"), state.get("waited")
        if not (best is None or isinstance(best, (int, float))) or \
                not (best_iter is None or isinstance(best_iter, int)) or \
                not isinstance(waited, int) or waited < 0:
            raise ValueError(f"early-stopping state {state!r} is not valid")
        self.best = None if best is None else float(best)
        self.best_iter, self.waited = best_iter, waited
