"""Training curves from runs' ``metrics.csv``: loss, test loss and test accuracy against
iterations and against wall time, several runs overlaid. Needs the optional matplotlib
(``pip install -e .[plot]``); reading the metrics does not.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cnntrain.errors import CnnTrainError

INSTALL_HINT = "plotting needs matplotlib: pip install 'cnntrain[plot]' (or pip install matplotlib)"

# (column, title) of the three panels of each row.
PANELS = (("loss", "training loss"), ("test_loss", "test loss"),
          ("test_accuracy", "test accuracy"))


@dataclass
class RunMetrics:
    """The columns of one run's metrics.csv, as (iteration, seconds, value) series.

    Seconds are cumulative over resumes (each resumed process restarts its clock)."""

    name: str
    path: Path
    series: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)

    def points(self, column: str) -> list[tuple[int, float, float]]:
        return self.series.get(column, [])

    @property
    def rows(self) -> int:
        return sum(len(v) for v in self.series.values())


def _number(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_metrics(run_dir: str | Path,
                 columns: tuple[str, ...] = tuple(c for c, _ in PANELS)) -> RunMetrics:
    """Read ``columns`` of ``RUN_DIR/metrics.csv`` (or a metrics.csv path given directly)."""
    path = Path(run_dir)
    csv_path = path / "metrics.csv" if path.is_dir() else path
    name = path.name if path.is_dir() else path.parent.name
    if not csv_path.is_file():
        raise CnnTrainError(f"{csv_path} not found: give a run folder written by cnntrain train "
                            "(runs/<name>/)")
    out = RunMetrics(name, path)
    try:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "iter" not in reader.fieldnames:
                raise CnnTrainError(f"{csv_path} has no 'iter' column: not a cnntrain metrics file")
            offset = last = 0.0
            for row in reader:
                it = _number(row.get("iter"))
                if it is None:
                    continue
                seconds = _number(row.get("seconds"))
                if seconds is not None:
                    # A resumed run's clock restarts at 0: keep wall time cumulative.
                    if seconds + offset < last:
                        offset = last
                    seconds += offset
                    last = seconds
                for column in columns:
                    value = _number(row.get(column))
                    if value is not None:
                        out.series.setdefault(column, []).append(
                            (int(it), seconds if seconds is not None else math.nan, value))
    except OSError as err:
        raise CnnTrainError(f"cannot read {csv_path}: {err.strerror or err}") from None
    except csv.Error as err:
        raise CnnTrainError(f"{csv_path} is not valid CSV: {err}") from None
    return out


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CnnTrainError(INSTALL_HINT) from None
    return plt


def require_matplotlib() -> None:
    """Fail early, with the install hint, when matplotlib is missing."""
    _pyplot()


def _labels(runs: list[RunMetrics]) -> list[str]:
    names = [r.name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [str(r.path) for r in runs]   # same run name in different folders


def run_colors(count: int) -> list[str]:
    """One colour per run, from matplotlib's colour cycle (repeating past its end).
    Chosen per run, not per panel: each panel's own cycle would give two runs the
    same colour when one of them has no points in some panel."""
    plt = _pyplot()
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color") or ["C0"]
    return [cycle[i % len(cycle)] for i in range(count)]


def figure_for(runs: list[RunMetrics], title: str | None = None):
    """The 2x3 figure of :func:`plot_runs` (the caller closes it)."""
    plt = _pyplot()   # first: it turns a missing matplotlib into the install hint
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), squeeze=False)
    labels, colors = _labels(runs), run_colors(len(runs))
    for run, label, color in zip(runs, labels, colors):
        for col, (column, _) in enumerate(PANELS):
            points = run.points(column)
            if not points:
                continue
            marker = "o" if len(points) < 30 and column != "loss" else None
            it = [p[0] for p in points]
            seconds = [p[1] for p in points]
            value = [p[2] for p in points]
            for row, x in enumerate((it, seconds)):
                axes[row][col].plot(x, value, label=label, color=color, marker=marker,
                                    markersize=3)
    for col, (column, name) in enumerate(PANELS):
        for row, xlabel in enumerate(("iteration", "wall time (s)")):
            ax = axes[row][col]
            ax.set_title(f"{name} vs {xlabel.split(' (')[0]}")
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            if column == "test_accuracy":
                ax.set_ylim(bottom=0)
            if not ax.lines:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes,
                        color="gray")
    # One legend for the figure with every run, whichever panels it has points in.
    if runs:
        handles = [Line2D([], [], color=color, label=label)
                   for label, color in zip(labels, colors)]
        fig.legend(handles=handles, loc="upper center", ncol=min(len(runs), 4), frameon=False)
    if title:
        fig.suptitle(title, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def plot_runs(runs: list[RunMetrics], output: str | Path, title: str | None = None) -> Path:
    """Write a 2x3 figure: rows against iterations and wall time, columns training loss,
    test loss and test accuracy; one line per run, in one colour across every panel.
    Written atomically."""
    return save_figure(figure_for(runs, title), output)


def save_figure(fig, output: str | Path) -> Path:
    """Write a matplotlib figure atomically, in the format its suffix names (PNG by
    default), and close it; a failed write is a one-line CnnTrainError."""
    from cnntrain.snapshot import atomic_write

    plt = _pyplot()
    output = Path(output)
    suffix = output.suffix.lstrip(".") or "png"

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            fig.savefig(f, dpi=100, format=suffix)

    try:
        atomic_write(output, write)
    except OSError as err:
        raise CnnTrainError(f"cannot write {output}: {err.strerror or err}") from None
    finally:
        plt.close(fig)
    return output


def plot_run_dirs(run_dirs, output: str | Path) -> tuple[Path, list[RunMetrics]]:
    """Read each run folder and plot them together."""
    runs = [read_metrics(d) for d in run_dirs]
    return plot_runs(runs, output), runs


def training_plot_hook(run_dir: str | Path, output: str | Path | None = None,
                       notify: Callable[[str], None] = print) -> Callable[[], None]:
    """For ``cnntrain train --plot``: a function that redraws ``RUN_DIR/curves.png``
    from the run's metrics; call it after each test. Checks for matplotlib now, so a
    missing install stops the command before training starts. A failure to draw is
    reported once and never stops training."""
    require_matplotlib()
    run_dir = Path(run_dir)
    target = Path(output) if output else run_dir / "curves.png"
    failed = []

    def refresh() -> None:
        try:
            plot_runs([read_metrics(run_dir)], target)
        except Exception as err:  # noqa: BLE001 - a plot must never stop training
            if not failed:
                notify(f"warning: could not draw {target}: {err}")
            failed.append(err)

    return refresh
