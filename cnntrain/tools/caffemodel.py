"""Caffe's binary ``.caffemodel`` (a serialized ``NetParameter``): its weights by layer
name and blob index, as :func:`cnntrain.snapshot.load_snapshot` reads ``.caffemodel.h5``.

The protobuf schema is built here at run time from the few facts of Caffe's caffe.proto
that the weights need (no copy of caffe.proto, no generated code); every other field of
the file is skipped by the parser:

* ``NetParameter``: ``name`` 1, ``layer`` 100 (``LayerParameter``), and the legacy
  ``layers`` 2 (``V1LayerParameter``, Caffe before 2015).
* ``LayerParameter``: ``name`` 1, ``type`` 2, ``bottom`` 3, ``top`` 4, ``blobs`` 7.
* ``V1LayerParameter``: ``bottom`` 2, ``top`` 3, ``name`` 4, ``type`` 5 (an enum, read
  as its number), ``blobs`` 6.
* ``BlobProto``: ``shape`` 7 (``BlobShape``: ``dim`` 1, packed int64), ``data`` 5 (packed
  float), ``double_data`` 8 (packed double), and the legacy 4-D ``num`` 1,
  ``channels`` 2, ``height`` 3, ``width`` 4.

Needs protobuf (``pip install 'cnntrain[caffe]'``).
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from cnntrain.errors import CnnTrainError, SnapshotError

INSTALL_HINT = ("reading a binary .caffemodel needs protobuf: pip install 'cnntrain[caffe]' "
                "(a .caffemodel.h5 needs nothing extra)")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_BLOB_VALUES = 2 ** 31 - 1          # Caffe's limit on one blob (INT_MAX)
PACKAGE = "cnntrain_caffemodel"        # not "caffe": never clashes with a real caffe_pb2

# (message, [(field, number, type, label, message type)]): the facts listed above.
_OPTIONAL, _REPEATED = 1, 3
_SCHEMA = {
    "BlobShape": [("dim", 1, "int64", _REPEATED, None)],
    "BlobProto": [("num", 1, "int32", _OPTIONAL, None),
                  ("channels", 2, "int32", _OPTIONAL, None),
                  ("height", 3, "int32", _OPTIONAL, None),
                  ("width", 4, "int32", _OPTIONAL, None),
                  ("data", 5, "float", _REPEATED, None),
                  ("shape", 7, "message", _OPTIONAL, "BlobShape"),
                  ("double_data", 8, "double", _REPEATED, None)],
    "LayerParameter": [("name", 1, "string", _OPTIONAL, None),
                       ("type", 2, "string", _OPTIONAL, None),
                       ("bottom", 3, "string", _REPEATED, None),
                       ("top", 4, "string", _REPEATED, None),
                       ("blobs", 7, "message", _REPEATED, "BlobProto")],
    "V1LayerParameter": [("bottom", 2, "string", _REPEATED, None),
                         ("top", 3, "string", _REPEATED, None),
                         ("name", 4, "string", _OPTIONAL, None),
                         ("type", 5, "int32", _OPTIONAL, None),
                         ("blobs", 6, "message", _REPEATED, "BlobProto")],
    "NetParameter": [("name", 1, "string", _OPTIONAL, None),
                     ("layers", 2, "message", _REPEATED, "V1LayerParameter"),
                     ("layer", 100, "message", _REPEATED, "LayerParameter")],
}
_PACKED = {("BlobShape", "dim"), ("BlobProto", "data"), ("BlobProto", "double_data")}


def _protobuf():
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool
    except ImportError:
        raise CnnTrainError(INSTALL_HINT) from None
    return descriptor_pb2, descriptor_pool


@lru_cache(maxsize=1)
def net_parameter_class():
    """The message class of Caffe's ``NetParameter`` (the fields above only)."""
    descriptor_pb2, descriptor_pool = _protobuf()
    types = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name=f"{PACKAGE}.proto", package=PACKAGE,
                                              syntax="proto2")
    for message, fields in _SCHEMA.items():
        proto = file.message_type.add(name=message)
        for name, number, kind, label, type_name in fields:
            field = proto.field.add(name=name, number=number, label=label,
                                    type=getattr(types, f"TYPE_{kind.upper()}"))
            if type_name:
                field.type_name = f".{PACKAGE}.{type_name}"
            if (message, name) in _PACKED:
                field.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    descriptor = pool.FindMessageTypeByName(f"{PACKAGE}.NetParameter")
    try:
        from google.protobuf.message_factory import GetMessageClass
        return GetMessageClass(descriptor)
    except ImportError:          # protobuf < 4.22
        from google.protobuf.message_factory import MessageFactory
        return MessageFactory(pool).GetPrototype(descriptor)


def is_hdf5(path: str | Path) -> bool:
    """Whether ``path`` starts with HDF5's signature (a ``.caffemodel.h5``)."""
    with open(path, "rb") as f:
        return f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE


def _blob_array(path: Path, layer: str, index: int, blob) -> np.ndarray:
    where = f"{path}: layer '{layer}' blob {index}"
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        # Caffe's legacy 4-D blob; absent dimensions are 0 there, which holds nothing.
        shape = (blob.num, blob.channels, blob.height, blob.width)
    if any(d < 0 for d in shape):
        raise SnapshotError(f"{where} has a negative dimension in its shape {shape}")
    count = math.prod(shape)
    if count > MAX_BLOB_VALUES:
        raise SnapshotError(f"{where} has shape {shape}, more values than one blob may hold")
    values = blob.data if len(blob.data) else blob.double_data
    if len(values) != count:
        raise SnapshotError(f"{where} has shape {shape} ({count} values) but holds "
                            f"{len(values)} values (truncated or corrupt?)")
    array = np.asarray(values, dtype=np.float32 if len(blob.data) else np.float64)
    if not np.all(np.isfinite(array)):
        raise SnapshotError(f"{where} holds NaN or inf")
    return array.reshape(shape)


def read_caffemodel(path: str | Path) -> dict[tuple[str, int], np.ndarray]:
    """The blobs of a binary ``.caffemodel``: ``{(layer, index): array}``, from its
    ``layer`` entries or, in a legacy file, its ``layers`` entries. Layers without
    blobs (ReLU, data layers) are not listed."""
    path = Path(path)
    net_class = net_parameter_class()        # first: says what to install if need be
    from google.protobuf.message import DecodeError

    try:
        raw = path.read_bytes()
    except OSError as err:
        from cnntrain.errors import os_error_reason

        raise SnapshotError(f"cannot read {path}: {os_error_reason(err)}") from None
    try:
        net = net_class.FromString(raw)
    except (DecodeError, RuntimeError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SnapshotError(f"{path} is not a readable Caffe model (a binary NetParameter; "
                            f"truncated or corrupt?): {reason}") from None
    weights: dict[tuple[str, int], np.ndarray] = {}
    for layer in list(net.layer) + list(net.layers):
        if not len(layer.blobs):
            continue
        if not layer.name:
            raise SnapshotError(f"{path}: a layer with {len(layer.blobs)} blob(s) has no name")
        if (layer.name, 0) in weights:
            raise SnapshotError(f"{path}: layer '{layer.name}' has weights twice")
        for i, blob in enumerate(layer.blobs):
            weights[(layer.name, i)] = _blob_array(path, layer.name, i, blob)
    if not weights:
        raise SnapshotError(f"{path} holds no layer weights (an empty or non-Caffe file?)")
    return weights
