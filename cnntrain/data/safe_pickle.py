"""Unpickle CIFAR's Python-format files without letting them run code.

A pickle can name any importable callable and have it called (``os.system``
included), so the official CIFAR pickles are read by an unpickler that resolves
only the few numpy globals that rebuilding an array needs. Everything else, and
every kind of corruption, is a one-line :class:`DatasetError` naming the file.
"""
from __future__ import annotations

import io
import pickle

import numpy as np

from cnntrain.data.safe_tar import error_reason
from cnntrain.errors import DatasetError

# Taken from the objects numpy itself pickles with, rather than imported by module
# name: numpy 2 moved them to ``numpy._core`` and importing the old ``numpy.core``
# alias warns; this way the same code serves numpy 1 and 2.
_reconstruct = np.ndarray.__reduce__(np.zeros(0, np.uint8))[0]
_scalar = np.uint8(0).__reduce__()[0]


def _checked_reconstruct(subtype, shape, dtype_char):
    """numpy's ``_reconstruct``, limited to the empty shell every array pickle starts from.

    The real function allocates ``shape`` up front, so a pickle asking for a
    huge shape could exhaust memory before the size check in ``__setstate__``.
    """
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"array of type {subtype!r} is not a plain numpy array")
    if int(np.prod(shape, dtype=np.int64)) != 0:
        raise pickle.UnpicklingError(f"array shell of shape {shape!r} is not empty")
    return _reconstruct(subtype, shape, dtype_char)


# Python 2 pickles name the numpy 1 modules; both spellings map to the same object.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``_ALLOWED``; names the file when refusing."""

    def __init__(self, data: bytes, source: str):
        super().__init__(io.BytesIO(data), encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DatasetError(f"refusing to load {module}.{name} from {self.source}: "
                               "CIFAR pickles may only hold numpy arrays") from None

    def persistent_load(self, pid):
        raise DatasetError(f"refusing to load a persistent reference from {self.source}: "
                           "CIFAR pickles may only hold numpy arrays")


def load_pickle(data: bytes, source: str) -> object:
    """Unpickle ``data`` (a Python 2 or 3 pickle of numpy arrays, lists, dicts, bytes).

    Python 2 strings come back as ``bytes`` (``encoding="bytes"``), as the official
    CIFAR files need. ``source`` names the file in error messages.
    """
    try:
        return _ArrayOnlyUnpickler(data, source).load()
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt input can fail anywhere in pickle or numpy
        raise DatasetError(f"{source} is truncated or corrupt: {error_reason(exc)}") from None
