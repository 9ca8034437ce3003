"""BatchNorm's running statistics in snapshots: kept, restored, and a resumed run is exact."""
import numpy as np

from test_cli_e2e import (CONFIG, assert_same_weights, run, train_losses, weights,
                          write_cifar10_binary)

BN_CONFIG = CONFIG.replace("""    - name: pool1
""", """    - name: bn1
      type: BatchNorm
      bottom: conv1
      top: conv1
    - name: scale1
      type: Scale
      bottom: conv1
      top: conv1
      scale_param: {bias_term: true}
    - name: pool1
""")


def test_running_statistics_are_snapshotted_and_resume_is_exact(tmp_path):
    assert "BatchNorm" in BN_CONFIG
    data = write_cifar10_binary(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(BN_CONFIG)
    full = run("train", config, "--data-dir", data, "--runs-dir", tmp_path / "a", "--no-progress")
    assert full.exit_code == 0, full.output
    run_a = tmp_path / "a" / "tiny"
    at6 = weights(run_a / "snapshots" / "iter_6.h5")
    assert at6["bn1/0"].shape == (4,) and at6["bn1/2"].shape == (1,)
    # Six TRAIN forwards, each s <- 0.999 s + 1 (TEST forwards leave it alone).
    expected = sum(0.999 ** k for k in range(6))
    np.testing.assert_allclose(at6["bn1/2"], [expected], rtol=1e-6)

    resumed = run("train", config, "--data-dir", data, "--runs-dir", tmp_path / "b",
                  "--no-progress", "--resume", run_a / "snapshots" / "iter_6.h5")
    assert resumed.exit_code == 0, resumed.output
    losses_a, losses_b = train_losses(run_a), train_losses(tmp_path / "b" / "tiny")
    assert losses_b and all(losses_b[it] == losses_a[it] for it in losses_b)
    wa = assert_same_weights(run_a / "snapshots" / "iter_12.h5",
                             tmp_path / "b" / "tiny" / "snapshots" / "iter_12.h5")
    assert "bn1/1" in wa
