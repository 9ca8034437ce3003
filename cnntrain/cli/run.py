"""train, test and schedule: the commands of a training run."""
from __future__ import annotations

from pathlib import Path

import click

from cnntrain.cli import DATA_DIR, EXIT_CODES, run_or_exit, main


@main.command(epilog=EXIT_CODES)
@click.argument("config", type=click.Path(dir_okay=False))
@DATA_DIR
@click.option("--resume", type=click.Path(dir_okay=False), help="Continue from a snapshot exactly.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Start from a snapshot's weights (layers matched by name), fresh solver.")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where runs/<name>/ is written.")
@click.option("--no-progress", is_flag=True, help="No progress bar; log lines only.")
def train(config, data_dir, resume, weights, runs_dir, no_progress):
    """Train the net of CONFIG; logs, metrics and snapshots go to runs/<name>/.

    \b
    Examples:
      cnntrain train configs/cifar10_quick.yaml
      cnntrain train configs/lenet_cifar10.yaml --resume runs/lenet_cifar10/snapshots/iter_2000.h5
      cnntrain train configs/lenet_cifar10.yaml --weights other.h5
    """
    run_or_exit(_train, config, data_dir, resume, weights, runs_dir, not no_progress)


def _train(config, data_dir, resume, weights, runs_dir, progress):
    from cnntrain.config import load_experiment
    from cnntrain.errors import ConfigError
    from cnntrain.trainer import Trainer

    if resume and weights:
        raise ConfigError("give --resume or --weights, not both")
    exp = load_experiment(config)
    trainer = Trainer(exp, runs_root=Path(runs_dir), data_dir=data_dir, notify=click.echo,
                      progress=progress)
    if resume:
        trainer.resume(resume)
        click.echo(f"resuming {exp.name} at iteration {trainer.solver.iter}")
    elif weights:
        copied = trainer.load_weights(weights)
        click.echo(f"initialized {len(copied)} layer(s) from {weights}: {', '.join(copied)}")
    ev = trainer.train(resumed=bool(resume))
    click.echo(f"done: {trainer.run.path}")
    if ev is not None and ev.accuracy is not None:
        click.echo(f"final test accuracy {ev.accuracy:.4f}, loss {ev.loss:.4f}")


@main.command(epilog=EXIT_CODES)
@click.option("--snapshot", required=True, type=click.Path(dir_okay=False),
              help="A snapshot written by cnntrain train.")
@DATA_DIR
@click.option("--iterations", type=click.IntRange(min=1),
              help="Batches to test [default: one pass over the whole test set].")
def test(snapshot, data_dir, iterations):
    """Evaluate a snapshot on its test set: loss, accuracy and per-class accuracy.

    \b
    Example:
      cnntrain test --snapshot runs/cifar10_quick/snapshots/iter_5000.h5
    """
    from cnntrain.trainer import test_snapshot

    ev = run_or_exit(test_snapshot, snapshot, data_dir, iterations, click.echo)
    click.echo(f"tested {ev.images} images")
    click.echo(f"loss: {ev.loss:.4f}")
    for name, value in ev.outputs.items():
        click.echo(f"{name}: {value:.4f}")
    rows = ev.per_class()
    if rows:
        click.echo("per-class accuracy (worst first):")
        for name, acc, count in rows:
            click.echo(f"  {name:>14s}  {acc:.4f}  ({count} images)")


@main.command(epilog=EXIT_CODES)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--points", default=21, show_default=True, type=click.IntRange(min=2),
              help="How many iterations to print.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Also plot the whole curve to this PNG (needs matplotlib).")
def schedule(config, points, output):
    """Print the learning rate over the run (and plot it with -o).

    \b
    Examples:
      cnntrain schedule configs/cifar10_quick.yaml
      cnntrain schedule configs/convnetjs_cifar10.yaml -o lr.png
    """
    run_or_exit(_schedule, config, points, output)


def _schedule(config, points, output):
    from cnntrain.config import load_experiment
    from cnntrain.tools.schedule import lr_curve, plot_curve

    values = load_experiment(config).solver.values
    click.echo(f"{'iteration':>10s}  learning rate")
    for it, lr in lr_curve(values, points):
        click.echo(f"{it:>10d}  {lr:.6g}")
    if output:
        plot_curve(values, Path(output))
        click.echo(f"plot written to {output}")

