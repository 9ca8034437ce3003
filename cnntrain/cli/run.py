"""train, test and schedule: the commands of a training run."""
from __future__ import annotations

import functools
from pathlib import Path

import click

from cnntrain.cli import DATA_DIR, DEVICE, EXIT_CODES, exit_with, run_or_exit, main
from cnntrain.cli.output import JSON, QUIET, echo_json, print_summary
from cnntrain.errors import CnnTrainError, TrainingError


@main.command(epilog=EXIT_CODES)
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@DATA_DIR
@click.option("--resume", type=click.Path(dir_okay=False),
              help="Continue from a snapshot exactly (CONFIG may be left out: the snapshot "
                   "holds the config as trained).")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Start from a snapshot's weights (layers matched by name), fresh solver.")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where runs/<name>/ is written.")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Override a config field before validation (repeatable; a YAML value; "
                   "layers by name: net.layer.conv1.convolution_param.num_output=64). "
                   "Recorded in the run's config.yaml.")
@click.option("--dry-run", is_flag=True,
              help="Validate the config and print the summary (shapes, parameters, MACs) "
                   "without reading data or training.")
@click.option("--plot", is_flag=True,
              help="Redraw runs/<name>/curves.png at each test (needs matplotlib).")
@click.option("--report", is_flag=True,
              help="Rewrite runs/<name>/report.html at each test (see cnntrain report).")
@click.option("--tensorboard", is_flag=True,
              help="Also log to runs/<name>/tensorboard (as logging: {tensorboard: true}; "
                   "needs tensorboardX).")
@click.option("--no-progress", is_flag=True, help="No progress bar; log lines only.")
@DEVICE
@QUIET
@JSON
def train(config, data_dir, resume, weights, runs_dir, overrides, dry_run, plot, report,
          tensorboard, no_progress, device, quiet, as_json):
    """Train the net of CONFIG; logs, metrics and snapshots go to runs/<name>/.

    When a run stops (Ctrl-C), the command that resumes it is printed; it needs no
    CONFIG, as the snapshot holds the config it was trained with.

    With --quiet only the final line is printed; with --json one JSON document
    (the run folder, iterations and final test outputs) goes to stdout and the
    log lines to stderr.

    \b
    Examples:
      cnntrain train configs/cifar10_quick.yaml
      cnntrain train configs/cifar10_quick.yaml --dry-run --set solver.base_lr=0.01
      cnntrain train --resume runs/lenet_cifar10/snapshots/iter_2000.h5
      cnntrain train configs/lenet_cifar10.yaml --weights other.h5 --plot
      cnntrain train configs/cifar10_quick.yaml --report --tensorboard
      cnntrain train configs/fast94_cifar10.yaml --device gpu
      mpiexec -n 2 cnntrain train configs/cifar10_quick.yaml   (data parallel)
    """
    from cnntrain.backend import open_device

    exp = run_or_exit(_experiment, config, overrides, resume)
    if dry_run:
        run_or_exit(open_device, device)   # train's verdict on a device that is not there
        run_or_exit(print_summary, exp, as_json)
        if (tensorboard or exp.logging.tensorboard) and not as_json:
            _note_missing_tensorboard()
        return
    from cnntrain.distributed import Communicator, run_or_abort

    comm = run_or_exit(Communicator.from_environment)   # None unless started by mpiexec -n N
    follower = comm is not None and not comm.is_root    # only rank 0 prints and writes
    if quiet or follower:
        def say(line: str) -> None:
            pass
    elif as_json:
        def say(line: str) -> None:
            click.echo(line, err=True)
    else:
        say = click.echo
    progress = not (no_progress or quiet or as_json or follower)
    flags = [flag for flag, on in (("--plot", plot), ("--report", report),
                                   ("--tensorboard", tensorboard)) if on]
    if device != "cpu":
        flags += ["--device", device]
    extras = [] if follower else _callbacks(exp, runs_dir, plot, report, tensorboard, say)
    run = run_or_exit if comm is None else functools.partial(run_or_abort, comm)
    # Under mpiexec a GPU is chosen by the process's rank on its machine.
    local_rank = comm.local_rank() if comm is not None and device != "cpu" else None
    where = run(open_device, device, local_rank)
    trainer = run(_trainer, exp, data_dir, resume, weights, runs_dir, progress, extras, say,
                  flags, comm, where)
    if comm is not None:
        ev = run(trainer.train, resumed=bool(resume))
    else:
        try:
            ev = trainer.train(resumed=bool(resume))
        except CnnTrainError as err:
            if as_json and isinstance(err, TrainingError):
                # Interrupted or diverged: the document still says where the run stands.
                echo_json(_train_document(trainer, None, stopped=str(err)))
            exit_with(err)
    if follower:
        return
    accuracy = ev.accuracy if ev is not None else None
    if as_json:
        echo_json(_train_document(trainer, ev))
        return
    if trainer.stop_reason is not None and quiet:
        click.echo(trainer.stop_reason)
    say(f"done: {trainer.run.path}")
    if accuracy is not None:
        click.echo(f"final test accuracy {accuracy:.4f}, loss {ev.loss:.4f}"
                   + (f" ({trainer.run.path})" if quiet else ""))


