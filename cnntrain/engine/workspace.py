"""Reusable scratch buffers, so the hot path does not allocate (and page-fault) each step."""
from __future__ import annotations

import math

import numpy as np


class Workspace:
    """Named, growing flat buffers handed out as contiguous arrays of any smaller shape."""

    def __init__(self, xp=np) -> None:
        self.xp = xp                          # numpy, or the device's array module
        self._flat: dict[str, np.ndarray] = {}
        self._last: dict[str, tuple] = {}     # name: (shape, dtype as asked, view)

    def get(self, name: str, shape: tuple[int, ...], dtype, zero: bool = False) -> np.ndarray:
        """A C-contiguous array of ``shape`` backed by the buffer ``name``.

        With ``zero``, the array is zeroed whenever it is new or its shape changed, so
        a caller that only ever writes the interior (a padded copy) keeps zero borders.
        """
        last = self._last.get(name)
        if last is not None and last[0] == shape and last[1] == dtype:
            return last[2]      # asked again as last time (chunk loops): no bookkeeping
        asked = (shape, dtype)
        shape = tuple(int(s) for s in shape)
        size = math.prod(shape)
        dtype = np.dtype(dtype)
        flat = self._flat.get(name)
        fresh = flat is None or flat.size < size or flat.dtype != dtype
        if fresh:
            flat = (_aligned(size, dtype, zero) if self.xp is np
                    else (self.xp.zeros if zero else self.xp.empty)(size, dtype))
            self._flat[name] = flat
        view = flat[:size].reshape(shape)
        if zero and not fresh and (last is None or last[2].shape != shape):
            view[...] = 0
        self._last[name] = asked + (view,)
        return view

    def clear(self) -> None:
        self._flat.clear()
        self._last.clear()

# OpenBLAS takes different code paths (and so rounds differently) for operands at
# different alignments: the same product in two buffers could differ in the last bit.
# So every buffer starts at the same place relative to a cache line, and a result
# never depends on which buffer it used. That place is not the line's start: strided
# copies out of line-aligned arrays (pooling's phase fill) ran 30-60 % slower on the
# machine in bench/RESULTS.md, and whole cifar10_quick steps 3-8 % slower (alternating
# nets in one process; offsets 16, 32 and 48 all gained, 32 the most).
ALIGNMENT = 64
OFFSET = 32


def _aligned(size: int, dtype: np.dtype, zero: bool) -> np.ndarray:
    """A flat array of ``size`` elements whose data starts ``OFFSET`` bytes past an
    ``ALIGNMENT`` boundary."""
    nbytes = size * dtype.itemsize
    raw = (np.zeros if zero else np.empty)(nbytes + ALIGNMENT, np.uint8)
    start = (OFFSET - raw.ctypes.data) % ALIGNMENT
    return raw[start:start + nbytes].view(dtype)
