"""Reading ``.npy`` files whose header is checked before anything is allocated.

``numpy.load`` allocates the array its header declares before reading the data, so a
100-byte file that claims 100000 x 100000 values asks for 37 GiB. Here the declared
shape and dtype are checked against what the caller expects and against the file's
real size first.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np


class NpyError(ValueError):
    """The file is not a readable ``.npy`` array of the expected size (the message
    says why, without the path)."""


def read_npy(path: str | Path, *, shape: tuple[int, ...] | None = None,
             max_values: int | None = None) -> np.ndarray:
    """The array in ``path``: only when its header declares ``shape`` (if given), at
    most ``max_values`` values (if given), a plain numeric dtype, and the file really
    holds that many bytes."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                declared, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                declared, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise NpyError(f"unknown .npy format version {version}")
            if dtype.hasobject or dtype.kind not in "biuf":
                raise NpyError(f"holds {dtype} values, not numbers")
            if shape is not None and tuple(declared) != tuple(shape):
                raise NpyError(f"holds an array of shape {tuple(declared)}, not "
                               f"{'x'.join(map(str, shape))}")
            count = math.prod(declared)
            if max_values is not None and count > max_values:
                raise NpyError(f"declares {count} values, more than the {max_values} allowed")
            left = os.fstat(f.fileno()).st_size - f.tell()
            if left < count * dtype.itemsize:
                raise NpyError(f"declares {count} values of {dtype} but holds only {left} "
                               "bytes (truncated?)")
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except NpyError:
        raise
    except (OSError, ValueError, EOFError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NpyError(getattr(err, "strerror", None) or text) from None
