"""cnntrain time: per-layer forward/backward times that add up to the measured iteration,
kernel accounting (GEMM, im2col) and the GEMM flop count. Nothing here asserts a speed."""
import json

import pytest

from cnntrain.engine import gemm, im2col, kernel_time
from test_cli_e2e import CONFIG
from tool_helpers import run


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG)
    return path


def test_time_rows_add_up_to_the_measured_iteration(config):
    result = run("time", config, "--iterations", 3, "--warmup", 1, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    names = [r["name"] for r in doc["layers"]]
    assert names == ["cifar", "conv1", "pool1", "relu1", "drop", "ip", "loss"]
    layers = sum(r["forward_ms"] + r["backward_ms"] for r in doc["layers"])
    parts = layers + doc["clear_ms"] + doc["update_ms"] + doc["overhead_ms"]
    assert parts == pytest.approx(doc["total_ms"], rel=1e-9)
    # Clocking a layer twice, or missing the net's time, would make the rest negative.
    assert doc["overhead_ms"] >= 0.0
    assert all(r["forward_ms"] > 0 for r in doc["layers"] if r["name"] != "cifar")
    assert doc["gemm_ms"] > 0 and doc["im2col_ms"] > 0
    assert doc["gemm_ms"] + doc["im2col_ms"] + doc["other_ms"] == pytest.approx(doc["total_ms"])
    assert doc["images_per_s"] == pytest.approx(8 / (doc["total_ms"] / 1e3))


def test_time_counts_gemm_flops_of_each_pass(config):
    doc = json.loads(run("time", config, "--iterations", 1, "--warmup", 0, "--json").stdout)
    flops = {r["name"]: r["gflop"] * 1e9 for r in doc["layers"]}
    # conv1: 4 maps of 16x16 from 3 channels through 3x3 kernels, batch 8; its bottom is
    # the data, so its backward computes the weight gradient only: 2 GEMM passes.
    conv1_macs = 4 * 16 * 16 * 3 * 3 * 3 * 8
    assert flops["conv1"] == pytest.approx(2 * conv1_macs * 2)
    # ip: 10 outputs from pool1 (4x8x8 after the 3x3/2 max pool), all three passes.
    assert flops["ip"] == pytest.approx(2 * (10 * 4 * 8 * 8 * 8) * 3)
    assert flops["pool1"] == 0 and flops["relu1"] == 0


def test_time_quiet_prints_one_line_and_batch_overrides(config):
    result = run("time", config, "--iterations", 1, "--warmup", 0, "--batch", 4, "-q")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("images/s")
    table = run("time", config, "--iterations", 1, "--warmup", 0)
    assert "conv1 (Convolution)" in table.stdout and "time in GEMM" in table.stdout


def test_time_reports_config_errors_in_one_line(config):
    config.write_text(CONFIG.replace("type: Pooling", "type: Poolling"))
    result = run("time", config)
    assert result.exit_code == 2 and "unknown layer type 'Poolling'" in result.stderr


def test_kernel_accounting_is_off_outside_its_block():
    import numpy as np

    a = np.ones((4, 4), np.float32)
    with kernel_time() as totals:
        gemm(a, a)
        im2col(np.zeros((1, 3, 3, 1), np.float32), 2, 2, 1, 1, 2, 2,
               np.empty((1, 4, 4), np.float32))
    assert totals["gemm"] > 0 and totals["im2col"] > 0
    frozen = dict(totals)
    gemm(a, a)
    assert totals == frozen
