"""A stand-in for CuPy, so the GPU path is tested on machines without a GPU.

NumPy computes underneath, but the arrays are another type (:class:`DeviceArray`) that
keeps CuPy's rules at the host/device boundary, the ones a port to CuPy gets wrong:

- ``numpy.asarray(device_array)`` and ``host[...] = device_array`` raise TypeError
  (CuPy refuses implicit device-to-host copies; ``.get()``/``asnumpy`` are the way);
- a host array in an operator, ufunc or function with device arrays raises TypeError,
  and so does ``device[...] = host_array`` (stricter than CuPy, which allows that one
  form: every transfer here must be an explicit ``asarray``);
- NumPy functions called on device arrays dispatch to the device (NEP 18, as CuPy
  implements it), and reductions give 0-d device arrays, not scalars;
- host-only attributes (``ctypes``, the buffer protocol) are not there.

``USED`` records the module, array and ufunc attributes code asked for, so a test can
hold them to the names CuPy has (``tests/cupy_names.txt``).
"""
from __future__ import annotations

import operator
import types

import numpy as np

#: Attributes asked of the module, of its arrays and of its ufuncs, by name.
USED: dict[str, set[str]] = {"module": set(), "ndarray": set(), "ufunc": set()}


def _host_error() -> TypeError:
    return TypeError("a host numpy.ndarray used with device arrays: move it to the "
                     "device first (CuPy refuses the mix)")


def unwrap(obj, allow_host: bool = False):
    """Device arrays as their NumPy arrays; a host array (0-d ones too: only NumPy
    scalars pass) is an error unless ``allow_host``; lists, tuples and dicts are
    searched."""
    if isinstance(obj, DeviceArray):
        return obj._a
    if isinstance(obj, np.ndarray):
        if allow_host:
            return obj
        raise _host_error()
    if isinstance(obj, (list, tuple)):
        return type(obj)(unwrap(o, allow_host) for o in obj)
    if isinstance(obj, dict):
        return {k: unwrap(v, allow_host) for k, v in obj.items()}
    return obj


