"""lr-find and sweep: commands that run many short trainings to choose settings."""
from __future__ import annotations

import math
from pathlib import Path

import click

from cnntrain.cli import DATA_DIR, DEVICE, EXIT_CODES, main, run_or_exit
from cnntrain.cli.output import JSON, QUIET, echo_json, style

OVERRIDES = click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
                         help="Override a config field first (repeatable), as in cnntrain "
                              "train.")


# --------------------------------------------------------------------------- lr-find
@main.command("lr-find", epilog=EXIT_CODES)
@click.argument("config", type=click.Path(dir_okay=False))
@DATA_DIR
@click.option("--start-lr", default=1e-6, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="The first rate.")
@click.option("--end-lr", default=10.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="The last rate.")
@click.option("--iters", default=200, show_default=True, type=click.IntRange(min=5),
              help="Updates (batches) over which the rate grows exponentially.")
@click.option("--smoothing", default=0.98, show_default=True,
              type=click.FloatRange(min=0, max=1, max_open=True),
              help="Factor of the loss's exponential moving average.")
@click.option("--diverge", default=4.0, show_default=True,
              type=click.FloatRange(min=1, min_open=True),
              help="Stop once the smoothed loss exceeds this many times its minimum.")
@click.option("--suggest", "method", default="min/10", show_default=True,
              type=click.Choice(["min/10", "steepest"]),
              help="min/10: a tenth of the rate at the lowest smoothed loss; steepest: the "
                   "rate where the smoothed loss falls fastest.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Also draw the curve to this PNG (needs matplotlib).")
@click.option("--keep", is_flag=True,
              help="Keep config.yaml, lr_find.csv and lr_find.png in "
                   "<runs-dir>/<name>-lr-find/.")
@click.option("--runs-dir", type=click.Path(file_okay=False),
              help="Where --keep writes (giving it implies --keep) [default: runs].")
@click.option("--rows", default=25, show_default=True, type=click.IntRange(min=2),
              help="Rows of the printed table.")
@OVERRIDES
@DEVICE
@QUIET
@JSON
def lr_find(config, data_dir, start_lr, end_lr, iters, smoothing, diverge, method, output,
            keep, runs_dir, rows, overrides, device, quiet, as_json):
    """Learning-rate range test: train CONFIG's TRAIN net from its initial weights
    while the rate grows exponentially from --start-lr to --end-lr, and print the
    smoothed loss against the rate and a suggested base_lr.

    The config's lr_policy is replaced by the ramp; the rest of the solver (momentum,
    weight decay, clipping, iter_size) applies. The test stops early when the loss
    diverges. Nothing is written unless -o, --keep or --runs-dir asks for it.

    \b
    Examples:
      cnntrain lr-find configs/cifar10_quick.yaml
      cnntrain lr-find configs/cifar10_quick.yaml --iters 300 --end-lr 1 -o lr.png
      cnntrain lr-find configs/resnet20_cifar10.yaml --suggest steepest --json
    """
    from cnntrain.backend import open_device
    from cnntrain.config.overrides import load_experiment_with
    from cnntrain.tools import lr_find as lf
    from cnntrain.tools.plot import require_matplotlib

    exp = run_or_exit(load_experiment_with, config, overrides)
    where = run_or_exit(open_device, device)
    keep = keep or runs_dir is not None
    if output:
        run_or_exit(require_matplotlib)   # before the training, not after it

    def say(line: str) -> None:
        if not (quiet or as_json):
            click.echo(line)

    say(f"LR range test of {exp.name}: {iters} updates, rate {start_lr:g} -> {end_lr:g}")
    result = run_or_exit(lf.lr_find, exp, data_dir=data_dir, start_lr=start_lr, end_lr=end_lr,
                         iters=iters, beta=smoothing, diverge=diverge, method=method, notify=say,
                         device=where)
    written = []
    if output:
        written.append(run_or_exit(lf.plot_curve, result, output, f"{exp.name}: LR range test"))
    if keep:
        folder = Path(runs_dir or "runs") / f"{exp.name}-lr-find"
        plot = _have_matplotlib()
        written += run_or_exit(lf.write_outputs, result, exp, folder, plot)
    if as_json:
        echo_json({"config": str(config), "name": exp.name, **result.as_dict(),
                   "written": [str(p) for p in written]})
        return
    if not quiet:
        click.echo(f"{'step':>5}  {'lr':>10}  {'loss':>9}  {'smoothed':>9}")
        table = lf.table_rows(result, rows)
        near = None
        if result.suggested is not None:
            near = min(table, key=lambda r: abs(math.log(r[1] / result.suggested)))
        for row in table:
            mark = "  <- suggested" if row is near else ""
            click.echo(f"{row[0]:>5}  {row[1]:>10.3g}  {row[2]:>9.4f}  {row[3]:>9.4f}{mark}")
        if result.stopped:
            click.echo(f"stopped early: {result.stopped}")
        for path in written:
            click.echo(f"wrote {path}")
    if result.suggested is None:
        click.echo("no suggestion: the curve is too short (raise --iters or lower --start-lr)")
        return
    other = [f"{k} {v:.3g}" for k, v in result.suggestions.items()
             if k != method and v is not None]
    click.echo(style(f"suggested base_lr: {result.suggested:.3g} ({method}"
                     + (f"; {', '.join(other)}" if other else "") + ")", fg="green"))


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- sweep
@main.command(epilog=EXIT_CODES)
@click.argument("config", type=click.Path(dir_okay=False))
@DATA_DIR
@click.option("--set", "sets", multiple=True, metavar="PATH=V1,V2,...",
              help="A config field and the values it takes (repeatable; the grid is every "
                   "combination). Values are YAML; a comma inside [...] or {...} belongs to "
                   "the value: solver.stepvalue=[4000,6000],[8000].")
