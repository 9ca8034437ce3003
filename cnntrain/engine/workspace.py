"""Reusable scratch buffers, so the hot path does not allocate (and page-fault) each step."""
from __future__ import annotations

import math

import numpy as np


class Workspace:
    """Named, growing flat buffers handed out as contiguous arrays of any smaller shape."""

    def __init__(self) -> None:
        self._flat: dict[str, np.ndarray] = {}
        self._last_shape: dict[str, tuple[int, ...]] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype, zero: bool = False) -> np.ndarray:
        """A C-contiguous array of ``shape`` backed by the buffer ``name``.

        With ``zero``, the array is zeroed whenever it is new or its shape changed, so
        a caller that only ever writes the interior (a padded copy) keeps zero borders.
        """
        shape = tuple(int(s) for s in shape)
        size = math.prod(shape)
        dtype = np.dtype(dtype)
        flat = self._flat.get(name)
        fresh = flat is None or flat.size < size or flat.dtype != dtype
        if fresh:
            flat = np.zeros(size, dtype) if zero else np.empty(size, dtype)
            self._flat[name] = flat
        view = flat[:size].reshape(shape)
        if zero and not fresh and self._last_shape.get(name) != shape:
            view[...] = 0
        self._last_shape[name] = shape
        return view

    def clear(self) -> None:
        self._flat.clear()
        self._last_shape.clear()


class ColumnBudget:
    """Bytes of im2col columns that a net's convolutions may keep from the forward pass
    for the backward, instead of rebuilding them there: 2-9 % of a step in the medians of
    alternating runs (cifar10_quick keeps all three layers' 133 MB at batch 100). Layers
    take their share at setup, in net order, while it lasts."""

    DEFAULT_BYTES = 256 << 20

    def __init__(self, nbytes: int = DEFAULT_BYTES) -> None:
        self.bytes_left = nbytes

    def take(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` if that many are left."""
        if nbytes > self.bytes_left:
            return False
        self.bytes_left -= nbytes
        return True
