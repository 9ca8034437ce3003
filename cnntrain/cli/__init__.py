"""The ``cnntrain`` command: parse arguments, call the library, print. No math here.

Each module of this package holds one family of subcommands and registers them on
``main``; the imports at the bottom bring them in.
"""
from __future__ import annotations

import sys
import click

from cnntrain.errors import CnnTrainError

EXIT_CODES = """\b
Exit codes: 0 success, 1 error, 2 invalid config, 3 dataset problem,
4 snapshot problem, 5 training stopped (diverged or interrupted)."""


def run_or_exit(fn, *args, **kwargs):
    """Call into the library; a user-facing error becomes one line and an exit code."""
    try:
        return fn(*args, **kwargs)
    except CnnTrainError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)


@click.group(epilog=EXIT_CODES)
@click.version_option(package_name="cnntrain")
def main() -> None:
    """Train convolutional networks described in Caffe-style YAML files.

    \b
    Examples:
      cnntrain train configs/cifar10_quick.yaml
      cnntrain test --snapshot runs/cifar10_quick/snapshots/iter_5000.h5
    """


DATA_DIR = click.option("--data-dir", envvar="CNNTRAIN_DATA", type=click.Path(file_okay=False),
                        help="Where datasets are found or downloaded "
                             "[env CNNTRAIN_DATA; default ~/.cache/cnntrain].")


# Subcommands register themselves on ``main`` when imported.
from cnntrain.cli import run  # noqa: E402,F401
from cnntrain.cli import tools  # noqa: E402,F401
from cnntrain.cli import caffe  # noqa: E402,F401
from cnntrain.cli import port  # noqa: E402,F401
from cnntrain.cli import visual  # noqa: E402,F401
from cnntrain.cli import interop  # noqa: E402,F401
