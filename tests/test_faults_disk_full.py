"""A full disk in the middle of training: one ``error:`` line that says the disk is
full, a non-zero exit, and every snapshot written before it intact (no temporary file
left behind).

Two ways to fill the disk:
- a patched HDF5 writer that fails partway through a snapshot with the very error h5py
  raises on ENOSPC (always runs);
- a real 256 KiB tmpfs mounted in a private mount namespace (``unshare``), where the
  run folder fills up wherever it happens to (a snapshot, the log, the metrics). It is
  skipped where mounting is not allowed.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

import fault_figures
from cnntrain.snapshot import load_snapshot
from test_cli_e2e import CONFIG, weights, write_cifar10_binary
from tool_helpers import run

FULL = ("Can't synchronously write data (file write failed: time = Mon Jan  1 00:00:00 2024\n"
        ", filename = 'x.h5', file descriptor = 3, errno = 28, error message = 'No space left "
        "on device', buf = 0x1, total write size = 385664, bytes this sub-write = 385664, "
        "offset = 16384)")


@pytest.fixture
def data(tmp_path):
    return write_cifar10_binary(tmp_path / "data")


def one_line(result) -> str:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        fault_figures.add("tracebacks")
        raise AssertionError(repr(result.exception)) from result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("fail_at", [1, 3, 5])   # which dataset of the third snapshot fails
def test_disk_full_during_a_snapshot_keeps_the_previous_one(tmp_path, data, monkeypatch, fail_at):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.replace("snapshot: 6", "snapshot: 2"))
    reference = run("train", config, "--data-dir", data, "--runs-dir", tmp_path / "ref",
                    "--no-progress")
    assert reference.exit_code == 0
    good = weights(tmp_path / "ref" / "tiny" / "snapshots" / "iter_4.h5")

    create, calls = h5py.Group.create_dataset, []

    def filling(self, *args, **kwargs):
        calls.append(self.file.filename)
        if len({c for c in calls}) == 3 and sum(c == calls[-1] for c in calls) == fail_at:
            raise OSError(errno.ENOSPC, FULL)
        return create(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", filling)
    result = run("train", config, "--data-dir", data, "--runs-dir", tmp_path / "r",
                 "--no-progress")
    line = one_line(result)
    snaps = tmp_path / "r" / "tiny" / "snapshots"
    assert result.exit_code == 4
    assert f"could not write snapshot {snaps / 'iter_6.h5'}: the disk is full" in line
    assert f"the last good snapshot is {snaps / 'iter_4.h5'}" in line
    assert sorted(p.name for p in snaps.iterdir()) == ["iter_2.h5", "iter_4.h5"]  # no temp
    kept = weights(snaps / "iter_4.h5")
    for key, value in good.items():
        np.testing.assert_array_equal(kept[key], value)
    monkeypatch.undo()
    resumed = run("train", config, "--data-dir", data, "--runs-dir", tmp_path / "r",
                  "--no-progress", "--resume", snaps / "iter_4.h5")
    assert resumed.exit_code == 0, resumed.output
    fault_figures.add("disk_full")


def test_disk_full_while_appending_to_the_log_is_one_line(tmp_path, data, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    from cnntrain.rundir import RunDir

    real_append = RunDir._append
    writes = []

    def full_append(path, *args, **kwargs):
        if str(path).endswith("train.log"):
            writes.append(path)
            if len(writes) > 5:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_append(path, *args, **kwargs)

    # The run folder opens its log for appending (never through a link) in one place.
    monkeypatch.setattr(RunDir, "_append", staticmethod(full_append))
    result = run("train", config, "--data-dir", data, "--runs-dir", tmp_path / "r",
                 "--no-progress")
    line = one_line(result)
    assert result.exit_code == 1 and "train.log: the disk is full" in line, line
    fault_figures.add("disk_full")


def _unshare_prefix() -> list[str] | None:
    if not shutil.which("unshare") or not shutil.which("mount") or sys.platform != "linux":
        return None
    prefix = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "-rm"]
    probe = subprocess.run(prefix + ["sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null"
                                     " || mount -t tmpfs -o size=64k tmpfs /tmp"],
                           capture_output=True, timeout=30)
    return prefix if probe.returncode == 0 else None


def test_real_full_tmpfs_stops_with_one_line_and_keeps_snapshots(tmp_path, data):
    prefix = _unshare_prefix()
    if prefix is None:
        pytest.skip("cannot mount a tmpfs in a private mount namespace here")
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.replace("max_iter: 12", "max_iter: 400")
                      .replace("snapshot: 6", "snapshot: 3").replace("display: 1", "display: 50")
                      .replace("test_interval: 6", "test_interval: 0"))
    runs, out = tmp_path / "runs", tmp_path / "copy"
    runs.mkdir()
    out.mkdir()
    script = (f'mount -t tmpfs -o size=256k tmpfs "{runs}" || exit 99\n'
              f'"{sys.executable}" -m cnntrain train "{config}" --data-dir "{data}" '
              f'--runs-dir "{runs}" --no-progress --quiet 2> "{out}/stderr"\n'
              f'echo $? > "{out}/rc"\ncp -a "{runs}/." "{out}/"\n')
    done = subprocess.run(prefix + ["sh", "-c", script], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    rc = int((out / "rc").read_text())
    err = (out / "stderr").read_text()
    lines = err.splitlines()
    assert rc != 0 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "the disk is full" in lines[0], err
    snaps = sorted((out / "tiny" / "snapshots").glob("iter_*.h5"))
    assert snaps, "the tmpfs filled before the first snapshot: make it larger"
    for path in snaps:
        assert load_snapshot(path).resumable
    assert not list((out / "tiny").rglob(".*.tmp-*"))
    fault_figures.add("disk_full")
