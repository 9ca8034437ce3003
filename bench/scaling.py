#!/usr/bin/env python3
"""How a training iteration's cost grows with the batch and with the net's FLOPs.

    python bench/scaling.py configs/cifar10_quick.yaml configs/lenet_cifar10.yaml \\
        --batches 32 64 128 256 --iterations 10

For each config and batch size it times training iterations with ``cnntrain time``'s
machinery (fixed random batch, no dataset) and prints the milliseconds per iteration,
per image, and the GFLOP/s the GEMMs achieve. Cost close to linear in the batch shows
as a flat ms/image column; a quadratic surprise shows as a column that grows. Across
configs, ms/image against GFLOP/image shows how the cost follows the arithmetic.
Threads follow OMP_NUM_THREADS (cnntrain's own workers, BLAS on one thread; see the
README), set before running.
"""
from __future__ import annotations

import argparse
import json
import sys

from cnntrain.config import load_experiment
from cnntrain.tools.timing import blas_threads, time_experiment


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="also print one JSON line per row")
    args = ap.parse_args(argv)

    print(f"{blas_threads()}; {args.iterations} timed iterations after {args.warmup} warm-up")
    print(f"{'config':<28} {'batch':>5} {'ms/iter':>9} {'median':>9} {'ms/image':>9} "
          f"{'GFLOP/img':>10} {'GFLOP/s':>8}")
    for path in args.configs:
        exp = load_experiment(path)
        for batch in args.batches:
            r = time_experiment(exp, iterations=args.iterations, warmup=args.warmup, batch=batch)
            gflop_img = sum(row.flops for row in r.layers) / r.batch / 1e9
            print(f"{exp.name:<28} {r.batch:>5} {r.total_ms:9.1f} {r.median_ms:9.1f} "
                  f"{r.total_ms / r.batch:9.3f} {gflop_img:10.4f} {r.gflops:8.1f}", flush=True)
            if args.json:
                print(json.dumps({"config": path, "batch": r.batch, "ms": r.total_ms,
                                  "median_ms": r.median_ms, "ms_per_image": r.total_ms / r.batch,
                                  "gflop_per_image": gflop_img, "gflops": r.gflops,
                                  "threads": blas_threads()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
