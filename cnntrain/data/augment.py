"""TRAIN-time augmentations beyond Caffe's: random resized crop, Cutout / random
erasing, and mixup / CutMix with the mixed targets their loss needs.

Everything here draws from the generator it is handed (the Data layer's augmentation
stream, the one the prefetcher copies and restores), so a batch is a pure function of
that stream's state and a resumed run cuts the same batches. Every sampler is
vectorized over the batch: a fixed number of draws per image, never a loop that
draws until something fits (which would make the number of draws data-dependent).

Mixed targets travel as a label blob of shape (N, 3): ``(label_a, label_b, lam)``
per image, meaning "lam of class a and 1 - lam of class b". SoftmaxWithLoss (and the
other softmax cross-entropies) then use ``lam * onehot(a) + (1 - lam) * onehot(b)``
as the target, so the loss is exactly ``lam * CE(a) + (1 - lam) * CE(b)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# transform_param fields that only make sense while training (the validator refuses
# them on a Data layer in the TEST phase), with their "off" values.
TRAIN_ONLY_FIELDS = {
    "erase_prob": 0.0,
    "resized_crop": False,
    "mixup_alpha": 0.0,
    "cutmix_alpha": 0.0,
}

# Tries per image for a resized crop that fits (as torchvision's RandomResizedCrop);
# an image whose tries all fail gets the whole image.
CROP_TRIES = 10


def _uniform_log(rng: np.random.Generator, lo: float, hi: float, size) -> np.ndarray:
    """Aspect ratios drawn uniformly in log space, so r and 1/r are equally likely."""
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def sample_boxes(rng: np.random.Generator, n: int, h: int, w: int,
                 scale: tuple[float, float], ratio: tuple[float, float]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per image a box of area ``U(scale) * h * w`` and aspect ratio (width / height)
    log-uniform in ``ratio``, placed uniformly where it fits; ``CROP_TRIES`` tries each.

    Returns (top, left, height, width, found): ``found`` is False where no try fitted
    (then the box is the whole image). The same draws are made whatever fits.
    """
    area = rng.uniform(scale[0], scale[1], (n, CROP_TRIES)) * (h * w)
    r = _uniform_log(rng, ratio[0], ratio[1], (n, CROP_TRIES))
    bw = np.rint(np.sqrt(area * r)).astype(np.int64)
    bh = np.rint(np.sqrt(area / r)).astype(np.int64)
    fits = (bw >= 1) & (bh >= 1) & (bw <= w) & (bh <= h)
    pos = rng.random((n, 2))          # where the box goes, as a fraction of the free span
    found = fits.any(axis=1)
    first = np.argmax(fits, axis=1)
    rows = np.arange(n)
    bh = np.where(found, bh[rows, first], h)
    bw = np.where(found, bw[rows, first], w)
    top = np.minimum((pos[:, 0] * (h - bh + 1)).astype(np.int64), h - bh)
    left = np.minimum((pos[:, 1] * (w - bw + 1)).astype(np.int64), w - bw)
    return top, left, bh, bw, found


def resize_boxes(x: np.ndarray, top, left, bh, bw, out_h: int, out_w: int) -> np.ndarray:
    """Each image's box of ``x`` (N, C, H, W) resized bilinearly to (out_h, out_w).

    Pixel centres are aligned (``align_corners=False``, as PIL, OpenCV and PyTorch):
    output pixel i samples the box at ``(i + 0.5) * size / out - 0.5``, clamped to the
    box, so only the box's own pixels contribute. One gather for the whole batch.
    """
    n = len(x)

    def axis(start, size, out):
        pos = start[:, None] + (np.arange(out) + 0.5) * (size[:, None] / out) - 0.5
        pos = np.clip(pos, start[:, None], (start + size - 1)[:, None])
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, (start + size - 1)[:, None])
        return lo, hi, (pos - lo).astype(x.dtype)

    y0, y1, fy = axis(np.asarray(top), np.asarray(bh), out_h)
    x0, x1, fx = axis(np.asarray(left), np.asarray(bw), out_w)
    img = np.arange(n)[:, None, None]
    xc = np.moveaxis(x, 1, -1)                      # (N, H, W, C): gathers whole pixels

    def gather(ys, xs):
        return xc[img, ys[:, :, None], xs[:, None, :]]          # (N, out_h, out_w, C)

    fy, fx = fy[:, :, None, None], fx[:, None, :, None]
    top_row = gather(y0, x0) * (1 - fx) + gather(y0, x1) * fx
    bottom_row = gather(y1, x0) * (1 - fx) + gather(y1, x1) * fx
    out = top_row * (1 - fy) + bottom_row * fy
    return np.ascontiguousarray(np.moveaxis(out, -1, 1))