def _train_document(trainer, ev, stopped: str | None = None) -> dict:
    """``train --json``: the run folder, iterations, last snapshot and final test; when
    training stopped early (a signal, divergence) why, and the command to resume."""
    snapshot = trainer.last_snapshot
    return {"run": str(trainer.run.path), "name": trainer.exp.name,
            "iterations": trainer.solver.iter,
            "snapshot": str(snapshot) if snapshot else None,
            "early_stop": trainer.stop_reason,
            "stopped": stopped,
            "resume": trainer.resume_command(snapshot)
            if stopped and trainer.interrupted else None,
            "test": None if ev is None else {"loss": ev.loss, "images": ev.images,
                                             **ev.outputs}}


def _callbacks(exp, runs_dir, plot, report, tensorboard, say) -> list:
    """The extras asked for, made before the nets are built: a missing optional
    package (matplotlib, tensorboardX) stops the command here, before any training."""
    def make():
        callbacks = []
        if plot:
            from cnntrain.callbacks import OnTest
            from cnntrain.tools.plot import training_plot_hook

            callbacks.append(OnTest(training_plot_hook(Path(runs_dir) / exp.name, notify=say)))
        if report:
            from cnntrain.tools.report import ReportRefresher

            callbacks.append(ReportRefresher(notify=say))
        if tensorboard or exp.logging.tensorboard:
            from cnntrain.tools.tensorboard import TensorBoardLogger

            callbacks.append(TensorBoardLogger())
        return callbacks

    return run_or_exit(make)


def _note_missing_tensorboard() -> None:
    from cnntrain.errors import CnnTrainError
    from cnntrain.tools.tensorboard import require_tensorboard

    try:
        require_tensorboard()
    except CnnTrainError as err:
        click.echo(f"note: {err}", err=True)


def _experiment(config, overrides, resume):
    """The config to train: CONFIG with its ``--set`` overrides, or, with ``--resume``
    alone, the config stored in the snapshot (as it was trained, overrides included)."""
    from cnntrain.config.overrides import load_experiment_with
    from cnntrain.errors import CnnTrainError

    if config is not None:
        return load_experiment_with(config, overrides)
    if resume is None:
        raise CnnTrainError("give a CONFIG to train, or --resume SNAPSHOT to continue a run")
    if overrides:
        raise CnnTrainError("--set changes a CONFIG; with --resume alone the run continues "
                            "with the config stored in the snapshot")
    from cnntrain.trainer import snapshot_experiment

    return snapshot_experiment(resume)


def _trainer(exp, data_dir, resume, weights, runs_dir, progress, callbacks, say, flags,
             comm, device):
    """The Trainer, at its starting point (a snapshot resumed, or weights copied in)."""
    from cnntrain.errors import ConfigError
    from cnntrain.trainer import Trainer

    if resume and weights:
        raise ConfigError("give --resume or --weights, not both")
    trainer = Trainer(exp, runs_root=Path(runs_dir), data_dir=data_dir, notify=say,
                      progress=progress, callbacks=callbacks, comm=comm,
                      resume_flags=flags, device=device)
    if not device.is_cpu:
        say(f"computing on {device}")
    if resume:
        trainer.resume(resume)
        say(f"resuming {exp.name} at iteration {trainer.solver.iter}")
    elif weights:
        copied = trainer.load_weights(weights)
        say(f"initialized {len(copied)} layer(s) from {weights}: {', '.join(copied)}")
    return trainer


