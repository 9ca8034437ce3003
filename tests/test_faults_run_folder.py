"""One writer per run folder, and nothing written outside it.

A second ``cnntrain train`` on a folder in use is refused naming the holder's pid; the
lock of a killed run is taken over; a fresh run refuses a folder that holds another
run's snapshots (they stay untouched); the run's files and ``snapshots/`` are never
written through a symbolic link.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import fault_figures
from cnntrain.rundir import RunDir
from test_cli_e2e import CONFIG, write_cifar10_binary
from tool_helpers import run

SHORT = (CONFIG.replace("max_iter: 12", "max_iter: 2").replace("test_interval: 6", "test_interval: 0")
         .replace("snapshot: 6", "snapshot: 1"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_cifar10_binary(tmp_path_factory.mktemp("folder") / "data")


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SHORT)
    return path


def train(config, data, runs, *extra):
    return run("train", config, "--data-dir", data, "--runs-dir", runs, "--no-progress", *extra)


def refused(result, *words) -> str:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        fault_figures.add("tracebacks")
        raise AssertionError(repr(result.exception)) from result.exception
    lines = result.stderr.splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    fault_figures.add("run_folder")
    return lines[0]


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, config, data):
    runs = tmp_path / "runs"
    holder = RunDir(runs, "tiny")
    holder.acquire()          # another train is inside (same lock, another open file)
    try:
        refused(train(config, data, runs), "in use", f"pid {os.getpid()}")
        assert not (runs / "tiny" / "snapshots").exists()
        assert not (runs / "tiny" / "train.log").exists()
    finally:
        holder.release()
    assert train(config, data, runs).exit_code == 0


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, config, data):
    runs = tmp_path / "runs"
    code = ("import sys, time; from cnntrain.rundir import RunDir; "
            "RunDir(sys.argv[1], 'tiny').acquire(); print('locked', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(runs)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        refused(train(config, data, runs), f"pid {child.pid}")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert (runs / "tiny" / ".lock").read_text().strip() == str(child.pid)   # stale now
    result = train(config, data, runs)
    assert result.exit_code == 0, result.output
    fault_figures.add("run_folder")


def test_a_fresh_run_never_mixes_with_an_old_runs_snapshots(tmp_path, config, data):
    runs = tmp_path / "runs"
    assert train(config, data, runs).exit_code == 0
    snaps = runs / "tiny" / "snapshots"
    before = {p.name: p.read_bytes() for p in snaps.iterdir()}
    log = (runs / "tiny" / "train.log").read_text()
    line = refused(train(config, data, runs, "--set", "solver.random_seed=9"),
                   "earlier run", "--resume", str(snaps / "iter_2.h5"), "--set name=")
    assert {p.name: p.read_bytes() for p in snaps.iterdir()} == before, line
    assert (runs / "tiny" / "train.log").read_text() == log
    assert train(config, data, runs, "--set", "name=tiny_b").exit_code == 0


@pytest.mark.parametrize("link", ["train.log", "metrics.csv", "config.yaml", "snapshots"])
def test_a_symbolic_link_in_the_run_folder_is_never_followed(tmp_path, config, data, link):
    runs = tmp_path / "runs"
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / ("dir" if link == "snapshots" else "precious.txt")
    if link == "snapshots":
        target.mkdir()
    else:
        target.write_text("keep me\n")
    (runs / "tiny").mkdir(parents=True)
    (runs / "tiny" / link).symlink_to(target)
    refused(train(config, data, runs), "symbolic link", link)
    if link == "snapshots":
        assert list(target.iterdir()) == []
    else:
        assert target.read_text() == "keep me\n"
    assert sorted(p.name for p in outside.rglob("*")) == [target.name]


def test_appends_never_follow_a_link_planted_during_the_run(tmp_path):
    folder = RunDir(tmp_path / "runs", "tiny")
    folder.start("name: tiny\n", None)
    try:
        outside = tmp_path / "precious.txt"
        outside.write_text("keep me\n")
        folder.log_path.unlink()
        folder.log_path.symlink_to(outside)
        with pytest.raises(Exception, match="could not write"):
            folder.log("a line")
        assert outside.read_text() == "keep me\n"
    finally:
        folder.release()
    fault_figures.add("run_folder")
