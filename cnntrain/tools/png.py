"""8-bit PNG images from NumPy arrays, and the grids the pictures are made of.

The encoder is the PNG format's minimum (one IHDR, one zlib-compressed IDAT, IEND; no
filtering), so the report and ``cnntrain visualize`` need neither Pillow nor
matplotlib. Arrays are (H, W) gray or (H, W, 3) RGB.
"""
from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import numpy as np

from cnntrain.errors import CnnTrainError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {2: 0, 3: 2}     # array rank → PNG colour type (0 gray, 2 RGB)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode_png(image: np.ndarray) -> bytes:
    """The PNG file of a uint8 (H, W) or (H, W, 3) array."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in _COLOR_TYPE or \
            (image.ndim == 3 and image.shape[2] != 3) or 0 in image.shape:
        raise ValueError(f"a PNG needs uint8 (H, W) or (H, W, 3) pixels, got {image.dtype} "
                         f"{image.shape}")
    height, width = image.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPE[image.ndim], 0, 0, 0)
    rows = np.ascontiguousarray(image).reshape(height, -1)
    # Each scanline starts with its filter type: 0, none.
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    return (SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6))
            + _chunk(b"IEND", b""))


def png_data_uri(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` as a PNG file atomically; a failed write is a one-line error."""
    from cnntrain.errors import os_error_reason
    from cnntrain.snapshot import atomic_write

    path = Path(path)
    data = encode_png(image)
    try:
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
    except OSError as err:
        raise CnnTrainError(f"could not write {path}: {os_error_reason(err)}") from None
    return path


def to_uint8(values: np.ndarray, low: float | None = None,
             high: float | None = None) -> np.ndarray:
    """``values`` scaled linearly so that ``low`` → 0 and ``high`` → 255 (default: their
    min and max); a constant array becomes mid-gray."""
    values = np.asarray(values, np.float64)
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    if not high > low:
        return np.full(values.shape, 128, np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Each pixel repeated ``factor`` times along height and width (crisp, not blurred)."""
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def grid(tiles: np.ndarray, columns: int | None = None, pad: int = 1,
         background: int = 255) -> np.ndarray:
    """(N, h, w[, 3]) uint8 tiles laid out in rows of ``columns`` (default: about square),
    ``pad`` pixels of ``background`` between and around them."""
    tiles = np.asarray(tiles)
    n, h, w = tiles.shape[:3]
    columns = max(1, columns or int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / columns))
    shape = (rows * (h + pad) + pad, columns * (w + pad) + pad) + tiles.shape[3:]
    out = np.full(shape, background, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y:y + h, x:x + w] = tile
    return out
