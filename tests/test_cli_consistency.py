"""The commands behave alike: usage errors, -q/--json, positional snapshots, --set errors."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error

import pytest

from cnntrain.data import download as download_module
from test_cli_e2e import CONFIG, write_cifar10_binary
from tool_helpers import run

REPO_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "cifar10_quick.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    data = write_cifar10_binary(tmp / "data")
    config = tmp / "tiny.yaml"
    config.write_text(CONFIG.replace("max_iter: 12", "max_iter: 2").replace("snapshot: 6",
                                                                             "snapshot: 0"))
    result = run("train", config, "--data-dir", data, "--runs-dir", tmp / "runs", "--no-progress")
    assert result.exit_code == 0, result.output
    return tmp, data, config, tmp / "runs" / "tiny" / "snapshots" / "iter_2.h5"


@pytest.mark.parametrize("argv, words", [
    (["train", "--bogus"], "No such option '--bogus'"),
    (["tset"], "No such command 'tset'"),
    (["schedule"], "Missing argument 'CONFIG'"),
    (["test", "--tta", "sideways", "x.h5"], "'sideways' is not one of"),
])
def test_usage_errors_are_one_line_with_exit_code_1(argv, words):
    result = run(*argv)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    assert "--help" in lines[0] and result.stdout == ""


def test_bare_command_prints_the_help():
    result = run()
    assert result.exit_code == 0 and "Commands:" in result.stdout


def test_test_takes_the_snapshot_as_an_argument_too(trained):
    _, data, _, snap = trained
    positional = run("test", snap, "--data-dir", data, "--json")
    option = run("test", "--snapshot", snap, "--data-dir", data, "--json")
    assert positional.exit_code == 0, positional.output
    assert json.loads(positional.stdout) == json.loads(option.stdout)
    both = run("test", snap, "--snapshot", str(snap) + ".other", "--data-dir", data)
    assert both.exit_code == 1 and "once" in both.stderr
    neither = run("test", "--data-dir", data)
    assert neither.exit_code == 1 and "SNAPSHOT or --snapshot" in neither.stderr


def test_summary_and_schedule_take_quiet_and_json():
    quiet = run("summary", REPO_CONFIG, "-q")
    assert quiet.exit_code == 0 and len(quiet.stdout.strip().splitlines()) == 1
    assert "145578 parameters" in quiet.stdout          # cifar10_quick's count (README)
    doc = json.loads(run("summary", REPO_CONFIG, "--json").stdout)
    assert doc["train"]["params"] == 145578

    lines = run("schedule", REPO_CONFIG, "-q", "--points", "3").stdout.strip().splitlines()
    assert lines == ["0\t0.001", "2500\t0.001", "5000\t0.0001"]
    doc = json.loads(run("schedule", REPO_CONFIG, "--json", "--points", "3").stdout)
    assert [(p["iteration"], p["lr"]) for p in doc["points"]] == [(0, 0.001), (2500, 0.001),
                                                                 (5000, 0.0001)]


def test_port_takes_quiet_and_json(tmp_path):
    data = write_cifar10_binary(tmp_path / "data")
    args = ["port", "cifar10", "--data-dir", data, "--configs-dir", tmp_path / "configs"]
    doc = run(*args, "--json")
    assert doc.exit_code == 0, doc.output
    parsed = json.loads(doc.stdout)
    assert parsed["converted"] is True and parsed["train"].startswith("cnntrain train ")
    assert set(parsed["files"]) == {"train", "test"}
    quiet = run(*args, "-q")
    assert quiet.exit_code == 0 and quiet.stdout.startswith("checked cifar10")
    assert len(quiet.stdout.strip().splitlines()) == 1


def test_ports_not_found_mentions_from(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("tests never use the network")

    monkeypatch.setattr(download_module, "urlopen", offline)
    result = run("port", "cifar10", "--data-dir", tmp_path / "empty", "--configs-dir",
                 tmp_path / "configs")
    assert result.exit_code == 3 and "--from" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("override, words", [
    ("solver.base_lr=abc", "field 'solver.base_lr': must be a number"),
    ("net.layer.conv1.convolution_param={num_output: 0}", "layer 'conv1', field "
                                                           "'convolution_param.num_output'"),
])
def test_a_bad_set_value_names_the_set_argument(trained, override, words):
    _, _, config, _ = trained
    result = run("train", config, "--dry-run", "--set", override)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith(f"error: --set {override}: ") and words in line
    assert ".yaml" not in line


def test_json_is_printed_when_training_is_interrupted(tmp_path):
    data = write_cifar10_binary(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG.replace("max_iter: 12", "max_iter: 400")
                      .replace("snapshot: 6", "snapshot: 0"))
    proc = subprocess.Popen([sys.executable, "-m", "cnntrain", "train", str(config), "--json",
                             "--runs-dir", str(tmp_path / "r"), "--data-dir", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "r" / "tiny" / "metrics.csv"
    deadline = time.time() + 60
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) > 3):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 5, err
    doc = json.loads(out)
    assert doc["stopped"].startswith("stopped by signal") and doc["iterations"] < 400
    assert doc["resume"].startswith("cnntrain train --resume ") and doc["snapshot"] in doc["resume"]
    assert err.strip().splitlines()[-1].startswith("error: stopped by signal")
