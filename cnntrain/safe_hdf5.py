"""HDF5 without surprises: files checked before anything is read from them, and files
written so that a full disk is an ordinary OSError.

HDF5 files (snapshots, native datasets) come from other people too. Besides plain
corruption, a file can make a reader do things its bytes do not show:

- an external link, or a dataset whose raw data is "external storage", makes HDF5 open
  another file named inside this one (``/etc/...``, or a file of the attacker's);
- a dataset compressed with a filter HDF5 does not have built in makes HDF5 search its
  plugin folders and load a shared library to decode it, i.e. run code;
- a dataset can claim any shape and be stored lazily, so reading it allocates terabytes;
- soft links can loop.

:func:`check_file` walks every link of an open file without following any, and
refuses all of these; cnntrain never writes them. Callers turn the reason into their
own one-line error (snapshot or dataset).

:func:`write_hdf5` builds a file in memory and writes its bytes with plain file I/O: when
HDF5 itself writes to a disk that fills up, it reports the failure again from every
object it closes afterwards, as tracebacks printed while they are garbage-collected.
"""
from __future__ import annotations

import numpy as np

# Filters that HDF5 and h5py have compiled in (deflate, shuffle, fletcher32, szip,
# n-bit, scale-offset, and h5py's LZF): reading them loads no plugin.
BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})

# The most values one dataset may hold: Caffe's blob limit (INT_MAX). CIFAR's 50000
# training images (153.6 M bytes) fit with room to spare.
MAX_VALUES = 2 ** 31 - 1
MAX_OBJECTS = 100_000   # a snapshot of a very deep net holds a few thousand


def write_hdf5(path, build) -> None:
    """Write the HDF5 file that ``build(f)`` fills to ``path`` (an OSError, such as
    ENOSPC, comes from the one plain write of its bytes)."""
    import h5py

    with h5py.File(f"{path}.in-memory", "w", driver="core", backing_store=False) as f:
        build(f)
        f.flush()
        image = f.id.get_file_image()
    with open(path, "wb") as out:
        out.write(image)


class UnsafeFile(Exception):
    """The reason a file is refused (one line, naming the object)."""


def check_file(f, numeric_only: bool = False) -> None:
    """Raise :class:`UnsafeFile` if the open file ``f`` holds links to other files,
    soft links, external or virtual storage, plugin filters, or oversized datasets;
    with ``numeric_only``, also any dataset that is not of integers or floats."""
    import h5py

    count = 0

    # h5py stops visiting when the callback returns something other than None; an
    # exception raised inside the callback would not come through HDF5 cleanly.
    def visit(name: str, link) -> str | None:
        nonlocal count
        count += 1
        if count > MAX_OBJECTS:
            return f"holds more than {MAX_OBJECTS} objects"
        if isinstance(link, h5py.ExternalLink):
            return f"'{name}' is a link to another file ({link.filename})"
        if isinstance(link, h5py.SoftLink):
            return f"'{name}' is a soft link (to {link.path})"
        obj = f.get(name)
        if isinstance(obj, h5py.Dataset):
            try:
                check_dataset(obj, name, numeric_only)
            except UnsafeFile as err:
                return str(err)
        return None

    reason = f.visititems_links(visit)
    if reason is not None:
        raise UnsafeFile(reason)


def check_dataset(ds, name: str, numeric_only: bool = False) -> None:
    """The per-dataset part of :func:`check_file`."""
    if ds.shape is None:   # a null dataspace (h5py.Empty): h5py cannot read it as an array
        raise UnsafeFile(f"'{name}' is an empty dataset with no shape, not an array")
    if ds.is_virtual:
        raise UnsafeFile(f"'{name}' is a virtual dataset (its data lives in other files)")
    if ds.external:
        raise UnsafeFile(f"'{name}' keeps its data in another file ({ds.external[0][0]!r})")
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in BUILTIN_FILTERS:
            raise UnsafeFile(f"'{name}' needs HDF5 filter {code}, which is not built in "
                             "(HDF5 would load a plugin library to read it)")
    if ds.size > MAX_VALUES:
        raise UnsafeFile(f"'{name}' claims {ds.size:.3g} values (shape {ds.shape}), more than "
                         f"the {MAX_VALUES} one array may hold")
    if numeric_only and not (ds.dtype.kind in "iuf" and ds.dtype.fields is None
                             and ds.dtype.subdtype is None):
        raise UnsafeFile(f"'{name}' holds {_dtype_name(ds.dtype)} values, not numbers")


def _dtype_name(dtype: np.dtype) -> str:
    if dtype.fields is not None:
        return "compound"
    if dtype.kind in "SUO":
        return "text or object"
    return str(dtype)