def wrap(obj):
    """NumPy arrays and scalars as device arrays (scalars as 0-d, as CuPy returns them)."""
    if isinstance(obj, np.ndarray):
        return DeviceArray(obj)
    if isinstance(obj, np.generic) and not isinstance(obj, np.dtype):
        return DeviceArray(np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(wrap(o) for o in obj)
    if isinstance(obj, list):
        return [wrap(o) for o in obj]
    return obj


def _no_where(kwargs) -> None:
    if "where" in kwargs:
        raise TypeError("CuPy's ufuncs take no where= (use copyto(..., where=))")


def _operand(other):
    if isinstance(other, (list, tuple)):
        raise TypeError("CuPy does not take Python sequences as operands")
    return unwrap(other)


class DeviceArray:
    """An array "on the device": NumPy memory behind CuPy's boundary rules."""

    __slots__ = ("_a",)
    __array_priority__ = 1000
    __hash__ = None

    def __init__(self, array: np.ndarray):
        self._a = array

    # --- the boundary ----------------------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def get(self) -> np.ndarray:
        return self._a.copy()

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _no_where(kwargs)
        USED["module"].add(ufunc.__name__)     # NumPy's ufunc reaching CuPy's (NEP 13)
        if method != "__call__":
            USED["ufunc"].add(method)
        return wrap(getattr(ufunc, method)(*unwrap(inputs), **unwrap(kwargs)))

    def __array_function__(self, func, types_, args, kwargs):
        USED["module"].add(func.__name__)      # a NumPy function CuPy must have (NEP 18)
        return wrap(func(*unwrap(args), **unwrap(kwargs)))

    # --- attributes and methods -------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    base = property(lambda self: wrap(self._a.base))
    T = property(lambda self: DeviceArray(self._a.T))

    HOST_ONLY = frozenset({"ctypes", "tofile", "tobytes", "__array_interface__",
                           "__array_struct__", "data"})

    def __getattr__(self, name):
        if name in DeviceArray.HOST_ONLY or name.startswith("__"):
            raise AttributeError(f"device arrays have no '{name}' (a host-only attribute)")
        USED["ndarray"].add(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return wrap(attr)
        return lambda *args, **kwargs: wrap(attr(*unwrap(args), **unwrap(kwargs)))

    def __getitem__(self, key):
        return wrap(self._a[unwrap(key, allow_host=True)])

    def __setitem__(self, key, value):
        self._a[unwrap(key, allow_host=True)] = _operand(value)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        return (wrap(row) for row in self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __repr__(self) -> str:
        return f"device:{self._a!r}"

    def __neg__(self):
        return DeviceArray(-self._a)

    def __pos__(self):
        return DeviceArray(+self._a)

    def __abs__(self):
        return DeviceArray(abs(self._a))

    def __invert__(self):
        return DeviceArray(~self._a)


def _add_operator(name: str, op) -> None:
    def forward(self, other):
        return wrap(op(self._a, _operand(other)))

    def reflected(self, other):
        return wrap(op(_operand(other), self._a))

    setattr(DeviceArray, f"__{name}__", forward)
    setattr(DeviceArray, f"__r{name}__", reflected)


def _add_inplace(name: str, op) -> None:
    def inplace(self, other):
        self._a = op(self._a, _operand(other))
        return self

    setattr(DeviceArray, f"__i{name}__", inplace)


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and",
              "or", "xor", "lshift", "rshift"):
    _op = getattr(operator, _name if _name not in ("and", "or") else f"{_name}_")
    _add_operator(_name, _op)
    _add_inplace(_name, getattr(operator, f"i{_name}"))
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(DeviceArray, f"__{_name}__",
            (lambda op: lambda self, other: wrap(op(self._a, _operand(other))))(
                getattr(operator, _name)))


class _Ufunc:
    """A NumPy ufunc taking and giving device arrays (``.at``, ``.reduce`` too)."""

    def __init__(self, ufunc: np.ufunc):
        self._u = ufunc

    def __call__(self, *args, **kwargs):
        _no_where(kwargs)
        return wrap(self._u(*(_operand(a) for a in args), **unwrap(kwargs)))

    def __getattr__(self, name):
        USED["ufunc"].add(name)
        attr = getattr(self._u, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: wrap(attr(*unwrap(args), **unwrap(kwargs)))


def _device_function(func):
    def call(*args, **kwargs):
        return wrap(func(*unwrap(args), **unwrap(kwargs)))

    call.__name__ = getattr(func, "__name__", "function")
    return call


class _Namespace(types.SimpleNamespace):
    pass


class _CudaDevice:
    def __init__(self, index: int = 0):
        self.id = index

    def use(self) -> None:
        pass

    def synchronize(self) -> None:
        pass


class FakeCupy(types.ModuleType):
    """The module: NumPy's functions over :class:`DeviceArray`, plus CuPy's own
    ``asarray`` (host to device), ``asnumpy`` (device to host) and ``cuda``."""

    ndarray = DeviceArray

    def __init__(self) -> None:
        super().__init__("fake_cupy")
        strides = np.lib.stride_tricks
        self.lib = _Namespace(stride_tricks=_Namespace(
            as_strided=_device_function(strides.as_strided),
            sliding_window_view=_device_function(strides.sliding_window_view)))
        self.cuda = _Namespace(
            Device=_CudaDevice,
            runtime=_Namespace(getDeviceCount=lambda: 1,
                               getDeviceProperties=lambda i: {"name": b"Fake GPU (NumPy)"}))

    def asarray(self, a, dtype=None):
        if isinstance(a, DeviceArray):
            return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
        return DeviceArray(np.array(unwrap(a, allow_host=True), dtype=dtype))

    def array(self, a, dtype=None, copy=True):
        if isinstance(a, DeviceArray):
            return DeviceArray(np.array(a._a, dtype=dtype, copy=copy))
        return DeviceArray(np.array(unwrap(a, allow_host=True), dtype=dtype))

    def asnumpy(self, a):
        return a._a.copy() if isinstance(a, DeviceArray) else np.asarray(a)

    def get_array_module(self, *arrays):
        return self if any(isinstance(a, DeviceArray) for a in arrays) else np

    def __getattr__(self, name):
        attr = getattr(np, name)
        USED["module"].add(name)
        if isinstance(attr, np.ufunc):
            return _Ufunc(attr)
        if callable(attr) and not isinstance(attr, type):
            return _device_function(attr)
        return attr