@main.command(epilog=EXIT_CODES)
@click.argument("snapshot_arg", metavar="[SNAPSHOT]", required=False,
                type=click.Path(dir_okay=False))
@click.option("--snapshot", type=click.Path(dir_okay=False),
              help="A snapshot written by cnntrain train (or give it as SNAPSHOT).")
@DATA_DIR
@click.option("--iterations", type=click.IntRange(min=1),
              help="Batches to test [default: one pass over the whole test set].")
@click.option("--tta", type=click.Choice(["none", "flip", "flip+shift"]),
              help="Also average the softmax over mirrored (flip: 2 views) and shifted "
                   "(flip+shift: 6 views, test_shift px, 2 by default) copies of each image "
                   "[default: the TEST Data layer's transform_param.test_views].")
@click.option("--confusion", "confusion_csv", type=click.Path(dir_okay=False),
              help="Write the confusion matrix to this CSV (and a PNG beside it if "
                   "matplotlib is installed).")
@click.option("--superclasses", is_flag=True,
              help="CIFAR-100 (fine labels): also print the accuracy of each superclass.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@DEVICE
@QUIET
@JSON
def test(snapshot_arg, snapshot, data_dir, iterations, tta, confusion_csv, superclasses,
         no_progress, device, quiet, as_json):
    """Evaluate a snapshot on its test set: loss, top-1 and top-5 accuracy, per-class
    accuracy (worst first); superclass accuracy for CIFAR-100.

    \b
    Examples:
      cnntrain test runs/cifar10_quick/snapshots/iter_5000.h5
      cnntrain test --snapshot runs/cifar10_quick/snapshots/iter_5000.h5
      cnntrain test --snapshot runs/cifar100_quick/snapshots/iter_5000.h5 --tta flip+shift
      cnntrain test --snapshot SNAP.h5 --confusion confusion.csv --superclasses
    """
    from cnntrain.trainer import test_snapshot

    if snapshot_arg and snapshot and snapshot_arg != snapshot:
        raise click.UsageError("give the snapshot once: as SNAPSHOT or as --snapshot")
    snapshot = snapshot or snapshot_arg
    if snapshot is None:
        raise click.UsageError("missing the snapshot to test (SNAPSHOT or --snapshot)")
    from cnntrain.backend import open_device

    say = (lambda line: None) if quiet else \
        (lambda line: click.echo(line, err=True)) if as_json else click.echo
    where = run_or_exit(open_device, device)
    ev = run_or_exit(test_snapshot, snapshot, data_dir, iterations, say, tta,
                     progress=not (no_progress or quiet or as_json), device=where)
    tta = ev.tta_name
    views = f"{tta}, {ev.tta_views} views" if tta else ""
    if confusion_csv:
        run_or_exit(_write_confusion, ev, Path(confusion_csv), views, say)
    if as_json:
        echo_json(_test_document(snapshot, ev, tta))
        return
    if quiet:
        best = ev.best
        top1 = best.top1 if best is not None else ev.accuracy
        click.echo(f"{snapshot}\t{'' if top1 is None else f'{top1:.4f}'}\t{ev.loss:.4f}")
        return
    click.echo(f"tested {ev.images} images")
    if "loss" not in ev.outputs:      # the net's own loss output says it otherwise
        click.echo(f"loss: {ev.loss:.4f}")
    for name, value in ev.outputs.items():
        click.echo(f"{name}: {value:.4f}")
    for label, scores in (("", ev.single), (f" ({views})", ev.tta)):
        if scores is None:
            continue
        click.echo(f"top-1 accuracy{label}: {scores.top1:.4f}")
        click.echo(f"top-{scores.k5} accuracy{label}: {scores.top5:.4f}")
        sup = ev.superclass_accuracy(scores.confusion)
        if sup is not None:
            click.echo(f"superclass accuracy{label}: {sup:.4f} (predicted class in the true "
                       f"one's superclass, {len(ev.coarse_names)} superclasses)")
    best = ev.best
    rows = ev.per_class(best.confusion if best is not None else None)
    if rows:
        click.echo(f"per-class accuracy (worst first{', ' + views if tta else ''}):")
        for name, acc, count in rows:
            click.echo(f"  {name:>14s}  {acc:.4f}  ({count} images)")
    if superclasses:
        merged = ev.superclass_confusion(best.confusion if best is not None else None)
        if merged is None:
            click.echo("superclass accuracy: not available (needs CIFAR-100 with fine labels)")
        else:
            click.echo(f"superclass accuracy (worst first{', ' + views if tta else ''}):")
            for name, acc, count in ev.per_class(merged, ev.coarse_names):
                click.echo(f"  {name:>30s}  {acc:.4f}  ({count} images)")


def _test_document(snapshot, ev, tta) -> dict:
    """``test --json``: everything the table shows, for scripts."""
    def scores(sc):
        if sc is None:
            return None
        return {"top1": sc.top1, f"top{sc.k5}": sc.top5,
                "superclass": ev.superclass_accuracy(sc.confusion)}

    best = ev.best
    return {"snapshot": str(snapshot), "images": ev.images, "loss": ev.loss,
            "outputs": ev.outputs, "single_view": scores(ev.single), "tta": tta,
            "tta_views": scores(ev.tta),
            "per_class": [{"class": n, "accuracy": a, "images": c}
                          for n, a, c in ev.per_class(best.confusion if best else None)]}


def _write_confusion(ev, path: Path, views: str, say):
    from cnntrain.errors import CnnTrainError
    from cnntrain.evaluate import PLOT_HINT, plot_confusion, write_confusion_csv

    best = ev.best
    if best is None:
        raise CnnTrainError("no confusion matrix: the TEST net has no Accuracy or "
                            "SoftmaxWithLoss layer")
    names = ev.class_names if len(ev.class_names) == len(best.confusion) else \
        [str(i) for i in range(len(best.confusion))]
    write_confusion_csv(path, best.confusion, names)
    say(f"confusion matrix written to {path}")
    png = path.with_suffix(".png")
    title = f"confusion ({ev.images} images{', ' + views if views else ''})"
    if plot_confusion(png, best.confusion, names, title):
        say(f"confusion plot written to {png}")
    else:
        say(f"note: no confusion plot ({png}): matplotlib is not installed; {PLOT_HINT}")


@main.command(epilog=EXIT_CODES)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--points", default=21, show_default=True, type=click.IntRange(min=2),
              help="How many iterations to print.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Also plot the whole curve to this PNG (needs matplotlib).")
