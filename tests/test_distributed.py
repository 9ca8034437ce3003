"""Data-parallel training over MPI (``mpiexec -n N cnntrain train``).

The runs need mpi4py and an ``mpiexec`` (``pip install -e ".[mpi]"``) and are skipped,
saying so, without them. The shard arithmetic below them runs everywhere.

Exactness: a rank sums the gradient over its half of the batch, then the allreduce adds
the two halves; one process sums the whole batch at once. Those are the same sums in
another order, so in float64 the runs agree to ~1e-12 (checked with 1e-9 below). In
float32 the reordering changes the last bit of a gradient, and over 20 iterations of
cifar10_quick (weights started at std 1e-4, so max-pooling and ReLU decide near-ties)
such bits flip some of those decisions: float32 runs agree to about 2 % of a weight,
which is why the exactness test builds the nets in float64 (tests/float64_child.py).
"""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

from cnntrain.data.transforms import Transformer
from cnntrain.distributed import Shard
from cnntrain.snapshot import load_snapshot
from layer_helpers import make_layer
from test_cli_e2e import write_cifar10_binary

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "cifar10_quick.yaml"
FLOAT64_CHILD = Path(__file__).with_name("float64_child.py")
SHORT = ["--set", "solver.max_iter=20", "--set", "solver.test_interval=10",
         "--set", "solver.test_iter=4", "--set", "solver.snapshot=10",
         "--set", "solver.display=5", "--set", "net.layer.cifar.data_param.batch_size=16"]


def _mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")   # the MPICH wheel's, in the venv
    return str(beside) if beside.is_file() else shutil.which("mpiexec")


def _mpi_missing() -> str:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install -e '.[mpi]')"
    if _mpiexec() is None:
        return "no mpiexec found (pip install -e '.[mpi]' brings MPICH's)"
    return ""


needs_mpi = pytest.mark.skipif(bool(_mpi_missing()), reason=_mpi_missing() or "MPI present")


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _cnntrain(ranks: int, *args, child: Path | None = None, **popen) -> list[str]:
    """The command line of ``cnntrain ARGS`` in ``ranks`` processes (1: no mpiexec)."""
    program = [sys.executable, str(child)] if child else [sys.executable, "-m", "cnntrain"]
    line = program + [str(a) for a in args]
    return line if ranks == 1 else [_mpiexec(), "-n", str(ranks)] + line


