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


# A deploy net as Caffe writes them: an input header, no labels, a Softmax output.
DEPLOY = """\
name: "deploy"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 4 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def train_tiny(tmp):
    """Train the end-to-end test's tiny net for 2 iterations on a generated CIFAR-10
    in ``tmp``; returns (data folder, the final snapshot)."""
    from test_cli_e2e import CONFIG, write_cifar10_binary

    data = write_cifar10_binary(tmp / "data")
    config = tmp / "tiny.yaml"
    config.write_text(CONFIG.replace("max_iter: 12", "max_iter: 2")
                      .replace("snapshot: 6", "snapshot: 0"))
    result = run("train", config, "--data-dir", data, "--runs-dir", tmp / "runs", "--no-progress")
    assert result.exit_code == 0, result.output
    return data, tmp / "runs" / "tiny" / "snapshots" / "iter_2.h5"
