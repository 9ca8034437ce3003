"""Where a run's arrays live: the host (NumPy) or an NVIDIA GPU (CuPy).

One :class:`Device` is chosen per run (``--device cpu|gpu[:N]``) and its array module
``xp`` is what the layers, solvers and the engine's shared helpers compute with, the
way Chainer did it: the same textbook code runs on ``numpy`` or ``cupy``. The engine's
CPU plans (threads, cache-sized chunks, Winograd) stay on the host; on a GPU the
layers run their reference forms instead.

What crosses between host and device does so explicitly, once each time:
- host to device (:meth:`Device.to_device`): each batch from a Data or Input layer;
  parameters, drawn on the host from the run's seed by the fillers (so a seed gives
  the same initial weights on either device); Dropout's masks, drawn on the host for
  the same reason; weights and solver state loaded from a snapshot;
- device to host (:func:`to_host`): snapshots, the scores and labels that test
  accuracy is counted from, the gradients for an MPI allreduce, pictures for reports.

CuPy is imported only when a run asks for a GPU, so the CPU path costs nothing and
needs nothing beyond the core install.
"""
from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import numpy as np

from cnntrain.errors import CnnTrainError

GPU_INSTALL_HINT = "pip install 'cnntrain[gpu]' (CuPy for CUDA 12)"

#: Array modules other than NumPy whose arrays :func:`array_module` recognises: CuPy
#: once a GPU run has imported it (the tests register a stand-in).
DEVICE_MODULES: list[ModuleType] = []


def array_module(*arrays) -> ModuleType:
    """The module that computes on ``arrays``: a device module if any of them is one
    of its arrays, else ``numpy``. For code handed arrays without a layer's ``xp``
    (engine helpers, solvers)."""
    for module in DEVICE_MODULES:
        if any(isinstance(a, module.ndarray) for a in arrays):
            return module
    return np


def to_host(array: Any) -> Any:
    """``array`` as a NumPy array (a copy when it lives on a device; itself otherwise)."""
    module = array_module(array)
    return array if module is np else module.asnumpy(array)


class Device:
    """One place arrays live, with the array module that computes there."""

    def __init__(self, kind: str = "cpu", index: int = 0, xp: ModuleType = np,
                 name: str = ""):
        self.kind, self.index, self.xp = kind, index, xp
        self.name = name or ("cpu" if kind == "cpu" else f"gpu:{index}")

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    def to_device(self, array: Any) -> Any:
        """A host array (or scalar) as an array of this device; device arrays pass."""
        if self.is_cpu:
            return to_host(array)
        return self.xp.asarray(array)

    def synchronize(self) -> None:
        """Wait for queued device work (timing needs it; results do not)."""
        if not self.is_cpu:
            self.xp.cuda.Device(self.index).synchronize()

    def __repr__(self) -> str:
        return f"Device({self.name})"

    def __str__(self) -> str:
        return self.name


CPU = Device()

_DEVICE_RE = re.compile(r"^(cpu|gpu)(?::(\d+))?$")


def parse_device(text: str) -> tuple[str, int]:
    """``"cpu"``, ``"gpu"`` or ``"gpu:N"`` as (kind, index); anything else is a
    CnnTrainError naming the forms."""
    match = _DEVICE_RE.match(text.strip().lower())
    if not match or (match.group(1) == "cpu" and match.group(2) is not None):
        raise CnnTrainError(f"unknown device '{text}': use cpu, gpu or gpu:N (N: the GPU's "
                         "number, from 0)")
    return match.group(1), int(match.group(2) or 0)


def _import_cupy() -> ModuleType:
    """CuPy (a function so the tests can stand a NumPy-backed module in for it)."""
    import cupy

    return cupy


def open_device(text: str, local_rank: int | None = None) -> Device:
    """The device ``text`` names, ready to use: for a GPU, CuPy imported and the GPU
    selected. Anything missing is a one-line CnnTrainError saying what to do.

    ``local_rank``: this process's number among the MPI processes on its machine; a
    plain "gpu" then means GPU ``local_rank`` modulo the machine's GPU count, so N
    processes on a machine with N GPUs take one each."""
    kind, index = parse_device(text)
    numbered = ":" in text
    if kind == "cpu":
        return CPU
    try:
        cupy = _import_cupy()
    except ImportError as err:
        raise CnnTrainError(f"--device {text} needs CuPy, which is not installed "
                            f"({err}): {GPU_INSTALL_HINT}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:   # no driver, no CUDA runtime: CuPy's own error types
        raise CnnTrainError(f"--device {text}: CuPy cannot reach a GPU: "
                            f"{_one_line(err)}") from None
    if not numbered and local_rank is not None and count:
        index = local_rank % count
    if index >= count:
        raise CnnTrainError(f"--device {text}: this machine has {count} GPU"
                            f"{'' if count == 1 else 's'} (gpu:0"
                            f"{f' to gpu:{count - 1}' if count > 1 else ''})")
    cupy.cuda.Device(index).use()
    # cnntrain's own CPU threads split NumPy work; on a GPU they would only queue
    # kernels from threads that CuPy gives another current device.
    from cnntrain.engine.parallel import set_worker_count

    set_worker_count(1)
    if cupy not in DEVICE_MODULES:
        DEVICE_MODULES.append(cupy)
    return Device("gpu", index, cupy, f"gpu:{index} ({_gpu_name(cupy, index)})")


def _gpu_name(cupy: ModuleType, index: int) -> str:
    try:
        name = cupy.cuda.runtime.getDeviceProperties(index)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return "GPU"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__

