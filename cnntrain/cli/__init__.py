"""The ``cnntrain`` command: parse arguments, call the library, print. No math here.

Each module of this package holds one family of subcommands and registers them on
``main``; the imports at the bottom bring them in.
"""
from __future__ import annotations

import sys
import click

from cnntrain.errors import CnnTrainError, one_line

EXIT_CODES = """\b
Exit codes: 0 success, 1 error, 2 invalid config, 3 dataset problem,
4 snapshot problem, 5 training stopped (diverged or interrupted)."""


def run_or_exit(fn, *args, **kwargs):
    """Call into the library; a user-facing error becomes one line and an exit code."""
    try:
        return fn(*args, **kwargs)
    except CnnTrainError as err:
        exit_with(err)


def exit_with(err: CnnTrainError):
    """Print a user-facing error as one line and exit with its code."""
    click.echo(f"error: {err}", err=True)
    sys.exit(err.exit_code)


USAGE_EXIT_CODE = 1     # 2 is the README's "invalid config", not click's usage error


class _OneLineErrors(click.Group):
    """Command-line mistakes (an unknown option, a missing argument) as one line on
    stderr with exit code 1, like every other error: click's own usage errors print
    a usage block and exit 2, the code this CLI keeps for an invalid config."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as err:
            if type(err).__name__ == "NoArgsIsHelpError":    # bare `cnntrain`: the help
                click.echo(err.format_message())
                sys.exit(0)
            command = err.ctx.command_path if err.ctx is not None else "cnntrain"
            click.echo(f"error: {one_line(err.format_message())} (see {command} --help)",
                       err=True)
            sys.exit(USAGE_EXIT_CODE)
        except click.ClickException as err:
            click.echo(f"error: {one_line(err.format_message())}", err=True)
            sys.exit(err.exit_code)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        except click.exceptions.Exit as err:   # --help, --version
            sys.exit(err.exit_code)
        sys.exit(0)


@click.group(epilog=EXIT_CODES, cls=_OneLineErrors)
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

DEVICE = click.option("--device", default="cpu", show_default=True, metavar="cpu|gpu[:N]",
                      help="Where to compute: the CPU (NumPy), or an NVIDIA GPU through "
                           "CuPy (pip install 'cnntrain[gpu]'); gpu is gpu:0, or under "
                           "mpiexec each process's own GPU on its machine.")


# Subcommands register themselves on ``main`` when imported.
from cnntrain.cli import run  # noqa: E402,F401
from cnntrain.cli import tools  # noqa: E402,F401
from cnntrain.cli import caffe  # noqa: E402,F401
from cnntrain.cli import port  # noqa: E402,F401
from cnntrain.cli import visual  # noqa: E402,F401
from cnntrain.cli import experiments  # noqa: E402,F401
from cnntrain.cli import interop  # noqa: E402,F401