def _weights(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        return {f"{layer}/{i}": f["data"][layer][i][()] for layer in f["data"]
                for i in f["data"][layer]}


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _assert_same_weights(a: Path, b: Path, rtol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        scale = max(float(np.abs(wa[key]).max()), 1e-30)
        worst = float(np.abs(wa[key] - wb[key]).max()) / scale
        assert worst <= rtol, f"{key}: weights differ by {worst:.3g} of their largest value"


# ------------------------------------------------------------- everywhere (no MPI)
def test_shard_rows_cover_the_batch_once_and_refuse_an_uneven_split():
    rows = [np.arange(12)[Shard(r, 3).rows(12)] for r in range(3)]
    np.testing.assert_array_equal(np.concatenate(rows), np.arange(12))
    with pytest.raises(ValueError, match="16 does not divide over 3 processes"):
        Shard(0, 3).check(16)


@pytest.mark.parametrize("mirror", ["random", "alternate"])
def test_a_shard_is_transformed_as_its_rows_of_the_whole_batch(mirror):
    """Rank r's images are the rows r of the batch one process cuts, and the random
    stream ends where it would (the next batch is the same too)."""
    images = np.random.default_rng(0).integers(0, 255, (8, 3, 6, 6)).astype(np.uint8)
    index, epoch = np.arange(8), np.zeros(8, np.int64)
    flips = np.random.default_rng(1).random(8) < 0.5
    make = lambda: Transformer(scale=0.5, mirror=mirror, shift=2, crop_size=5, train=True,
                               flip_bits=flips)
    whole_rng = np.random.default_rng(7)
    whole = make()(images, whole_rng, index, epoch)
    for rank in range(2):
        rng = np.random.default_rng(7)
        part = Shard(rank, 2).rows(8)
        mine = make()(images, rng, index, epoch, part)
        np.testing.assert_array_equal(mine, whole[part])
        assert rng.bit_generator.state == whole_rng.bit_generator.state


def test_a_shard_drops_the_units_of_its_rows_of_the_whole_batch_mask():
    x = np.random.default_rng(3).standard_normal((8, 5))
    whole, _ = make_layer("Dropout", [x.shape], dropout_param={"dropout_ratio": 0.5})
    (expected,) = whole.forward([x])
    for rank in range(2):
        part = Shard(rank, 2).rows(8)
        layer, _ = make_layer("Dropout", [(4, 5)], dropout_param={"dropout_ratio": 0.5})
        layer.ctx.shard = Shard(rank, 2)
        (mine,) = layer.forward([x[part]])
        np.testing.assert_array_equal(mine, expected[part])


# ------------------------------------------------------------- under mpiexec
@pytest.fixture(scope="module")
def float64_runs(tmp_path_factory):
    """cifar10_quick for 20 iterations on generated data, in float64: one process with
    the global batch of 16, and 2 ranks of 8 each."""
    reason = _mpi_missing()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("mpi")
    data = write_cifar10_binary(tmp / "data", n_train=100, n_test=40)
    runs = {}
    for ranks in (1, 2):
        out = tmp / f"ranks{ranks}"
        done = subprocess.run(_cnntrain(ranks, "train", CONFIG, "--data-dir", data,
                                        "--runs-dir", out, "--no-progress", *SHORT,
                                        child=FLOAT64_CHILD),
                              env=_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        runs[ranks] = (out / "cifar10_quick", done.stdout)
    return tmp, data, runs


@needs_mpi
def test_two_ranks_end_with_the_weights_of_one_process(float64_runs):
    _, _, runs = float64_runs
    one, two = runs[1][0], runs[2][0]
    _assert_same_weights(one / "snapshots" / "iter_20.h5", two / "snapshots" / "iter_20.h5",
                         rtol=1e-9)
    rows1, rows2 = _metrics(one), _metrics(two)
    assert [r["iter"] for r in rows1] == [r["iter"] for r in rows2]
    for r1, r2 in zip(rows1, rows2):   # the global loss and the test split over ranks
        for key in ("loss", "test_loss", "test_accuracy"):
            if r1[key]:
                assert float(r2[key]) == pytest.approx(float(r1[key]), rel=1e-5, abs=1e-6)
    # Rank 0 alone printed and wrote: each line once, one run folder.
    out = runs[2][1]
    assert out.count("iter 20: test on 56 images") == 1 and out.count("done:") == 1
    assert "iter 20: test on 56 images" in runs[1][1]    # 16 + 16 + 8, then 16 again


@needs_mpi
def test_rank0_snapshot_resumes_on_one_process(float64_runs):
    tmp, data, runs = float64_runs
    two = runs[2][0]
    out = tmp / "resumed"
    done = subprocess.run(_cnntrain(1, "train", CONFIG, "--data-dir", data, "--runs-dir", out,
                                    "--no-progress", "--resume",
                                    two / "snapshots" / "iter_10.h5", *SHORT,
                                    child=FLOAT64_CHILD),
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_same_weights(two / "snapshots" / "iter_20.h5",
                         out / "cifar10_quick" / "snapshots" / "iter_20.h5", rtol=1e-9)


@needs_mpi
def test_a_batch_that_does_not_divide_is_a_config_error(tmp_path):
    data = write_cifar10_binary(tmp_path / "data", n_train=20, n_test=10)
    done = subprocess.run(_cnntrain(3, "train", CONFIG, "--data-dir", data, "--runs-dir",
                                    tmp_path / "runs", "--no-progress", *SHORT),
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "data_param.batch_size" in done.stderr
    assert "16 does not divide over 3 processes" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def _rank_pid(token: str, rank: int, timeout: float = 120) -> int:
    """The pid of MPI rank ``rank`` of the job started with CNNTRAIN_TEST_TOKEN=token."""
    wanted = {f"CNNTRAIN_TEST_TOKEN={token}".encode(), f"PMI_RANK={rank}".encode()}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                env = set((entry / "environ").read_bytes().split(b"\0"))
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if wanted <= env and b"cnntrain" in cmd and b"mpiexec" not in cmd:
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError(f"rank {rank} never started")


def _start_long_run(tmp_path, **env):
    """2 ranks training for long enough; returns (process, token, run folder)."""
    if not Path("/proc/self/environ").is_file():
        pytest.skip("finding a rank's process needs /proc")
    data = write_cifar10_binary(tmp_path / "data", n_train=20, n_test=10)
    token = uuid.uuid4().hex
    proc = subprocess.Popen(_cnntrain(2, "train", CONFIG, "--data-dir", data, "--runs-dir",
                                      tmp_path / "runs", "--no-progress",
                                      "--set", "solver.max_iter=100000",
                                      "--set", "solver.display=1",
                                      "--set", "net.layer.cifar.data_param.batch_size=4"),
                            env=_env(CNNTRAIN_TEST_TOKEN=token, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "runs" / "cifar10_quick" / "train.log"
    deadline = time.monotonic() + 180
    while not (log.is_file() and "iter 2:" in log.read_text()):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "training never reached iteration 2"
        time.sleep(0.2)
    return proc, token, tmp_path / "runs" / "cifar10_quick"


@needs_mpi
def test_a_killed_rank_ends_the_run_with_an_error(tmp_path):
    proc, token, _ = _start_long_run(tmp_path)
    os.kill(_rank_pid(token, 1), signal.SIGKILL)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("rank 0 hung after rank 1 was killed")
    assert proc.returncode != 0
    assert "BAD TERMINATION" in out and "signal 9" in out, out


@needs_mpi
def test_a_rank_that_stops_answering_times_out(tmp_path):
    proc, token, _ = _start_long_run(tmp_path, CNNTRAIN_MPI_TIMEOUT="3")
    stalled = _rank_pid(token, 1)
    os.kill(stalled, signal.SIGSTOP)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("rank 0 hung waiting for a stopped rank")
    finally:
        try:
            os.kill(stalled, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 1, out
    assert "rank 0 of 2: no answer from the other processes for 3 s" in out, out


@needs_mpi
def test_ctrl_c_stops_all_ranks_at_one_iteration_with_a_snapshot(tmp_path):
    proc, _, run = _start_long_run(tmp_path)
    proc.send_signal(signal.SIGINT)          # mpiexec passes it on to the ranks
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the ranks did not stop on Ctrl-C")
    assert proc.returncode == 5, out
    # Rank 0 says it (rank 1 waits for rank 0 to end the job rather than repeat it).
    assert out.count("error: stopped by signal") == 1, out
    snapshots = list((run / "snapshots").glob("iter_*.h5"))
    assert len(snapshots) == 1 and f"--resume {snapshots[0]}" in out
    iteration = load_snapshot(snapshots[0]).iteration
    assert f"stopped by signal 2 at iteration {iteration};" in out
