"""cnntrain's native dataset files: one HDF5 file per split, written by ``cnntrain port``.

Layout of ``<data-dir>/<dataset>-<split>.h5`` (e.g. ``cifar100-train.h5``)::

    /images              uint8 (N, 3, 32, 32), the pixels as the readers give them
    /labels              uint8 (N,): the (fine) labels
    /label_names         UTF-8 strings
    /coarse_labels       uint8 (N,)       CIFAR-100 only: the 20 superclasses
    /coarse_label_names  UTF-8 strings    CIFAR-100 only
    /fine_to_coarse      int64 (100,)     CIFAR-100 only: superclass of each fine class
    /mean_image          float32 (3, 32, 32): per-pixel mean of the *train* split
    /channel_mean        float64 (3,): per-channel mean of the train split, 0..255 units
    /channel_std         float64 (3,): per-channel (population) std of the train split
    attrs: format, version, dataset, split, count, images_md5 (MD5 of the image bytes),
           source (the archive or folder read), source_kind (archive or folder),
           source_md5, source_note

Both files of a dataset carry the train split's statistics, so a TEST data layer
subtracts the same mean image as the TRAIN one. The mean image is computed exactly as
:func:`cnntrain.data.store.mean_image` does (float64 sums of uint8 pixels are exact),
so a net sees the same numbers bit for bit from either source.

Storage (measured on the real CIFAR-10 train split, 50000 images, 153.6 MB raw;
whole-array read, best of 3, page cache warm; write time for the images only):

    ============  ==========  ========  =========  ============================
    compression   chunk        size      write      read (images/s)
    ============  ==========  ========  =========  ============================
    none          1024 imgs   154.1 MB   0.14 s     0.038 s  (1.3 M/s)
    none           256 imgs   154.2 MB   0.31 s     0.051 s  (1.0 M/s)
    lzf           1024 imgs   149.7 MB   1.50 s     0.299 s  (167 k/s)
    gzip-1        1024 imgs   139.9 MB   4.04 s     0.703 s  (71 k/s)
    gzip-4        1024 imgs   141.4 MB   4.08 s     0.665 s  (75 k/s)
    ============  ==========  ========  =========  ============================

Photos barely compress losslessly (lzf saves 3 %, gzip 9 %) while decompression makes
reading 8 to 18 times slower, so the images are stored **uncompressed**, in chunks of
1024 images (3 MiB: the fastest chunked read above). Random batches read straight from
the file cost 25 to 35 ms per 100 images whatever the chunking (h5py's point
selection), against ~1 ms from memory, so readers load a split into memory once
(0.04 s for 50000 images) and batches are cut from there.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from cnntrain.data.cifar import ImageSet
from cnntrain.data.safe_tar import error_reason
from cnntrain.errors import DatasetError, os_error_reason

FORMAT = "cnntrain-native"
VERSION = 1
IMAGE_CHUNK = 1024          # images per HDF5 chunk (see the table above)
IMAGE_SHAPE = (3, 32, 32)
CLASSES = {"cifar10": (10, None), "cifar100": (100, 20)}   # fine, coarse


def native_path(data_dir: Path, dataset: str, split: str) -> Path:
    """Where ``cnntrain port`` writes one split: ``<data_dir>/<dataset>-<split>.h5``."""
    return Path(data_dir) / f"{dataset}-{split}.h5"


@dataclass(frozen=True)
class SourceInfo:
    """What a native file was converted from."""

    path: str
    kind: str               # "archive" or "folder"
    md5: str                # of the archive; of the folder's files for a folder
    note: str = ""


@dataclass(frozen=True)
class TrainStats:
    """Statistics of the train split, stored in every file of the dataset."""

    mean_image: np.ndarray      # float32 (3, 32, 32)
    channel_mean: np.ndarray    # float64 (3,)
    channel_std: np.ndarray     # float64 (3,)


@dataclass
class NativeSplit:
    """One native file read back."""

    path: Path
    dataset: str
    split: str
    images: np.ndarray                  # uint8 (N, 3, 32, 32), read-only
    labels: np.ndarray                  # int64 (N,), fine
    label_names: list[str]
    coarse_labels: np.ndarray | None
    coarse_label_names: list[str] | None
    fine_to_coarse: np.ndarray | None
    stats: TrainStats
    source: SourceInfo
    images_md5: str

    def image_set(self, labels: str = "fine") -> ImageSet:
        """The split as the readers give it, with the fine or the coarse labels."""
        if labels == "coarse":
            if self.coarse_labels is None:
                raise DatasetError(f"{self.path}: {self.dataset} has no coarse labels")
            return ImageSet(self.images, self.coarse_labels, self.coarse_label_names,
                            str(self.path))
        return ImageSet(self.images, self.labels, self.label_names, str(self.path),
                        self.coarse_labels, self.coarse_label_names)


# ---------------------------------------------------------------- statistics
def train_stats(images: np.ndarray) -> TrainStats:
    """Per-pixel mean image and per-channel mean/std of uint8 (N, C, H, W) images.

    Sums of uint8 values are exact in float64 and the channel histograms exact in
    int64, so the result does not depend on how the work is split.
    """
    total = np.zeros(images.shape[1:], np.float64)
    for start in range(0, len(images), 5000):      # as cnntrain.data.store.mean_image
        total += images[start:start + 5000].sum(axis=0, dtype=np.float64)
    mean_image = (total / len(images)).astype(np.float32)
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = np.bincount(np.ascontiguousarray(images[:, c]).reshape(-1),
                           minlength=256).astype(np.float64)
        count = hist.sum()
        mean = (hist * values).sum() / count
        means.append(mean)
        stds.append(np.sqrt(max((hist * (values - mean) ** 2).sum() / count, 0.0)))
    return TrainStats(mean_image, np.array(means), np.array(stds))


def fine_to_coarse(fine: np.ndarray, coarse: np.ndarray, classes: int, where: str) -> np.ndarray:
    """The superclass of each fine class, checked to be a function (-1: class unseen)."""
    mapping = np.full(classes, -1, np.int64)
    mapping[fine] = coarse
    if np.any(mapping[fine] != coarse):
        bad = int(fine[np.flatnonzero(mapping[fine] != coarse)[0]])
        raise DatasetError(f"{where}: fine class {bad} appears with more than one coarse "
                           "label, so the superclasses are not a grouping of the classes")
    return mapping


def images_md5(images: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(images).data).hexdigest()


# ---------------------------------------------------------------- writing
def write_native(path: Path, data: ImageSet, *, dataset: str, split: str, stats: TrainStats,
                 source: SourceInfo, mapping: np.ndarray | None = None) -> None:
    """Write one split atomically (temporary file, fsync, rename: see ``atomic_write``)."""
    import h5py

    from cnntrain.safe_hdf5 import write_hdf5
    from cnntrain.snapshot import atomic_write

    fine_classes, coarse_classes = CLASSES[dataset]
    images = np.ascontiguousarray(data.images, np.uint8)
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise DatasetError(f"cannot write {path}: images of shape {images.shape}")
    strings = h5py.string_dtype("utf-8")

    def build(f) -> None:
        f.attrs.update(format=FORMAT, version=VERSION, dataset=dataset, split=split,
                       count=len(images), images_md5=images_md5(images),
                       source=source.path, source_kind=source.kind,
                       source_md5=source.md5, source_note=source.note)
        f.create_dataset("images", data=images,
                         chunks=(min(IMAGE_CHUNK, len(images)),) + IMAGE_SHAPE)
        f.create_dataset("labels", data=data.labels.astype(np.uint8))
        f.create_dataset("label_names", data=np.array(data.label_names, dtype=object),
                         dtype=strings)
        if coarse_classes is not None:
            f.create_dataset("coarse_labels", data=data.coarse_labels.astype(np.uint8))
            f.create_dataset("coarse_label_names",
                             data=np.array(data.coarse_label_names, dtype=object),
                             dtype=strings)
            f.create_dataset("fine_to_coarse", data=mapping.astype(np.int64))
        f.create_dataset("mean_image", data=stats.mean_image.astype(np.float32))
        f.create_dataset("channel_mean", data=stats.channel_mean.astype(np.float64))
        f.create_dataset("channel_std", data=stats.channel_std.astype(np.float64))

    try:
        atomic_write(Path(path), lambda tmp: write_hdf5(tmp, build))
    except OSError as exc:
        raise DatasetError(f"cannot write {path}: {os_error_reason(exc)}") from None


# ---------------------------------------------------------------- reading
def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _array(f, name: str, dtype, shape: tuple, path: Path) -> np.ndarray:
    if name not in f:
        raise DatasetError(f"{path} has no '{name}' dataset: not a complete native file "
                           "(run cnntrain port again)")
    ds = f[name]
    if ds.dtype != np.dtype(dtype) or ds.shape != shape:
        raise DatasetError(f"{path}: '{name}' is {ds.dtype} {ds.shape}, expected "
                           f"{np.dtype(dtype)} {shape}")
    return ds[()]


def _names(f, name: str, count: int, path: Path) -> list[str]:
    if name not in f or f[name].shape != (count,):
        raise DatasetError(f"{path}: '{name}' is missing or does not hold {count} names")
    return [_text(v) for v in f[name][()]]


def read_native(path: Path) -> NativeSplit:
    """Read and check a native file; every problem is a one-line :class:`DatasetError`."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} not found")
    from cnntrain.safe_hdf5 import UnsafeFile, check_file

    try:
        with h5py.File(path, "r") as f:
            try:
                check_file(f)
            except UnsafeFile as err:
                raise DatasetError(f"refusing to read {path}: {err}") from None
            a = f.attrs
            if _text(a.get("format", "")) != FORMAT:
                raise DatasetError(f"{path} is not a cnntrain native dataset file "
                                   "(written by cnntrain port)")
            if int(a.get("version", -1)) != VERSION:
                raise DatasetError(f"{path} has native format version {a.get('version')}, this "
                                   f"cnntrain reads version {VERSION}; run cnntrain port again")
            dataset, split = _text(a["dataset"]), _text(a["split"])
            if dataset not in CLASSES or split not in ("train", "test"):
                raise DatasetError(f"{path} holds unknown dataset/split {dataset}/{split}")
            n = int(a["count"])
            fine_classes, coarse_classes = CLASSES[dataset]
            images = _array(f, "images", np.uint8, (n,) + IMAGE_SHAPE, path)
            labels = _array(f, "labels", np.uint8, (n,), path).astype(np.int64)
            names = _names(f, "label_names", fine_classes, path)
            coarse = coarse_names = mapping = None
            if coarse_classes is not None:
                coarse = _array(f, "coarse_labels", np.uint8, (n,), path).astype(np.int64)
                coarse_names = _names(f, "coarse_label_names", coarse_classes, path)
                mapping = _array(f, "fine_to_coarse", np.int64, (fine_classes,), path)
            stats = TrainStats(_array(f, "mean_image", np.float32, IMAGE_SHAPE, path),
                               _array(f, "channel_mean", np.float64, (3,), path),
                               _array(f, "channel_std", np.float64, (3,), path))
            source = SourceInfo(_text(a.get("source", "")), _text(a.get("source_kind", "")),
                                _text(a.get("source_md5", "")), _text(a.get("source_note", "")))
            md5 = _text(a.get("images_md5", ""))
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises many kinds on a damaged file
        raise DatasetError(f"{path} is unreadable or corrupt: {error_reason(exc)}") from None
    for column, classes, what in ((labels, fine_classes, "labels"),
                                  (coarse, coarse_classes, "coarse_labels")):
        if column is not None and len(column) and int(column.max()) >= classes:
            raise DatasetError(f"{path}: '{what}' holds {int(column.max())}, outside "
                               f"0..{classes - 1}")
    for name, value in (("mean_image", stats.mean_image), ("channel_mean", stats.channel_mean),
                        ("channel_std", stats.channel_std)):
        if not np.all(np.isfinite(value)):
            raise DatasetError(f"{path}: '{name}' holds NaN or inf")
    images.flags.writeable = False
    return NativeSplit(path, dataset, split, images, labels, names, coarse, coarse_names,
                       mapping, stats, source, md5)


