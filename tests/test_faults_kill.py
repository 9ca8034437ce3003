"""Process faults: real ``cnntrain train`` subprocesses killed with SIGKILL at random
moments, some of them in the middle of a snapshot write.

After every kill, each snapshot file left behind must load, a ``--resume`` from the
newest one (or a fresh start when none was written yet) must finish, and the final
weights must equal, bit for bit, those of one uninterrupted run of the same config.

The kill times come from a seeded RNG, so CI runs the same trials each time. A third of
the trials run the command through ``slow_snapshot_child.py`` (flush and a short sleep
after each HDF5 dataset) and wait for a snapshot's temporary file before killing, so
they land inside the write. The heavy version runs many more trials:

    python -m pytest tests/test_faults_kill.py -m fuzz_heavy
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fault_figures
from cnntrain.snapshot import load_snapshot
from test_cli_e2e import CONFIG, weights, write_cifar10_binary
from tool_helpers import run

MAX_ITER = 40
SEED = 20240607
CHILD = Path(__file__).with_name("slow_snapshot_child.py")
KILL_CONFIG = (CONFIG.replace("max_iter: 12", f"max_iter: {MAX_ITER}")
               .replace("snapshot: 6", "snapshot: 4\n  snapshot_keep: 3")
               .replace("test_interval: 6", "test_interval: 10"))


def _spawn(config, runs, data, slow: bool) -> subprocess.Popen:
    args = ["train", str(config), "--runs-dir", str(runs), "--data-dir", str(data),
            "--no-progress"]
    command = [sys.executable, str(CHILD)] if slow else [sys.executable, "-m", "cnntrain"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", CNNTRAIN_TEST_WRITE_DELAY="0.003")
    return subprocess.Popen(command + args, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)


def _iteration(path: Path) -> int:
    return int(path.stem[len("iter_"):])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted subprocess run: its final weights and how long it took
    (until training started, until it exited)."""
    root = tmp_path_factory.mktemp("kill")
    data = write_cifar10_binary(root / "data")
    config = root / "tiny.yaml"
    config.write_text(KILL_CONFIG)
    began = time.monotonic()
    proc = _spawn(config, root / "ref", data, slow=False)
    log = root / "ref" / "tiny" / "train.log"
    started = None
    while proc.poll() is None:
        if started is None and log.is_file() and log.stat().st_size:
            started = time.monotonic() - began
        time.sleep(0.005)
    total = time.monotonic() - began
    assert proc.returncode == 0, proc.stderr.read().decode()
    final = weights(root / "ref" / "tiny" / "snapshots" / f"iter_{MAX_ITER}.h5")
    return {"root": root, "data": data, "config": config, "weights": final,
            "started": started or 0.0, "total": total}


def _kill_and_resume(ref, trial: int, rng: random.Random, in_write: bool) -> bool:
    """One trial; whether the process was still running when the SIGKILL came."""
    runs = ref["root"] / f"trial{trial}"
    snaps = runs / "tiny" / "snapshots"
    proc = _spawn(ref["config"], runs, ref["data"], slow=in_write)
    try:
        if in_write:
            # Aim at the write of a random snapshot: wait for its temporary file, then
            # kill a random moment into the write.
            target = 4 * rng.randint(1, MAX_ITER // 4 - 1)
            deadline = time.monotonic() + 60
            while not list(snaps.glob(f".iter_{target}.h5.tmp-*")):
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "no snapshot write seen"
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.015))
        else:
            time.sleep(rng.uniform(ref["started"] * 0.8, ref["total"] * 0.95))
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert b"Traceback" not in err, err.decode()
    # A process that had already finished is checked all the same, but not counted.
    fault_figures.add("kills", int(killed))
    if list(snaps.glob(".*.tmp-*")):
        fault_figures.add("kills_in_snapshot_write")
    elif in_write:
        pytest.fail(f"trial {trial}: the kill missed the snapshot write")

    found = sorted(snaps.glob("iter_*.h5"), key=_iteration) if snaps.is_dir() else []
    for path in found:   # every snapshot file left behind is whole
        snap = load_snapshot(path)
        assert snap.resumable and snap.iteration == _iteration(path), path
    args = ["train", ref["config"], "--runs-dir", runs, "--data-dir", ref["data"],
            "--no-progress"]
    if found and _iteration(found[-1]) < MAX_ITER:
        args += ["--resume", found[-1]]
    if not found or _iteration(found[-1]) < MAX_ITER:
        result = run(*args)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            fault_figures.add("tracebacks")
        assert result.exit_code == 0, (trial, found, result.output)
    final = weights(snaps / f"iter_{MAX_ITER}.h5")
    assert final.keys() == ref["weights"].keys()
    for key, value in ref["weights"].items():
        np.testing.assert_array_equal(final[key], value, err_msg=f"trial {trial}: {key}")
    assert not list(snaps.glob(".*.tmp-*")), "the resumed run left a temporary file"
    if killed:
        fault_figures.add("kills_survived")
    return killed


def _trials(ref, count: int, seed: int) -> None:
    """Run trials until ``count`` processes were really killed (not finished first)."""
    rng = random.Random(seed)
    kills = trial = 0
    while kills < count:
        assert trial < 2 * count, f"only {kills} of {trial} trials killed a running process"
        kills += _kill_and_resume(ref, trial, rng, in_write=trial % 3 == 2)
        trial += 1


def test_sigkill_at_random_moments_then_resume_gives_identical_weights(reference):
    _trials(reference, 21, SEED)


@pytest.mark.fuzz_heavy
def test_heavy_sigkill_trials(reference):
    _trials(reference, 150, int(os.environ.get("CNNTRAIN_KILL_SEED", time.time_ns() % 10 ** 6)))
