"""Grid sweeps: every combination of ``--set PATH=V1,V2,...`` values, one trial after
another, each a normal run folder with its own snapshots and exact resume.

The sweep lives in ``<runs dir>/<sweep name>/``: ``sweep.json`` (the grid and each
trial's state, rewritten atomically after every change), one run folder per trial
(``trial-<k>-<settings>``), and the table of results (``results.csv``,
``results.md``). Started again with the same config and grid, a sweep skips the
trials it finished and resumes the interrupted one from its newest snapshot, so a
killed sweep loses at most the iterations since that snapshot.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from cnntrain.backend import CPU, Device
from cnntrain.errors import CnnTrainError, ConfigError, TrainingError

STATE_FILE = "sweep.json"
STATE_VERSION = 1


def split_values(text: str) -> list[str]:
    """``"0.01,0.05"`` → ["0.01", "0.05"]; commas inside [...], {...} or quotes belong
    to the value (``[4000,6000],[8000]`` is two YAML lists)."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced '{ch}'")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth or quote:
        raise ValueError("an unclosed bracket or quote")
    parts.append(text[start:])
    return [p.strip() for p in parts]


@dataclass(frozen=True)
class Axis:
    """One ``--set``: a config path and the values it takes."""

    path: str
    values: tuple[str, ...]

    @property
    def short(self) -> str:
        """The path's last part (``solver.base_lr`` → ``base_lr``), for names and tables."""
        return self.path.rsplit(".", 1)[-1]


def parse_axes(sets: Sequence[str]) -> list[Axis]:
    """``--set`` texts → axes; bad ones are one-line ConfigErrors."""
    axes: list[Axis] = []
    for text in sets:
        path, eq, values = text.partition("=")
        if not eq or not path.strip():
            raise ConfigError(f"--set {text}: expected PATH=V1,V2,... e.g. "
                              "solver.base_lr=0.01,0.05")
        try:
            parts = split_values(values)
        except ValueError as err:
            raise ConfigError(f"--set {text}: {err}") from None
        if any(p == "" for p in parts):
            raise ConfigError(f"--set {text}: an empty value (two commas in a row?)")
        if path.strip() in {a.path for a in axes}:
            raise ConfigError(f"--set {text}: {path.strip()} is set twice")
        if path.strip() == "name":
            raise ConfigError(f"--set {text}: the sweep names each trial itself")
        axes.append(Axis(path.strip(), tuple(parts)))
    if not axes:
        raise ConfigError("give at least one --set PATH=V1,V2,...")
    return axes


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def trial_name(k: int, count: int, axes: Sequence[Axis], values: Sequence[str]) -> str:
    """``trial-01-base_lr=0.01-batch_size=64``: a folder name that says what it is."""
    desc = "-".join(f"{a.short}={v}" for a, v in zip(axes, values))
    desc = _UNSAFE.sub("_", desc).strip("_")[:60]
    return f"trial-{k:0{len(str(count))}d}-{desc}"


@dataclass
class Trial:
    """One point of the grid and how far it got."""

    name: str
    overrides: list[str]
    status: str = "pending"          # pending, done, failed
    seconds: float = 0.0             # training time of the sessions that ended
    best_test_accuracy: float | None = None
    best_iter: int | None = None
    final_loss: float | None = None
    iterations: int | None = None
    note: str | None = None


