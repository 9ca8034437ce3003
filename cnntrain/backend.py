"""The array module a piece of array code runs on: NumPy, or CuPy for arrays on a GPU.

Array code asks the arrays it is given (``xp = array_module(x)``), the way Chainer and
CuPy's own ``get_array_module`` do, instead of naming ``numpy``: the same layer then
runs on host or device arrays. CuPy is never imported here unless it is already loaded,
so the CPU path costs nothing.
"""
from __future__ import annotations

import sys
from types import ModuleType

import numpy as np


def array_module(*arrays) -> ModuleType:
    """``cupy`` if any of ``arrays`` is a CuPy array, else ``numpy``."""
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        return cupy.get_array_module(*arrays)
    return np
