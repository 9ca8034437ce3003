"""Running the CLI in tests with stdout and stderr apart (click 8.1 and 8.2+)."""
from click.testing import CliRunner

from cnntrain.cli import main


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)   # click < 8.2: stderr is mixed in by default
    except TypeError:
        return CliRunner()                   # click >= 8.2: always kept apart


def run(*args, **kwargs):
    """Invoke ``cnntrain ARGS``; the result has .exit_code, .stdout, .stderr, .output."""
    return runner().invoke(main, [str(a) for a in args], **kwargs)
