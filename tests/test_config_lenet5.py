"""configs/lenet5.yaml (LeNet-5 with Subsampling and MapCombination) trains: 50
iterations on the tiny generated CIFAR-10 of test_cli_e2e, loss finite and falling."""
import math

from test_cli_e2e import metrics, write_cifar10_binary
from tool_helpers import run


def test_lenet5_trains_50_iterations_with_a_falling_loss(tmp_path):
    data = write_cifar10_binary(tmp_path / "data")
    result = run("train", "configs/lenet5.yaml", "--data-dir", data, "--runs-dir", tmp_path / "r",
                 "--no-progress", "--set", "solver.max_iter=50", "--set", "solver.display=1",
                 "--set", "solver.test_interval=50", "--set", "solver.snapshot=0")
    assert result.exit_code == 0, result.output
    rows = metrics(tmp_path / "r" / "lenet5")
    losses = [float(r["loss"]) for r in rows if r["loss"]]
    assert len(losses) == 50 and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    accuracy = [float(r["test_accuracy"]) for r in rows if r["test_accuracy"]]
    assert accuracy and 0.0 <= accuracy[-1] <= 1.0
