"""Small CIFAR datasets written in the exact official layouts, for the reader tests.

The official python files are Python 2 ``cPickle`` dumps: every ``str`` (keys,
class names, numpy's dtype codes) is a BINSTRING, and numpy's globals are named
by their numpy 1 modules. ``py2_dumps`` writes the same bytes from Python 3.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PIXELS = 3072
LAYOUTS = ("python", "binary", "python-archive", "binary-archive")

# folder, archive for each (dataset, format)
NAMES = {
    ("cifar10", "python"): ("cifar-10-batches-py", "cifar-10-python.tar.gz"),
    ("cifar10", "binary"): ("cifar-10-batches-bin", "cifar-10-binary.tar.gz"),
    ("cifar100", "python"): ("cifar-100-python", "cifar-100-python.tar.gz"),
    ("cifar100", "binary"): ("cifar-100-binary", "cifar-100-binary.tar.gz"),
}


class Py2Pickler(pickle._Pickler):
    """Protocol 2, as Python 2 wrote it: strings as BINSTRING, numpy 1 global names."""

    MODULES = {"_reconstruct": "numpy.core.multiarray", "scalar": "numpy.core.multiarray",
               "ndarray": "numpy", "dtype": "numpy"}

    def save_string(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + len(data).to_bytes(4, "little") + data)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        name = name or obj.__name__
        self.write(pickle.GLOBAL + f"{self.MODULES[name]}\n{name}\n".encode())
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_string
    dispatch[str] = save_string


def py2_dumps(obj) -> bytes:
    """``obj`` pickled the way the official (Python 2) CIFAR files are."""
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


@dataclass
class Split:
    rows: np.ndarray              # uint8 (n, 3072), as stored: R plane, G plane, B plane
    fine: np.ndarray              # int64 (n,)
    coarse: np.ndarray | None


@dataclass
class FakeCifar:
    name: str
    train: Split
    test: Split
    fine_names: list[str]
    coarse_names: list[str] | None

    def split(self, which: str) -> Split:
        return self.train if which == "train" else self.test


def make_fake(name: str, n_train: int = 12, n_test: int = 5, seed: int = 0) -> FakeCifar:
    """Random pictures and labels; CIFAR-100's coarse label is ``fine // 5``."""
    rng = np.random.default_rng(seed)
    classes = 10 if name == "cifar10" else 100

    def split(n: int) -> Split:
        fine = rng.integers(0, classes, n).astype(np.int64)
        coarse = fine // 5 if name == "cifar100" else None
        return Split(rng.integers(0, 256, (n, PIXELS), dtype=np.uint8), fine, coarse)

    if name == "cifar10":
        return FakeCifar(name, split(n_train), split(n_test), [f"class{i}" for i in range(10)], None)
    return FakeCifar(name, split(n_train), split(n_test), [f"fine{i:02d}" for i in range(100)],
                     [f"coarse{i:02d}" for i in range(20)])


def _python_files(fake: FakeCifar) -> dict[str, bytes]:
    if fake.name == "cifar10":
        files = {}
        parts = np.array_split(np.arange(len(fake.train.fine)), 5)
        batches = [(f"data_batch_{b + 1}", f"training batch {b + 1} of 5", fake.train, idx)
                   for b, idx in enumerate(parts)]
        batches.append(("test_batch", "testing batch 1 of 1", fake.test,
                        np.arange(len(fake.test.fine))))
        for fname, label, split, idx in batches:
            files[fname] = py2_dumps({
                "batch_label": label, "labels": [int(v) for v in split.fine[idx]],
                "data": split.rows[idx], "filenames": [f"img_{i}.png" for i in idx]})
        files["batches.meta"] = py2_dumps({"num_cases_per_batch": len(parts[0]),
                                           "label_names": fake.fine_names, "num_vis": PIXELS})
        return files
    files = {split: py2_dumps({
        "filenames": [f"img_{i}.png" for i in range(len(s.fine))],
        "batch_label": f"{split}ing batch 1 of 1",
        "fine_labels": [int(v) for v in s.fine], "coarse_labels": [int(v) for v in s.coarse],
        "data": s.rows}) for split, s in (("train", fake.train), ("test", fake.test))}
    files["meta"] = py2_dumps({"fine_label_names": fake.fine_names,
                               "coarse_label_names": fake.coarse_names})
    return files


def _records(split: Split) -> bytes:
    labels = [split.fine] if split.coarse is None else [split.coarse, split.fine]
    return np.concatenate([np.stack(labels, axis=1).astype(np.uint8), split.rows], axis=1).tobytes()


def _binary_files(fake: FakeCifar) -> dict[str, bytes]:
    def text(names):  # the official files end with blank lines
        return ("\n".join(names) + "\n\n").encode()

    if fake.name == "cifar10":
        parts = np.array_split(np.arange(len(fake.train.fine)), 5)
        files = {f"data_batch_{b + 1}.bin": _records(Split(fake.train.rows[idx], fake.train.fine[idx],
                                                           None))
                 for b, idx in enumerate(parts)}
        files["test_batch.bin"] = _records(fake.test)
        files["batches.meta.txt"] = text(fake.fine_names)
        return files
    return {"train.bin": _records(fake.train), "test.bin": _records(fake.test),
            "fine_label_names.txt": text(fake.fine_names),
            "coarse_label_names.txt": text(fake.coarse_names)}


def write_folder(root: Path, fake: FakeCifar, fmt: str) -> Path:
    """The extracted official folder of ``fmt`` ("python" or "binary") under ``root``."""
    folder = Path(root) / NAMES[(fake.name, fmt)][0]
    folder.mkdir(parents=True)
    files = _python_files(fake) if fmt == "python" else _binary_files(fake)
    files["readme.html"] = b"<html>the official archives carry one too</html>"
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def write_tar_gz(archive: Path, folder: Path, arcname: str | None = None) -> Path:
    """A ``.tar.gz`` of ``folder``, its members under ``arcname`` (the folder's name)."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname or folder.name)
    return archive


def write_layout(root: Path, fake: FakeCifar, layout: str) -> Path:
    """One of LAYOUTS in ``root``: the folder, or the archive (built in a scratch folder)."""
    fmt, _, packed = layout.partition("-")
    if not packed:
        return write_folder(root, fake, fmt)
    folder = write_folder(Path(root) / f".scratch-{fmt}", fake, fmt)
    return write_tar_gz(Path(root) / NAMES[(fake.name, fmt)][1], folder)


def add_members(archive: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """A ``.tar.gz`` holding exactly these hand-made members (any type, any name)."""
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return archive


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info
