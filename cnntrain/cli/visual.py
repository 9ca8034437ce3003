"""report, draw and visualize: pictures of a run, a net and what it learned."""
from __future__ import annotations

import click

from cnntrain.cli import DATA_DIR, EXIT_CODES, main, run_or_exit
from cnntrain.cli.output import JSON, QUIET, echo_json


@main.command(epilog=EXIT_CODES)
@click.argument("run_dir", type=click.Path(), metavar="RUN_DIR")
@click.option("--snapshot", type=click.Path(dir_okay=False),
              help="The weights to test and picture [default: the run's newest snapshot].")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="The HTML file to write [default: RUN_DIR/report.html].")
@click.option("--iterations", type=click.IntRange(min=1),
              help="Test batches [default: one pass over the whole test set, as cnntrain test].")
@click.option("--tta", type=click.Choice(["none", "flip", "flip+shift"]),
              help="Test-time views, as in cnntrain test [default: those the config declares].")
@DATA_DIR
@QUIET
@JSON
def report(run_dir, snapshot, output, iterations, tta, data_dir, quiet, as_json):
    """Write one self-contained HTML page about a run: curves, config, the net drawn,
    its summary, and for a snapshot the test numbers (as cnntrain test prints them),
    per-class accuracy, the confusion matrix, the most confidently misclassified test
    images, the first convolution's filters and each convolution's activation maps.

    The page loads nothing from the network: open it from disk in any browser. It
    needs no optional package. The snapshot is tested on its own test set, so the
    dataset must be in --data-dir. `cnntrain train --report` keeps the page up to
    date during training.

    \b
    Examples:
      cnntrain report runs/cifar10_quick
      cnntrain report runs/cifar10_quick --snapshot runs/cifar10_quick/snapshots/iter_4000.h5 -o quick.html
    """
    from cnntrain.tools.report import report_run

    say = (lambda line: None) if quiet or as_json else click.echo
    path, view = run_or_exit(report_run, run_dir, output, snapshot, data_dir, iterations, tta,
                             notify=lambda m: click.echo(m, err=True))
    if as_json:
        ev = view.evaluation if view else None
        best = ev.best if ev else None
        echo_json({"output": str(path), "snapshot": view.source if view else None,
                   "accuracy": ev.accuracy if ev else None, "tta": ev.tta_name if ev else None,
                   "top1": best.top1 if best else None, "top5": best.top5 if best else None,
                   "loss": ev.loss if ev else None})
        return
    if view is not None:
        ev = view.evaluation
        accuracy = f"accuracy {ev.accuracy:.4f}, " if ev.accuracy is not None else ""
        say(f"tested {view.source}: {accuracy}loss {ev.loss:.4f} ({ev.images} images)")
    else:
        say(f"no snapshot in {run_dir} yet: the report shows the curves, config and net")
    click.echo(f"report written to {path}")


@main.command(epilog=EXIT_CODES + "\n\n\bExit code 1 also means: a .png was asked for and "
                                  "Graphviz's dot is missing (the .dot file is written).")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="net.dot (DOT text), net.svg or net.png (through Graphviz's dot).")
@click.option("--phase", type=click.Choice(["TRAIN", "TEST"]), default="TRAIN",
              show_default=True, help="Which phase's layers to draw.")
@click.option("--rankdir", type=click.Choice(["LR", "TB", "BT", "RL"]), default="LR",
              show_default=True, help="Direction of the graph, as in Caffe's draw_net.py.")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Override a config field first, as in train.")
@QUIET
def draw(config, output, phase, rankdir, overrides, quiet):
    """Draw the net of CONFIG as Caffe's draw_net.py does: layers as boxes coloured by
    type with their settings and parameter counts, blobs as octagons with their
    shapes, in-place layers in green. No dataset is read.

    .dot is written as text and needs nothing else. .svg and .png are rendered by
    Graphviz's dot program; without it an .svg is laid out by cnntrain itself (the
    drawing of the run report) and a .png is an error that writes the .dot instead.

    \b
    Examples:
      cnntrain draw configs/cifar10_quick.yaml -o net.svg
      cnntrain draw configs/resnet20_cifar10.yaml -o resnet.png --rankdir TB
      cnntrain draw configs/lenet_cifar10.yaml -o lenet.dot --phase TEST
    """
    from cnntrain.config.overrides import load_experiment_with
    from cnntrain.tools.netgraph import draw as draw_net

    exp = run_or_exit(load_experiment_with, config, overrides)
    path, note = run_or_exit(draw_net, exp, output, phase, rankdir)
    if note and not quiet:
        click.echo(f"note: {note}", err=True)
    click.echo(f"drawing written to {path}")


@main.command(epilog=EXIT_CODES)
@click.option("--snapshot", required=True, type=click.Path(dir_okay=False),
              help="A snapshot written by cnntrain train.")
@click.argument("image", required=False, type=click.Path(dir_okay=False), metavar="[IMAGE]")
@click.option("--test-index", type=click.IntRange(min=0),
              help="Use this image of the snapshot's test set instead of IMAGE.")
@click.option("-o", "--output", "output_dir", required=True, type=click.Path(file_okay=False),
              help="The folder to write the PNG files to.")
@DATA_DIR
@QUIET
@JSON
def visualize(snapshot, image, test_index, output_dir, data_dir, quiet, as_json):
    """Write the first convolution's filters and each convolution's activation maps for
    IMAGE as PNG files: input.png, filters_<layer>.png, activations_<n>_<layer>.png.

    IMAGE is read as cnntrain predict reads it (PNG/JPEG with Pillow, or a .npy
    array) and gets the snapshot's test transform. The PNG files are written without
    any optional package.

    \b
    Examples:
      cnntrain visualize --snapshot runs/cifar10_quick/snapshots/iter_5000.h5 cat.png -o vis/
      cnntrain visualize --snapshot SNAP.h5 --test-index 7 -o vis/
    """
    from cnntrain.errors import CnnTrainError
    from cnntrain.tools.visualize import visualize_snapshot

    def run():
        if (image is None) == (test_index is None):
            raise CnnTrainError("give an IMAGE or --test-index N (one of them)")
        return visualize_snapshot(snapshot, image, output_dir, data_dir, test_index,
                                  notify=lambda m: click.echo(m, err=True))

    done = run_or_exit(run)
    if as_json:
        echo_json({"input": done.source, "files": [str(f) for f in done.files],
                   "top": [{"class": i, "name": n, "probability": p} for i, n, p in done.top]})
        return
    if not quiet:
        guesses = ", ".join(f"{name} {prob:.1%}" for _, name, prob in done.top)
        click.echo(f"{done.source}: {guesses}")
        for path in done.files:
            click.echo(f"  {path}")
    click.echo(f"{len(done.files)} images written to {output_dir}")
