"""The learning-rate range test (Smith 2017, "Cyclical learning rates"; fastai's lr_find).

The TRAIN net is trained from its initial weights while the rate grows exponentially
from ``start_lr`` to ``end_lr`` over ``iters`` updates, one batch each (times the
config's ``iter_size``). The loss is smoothed by an exponential moving average with
bias correction; the test stops early once the smoothed loss exceeds ``diverge``
times its lowest value, or the loss or a gradient is no longer finite.

Two suggestions are read off the curve:

* ``min/10``: a tenth of the rate at the lowest smoothed loss (the default: robust
  on short, noisy curves);
* ``steepest``: the rate where the smoothed loss falls fastest against log(rate).

Nothing is written unless asked (:func:`write_outputs`).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cnntrain.backend import CPU, Device
from cnntrain.config.specs import ExperimentSpec
from cnntrain.errors import CnnTrainError, ConfigError

SUGGESTIONS = ("min/10", "steepest")


@dataclass
class LrFindResult:
    """The curve and what was read off it; ``stopped`` says why it ended early."""

    rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    stopped: str | None = None
    suggestions: dict[str, float | None] = field(default_factory=dict)
    method: str = "min/10"

    @property
    def suggested(self) -> float | None:
        return self.suggestions.get(self.method)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["suggested_base_lr"] = self.suggested
        return out


def rate_at(step: int, steps: int, start_lr: float, end_lr: float) -> float:
    """The exponential ramp: ``start_lr`` at step 0, ``end_lr`` at step ``steps - 1``."""
    return start_lr * (end_lr / start_lr) ** (step / max(steps - 1, 1))


def smooth(losses: list[float], beta: float) -> list[float]:
    """Exponential moving average of ``losses`` with bias correction (so the first
    values are not pulled towards 0)."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** i))
    return out


