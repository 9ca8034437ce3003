#!/usr/bin/env python3
"""Milliseconds per training iteration: N MPI ranks of one thread each against one
process with N threads, on the same config and global batch.

    python bench/scale_out.py configs/cifar10_quick.yaml --data-dir DATA \\
        --ranks 2 --iterations 40 --repeats 2

Each measurement is a real ``cnntrain train`` run (``mpiexec -n N`` for the ranks;
mpiexec comes with ``pip install -e ".[mpi]"``) with tests off. The time per iteration
is read from the ``seconds`` column of the run's metrics.csv between the first display
row and the last, so start-up and dataset loading are left out. The two set-ups run
alternately, ``--repeats`` times each, so a load that comes and goes on the machine
falls on both; the table gives every run and the median of each.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _mpiexec() -> str:
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.is_file() else "mpiexec"


def ms_per_iteration(config: str, data_dir: str | None, ranks: int, threads: int,
                     iterations: int, display: int, nice: int) -> float:
    """One training run; its milliseconds per iteration after the first display row."""
    with tempfile.TemporaryDirectory() as runs:
        line = [sys.executable, "-m", "cnntrain", "train", config, "--runs-dir", runs,
                "--no-progress", "--quiet",
                "--set", f"solver.max_iter={iterations}", "--set", f"solver.display={display}",
                "--set", "solver.test_interval=0", "--set", "solver.snapshot=0",
                "--set", "solver.snapshot_after_train=false",
                "--set", "solver.test_initialization=false"]
        if data_dir:
            line += ["--data-dir", data_dir]
        if ranks > 1:
            line = [_mpiexec(), "-n", str(ranks)] + line
        if nice:
            line = ["nice", "-n", str(nice)] + line
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        subprocess.run(line, env=env, check=True)
        metrics = next(Path(runs).glob("*/metrics.csv"))
        with open(metrics, newline="") as f:
            rows = [(int(r["iter"]), float(r["seconds"])) for r in csv.DictReader(f)
                    if r["loss"]]
    (first, t0), (last, t1) = rows[0], rows[-1]
    return 1000 * (t1 - t0) / (last - first)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--data-dir")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--display", type=int, default=10, help="timed from this iteration on")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--nice", type=int, default=0, help="run the trainings under nice -n")
    args = ap.parse_args(argv)

    setups = {f"1 process, {args.ranks} threads": (1, args.ranks),
              f"{args.ranks} ranks, 1 thread each": (args.ranks, 1)}
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(args.repeats):
        for name, (ranks, threads) in setups.items():
            ms = ms_per_iteration(args.config, args.data_dir, ranks, threads, args.iterations,
                                  args.display, args.nice)
            times[name].append(ms)
            print(f"{name:<28} {ms:8.1f} ms/iteration", flush=True)
    (base, t_base), (spread, t_spread) = ((n, statistics.median(t)) for n, t in times.items())
    print(f"median: {base} {t_base:.1f} ms, {spread} {t_spread:.1f} ms; "
          f"speed-up of the ranks {t_base / t_spread:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