@dataclass
class Sweep:
    """A grid over one config; :meth:`run` trains what is left of it."""

    config: Path
    root: Path
    axes: list[Axis]
    base_overrides: list[str] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)

    @classmethod
    def plan(cls, config: str | Path, sets: Sequence[str], runs_dir: str | Path,
             name: str | None = None, base_overrides: Sequence[str] = ()) -> "Sweep":
        """The sweep's trials, each config loaded and validated (so a bad value stops
        the sweep before anything is written)."""
        from cnntrain.config.overrides import load_experiment_with

        axes = parse_axes(sets)
        grid = list(itertools.product(*(a.values for a in axes)))
        # The config's own name, read with the first trial's settings (the config
        # alone may be incomplete without them).
        first = [*base_overrides, *(f"{a.path}={v}" for a, v in zip(axes, grid[0]))]
        base = load_experiment_with(config, first)
        root = Path(runs_dir) / (name or f"{base.name}-sweep")
        sweep = cls(Path(config), root, axes, list(base_overrides))
        for k, values in enumerate(grid, start=1):
            tname = trial_name(k, len(grid), axes, values)
            overrides = [*base_overrides, *(f"{a.path}={v}" for a, v in zip(axes, values))]
            exp = load_experiment_with(config, overrides + [f"name={tname}"])
            if not 0 < exp.solver.snapshot < exp.solver.max_iter:
                # Without snapshots before the end an interrupted trial could only
                # start over.
                overrides.append(f"solver.snapshot={max(1, exp.solver.max_iter // 4)}")
            sweep.trials.append(Trial(tname, overrides))
        return sweep

    def swept(self, trial: Trial) -> list[str]:
        """The ``PATH=VALUE`` settings of ``trial`` that the grid varies."""
        start = len(self.base_overrides)
        return trial.overrides[start:start + len(self.axes)]

    # --- state -----------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    def _grid_dict(self) -> dict:
        return {"config": str(self.config), "axes": [[a.path, list(a.values)] for a in self.axes],
                "base_overrides": self.base_overrides,
                "trials": [t.name for t in self.trials],
                "overrides": [t.overrides for t in self.trials]}

    def load_state(self) -> bool:
        """Take the trial states of an earlier start of this sweep; False if none.
        A different grid in the same folder is an error, not a silent mix."""
        if not self.state_path.is_file():
            return False
        try:
            saved = json.loads(self.state_path.read_text())
            grid, states = saved["grid"], saved["trials"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CnnTrainError(f"{self.state_path} is unreadable ({err}); remove it or "
                                "give the sweep another --name") from None
        mine = self._grid_dict()
        if grid != mine:
            raise CnnTrainError(f"{self.root} holds another sweep (other --set values); give "
                                "this one another --name")
        fields = set(Trial.__dataclass_fields__) - {"name", "overrides"}
        for trial, state in zip(self.trials, states):
            for key in fields & set(state):
                setattr(trial, key, state[key])
        return True

    def save_state(self) -> None:
        from cnntrain.snapshot import atomic_write

        doc = {"version": STATE_VERSION, "grid": self._grid_dict(),
               "trials": [t.__dict__ for t in self.trials]}
        text = json.dumps(doc, indent=2)
        try:
            atomic_write(self.state_path, lambda p: p.write_text(text))
        except OSError as err:
            raise CnnTrainError(f"could not write {self.state_path}: "
                                f"{err.strerror or err}") from None

    # --- running -----------------------------------------------------------------------
    def run(self, data_dir: str | None = None, notify: Callable[[str], None] = print,
            progress: bool = False, device: Device = CPU) -> None:
        """Train every trial not done yet, in order (on ``device``); a
        stop signal ends the sweep (TrainingError), a diverged trial is marked failed
        and the next one starts."""
        resumed = self.load_state()
        self.root.mkdir(parents=True, exist_ok=True)
        self.save_state()
        if resumed:
            done = sum(t.status != "pending" for t in self.trials)
            notify(f"continuing the sweep in {self.root}: {done} of {len(self.trials)} "
                   "trials finished")
        for k, trial in enumerate(self.trials, start=1):
            if trial.status != "pending":
                continue
            notify(f"trial {k}/{len(self.trials)}: {trial.name}")
            self._run_trial(trial, data_dir, notify, progress, device)
            self.save_state()
            self.write_tables()

    def _run_trial(self, trial: Trial, data_dir, notify, progress, device: Device) -> None:
        from cnntrain.config.overrides import load_experiment_with
        from cnntrain.rundir import RunDir
        from cnntrain.trainer import Trainer

        exp = load_experiment_with(self.config, trial.overrides + [f"name={trial.name}"])
        snapshots = RunDir(self.root, trial.name).snapshot_files()
        latest = max(snapshots) if snapshots else None
        if latest is not None and latest >= exp.solver.max_iter:
            # Killed after its last snapshot, before the sweep noted it: nothing to train.
            notify(f"  {trial.name} already reached iteration {latest}")
            self._collect(trial)
            return
        trainer = Trainer(exp, runs_root=self.root, data_dir=data_dir, notify=notify,
                          progress=progress, device=device)
        if latest is not None:
            trainer.resume(snapshots[latest])
            notify(f"  resuming {trial.name} at iteration {latest}")
        start = time.perf_counter()
        try:
            trainer.train(resumed=latest is not None)
        except TrainingError as err:
            trial.seconds += time.perf_counter() - start
            # The trainer ends on a stop signal with this message, after a snapshot.
            if str(err).startswith("stopped by signal"):
                self.save_state()
                raise TrainingError(f"sweep stopped in {trial.name} (snapshot saved); run the "
                                    "same command again to continue") from None
            # Diverged: the trial failed; the others may still work.
            self._collect(trial, str(err), failed=True)
            return
        trial.seconds += time.perf_counter() - start
        self._collect(trial, trainer.stop_reason)

    def _collect(self, trial: Trial, note: str | None = None, failed: bool = False) -> None:
        """A finished trial's figures, from its metrics.csv; ``note``: why it ended
        early (an early stop, or how it failed)."""
        from cnntrain.rundir import RunDir

        run = RunDir(self.root, trial.name)
        tested = run.test_accuracies()
        if tested:
            trial.best_iter = max(tested, key=lambda it: (tested[it], -it))
            trial.best_test_accuracy = tested[trial.best_iter]
        losses = []
        if run.metrics_path.is_file():
            with open(run.metrics_path, newline="") as f:
                losses = [(int(r["iter"]), float(r["loss"])) for r in csv.DictReader(f)
                          if r.get("iter", "").isdigit() and r.get("loss")]
        if losses:
            trial.iterations, trial.final_loss = losses[-1]
        trial.status = "failed" if failed else "done"
        trial.note = note

    # --- results -----------------------------------------------------------------------
    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows: trial, each swept setting, then the figures."""
        header = ["trial", *[a.short for a in self.axes], "best_test_accuracy", "best_iter",
                  "final_loss", "seconds", "status"]
        rows = []
        for k, t in enumerate(self.trials, start=1):
            values = [o.partition("=")[2] for o in self.swept(t)]
            rows.append([str(k), *values,
                         "" if t.best_test_accuracy is None else f"{t.best_test_accuracy:.4f}",
                         "" if t.best_iter is None else str(t.best_iter),
                         "" if t.final_loss is None else f"{t.final_loss:.4f}",
                         f"{t.seconds:.1f}", t.status])
        return header, rows

    def markdown(self) -> str:
        header, rows = self.table()
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"

    def write_tables(self) -> list[Path]:
        """results.csv and results.md in the sweep folder, each written atomically."""
        from cnntrain.snapshot import atomic_write

        header, rows = self.table()
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        writer.writerows(rows)
        out = []
        try:
            for name, text in (("results.csv", buf.getvalue()), ("results.md", self.markdown())):
                atomic_write(self.root / name, lambda p, t=text: p.write_text(t))
                out.append(self.root / name)
        except OSError as err:
            raise CnnTrainError(f"could not write the results in {self.root}: "
                                f"{err.strerror or err}") from None
        return out

    def as_dict(self) -> dict:
        return {"sweep": str(self.root), "config": str(self.config),
                "axes": {a.path: list(a.values) for a in self.axes},
                "trials": [{"trial": k, **t.__dict__, "run": str(self.root / t.name)}
                           for k, t in enumerate(self.trials, start=1)]}