def suggest(rates: list[float], smoothed: list[float], skip: float = 0.1
            ) -> dict[str, float | None]:
    """Both suggestions for a curve; None where the curve is too short to tell. The
    first ``skip`` share of the points (the average still settling) is left out."""
    n = len(rates)
    if n < 5:
        return {name: None for name in SUGGESTIONS}
    lo = min(int(n * skip), n - 3)
    r, s = np.log(np.asarray(rates[lo:])), np.asarray(smoothed[lo:])
    best = int(np.argmin(s))
    # The slope over a window of a tenth of the curve: point-to-point differences of
    # a noisy loss would make the steepest point a matter of luck.
    w = max(1, len(s) // 10)
    ahead, behind = np.minimum(np.arange(len(s)) + w, len(s) - 1), np.maximum(np.arange(len(s)) - w, 0)
    slope = (s[ahead] - s[behind]) / (r[ahead] - r[behind])
    # Steepest descent before the minimum: past it the loss only climbs.
    steepest = int(np.argmin(slope[:best + 1])) if best > 0 else None
    return {"min/10": float(math.exp(r[best]) / 10),
            "steepest": None if steepest is None else float(math.exp(r[steepest]))}


def lr_find(exp: ExperimentSpec, *, data_dir: str | None = None, start_lr: float = 1e-6,
            end_lr: float = 10.0, iters: int = 200, beta: float = 0.98,
            diverge: float = 4.0, method: str = "min/10",
            notify: Callable[[str], None] = print,
            on_step: Callable[[int, float, float], None] | None = None,
            device: Device = CPU) -> LrFindResult:
    """Run the range test on ``exp``'s TRAIN net (on ``device``); see the module
    docstring."""
    from cnntrain.solvers import make_solver
    from cnntrain.trainer import build_for

    if not 0 < start_lr < end_lr:
        raise ConfigError(f"--start-lr {start_lr:g} must be above 0 and below --end-lr "
                          f"{end_lr:g}")
    if method not in SUGGESTIONS:
        raise ConfigError(f"unknown suggestion '{method}' (one of: {', '.join(SUGGESTIONS)})")
    net, _, _ = build_for(exp, data_dir, notify, device=device)
    net.init_from_data()
    solver = make_solver(exp.solver.values, net.params)
    result = LrFindResult(method=method)
    current = [start_lr]
    # The ramp replaces the config's lr_policy; everything else (momentum, weight
    # decay, clipping) stays as configured, since it shapes the curve too.
    solver.rate = lambda: current[0]
    passes = exp.solver.iter_size
    best = math.inf
    with np.errstate(over="ignore", invalid="ignore"):
        for step in range(iters):
            current[0] = rate_at(step, iters, start_lr, end_lr)
            net.clear_param_diffs()
            loss = 0.0
            for _ in range(passes):
                loss += net.forward() / passes
                net.backward()
            if not math.isfinite(loss):
                result.stopped = f"the loss is {loss} at rate {current[0]:.3g}"
                break
            if not all(np.all(np.isfinite(p.diff)) for p in net.params):
                result.stopped = f"a gradient is not finite at rate {current[0]:.3g}"
                break
            result.rates.append(current[0])
            result.losses.append(loss)
            result.smoothed = smooth(result.losses, beta)
            if on_step is not None:
                on_step(step, current[0], loss)
            best = min(best, result.smoothed[-1])
            if result.smoothed[-1] > diverge * best:
                result.stopped = (f"the smoothed loss {result.smoothed[-1]:.4g} passed {diverge:g}"
                                  f" x its minimum {best:.4g} at rate {current[0]:.3g}")
                break
            solver.apply_update(passes)
    if not result.rates:
        raise CnnTrainError(f"the range test stopped at its first step: {result.stopped}; "
                            "lower --start-lr")
    result.suggestions = suggest(result.rates, result.smoothed)
    return result


def table_rows(result: LrFindResult, rows: int = 25) -> list[tuple[int, float, float, float]]:
    """(step, rate, loss, smoothed) for about ``rows`` evenly spread steps, the last
    step and the step nearest the suggested rate included."""
    n = len(result.rates)
    picks = set(np.linspace(0, n - 1, min(rows, n)).round().astype(int).tolist())
    if result.suggested is not None:
        picks.add(int(np.argmin(np.abs(np.log(result.rates) - math.log(result.suggested)))))
    return [(i + 1, result.rates[i], result.losses[i], result.smoothed[i]) for i in sorted(picks)]


def curve_csv(result: LrFindResult) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["step", "lr", "loss", "smoothed_loss"])
    for i, (r, loss, s) in enumerate(zip(result.rates, result.losses, result.smoothed), start=1):
        writer.writerow([i, f"{r:.6g}", f"{loss:.6g}", f"{s:.6g}"])
    return buf.getvalue()


def plot_curve(result: LrFindResult, output: str | Path, title: str) -> Path:
    """The smoothed (and raw) loss against the rate on a log axis, the suggestion
    marked; written atomically. Needs matplotlib."""
    from cnntrain.tools.plot import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(result.rates, result.losses, color="0.75", lw=0.8, label="loss")
    ax.plot(result.rates, result.smoothed, color="C0", lw=1.8, label="smoothed loss")
    if result.suggested is not None:
        ax.axvline(result.suggested, color="C3", ls="--",
                   label=f"suggested base_lr {result.suggested:.3g} ({result.method})")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    low, high = min(result.smoothed), max(result.smoothed[:max(1, len(result.smoothed) // 10)])
    ax.set_ylim(low - 0.05 * abs(low), max(high, low) * 1.3 + 1e-9)
    ax.set_title(title)
    ax.legend(loc="best")
    fig.tight_layout()
    return save_figure(fig, output)


def write_outputs(result: LrFindResult, exp: ExperimentSpec, folder: Path, plot: bool
                  ) -> list[Path]:
    """``folder``/{config.yaml, lr_find.csv, lr_find.png (when ``plot``)}, each atomic."""
    from cnntrain.snapshot import atomic_write

    written = []
    try:
        for name, text in (("config.yaml", exp.text), ("lr_find.csv", curve_csv(result))):
            atomic_write(folder / name, lambda p, t=text: p.write_text(t))
            written.append(folder / name)
    except OSError as err:
        raise CnnTrainError(f"cannot write {folder}: {err.strerror or err}") from None
    if plot:
        written.append(plot_curve(result, folder / "lr_find.png", f"{exp.name}: LR range test"))
    return written
