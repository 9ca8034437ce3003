"""train --set / --dry-run / --plot / --quiet / --json and test --quiet / --json, end to end
on the tiny generated CIFAR-10 of test_cli_e2e."""
import json

import pytest
import yaml

from test_cli_e2e import metrics, setup  # noqa: F401 - setup is a fixture
from tool_helpers import run


def test_set_overrides_train_and_are_recorded_in_the_run_config(setup):  # noqa: F811
    tmp, data, config = setup
    result = run("train", config, "--data-dir", data, "--runs-dir", tmp / "r", "--no-progress",
                 "--set", "solver.max_iter=4", "--set", "solver.test_interval=2",
                 "--set", "net.layer.conv1.convolution_param.num_output=6")
    assert result.exit_code == 0, result.output
    run_dir = tmp / "r" / "tiny"
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert recorded["solver"]["max_iter"] == 4
    conv1 = [layer for layer in recorded["net"]["layer"] if layer["name"] == "conv1"][0]
    assert conv1["convolution_param"]["num_output"] == 6
    assert max(int(r["iter"]) for r in metrics(run_dir)) == 4
    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == ["iter_4.h5"]


def test_bad_override_is_a_one_line_config_error(setup):  # noqa: F811
    tmp, data, config = setup
    result = run("train", config, "--data-dir", data, "--runs-dir", tmp / "r",
                 "--set", "solver.base_lr")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: --set solver.base_lr: expected PATH=VALUE, e.g. solver.base_lr=0.01"]
    assert not (tmp / "r").exists()


def test_dry_run_reads_no_data_and_writes_nothing(setup):  # noqa: F811
    tmp, _, config = setup
    result = run("train", config, "--data-dir", tmp / "no-data-here", "--runs-dir", tmp / "r",
                 "--dry-run", "--set", "net.layer.ip.inner_product_param.num_output=7")
    assert result.exit_code == 0, result.output
    assert "config OK" in result.stdout and "ip 8x7" in result.stdout
    assert not (tmp / "r").exists()
    as_json = run("train", config, "--dry-run", "--json")
    assert as_json.exit_code == 0
    doc = json.loads(as_json.stdout)
    assert doc["name"] == "tiny" and [l["name"] for l in doc["train"]["layers"]][-1] == "loss"


def test_dry_run_still_refuses_a_bad_config(setup):  # noqa: F811
    tmp, _, config = setup
    config.write_text(config.read_text().replace("type: Pooling", "type: Poolling"))
    result = run("train", config, "--dry-run")
    assert result.exit_code == 2 and "unknown layer type 'Poolling'" in result.stderr


def test_quiet_prints_one_line_and_json_one_document(setup):  # noqa: F811
    tmp, data, config = setup
    quiet = run("train", config, "--data-dir", data, "--runs-dir", tmp / "q", "-q")
    assert quiet.exit_code == 0, quiet.output
    lines = quiet.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("final test accuracy ")
    assert quiet.stderr == ""

    as_json = run("train", config, "--data-dir", data, "--runs-dir", tmp / "j", "--json")
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.stdout)
    assert doc["iterations"] == 12 and doc["snapshot"].endswith("iter_12.h5")
    assert doc["test"]["images"] == 25 and 0.0 <= doc["test"]["accuracy"] <= 1.0
    assert "iter 12" in as_json.stderr          # the log lines go to stderr

    tested = run("test", "--snapshot", doc["snapshot"], "--data-dir", data, "--json")
    assert tested.exit_code == 0, tested.output
    result = json.loads(tested.stdout)
    assert result["outputs"]["accuracy"] == pytest.approx(doc["test"]["accuracy"], abs=1e-6)
    assert result["single_view"]["top1"] == pytest.approx(doc["test"]["accuracy"], abs=1e-6)
    assert len(result["per_class"]) == 10
    short = run("test", "--snapshot", doc["snapshot"], "--data-dir", data, "-q")
    assert short.exit_code == 0
    path, top1, loss = short.stdout.strip().split("\t")
    assert path == doc["snapshot"] and float(top1) == pytest.approx(doc["test"]["accuracy"],
                                                                      abs=1e-4)


def test_plot_redraws_the_curves_at_each_test(setup):  # noqa: F811
    pytest.importorskip("matplotlib")
    tmp, data, config = setup
    result = run("train", config, "--data-dir", data, "--runs-dir", tmp / "p", "--no-progress",
                 "--plot")
    assert result.exit_code == 0, result.output
    png = tmp / "p" / "tiny" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_stops_before_training(setup, monkeypatch):  # noqa: F811
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    tmp, data, config = setup
    result = run("train", config, "--data-dir", data, "--runs-dir", tmp / "p", "--plot")
    assert result.exit_code != 0
    assert "matplotlib" in result.stderr and "pip install" in result.stderr
    assert not (tmp / "p" / "tiny" / "snapshots").exists()