@dataclass(frozen=True)
class ResizedCrop:
    """Random resized crop (Szegedy et al. 2015; torchvision's RandomResizedCrop): a box
    of a random share ``scale`` of the image's area and aspect ratio ``ratio``, resized
    bilinearly to the output size."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, x: np.ndarray, rng: np.random.Generator, out_h: int, out_w: int
                 ) -> np.ndarray:
        n, _, h, w = x.shape
        top, left, bh, bw, _ = sample_boxes(rng, n, h, w, self.scale, self.ratio)
        return resize_boxes(x, top, left, bh, bw, out_h, out_w)


@dataclass(frozen=True)
class Erase:
    """Cutout (DeVries & Taylor 2017) or random erasing (Zhong et al. 2017).

    With probability ``prob`` per image, a box is filled with ``value`` (in the
    normalized space: 0 is the mean colour once the mean is subtracted) or, with
    ``fill="random"``, with standard normal noise. ``size > 0`` is Cutout: a
    ``size`` x ``size`` square centred anywhere in the image, clipped at its edges.
    ``size == 0`` is random erasing: a box of area share ``scale`` and aspect ratio
    ``ratio`` placed inside the image (no box where ``CROP_TRIES`` tries all fail).
    """

    prob: float
    size: int = 0
    scale: tuple[float, float] = (0.02, 1 / 3)
    ratio: tuple[float, float] = (0.3, 3.3)
    fill: str = "value"
    value: float = 0.0

    def boxes(self, rng: np.random.Generator, n: int, h: int, w: int):
        """(top, left, height, width, erase) per image, heights 0 where nothing is erased."""
        erase = rng.random(n) < self.prob
        if self.size:
            cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
            y0 = np.clip(cy - self.size // 2, 0, h)
            x0 = np.clip(cx - self.size // 2, 0, w)
            y1 = np.clip(cy - self.size // 2 + self.size, 0, h)
            x1 = np.clip(cx - self.size // 2 + self.size, 0, w)
            top, left, bh, bw = y0, x0, y1 - y0, x1 - x0
        else:
            top, left, bh, bw, found = sample_boxes(rng, n, h, w, self.scale, self.ratio)
            erase &= found
        return top, left, np.where(erase, bh, 0), np.where(erase, bw, 0), erase

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, c, h, w = x.shape
        top, left, bh, bw, erase = self.boxes(rng, n, h, w)
        mask = box_mask(top, left, bh, bw, h, w)                   # (N, H, W)
        if self.fill == "random":
            noise = rng.standard_normal(x.shape).astype(x.dtype)
            return np.where(mask[:, None], noise, x)
        return np.where(mask[:, None], x.dtype.type(self.value), x)


def box_mask(top, left, bh, bw, h: int, w: int) -> np.ndarray:
    """(N, H, W) booleans: True inside each image's box."""
    ys, xs = np.arange(h), np.arange(w)
    top, left = np.asarray(top)[:, None], np.asarray(left)[:, None]
    in_y = (ys >= top) & (ys < top + np.asarray(bh)[:, None])
    in_x = (xs >= left) & (xs < left + np.asarray(bw)[:, None])
    return in_y[:, :, None] & in_x[:, None, :]


@dataclass(frozen=True)
class Mix:
    """mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019), one ``lam`` per batch.

    With probability ``prob`` a batch is mixed with a random permutation of itself:
    mixup blends whole images, ``lam * x + (1 - lam) * x[perm]``; CutMix pastes a box
    of the partner image whose side is ``sqrt(1 - lam)`` of the image's, centred
    anywhere and clipped, and then sets ``lam`` to the share of pixels actually kept.
    ``lam ~ Beta(alpha, alpha)``. With both alphas set, each mixed batch is one or the
    other with probability 1/2. Returns the images and the (N, 3) mixed targets.
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0

    def __call__(self, x: np.ndarray, labels: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
        n, _, h, w = x.shape
        # A fixed set of draws per batch, whichever branch is taken.
        mixed = rng.random() < self.prob
        use_cutmix = rng.random() < 0.5 if self.mixup_alpha and self.cutmix_alpha \
            else bool(self.cutmix_alpha)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        perm = rng.permutation(n)
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        labels = np.asarray(labels, np.float64).reshape(n)
        if not mixed:
            return x, np.stack([labels, labels, np.ones(n)], axis=1).astype(x.dtype)
        if use_cutmix:
            cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
            y0, y1 = np.clip([cy - cut_h // 2, cy - cut_h // 2 + cut_h], 0, h)
            x0, x1 = np.clip([cx - cut_w // 2, cx - cut_w // 2 + cut_w], 0, w)
            out = x.copy()
            out[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        else:
            out = x * x.dtype.type(lam) + x[perm] * x.dtype.type(1 - lam)
        targets = np.stack([labels, labels[perm], np.full(n, lam)], axis=1)
        return out, targets.astype(x.dtype)


def erase_from(t) -> Erase | None:
    """The Erase a ``transform_param`` block asks for, or None."""
    if not t.erase_prob:
        return None
    return Erase(prob=t.erase_prob, size=t.erase_size, scale=tuple(t.erase_scale),
                 ratio=tuple(t.erase_ratio), fill=t.erase_fill, value=t.erase_value)


def resized_crop_from(t) -> ResizedCrop | None:
    """The ResizedCrop a ``transform_param`` block asks for, or None."""
    if not t.resized_crop:
        return None
    return ResizedCrop(scale=tuple(t.resized_crop_scale), ratio=tuple(t.resized_crop_ratio))


def mix_from(t) -> Mix | None:
    """The Mix a ``transform_param`` block asks for, or None."""
    if not (t.mixup_alpha or t.cutmix_alpha):
        return None
    return Mix(mixup_alpha=t.mixup_alpha, cutmix_alpha=t.cutmix_alpha, prob=t.mix_prob)


# (field, lower bound or None, upper bound or None): two-value ranges the schema's
# "floats" kind cannot check alone (length, order).
RANGE_FIELDS = {
    "erase_scale": (0.0, 1.0),
    "erase_ratio": (0.0, None),
    "resized_crop_scale": (0.0, 1.0),
    "resized_crop_ratio": (0.0, None),
}


def range_problem(values, lo: float | None, hi: float | None) -> str | None:
    """Why ``values`` is not a [min, max] range within (lo, hi], or None."""
    if values is None or len(values) != 2:
        return "must be two numbers [min, max]"
    a, b = float(values[0]), float(values[1])
    if not a <= b:
        return f"min {a:g} is larger than max {b:g}"
    if lo is not None and not a > lo:
        return f"min {a:g} must be larger than {lo:g}"
    if hi is not None and b > hi:
        return f"max {b:g} must be at most {hi:g}"
    return None
