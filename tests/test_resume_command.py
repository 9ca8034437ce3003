"""The resume command printed when training stops works as printed, through a shell,
and ``--resume SNAP`` alone continues the run with the config stored in the snapshot."""
import os
import re
import signal
import subprocess
import sys
import time

from cnntrain.snapshot import load_snapshot
from test_cli_e2e import CONFIG, assert_same_weights, metrics, run, write_cifar10_binary

# Long enough that the signal arrives mid-run; --set makes it so, to show the
# printed command keeps the overrides (the config file alone says max_iter: 12).
OVERRIDES = ["--set", "solver.max_iter=400", "--set", "solver.snapshot=0",
             "--set", "solver.display=10", "--set", "solver.test_interval=100"]


def _shell_env(tmp_path):
    """PATH with a ``cnntrain`` that runs this interpreter's package, as an installed
    console script would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "cnntrain"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cnntrain "$@"\n')
    shim.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                PYTHONUNBUFFERED="1")


def test_printed_resume_command_run_verbatim_ends_like_an_uninterrupted_run(tmp_path):
    data = write_cifar10_binary(tmp_path / "data")
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    env = _shell_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnntrain", "train", "tiny.yaml", "--runs-dir", "out",
         "--data-dir", "data", "--no-progress", *OVERRIDES],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 60
    while not ((tmp_path / "out/tiny/metrics.csv").is_file()
               and len(metrics(tmp_path / "out/tiny")) >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 5, out
    command = re.search(r"resume with: (.*)$", out, re.M).group(1)
    assert "--runs-dir out" in command and "--data-dir data" in command, command
    stopped_at = load_snapshot(tmp_path / re.search(r"--resume (\S+)", command).group(1)
                               ).iteration
    assert 0 < stopped_at < 400

    resumed = subprocess.run(command, shell=True, cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert resumed.returncode == 0, resumed.stdout
    assert not (tmp_path / "runs").exists()     # the run's own folder, not the default one
    full = run("train", tmp_path / "tiny.yaml", "--runs-dir", tmp_path / "full", "--data-dir",
               data, "--no-progress", *OVERRIDES)
    assert full.exit_code == 0, full.output
    assert_same_weights(tmp_path / "out/tiny/snapshots/iter_400.h5",
                        tmp_path / "full/tiny/snapshots/iter_400.h5")


def test_resume_without_config_uses_the_snapshots_config(tmp_path):
    data = write_cifar10_binary(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    args = ["--data-dir", data, "--no-progress"]
    assert run("train", config, "--runs-dir", tmp_path / "a", *args,
               "--set", "solver.max_iter=14").exit_code == 0
    config.write_text("this file is no longer a config")     # not read by --resume alone
    resumed = run("train", "--resume", tmp_path / "a/tiny/snapshots/iter_6.h5",
                  "--runs-dir", tmp_path / "b", *args)
    assert resumed.exit_code == 0, resumed.output
    assert_same_weights(tmp_path / "a/tiny/snapshots/iter_14.h5",
                        tmp_path / "b/tiny/snapshots/iter_14.h5")


def test_resume_alone_refuses_set_and_a_missing_config_is_one_line(tmp_path):
    data = write_cifar10_binary(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    assert run("train", config, "--runs-dir", tmp_path / "a", "--data-dir", data,
               "--no-progress").exit_code == 0
    snap = tmp_path / "a/tiny/snapshots/iter_6.h5"
    refused = run("train", "--resume", snap, "--set", "solver.max_iter=20")
    assert refused.exit_code == 1 and "--set" in refused.output
    nothing = run("train")
    assert nothing.exit_code == 1 and "--resume" in nothing.output
    assert len(nothing.output.strip().splitlines()) == 1


def test_resume_of_a_weights_only_snapshot_says_use_weights(tmp_path):
    """``import-prototxt --weights`` writes a config and weights but no data position."""
    import shutil

    import h5py

    data = write_cifar10_binary(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    args = ["--data-dir", data, "--no-progress"]
    assert run("train", config, "--runs-dir", tmp_path / "a", *args).exit_code == 0
    snap = tmp_path / "imported.h5"
    shutil.copy(tmp_path / "a/tiny/snapshots/iter_6.h5", snap)
    with h5py.File(snap, "a") as f:
        del f["state"]
    for argv in (["train", config, "--resume", snap], ["train", "--resume", snap]):
        refused = run(*argv, "--runs-dir", tmp_path / "b", *args)
        assert refused.exit_code == 4, refused.output
        assert "has weights only; use --weights" in refused.output
        assert "data position" not in refused.output
    assert run("train", config, "--weights", snap, "--runs-dir", tmp_path / "c",
               *args).exit_code == 0