@QUIET
@JSON
def schedule(config, points, output, quiet, as_json):
    """Print the learning rate over the run (and plot it with -o). With --quiet the
    rows only (iteration, rate; tab-separated), with --json one JSON document.

    \b
    Examples:
      cnntrain schedule configs/cifar10_quick.yaml
      cnntrain schedule configs/convnetjs_cifar10.yaml -o lr.png
      cnntrain schedule configs/resnet20_cifar10.yaml --json
    """
    run_or_exit(_schedule, config, points, output, quiet, as_json)


def _schedule(config, points, output, quiet, as_json):
    from cnntrain.config import load_experiment
    from cnntrain.tools.schedule import lr_curve, plot_curve

    values = load_experiment(config).solver.values
    curve = lr_curve(values, points)
    if output:
        plot_curve(values, Path(output))
    if as_json:
        echo_json({"config": str(config), "plot": output,
                   "points": [{"iteration": it, "lr": lr} for it, lr in curve]})
        return
    if quiet:
        for it, lr in curve:
            click.echo(f"{it}\t{lr:.6g}")
        return
    click.echo(f"{'iteration':>10s}  learning rate")
    for it, lr in curve:
        click.echo(f"{it:>10d}  {lr:.6g}")
    if output:
        click.echo(f"plot written to {output}")

