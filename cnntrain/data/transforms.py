"""Caffe's data transformation plus ConvNetJS-style random shifts, vectorized per batch."""
from __future__ import annotations

import numpy as np


class Transformer:
    """uint8 images (N, C, H, W) → float: ``(x - mean) * scale``, then augmentation.

    In TRAIN: random mirror, and a random window: the image is zero-padded by
    ``shift`` px (zero *after* mean subtraction, i.e. the mean colour) and a window
    of ``crop_size`` (default: the input size) is cut at a random offset. In TEST the
    window is centred and nothing is mirrored. Images that drew the same offset are
    cut together, so the loop is over offsets, never over images.
    """

    def __init__(self, *, scale: float = 1.0, mean: np.ndarray | None = None,
                 mirror: bool = False, shift: int = 0, crop_size: int = 0, train: bool = True,
                 dtype=np.float32):
        self.scale, self.mirror, self.shift, self.crop = scale, mirror, shift, crop_size
        self.train, self.dtype = train, np.dtype(dtype)
        self.mean = None if mean is None else np.asarray(mean, self.dtype)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = shape
        return (n, c, self.crop or h, self.crop or w)

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = images.astype(self.dtype)
        if self.mean is not None:
            x -= self.mean
        if self.scale != 1.0:
            x *= self.dtype.type(self.scale)
        if self.train and self.mirror:
            flip = rng.random(len(x)) < 0.5
            x[flip] = x[flip, :, :, ::-1]
        return self._window(x, rng)

    def _window(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, c, h, w = x.shape
        s = self.shift
        oh, ow = self.crop or h, self.crop or w
        if s == 0 and (oh, ow) == (h, w):
            return x
        padded = np.zeros((n, c, h + 2 * s, w + 2 * s), x.dtype) if s else x
        if s:
            padded[:, :, s:s + h, s:s + w] = x
        span_h, span_w = h + 2 * s - oh, w + 2 * s - ow
        if not self.train:
            return np.ascontiguousarray(padded[:, :, span_h // 2:span_h // 2 + oh,
                                               span_w // 2:span_w // 2 + ow])
        dy = rng.integers(0, span_h + 1, n)
        dx = rng.integers(0, span_w + 1, n)
        out = np.empty((n, c, oh, ow), x.dtype)
        key = dy * (span_w + 1) + dx
        for k in np.unique(key):
            sel = np.flatnonzero(key == k)
            i, j = divmod(int(k), span_w + 1)
            out[sel] = padded[sel, :, i:i + oh, j:j + ow]
        return out
