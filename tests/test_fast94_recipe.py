"""configs/fast94_cifar10.yaml, the 94 % recipe, on the tiny generated CIFAR-10: it trains
with every one of its features on (whitening, Dirac init, alternating flips, reflect
padding, piecewise rate, Lookahead, a freezing bias), resumes exactly across the freeze
and the Lookahead syncs, and `cnntrain test` applies the test views it declares."""
import math
from pathlib import Path

import numpy as np

from test_cli_e2e import metrics, weights, write_cifar10_binary
from tool_helpers import run

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "fast94_cifar10.yaml"
# Small batches need a smaller rate; the schedule is squeezed into 16 iterations with
# the whitening bias freezing at 6, Lookahead syncing every 5 and a test at 8.
SMALL = ["--set", "net.layer.cifar.data_param.batch_size=8",
         "--set", "solver.base_lr=0.05", "--set", "solver.max_iter=16",
         "--set", "solver.piecewise_iters=[0, 4, 16]", "--set", "solver.display=1",
         "--set", "solver.test_interval=8", "--set", "solver.snapshot=4",
         "--set", "net.layer.whiten.param=[{lr_mult: 0}, {lr_mult: 1, freeze_iter: 6}]"]


def test_the_recipe_trains_resumes_exactly_and_tests_with_its_views(tmp_path):
    data = write_cifar10_binary(tmp_path / "data")
    full = run("train", CONFIG, "--data-dir", data, "--runs-dir", tmp_path / "a",
               "--no-progress", *SMALL)
    assert full.exit_code == 0, full.output
    assert "layer 'whiten': weights filled from the training images" in full.output
    run_a = tmp_path / "a" / "fast94_cifar10"
    losses = [float(r["loss"]) for r in metrics(run_a) if r["loss"]]
    assert len(losses) == 16 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-4:]) < sum(losses[:4])

    resumed = run("train", CONFIG, "--data-dir", data, "--runs-dir", tmp_path / "b",
                  "--no-progress", *SMALL, "--resume", run_a / "snapshots" / "iter_8.h5")
    assert resumed.exit_code == 0, resumed.output
    wa = weights(run_a / "snapshots" / "iter_16.h5")
    wb = weights(tmp_path / "b" / "fast94_cifar10" / "snapshots" / "iter_16.h5")
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)
    # The whitening bias stops learning at its freeze_iter (6); Lookahead's next sync
    # (at 10) still averages it with its slow copy, as airbench's does, and then it stays.
    w4, w8, w12 = (weights(run_a / "snapshots" / f"iter_{i}.h5") for i in (4, 8, 12))
    assert not np.array_equal(w4["whiten/1"], w8["whiten/1"])
    np.testing.assert_array_equal(w12["whiten/1"], wa["whiten/1"])
    assert not np.array_equal(w12["b3_conv2/0"], wa["b3_conv2/0"])

    tested = run("test", "--snapshot", run_a / "snapshots" / "iter_16.h5", "--data-dir", data)
    assert tested.exit_code == 0, tested.output
    assert "top-1 accuracy (flip+shift, 6 views)" in tested.output
    single = run("test", "--snapshot", run_a / "snapshots" / "iter_16.h5", "--data-dir", data,
                 "--tta", "none")
    assert single.exit_code == 0 and "views" not in single.output
