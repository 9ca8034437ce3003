"""HDF5 snapshots: Caffe's weight layout plus everything needed to resume exactly.

Layout::

    /data/<layer>/<i>            parameter i of a layer (Caffe's .caffemodel.h5 layout)
    /solver/history/<layer>/<i>  the solver's buffers for that parameter
    /state/data/<layer>/<key>    data-order state of each TRAIN data layer
    /preprocess/<layer>          each TEST data layer's preprocessing (mean, scale, crop;
                                 see cnntrain.data.preprocess); older snapshots lack it
    attrs: format, version, iter, solver_type, rng (JSON), config (YAML text),
           callbacks (JSON: the training callbacks' state, e.g. early stopping),
           seconds (training time so far, so metrics.csv stays cumulative on resume)

Files are written to a temporary name in the same folder, flushed to disk, then
renamed over the target: a crash at any moment leaves the old file or the new one,
never half of either.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnntrain.backend import array_module, to_host
from cnntrain.errors import SnapshotError, os_error_reason

if TYPE_CHECKING:
    from cnntrain.data.preprocess import Preprocessing

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
    callbacks: dict[str, dict] = field(default_factory=dict)
    preprocessing: dict[str, "Preprocessing"] = field(default_factory=dict)
    seconds: float | None = None

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
        tmp.unlink(missing_ok=True)   # never write through a link planted under this name
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a folder's writer may be another process)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # it exists but belongs to someone else
        return True
    return True


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the half-written ``.NAME.tmp-PID`` files that :func:`atomic_write` left in
    ``folder`` in processes that were killed (it removes its own on any error it lives
    through). Run folders and ``cnntrain port``'s data folder call this on start."""
    for tmp in Path(folder).glob(".*.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def save_snapshot(path: Path, *, params, config: str, iteration: int, solver_type: str,
                  history, rng: str, data_state: dict[str, dict[str, np.ndarray]],
                  callbacks: dict[str, dict] | None = None,
                  preprocessing: dict[str, "Preprocessing"] | None = None,
                  seconds: float | None = None) -> None:
    """Write a full training snapshot atomically.

    ``params`` is the net's ``param_keys`` list of (layer, index, Param); ``history``
    lists each parameter's solver buffers in the same order; ``callbacks`` holds the
    training callbacks' state by name (plain JSON values); ``preprocessing`` the TEST
    data layers' preprocessing by layer name.
    """
    import json

    from cnntrain.safe_hdf5 import write_hdf5

    def build(f) -> None:
        f.attrs.update(format=FORMAT, version=VERSION, iter=iteration, solver_type=solver_type,
                       rng=rng, config=config)
        if callbacks:
            f.attrs["callbacks"] = json.dumps(callbacks)
        if seconds is not None:
            f.attrs["seconds"] = float(seconds)
        for (layer, i, p), buffers in zip(params, history):
            f.create_dataset(f"data/{layer}/{i}", data=to_host(p.data))
            for k, buf in enumerate(buffers):
                f.create_dataset(f"solver/history/{layer}/{i}/{k}", data=to_host(buf))
        for layer, state in data_state.items():
            for key, value in state.items():
                f.create_dataset(f"state/data/{layer}/{key}", data=value)
        for layer, prep in (preprocessing or {}).items():
            prep.write(f.create_group(f"preprocess/{layer}"))

    try:
        atomic_write(path, lambda tmp: write_hdf5(tmp, build))
    except OSError as err:
        raise SnapshotError(f"could not write snapshot {path}: {os_error_reason(err)}") from None


def _members(obj, name: str, path: Path) -> list[tuple[str, object]]:
    """The members of group ``name``; a dataset in a group's place is a SnapshotError."""
    if not hasattr(obj, "keys"):
        raise SnapshotError(f"{path}: '{name}' is a dataset where a group belongs: not a "
                            "cnntrain snapshot")
    return list(obj.items())


def _index(text: str, name: str, path: Path) -> int:
    if not text.isdigit():
        raise SnapshotError(f"{path}: '{name}/{text}' is not a parameter number")
    return int(text)


def _weights(group, path: Path) -> dict[tuple[str, int], np.ndarray]:
    out = {}
    for layer, sub in _members(group, "data", path):
        for idx, ds in _members(sub, f"data/{layer}", path):
            out[(layer, _index(idx, f"data/{layer}", path))] = ds[()]
    return out


def _attr(path: Path, attrs, name: str, kind: type):
    """A scalar attribute of the snapshot, checked to be text or a non-negative integer."""
    if name not in attrs:
        raise SnapshotError(f"{path} lacks the '{name}' attribute of a cnntrain snapshot")
    value = attrs[name]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
    if kind is str and isinstance(value, str):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    shown = repr(value) if len(repr(value)) < 60 else f"{type(value).__name__} {np.shape(value)}"
    want = "text" if kind is str else "a non-negative integer"
    raise SnapshotError(f"{path}: attribute '{name}' is {shown}, not {want}")


def _json_attr(path: Path, attrs, name: str) -> dict:
    """A text attribute holding a JSON object."""
    import json

    text = _attr(path, attrs, name, str)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise SnapshotError(f"{path}: attribute '{name}' is not a JSON object")
    return value


