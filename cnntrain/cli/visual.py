"""draw: pictures of a net."""
from __future__ import annotations

import click

from cnntrain.cli import EXIT_CODES, main, run_or_exit
from cnntrain.cli.output import QUIET


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
