"""HDF5 snapshots: Caffe's weight layout plus everything needed to resume exactly.

Layout::

    /data/<layer>/<i>            parameter i of a layer (Caffe's .caffemodel.h5 layout)
    /solver/history/<layer>/<i>  the solver's buffers for that parameter
    /state/data/<layer>/<key>    data-order state of each TRAIN data layer
    attrs: format, version, iter, solver_type, rng (JSON), config (YAML text)

Files are written to a temporary name in the same folder, flushed to disk, then
renamed over the target: a crash at any moment leaves the old file or the new one,
never half of either.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnntrain.errors import SnapshotError

FORMAT = "cnntrain-snapshot"
VERSION = 1


@dataclass
class Snapshot:
    """What a snapshot holds, read back into memory."""

    path: str
    weights: dict[tuple[str, int], np.ndarray]
    config: str | None = None
    iteration: int | None = None
    solver_type: str | None = None
    history: dict[tuple[str, int], list[np.ndarray]] = field(default_factory=dict)
    rng: str | None = None
    data_state: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def resumable(self) -> bool:
        return self.iteration is not None and self.config is not None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)``, then make it durable and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_snapshot(path: Path, *, params, config: str, iteration: int, solver_type: str,
                  history, rng: str, data_state: dict[str, dict[str, np.ndarray]]) -> None:
    """Write a full training snapshot atomically.

    ``params`` is the net's ``param_keys`` list of (layer, index, Param); ``history``
    lists each parameter's solver buffers in the same order.
    """
    import h5py

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(format=FORMAT, version=VERSION, iter=iteration, solver_type=solver_type,
                           rng=rng, config=config)
            for (layer, i, p), buffers in zip(params, history):
                f.create_dataset(f"data/{layer}/{i}", data=p.data)
                for k, buf in enumerate(buffers):
                    f.create_dataset(f"solver/history/{layer}/{i}/{k}", data=buf)
            for layer, state in data_state.items():
                for key, value in state.items():
                    f.create_dataset(f"state/data/{layer}/{key}", data=value)

    try:
        atomic_write(path, write)
    except OSError as err:
        raise SnapshotError(f"could not write snapshot {path}: {err.strerror or err}") from None


def _weights(group) -> dict[tuple[str, int], np.ndarray]:
    out = {}
    for layer, sub in group.items():
        for idx, ds in sub.items():
            out[(layer, int(idx))] = ds[()]
    return out


def load_snapshot(path: str | Path) -> Snapshot:
    """Read a snapshot, or any HDF5 file with Caffe's ``data/<layer>/<i>`` weights."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise SnapshotError(f"snapshot {path} not found")
    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise SnapshotError(f"{path} holds no weights (no 'data' group): not a snapshot")
            snap = Snapshot(str(path), _weights(f["data"]))
            attrs = f.attrs
            if attrs.get("format") == FORMAT:
                snap.config = str(attrs["config"])
                snap.iteration = int(attrs["iter"])
                snap.solver_type = str(attrs["solver_type"])
                snap.rng = str(attrs["rng"])
                for layer, sub in f.get("solver/history", {}).items():
                    for idx, bufs in sub.items():
                        snap.history[(layer, int(idx))] = [bufs[str(k)][()]
                                                           for k in range(len(bufs))]
                for layer, sub in f.get("state/data", {}).items():
                    snap.data_state[layer] = {k: v[()] for k, v in sub.items()}
            return snap
    except SnapshotError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SnapshotError(f"{path} is not a readable snapshot (truncated or corrupt?): "
                            f"{reason}") from None


def copy_weights(net, snap: Snapshot, *, strict: bool) -> list[str]:
    """Copy weights into ``net`` by layer name and index; returns the layers copied.

    ``strict`` (resume) requires every parameter; otherwise (fine-tuning, as Caffe's
    ``--weights``) layers absent from the file keep their initial values. A shape
    mismatch is an error either way.
    """
    copied = []
    for layer, i, p in net.param_keys:
        saved = snap.weights.get((layer, i))
        if saved is None:
            if strict:
                raise SnapshotError(f"{snap.path} has no weights for layer '{layer}' param {i}: "
                                    "it was made for a different net")
            continue
        if saved.shape != p.data.shape:
            raise SnapshotError(f"{snap.path}: layer '{layer}' param {i} has shape "
                                f"{saved.shape} in the file but {p.data.shape} in the net")
        p.data[...] = saved
        copied.append(layer)
    return sorted(set(copied))
