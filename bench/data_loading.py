"""How fast cnntrain gets CIFAR images into a net: loading a native file, and cutting
augmented TRAIN batches (mean image, mirror, 2 px shift, batch 100) from it.

    python bench/data_loading.py --data-dir ~/.cache/cnntrain --dataset cifar100
    python bench/data_loading.py --data-dir /tmp/cifar --dataset cifar10 --readers --json

Needs the native files of ``cnntrain port DATASET`` in --data-dir. Reported, in images/s:

1. **load**: reading ``<dataset>-train.h5`` into memory (best of --repeat, the file in
   the page cache, as on every run after the first); with ``--readers`` also the CIFAR
   readers on the official source in --data-dir, for comparison.
2. **batches**: the TRAIN Data layer's ``forward`` (sampler + transform), batches of
   --batch, in the calling thread (prefetch off): the rate one core can feed.
3. **stall with prefetch**: the time ``forward`` still blocks per batch with the
   background thread on, while the main thread spends --step-ms in NumPy matrix
   products between batches (a stand-in for forward/backward). Near zero means the
   data never stalls training.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnntrain.config import parse_layer  # noqa: E402
from cnntrain.data.native import native_path, read_native  # noqa: E402
from cnntrain.layers import BuildContext  # noqa: E402
from cnntrain.layers.data import Data  # noqa: E402
from cnntrain.rng import RngStreams  # noqa: E402


def data_layer(data_dir: Path, dataset: str, batch: int, prefetch: bool) -> Data:
    spec = parse_layer({"name": "cifar", "type": "Data", "top": ["data", "label"],
                        "data_param": {"hdf5": f"{dataset}-train.h5", "batch_size": batch,
                                       "prefetch": prefetch},
                        "transform_param": {"mean_image": True, "scale": 0.00390625,
                                            "mirror": True, "shift": 2}}, "bench", 0)
    layer = Data(spec, "TRAIN", BuildContext(rngs=RngStreams(1), data_dir=data_dir,
                                             notify=lambda m: None))
    layer.setup([])
    return layer


def busy(seconds: float, a: np.ndarray) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a @ a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--dataset", choices=["cifar10", "cifar100"], default="cifar100")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--batches", type=int, default=500, help="batches timed per measurement")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--step-ms", type=float, default=50.0,
                    help="simulated forward/backward time per batch for the prefetch run")
    ap.add_argument("--readers", action="store_true",
                    help="also time the CIFAR readers on the source in --data-dir")
    ap.add_argument("--json", action="store_true", help="also print one JSON line")
    args = ap.parse_args()
    path = native_path(args.data_dir, args.dataset, "train")
    if not path.is_file():
        sys.exit(f"{path} not found: run cnntrain port {args.dataset} --data-dir {args.data_dir}")
    out: dict = {"dataset": args.dataset, "batch": args.batch}

    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        n = len(read_native(path).labels)
        times.append(time.perf_counter() - start)
    out["images"] = n
    out["load_s"] = min(times)
    print(f"load {path.name}: {min(times):.3f} s for {n} images ({n / min(times):,.0f} images/s)")
    if args.readers:
        from cnntrain.data.cifar import load_cifar

        start = time.perf_counter()
        load_cifar(args.dataset, "train", args.data_dir, download=False, notify=lambda m: None)
        t = time.perf_counter() - start
        out["readers_load_s"] = t
        print(f"load with the CIFAR readers: {t:.3f} s ({n / t:,.0f} images/s)")

    layer = data_layer(args.data_dir, args.dataset, args.batch, prefetch=False)
    rates = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        for _ in range(args.batches):
            layer.forward([])
        rates.append(args.batches * args.batch / (time.perf_counter() - start))
    out["batches_images_per_s"] = max(rates)
    print(f"augmented batches (mean image, mirror, shift 2, batch {args.batch}), one thread: "
          f"{max(rates):,.0f} images/s ({args.batch / max(rates) * 1e3:.2f} ms per batch)")

    if args.step_ms > 0:
        layer = data_layer(args.data_dir, args.dataset, args.batch, prefetch=True)
        a = np.random.default_rng(0).random((256, 256), dtype=np.float32)
        waits = []
        count = max(20, min(args.batches, int(10_000 / args.step_ms)))
        for _ in range(count):
            start = time.perf_counter()
            layer.forward([])
            waits.append(time.perf_counter() - start)
            busy(args.step_ms / 1e3, a)
        stall = statistics.median(waits[1:]) * 1e3
        out.update(step_ms=args.step_ms, prefetch_stall_ms_median=stall,
                   prefetch_used=layer.prefetcher.used)
        print(f"with prefetch, {args.step_ms:g} ms of NumPy work per batch: forward blocks "
              f"{stall:.3f} ms per batch (median of {count - 1}; "
              f"{layer.prefetcher.used} prefetched batches used)")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
