"""Caffe's data transformation plus ConvNetJS-style random shifts, vectorized per batch."""
from __future__ import annotations

import numpy as np

PAD_MODES = {"zero": "constant", "reflect": "reflect"}   # config name: np.pad's mode


def pad_images(x: np.ndarray, pad: int, mode: str) -> np.ndarray:
    """``x`` (N, C, H, W) with ``pad`` px added on every side: zeros (the mean colour,
    once the mean is subtracted), or the image mirrored about its edge pixels
    (``reflect``: a b c | b a, as PyTorch's reflect padding)."""
    if pad == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=PAD_MODES[mode])


def shifted_view(x: np.ndarray, mirror: bool, dy: int, dx: int, pad_mode: str = "zero"
                 ) -> np.ndarray:
    """``x`` (N, C, H, W) mirrored and moved by (dy, dx) px (content goes down and right
    for positive values), the uncovered border filled as ``pad_mode`` says."""
    if mirror:
        x = x[..., ::-1]
    if dy == 0 and dx == 0:
        return np.ascontiguousarray(x)
    s = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = pad_images(x, s, pad_mode)
    return np.ascontiguousarray(padded[..., s - dy:s - dy + h, s - dx:s - dx + w])


class Transformer:
    """uint8 images (N, C, H, W) → float: ``(x - mean) * scale``, then augmentation.

    In TRAIN: mirroring, and a random window: the image is padded by ``shift`` px
    (``pad_mode``: zeros *after* mean subtraction, i.e. the mean colour, or the image
    reflected about its edges) and a window of ``crop_size`` (default: the input size)
    is cut at a random offset. In TEST the window is centred and nothing is mirrored.
    Images that drew the same offset are cut together, so the loop is over offsets,
    never over images.

    ``mirror``: ``"random"`` (or True) flips each image with probability 1/2, drawn
    afresh for every batch; ``"alternate"`` flips image i in epoch e when
    ``flip_bits[i]`` differs from the parity of e, so every image is seen mirrored
    in exactly every other epoch, starting from a random half (airbench's
    alternating flip: more varied than independent coin flips over few epochs).
    """

    def __init__(self, *, scale: float = 1.0, mean: np.ndarray | None = None,
                 mirror: bool | str = False, shift: int = 0, crop_size: int = 0,
                 train: bool = True, dtype=np.float32, pad_mode: str = "zero",
                 flip_bits: np.ndarray | None = None, resized_crop=None, erase=None):
        # resized_crop (data.augment.ResizedCrop) replaces the shifted window in TRAIN;
        # erase (data.augment.Erase) is applied last, to the output window.
        self.resized_crop, self.erase = resized_crop, erase
        self.scale, self.shift, self.crop = scale, shift, crop_size
        self.mirror = "random" if mirror is True else (mirror or None)
        if self.mirror == "alternate" and flip_bits is None:
            raise ValueError("alternating mirroring needs each image's first flip")
        self.flip_bits = flip_bits
        self.train, self.dtype, self.pad_mode = train, np.dtype(dtype), pad_mode
        self.mean = None if mean is None else np.asarray(mean, self.dtype)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = shape
        return (n, c, self.crop or h, self.crop or w)

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """``(x - mean) * scale`` in this transformer's dtype, nothing random."""
        x = images.astype(self.dtype)
        if self.mean is not None:
            x -= self.mean
        if self.scale != 1.0:
            x *= self.dtype.type(self.scale)
        return x

    def __call__(self, images: np.ndarray, rng: np.random.Generator,
                 index: np.ndarray | None = None, epoch: np.ndarray | None = None,
                 part: slice = slice(None)) -> np.ndarray:
        """Transform a batch; ``index`` (each image's place in the dataset) and
        ``epoch`` (the epoch each was drawn in) are needed by alternating mirroring.

        ``part``: only these rows are transformed and returned (one process's share of
        a batch split over several, see ``cnntrain.distributed``), but the random
        draws are those of the whole batch, so the rows come out as they would from
        the whole batch and the stream moves on by the same amount."""
        n = len(images)
        flip = None
        if self.train and self.mirror is not None:
            if self.mirror == "alternate":
                flip = self.flip_bits[index] != (np.asarray(epoch) % 2 == 1)
            else:
                flip = rng.random(n) < 0.5
        x = self.normalize(images[part])
        if flip is not None:
            flip = flip[part]
            x[flip] = x[flip, :, :, ::-1]
        if self.train and self.resized_crop is not None:
            # Whole batches only: the Data layer refuses these with a split batch.
            _, _, oh, ow = self.out_shape(x.shape)
            x = self.resized_crop(x, rng, oh, ow)
        else:
            x = self._window(x, rng, n, part)
        if self.train and self.erase is not None:
            x = self.erase(x, rng)
        return x

    def _window(self, x: np.ndarray, rng: np.random.Generator, n: int,
                part: slice) -> np.ndarray:
        """The random (TRAIN) or centred (TEST) window of ``x``, rows ``part`` of a
        batch of ``n``."""
        rows, c, h, w = x.shape
        s = self.shift
        oh, ow = self.crop or h, self.crop or w
        if s == 0 and (oh, ow) == (h, w):
            return x
        padded = pad_images(x, s, self.pad_mode)
        span_h, span_w = h + 2 * s - oh, w + 2 * s - ow
        if not self.train:
            return np.ascontiguousarray(padded[:, :, span_h // 2:span_h // 2 + oh,
                                               span_w // 2:span_w // 2 + ow])
        dy = rng.integers(0, span_h + 1, n)[part]
        dx = rng.integers(0, span_w + 1, n)[part]
        out = np.empty((rows, c, oh, ow), x.dtype)
        key = dy * (span_w + 1) + dx
        for k in np.unique(key):
            sel = np.flatnonzero(key == k)
            i, j = divmod(int(k), span_w + 1)
            out[sel] = padded[sel, :, i:i + oh, j:j + ow]
        return out