def load_snapshot(path: str | Path) -> Snapshot:
    """Read a snapshot, or any HDF5 file with Caffe's ``data/<layer>/<i>`` weights.

    The file is checked first (:mod:`cnntrain.safe_hdf5`): no links to other files, no
    plugin filters, no oversized or non-numeric datasets."""
    import h5py

    from cnntrain.data.preprocess import Preprocessing
    from cnntrain.safe_hdf5 import UnsafeFile, check_file

    path = Path(path)
    if not path.is_file():
        raise SnapshotError(f"snapshot {path} not found")
    try:
        with h5py.File(path, "r") as f:
            try:
                check_file(f, numeric_only=True)
            except UnsafeFile as err:
                raise SnapshotError(f"refusing to read {path}: {err}") from None
            if "data" not in f:
                raise SnapshotError(f"{path} holds no weights (no 'data' group): not a snapshot")
            snap = Snapshot(str(path), _weights(f["data"], path))
            attrs = f.attrs
            if attrs.get("format") == FORMAT:
                version = _attr(path, attrs, "version", int)
                if version > VERSION:
                    raise SnapshotError(f"{path} is a version {version} snapshot, newer than "
                                        f"the version {VERSION} this cnntrain reads")
                snap.config = _attr(path, attrs, "config", str)
                snap.iteration = _attr(path, attrs, "iter", int)
                snap.solver_type = _attr(path, attrs, "solver_type", str)
                snap.rng = _attr(path, attrs, "rng", str)
                if "callbacks" in attrs:
                    snap.callbacks = _json_attr(path, attrs, "callbacks")
                seconds = attrs.get("seconds")
                if isinstance(seconds, (float, np.floating)) and np.isfinite(seconds) \
                        and seconds >= 0:
                    snap.seconds = float(seconds)
                history = f.get("solver/history", {})
                for layer, sub in _members(history, "solver/history", path):
                    where = f"solver/history/{layer}"
                    for idx, bufs in _members(sub, where, path):
                        _members(bufs, f"{where}/{idx}", path)
                        snap.history[(layer, _index(idx, where, path))] = [
                            bufs[str(k)][()] for k in range(len(bufs))]
                for layer, sub in _members(f.get("state/data", {}), "state/data", path):
                    snap.data_state[layer] = {k: v[()] for k, v in
                                              _members(sub, f"state/data/{layer}", path)}
                for layer, group in _members(f.get("preprocess", {}), "preprocess", path):
                    try:
                        snap.preprocessing[layer] = Preprocessing.read(
                            group, f"preprocess/{layer}")
                    except (ValueError, AttributeError) as err:
                        raise SnapshotError(f"{path}: {err}") from None
            return snap
    except SnapshotError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as err:
        # h5py's errors for damaged files, and the odd structure (a dataset where a
        # group belongs) that h5py reports as a KeyError, TypeError or AttributeError.
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SnapshotError(f"{path} is not a readable snapshot (truncated or corrupt?): "
                            f"{reason}") from None


def stored_experiment(snap: Snapshot):
    """The experiment of the config stored in ``snap``. An invalid one is a problem of
    the snapshot (exit 4) for every command that reads it, not of a config the user gave."""
    from cnntrain.config import experiment_from_text
    from cnntrain.errors import ConfigError

    if snap.config is None:
        raise SnapshotError(f"{snap.path} holds no config: it is a weights-only file")
    try:
        return experiment_from_text(snap.config, f"{snap.path}:config")
    except ConfigError as err:
        raise SnapshotError(f"the config stored in the snapshot is invalid: {err}") from None


def copy_weights(net, snap: Snapshot, *, strict: bool) -> list[str]:
    """Copy weights into ``net`` by layer name and index; returns the layers copied.

    ``strict`` (resume) requires every parameter; otherwise (fine-tuning, as Caffe's
    ``--weights``) layers absent from the file keep their initial values. A shape
    mismatch is an error either way.
    """
    copied = []
    if strict:
        for layer, i, _ in net.param_keys:
            if (layer, i) not in snap.weights:
                raise SnapshotError(f"{snap.path} has no weights for layer '{layer}' param {i}: "
                                    "it was made for a different net")
        extra = sorted(set(snap.weights) - {(layer, i) for layer, i, _ in net.param_keys})
        if extra:
            layer, i = extra[0]
            raise SnapshotError(f"{snap.path} has weights for layer '{layer}' param {i}, which "
                                "this net does not have: it was made for a different net")
    for layer, i, p in net.param_keys:
        saved = snap.weights.get((layer, i))
        if saved is None:
            continue
        if saved.shape != p.data.shape:
            # Caffe users fine-tune a changed layer by renaming it: then nothing is
            # copied into it and it starts from its filler.
            hint = "" if strict else (
                f"; to start this layer afresh, rename it (e.g. --set net.layer.{layer}.name="
                f"{layer}_new): --weights copies layers by name, as Caffe does")
            raise SnapshotError(f"{snap.path}: layer '{layer}' param {i} has shape "
                                f"{saved.shape} in the file but {p.data.shape} in the net"
                                + hint)
        if saved.dtype.kind != "f":
            raise SnapshotError(f"{snap.path}: layer '{layer}' param {i} holds {saved.dtype} "
                                "values, not floating point weights")
        if not np.all(np.isfinite(saved)):
            raise SnapshotError(f"{snap.path}: layer '{layer}' param {i} holds NaN or inf")
        p.data[...] = array_module(p.data).asarray(saved)
        copied.append(layer)
    return sorted(set(copied))