@click.option("--fix", "fixed", multiple=True, metavar="PATH=VALUE",
              help="Override a field in every trial (as cnntrain train --set).")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where the sweep folder is written.")
@click.option("--name", help="The sweep folder's name [default: <config name>-sweep].")
@click.option("--dry-run", is_flag=True, help="List the trials (each config validated) only.")
@click.option("--progress", is_flag=True, help="Show each trial's progress bar.")
@DEVICE
@QUIET
@JSON
def sweep(config, data_dir, sets, fixed, runs_dir, name, dry_run, progress, device, quiet,
          as_json):
    """Train CONFIG once per combination of the --set values, one trial after another.

    Each trial is a normal run folder, <runs-dir>/<name>/trial-<k>-<settings>/, with
    its own snapshots (every max_iter/4 iterations if the config takes none before
    max_iter). Started again, the sweep skips finished trials and resumes an
    interrupted one from its newest snapshot. At the end it prints a table of each trial's settings, best
    test accuracy, final training loss and training time, and writes it as
    results.csv and results.md beside the trials. A diverged trial is marked failed
    and the sweep goes on. The time counts the sessions that ended: a trial's part
    of a killed session is not counted.

    \b
    Examples:
      cnntrain sweep configs/cifar10_quick.yaml --set solver.base_lr=0.0005,0.001,0.002
      cnntrain sweep configs/lenet_cifar10.yaml --set solver.base_lr=0.01,0.05 \\
          --set solver.weight_decay=0,0.0005 --fix solver.max_iter=2000
      cnntrain sweep configs/cifar10_quick.yaml --set solver.stepvalue=[4000],[3000,4500] --dry-run
    """
    from cnntrain.backend import open_device
    from cnntrain.tools.sweep import Sweep

    plan = run_or_exit(Sweep.plan, config, sets, runs_dir, name, fixed)
    where = run_or_exit(open_device, device)     # before any trial: same verdict as a dry run
    if dry_run:
        if as_json:
            echo_json({**plan.as_dict(), "dry_run": True})
            return
        click.echo(f"{len(plan.trials)} trials in {plan.root}"
                   + (f", each with {' '.join(fixed)}" if fixed else "") + ":")
        for k, trial in enumerate(plan.trials, start=1):
            extra = trial.overrides[len(fixed) + len(plan.axes):]   # e.g. a snapshot interval
            click.echo(f"  {k}. {trial.name}: {' '.join(plan.swept(trial) + extra)}")
        return

    def say(line: str) -> None:
        if quiet:
            return
        click.echo(line, err=as_json)

    run_or_exit(plan.run, data_dir, say, progress and not (quiet or as_json), where)
    if as_json:
        echo_json(plan.as_dict())
        return
    click.echo(plan.markdown(), nl=False)
    click.echo(f"wrote {plan.root / 'results.csv'} and {plan.root / 'results.md'}")
