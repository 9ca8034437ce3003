"""CIFAR-10 and CIFAR-100 in their official layouts: folders or archives, python or binary.

``load_cifar`` looks in the data folder for, in order, the extracted python folder,
the extracted binary folder, the python archive and the binary archive, and reads
the first one there (archives straight from the ``.tar.gz``, never extracted).
With none there it downloads the official python archive. Both formats, for both
datasets, go through the same two readers, driven by the small tables below.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from cnntrain.data.download import download as download_file
from cnntrain.data.download import file_md5
from cnntrain.data.safe_pickle import load_pickle
from cnntrain.data.safe_tar import read_members
from cnntrain.errors import DatasetError

PIXELS = 3 * 32 * 32
_FIX = "pass --data-dir or set CNNTRAIN_DATA to a folder that holds one"

Notify = Callable[[str], None]


@dataclass
class ImageSet:
    """One split of a dataset, in memory."""

    images: np.ndarray        # uint8, (N, 3, 32, 32), C-contiguous
    labels: np.ndarray        # int64, (N,): the fine labels for CIFAR-100
    label_names: list[str]
    source: str               # the folder or archive it came from
    coarse_labels: np.ndarray | None = None
    coarse_label_names: list[str] | None = None


@dataclass(frozen=True)
class Archive:
    """An official archive: where it is published and its MD5."""

    url: str
    md5: str


_KRIZ = "https://www.cs.toronto.edu/~kriz/"
ARCHIVES = {
    "cifar-10-python.tar.gz": Archive(_KRIZ + "cifar-10-python.tar.gz",
                                      "c58f30108f718f92721af3b95e74349a"),
    "cifar-10-binary.tar.gz": Archive(_KRIZ + "cifar-10-binary.tar.gz",
                                      "c32a1d4ab5d03f1284b67883e8d87530"),
    "cifar-100-python.tar.gz": Archive(_KRIZ + "cifar-100-python.tar.gz",
                                       "eb9058c3a382ffc7106e4002c42a8d85"),
    "cifar-100-binary.tar.gz": Archive(_KRIZ + "cifar-100-binary.tar.gz",
                                       "03b5dce01913d631647c71ecec9e9cb8"),
}


# ---------------------------------------------------------------- file access
class _Folder:
    """Files of an extracted dataset folder."""

    def __init__(self, path: Path):
        self.path, self.source = path, str(path)

    def where(self, name: str) -> str:
        return str(self.path / name)

    def read(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            raise DatasetError(f"{self.path / name} is missing: the folder {self.path} "
                               "is incomplete (remove it or put the whole dataset there)") from None
        except OSError as exc:
            raise DatasetError(f"cannot read {self.path / name}: {exc.strerror or exc}") from None


class _ArchiveMembers:
    """The needed files of a dataset archive, read in one pass without extracting."""

    def __init__(self, archive: Path, folder: str, names: list[str],
                 members: dict[str, bytes] | None = None):
        self.archive, self.folder, self.source = archive, folder, str(archive)
        self.members = (read_members(archive, {f"{folder}/{n}" for n in names})
                        if members is None else members)

    def where(self, name: str) -> str:
        return f"{self.folder}/{name} in {self.archive}"

    def read(self, name: str) -> bytes:
        try:
            return self.members[f"{self.folder}/{name}"]
        except KeyError:
            raise DatasetError(f"{self.archive} has no member {self.folder}/{name}: "
                               "it is not a complete official archive") from None


_Files = _Folder | _ArchiveMembers


# ---------------------------------------------------------------- formats
@dataclass
class _Batch:
    """The pictures of one data file, one row of 3072 bytes each, and its label columns."""

    rows: np.ndarray                  # uint8 (n, 3072): R plane, G plane, B plane
    labels: tuple[np.ndarray, ...]    # fine, then coarse (CIFAR-100)
    where: str


@dataclass(frozen=True)
class _PythonFormat:
    """Pickled dicts; label lists and name lists listed fine first, then coarse."""

    folder: str
    archive: str
    split_files: dict[str, tuple[str, ...]]
    meta_file: str
    label_keys: tuple[str, ...]
    name_keys: tuple[str, ...]

    def files(self, split: str) -> list[str]:
        return [*self.split_files[split], self.meta_file]

    def batch(self, files: _Files, name: str) -> _Batch:
        where = files.where(name)
        record = _as_dict(load_pickle(files.read(name), where), where)
        rows = _field(record, "data", where)
        if not (isinstance(rows, np.ndarray) and rows.dtype == np.uint8 and rows.ndim == 2
                and rows.shape[0] > 0 and rows.shape[1] == PIXELS):
            raise DatasetError(f"{where}: 'data' is {_describe(rows)}, "
                               f"not a uint8 array of pictures of {PIXELS} bytes")
        labels = tuple(_label_column(_field(record, key, where), len(rows), key, where)
                       for key in self.label_keys)
        return _Batch(rows, labels, where)

    def names(self, files: _Files) -> list[tuple[list[str], str]]:
        where = files.where(self.meta_file)
        meta = _as_dict(load_pickle(files.read(self.meta_file), where), where)
        return [(_name_list(_field(meta, key, where), key, where), where)
                for key in self.name_keys]


@dataclass(frozen=True)
class _BinaryFormat:
    """Fixed-size records: label bytes, then 3072 pixel bytes; names in text files.

    ``label_offsets`` and ``name_files`` are listed fine first, then coarse.
    """

    folder: str
    archive: str
    split_files: dict[str, tuple[str, ...]]
    label_offsets: tuple[int, ...]
    name_files: tuple[str, ...]

    def files(self, split: str) -> list[str]:
        return [*self.split_files[split], *self.name_files]

    def batch(self, files: _Files, name: str) -> _Batch:
        where, data = files.where(name), files.read(name)
        size = len(self.label_offsets) + PIXELS
        if not data or len(data) % size:
            raise DatasetError(f"{where} has {len(data)} bytes, not a whole number of "
                               f"{size}-byte records")
        records = np.frombuffer(data, np.uint8).reshape(-1, size)
        labels = tuple(records[:, offset].astype(np.int64) for offset in self.label_offsets)
        return _Batch(records[:, len(self.label_offsets):], labels, where)

    def names(self, files: _Files) -> list[tuple[list[str], str]]:
        return [([line.strip() for line in files.read(name).decode("utf-8", "replace").splitlines()
                  if line.strip()], files.where(name)) for name in self.name_files]


@dataclass(frozen=True)
class _Dataset:
    title: str
    classes: tuple[int, ...]   # fine, then coarse
    python: _PythonFormat
    binary: _BinaryFormat


_TRAIN10 = tuple(f"data_batch_{i}" for i in range(1, 6))
DATASETS = {
    "cifar10": _Dataset(
        "CIFAR-10", (10,),
        _PythonFormat("cifar-10-batches-py", "cifar-10-python.tar.gz",
                      {"train": _TRAIN10, "test": ("test_batch",)}, "batches.meta",
                      ("labels",), ("label_names",)),
        _BinaryFormat("cifar-10-batches-bin", "cifar-10-binary.tar.gz",
                      {"train": tuple(f + ".bin" for f in _TRAIN10), "test": ("test_batch.bin",)},
                      (0,), ("batches.meta.txt",))),
    "cifar100": _Dataset(
        "CIFAR-100", (100, 20),
        _PythonFormat("cifar-100-python", "cifar-100-python.tar.gz",
                      {"train": ("train",), "test": ("test",)}, "meta",
                      ("fine_labels", "coarse_labels"), ("fine_label_names", "coarse_label_names")),
        # each record starts with the coarse label, then the fine one
        _BinaryFormat("cifar-100-binary", "cifar-100-binary.tar.gz",
                      {"train": ("train.bin",), "test": ("test.bin",)},
                      (1, 0), ("fine_label_names.txt", "coarse_label_names.txt"))),
}


# ---------------------------------------------------------------- pickle fields
def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype}, shape {value.shape}"
    return f"a {type(value).__name__}"


def _as_dict(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise DatasetError(f"{where} holds {_describe(value)}, not a CIFAR dict")
    return value


def _field(record: dict, key: str, where: str) -> object:
    # Official (Python 2) files have byte-string keys; files rebuilt with Python 3 may not.
    for k in (key.encode(), key):
        if k in record:
            return record[k]
    raise DatasetError(f"{where} has no '{key}' entry")


def _label_column(value: object, count: int, key: str, where: str) -> np.ndarray:
    try:
        labels = np.asarray(value)
    except (ValueError, TypeError):
        labels = np.asarray(None)
    if labels.ndim != 1 or len(labels) != count or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{where}: '{key}' is {_describe(labels)}, "
                           f"not {count} integer labels (one per picture)")
    return labels.astype(np.int64)


def _name_list(value: object, key: str, where: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (bytes, str)) for v in value):
        raise DatasetError(f"{where}: '{key}' is not a list of strings")
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]


# ---------------------------------------------------------------- assembling a split
def _read_split(fmt: _PythonFormat | _BinaryFormat, files: _Files, split: str,
                dataset: _Dataset) -> ImageSet:
    """Read, check and concatenate a split; every error names the file at fault."""
    names = []
    for (kind_names, where), classes in zip(fmt.names(files), dataset.classes):
        if len(kind_names) != classes:
            raise DatasetError(f"{where} lists {len(kind_names)} class names, "
                               f"{dataset.title} has {classes}")
        names.append(kind_names)
    batches = [fmt.batch(files, name) for name in fmt.split_files[split]]
    for batch in batches:
        for labels, classes in zip(batch.labels, dataset.classes):
            bad = (labels < 0) | (labels >= classes)
            if bad.any():
                i = int(np.argmax(bad))
                raise DatasetError(f"{batch.where}: label {labels[i]} of picture {i} is outside "
                                   f"0..{classes - 1}")
    images = np.concatenate([b.rows for b in batches]).reshape(-1, 3, 32, 32)
    columns = [np.concatenate([b.labels[k] for b in batches]) for k in range(len(dataset.classes))]
    coarse = len(columns) > 1
    return ImageSet(images, columns[0], names[0], files.source,
                    columns[1] if coarse else None, names[1] if coarse else None)


# ---------------------------------------------------------------- where the data is
def default_data_dir() -> Path:
    """``$CNNTRAIN_DATA`` when set, else ``~/.cache/cnntrain``."""
    env = os.environ.get("CNNTRAIN_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cnntrain"


def resolve_data_dir(cli_value: str | None) -> Path:
    """The data folder: the command-line value, else ``$CNNTRAIN_DATA``, else the default."""
    return Path(cli_value).expanduser() if cli_value else default_data_dir()


@lru_cache(maxsize=16)
def _cached_md5(path: Path, size: int, mtime_ns: int) -> str:
    return file_md5(path)


_told_unofficial: set[tuple[Path, str]] = set()


def _note_unofficial(archive: Path, notify: Notify) -> None:
    """Say once per archive when a local archive is not byte-identical to the official one.

    It is still used: archives rebuilt locally legitimately differ (picture order).
    """
    stat = archive.stat()
    got = _cached_md5(archive.resolve(), stat.st_size, stat.st_mtime_ns)
    if got != ARCHIVES[archive.name].md5 and (archive, got) not in _told_unofficial:
        _told_unofficial.add((archive, got))
        notify(f"note: {archive} is not the official archive (MD5 {got}, official "
               f"{ARCHIVES[archive.name].md5}); using it anyway")


def _fetch(dataset: _Dataset, data_dir: Path, allowed: bool, notify: Notify) -> Path:
    """Download the official python archive into ``data_dir``, or explain what to do."""
    python, binary = dataset.python, dataset.binary
    wanted = f"{python.folder}/, {binary.folder}/, {python.archive}, {binary.archive}"
    missing = f"{dataset.title} not found: {data_dir} holds none of {wanted}"
    fix = f"put one of them in {data_dir}, or {_FIX}"
    if not allowed:
        raise DatasetError(f"{missing}, and downloading is off; {fix}")
    official = ARCHIVES[python.archive]
    notify(f"{dataset.title} not found in {data_dir}; downloading {official.url}")
    try:
        return download_file(official.url, data_dir / python.archive, official.md5)
    except DatasetError as exc:
        raise DatasetError(f"{missing}, and {exc}; {fix}") from None


def _local(dataset: _Dataset, data_dir: Path
           ) -> tuple[_PythonFormat | _BinaryFormat, Path] | None:
    """The format and path of what ``load_cifar`` reads in ``data_dir``, in its lookup order."""
    formats = (dataset.python, dataset.binary)
    for fmt in formats:
        if (data_dir / fmt.folder).is_dir():
            return fmt, data_dir / fmt.folder
    for fmt in formats:
        if (data_dir / fmt.archive).is_file():
            return fmt, data_dir / fmt.archive
    return None


def _dataset(name: str) -> _Dataset:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}': expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def local_source(name: str, data_dir: Path) -> Path | None:
    """The folder or archive ``load_cifar`` would read in ``data_dir``; None if it would
    have to download."""
    found = _local(_dataset(name), Path(data_dir).expanduser())
    return None if found is None else found[1]


def fetch_official(name: str, data_dir: Path, notify: Notify = print) -> Path:
    """Download the official python archive of ``name`` into ``data_dir`` (progress bar,
    MD5 check); returns its path."""
    return _fetch(_dataset(name), Path(data_dir).expanduser(), True, notify)


def load_cifar_from(name: str, path: Path, splits: tuple[str, ...] = ("train", "test")
                    ) -> dict[str, ImageSet]:
    """Splits of ``name`` from an explicit path: an official folder (python or binary),
    a folder holding one as ``load_cifar`` would find it, or a ``.tar.gz`` of either
    format under any file name (the format is told by its members). An archive is
    read in one pass for all ``splits``."""
    dataset, path = _dataset(name), Path(path).expanduser()
    formats = (dataset.python, dataset.binary)
    expected = (f"an official {dataset.title} folder ({dataset.python.folder}/ or "
                f"{dataset.binary.folder}/) or archive ({dataset.python.archive} or "
                f"{dataset.binary.archive})")
    if path.is_dir():
        for fmt in formats:  # the official folder itself: its names file marks the format
            if (path / fmt.files(splits[0])[-1]).is_file():
                return {s: _read_split(fmt, _Folder(path), s, dataset) for s in splits}
        found = _local(dataset, path)
        if found is None:
            raise DatasetError(f"{path} holds no {dataset.title}: expected {expected}")
        path = found[1]
        if path.is_dir():
            return load_cifar_from(name, path, splits)
    elif not path.exists():
        raise DatasetError(f"{path} not found: expected {expected}")
    wanted = {f"{fmt.folder}/{n}" for fmt in formats for s in splits for n in fmt.files(s)}
    members = read_members(path, wanted)
    for fmt in formats:
        if any(m.startswith(fmt.folder + "/") for m in members):
            files = _ArchiveMembers(path, fmt.folder, [], members)
            return {s: _read_split(fmt, files, s, dataset) for s in splits}
    raise DatasetError(f"{path} is not a {dataset.title} archive: it has no "
                       f"{dataset.python.folder}/ or {dataset.binary.folder}/ files")


def load_cifar(name: str, split: str, data_dir: Path, *, download: bool = True,
               notify: Notify = print) -> ImageSet:
    """Load one split ("train" or "test") of "cifar10" or "cifar100" from ``data_dir``.

    Looks for the extracted python folder, the extracted binary folder, the python
    archive and the binary archive, in that order; with none there and
    ``download`` on, downloads the official python archive into ``data_dir``.
    Every problem is a one-line :class:`DatasetError` naming the file at fault.
    """
    dataset = _dataset(name)
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split '{split}' of {name}: expected train or test")
    data_dir = Path(data_dir).expanduser()
    found = _local(dataset, data_dir)
    if found is not None:
        fmt, path = found
        if path.is_dir():
            return _read_split(fmt, _Folder(path), split, dataset)
        _note_unofficial(path, notify)
        return _read_split(fmt, _ArchiveMembers(path, fmt.folder, fmt.files(split)),
                           split, dataset)
    archive = _fetch(dataset, data_dir, download, notify)
    return _read_split(dataset.python, _ArchiveMembers(archive, dataset.python.folder,
                                                       dataset.python.files(split)),
                       split, dataset)