def recorded_source(path: Path) -> SourceInfo | None:
    """The source recorded in a native file's attributes (None if they cannot be read)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            return SourceInfo(_text(a["source"]), _text(a["source_kind"]),
                              _text(a["source_md5"]), _text(a.get("source_note", "")))
    except Exception:  # noqa: BLE001 - verify_native reports what is wrong
        return None


@lru_cache(maxsize=8)
def _cached(path: Path, size: int, mtime_ns: int) -> NativeSplit:
    return read_native(path)


def load_native(path: Path) -> NativeSplit:
    """``read_native``, cached per process while the file is unchanged (the TRAIN and
    TEST nets, and repeated runs in one process, share one copy)."""
    path = Path(path).expanduser()
    try:
        stat = path.resolve().stat()
    except OSError:
        raise DatasetError(f"{path} not found") from None
    return _cached(path.resolve(), stat.st_size, stat.st_mtime_ns)


def verify_native(path: Path, dataset: str, split: str, source_md5: str | None) -> str | None:
    """Why ``path`` is not a complete, intact conversion of ``dataset``/``split`` from a
    source with ``source_md5`` (None: the source is not at hand, not compared); None
    when it is. Reads every array and checks the image bytes against their MD5."""
    try:
        native = read_native(path)
    except DatasetError as err:
        return str(err)
    if (native.dataset, native.split) != (dataset, split):
        return f"{path} holds {native.dataset}/{native.split}, not {dataset}/{split}"
    if images_md5(native.images) != native.images_md5:
        return f"{path}: the images do not match their recorded MD5 (the file is damaged)"
    if source_md5 is not None and native.source.md5 != source_md5:
        return (f"{path} was converted from a source with MD5 {native.source.md5 or '?'}, "
                f"the source now has MD5 {source_md5}")
    return None
