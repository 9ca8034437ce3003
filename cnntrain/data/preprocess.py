"""Preprocessing: how a Data layer turns a dataset's pixels into the net's input.

``(x - mean) * scale``, then a window of ``crop_size`` (centred in TEST) out of the
image padded by ``shift`` px. It is worked out once, from the layer's
``transform_param`` and the dataset (the training split's mean image), here; the Data
layer's transforms in training and test and ``cnntrain predict`` all start from it.

Snapshots store it per TEST Data layer, so ``test`` and ``predict`` need neither the
training images nor the config's dataset to rebuild it::

    /preprocess/<layer>/mean     (C, 1, 1) mean values or the (C, H, W) mean image
    /preprocess/<layer> attrs    scale, crop_size, shift, pad_mode
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from cnntrain.data.transforms import Transformer


@dataclass(frozen=True)
class Preprocessing:
    """The deterministic part of a Data layer's transform."""

    scale: float = 1.0
    mean: np.ndarray | None = None      # (C, 1, 1) mean values or a float32 (C, H, W) image
    crop_size: int = 0
    shift: int = 0
    pad_mode: str = "zero"

    @classmethod
    def from_transform_param(cls, t, mean_image: Callable[[], np.ndarray]) -> "Preprocessing":
        """From a validated ``transform_param`` block; ``mean_image()`` gives the training
        split's mean image and is called only when ``mean_image: true`` asks for it
        (validation makes ``mean_image`` and ``mean_value`` exclusive)."""
        if t.mean_image:
            mean = np.asarray(mean_image(), np.float32)
        elif t.mean_value is not None:
            mean = np.asarray(t.mean_value, np.float64).reshape(-1, 1, 1)
        else:
            mean = None
        return cls(scale=float(t.scale), mean=mean, crop_size=int(t.crop_size),
                   shift=int(t.shift), pad_mode=str(t.pad_mode))

    def transformer(self, *, train: bool = False, mirror: bool | str = False,
                    flip_bits: np.ndarray | None = None, dtype=np.float32,
                    **augmentation) -> Transformer:
        """The Transformer applying this preprocessing (plus, in TRAIN, the random
        mirroring and window and the ``augmentation`` keywords of Transformer, such as
        ``resized_crop`` and ``erase``, that the Data layer asks for)."""
        return Transformer(scale=self.scale, mean=self.mean, mirror=mirror, shift=self.shift,
                           crop_size=self.crop_size, train=train, dtype=dtype,
                           pad_mode=self.pad_mode, flip_bits=flip_bits, **augmentation)

    # --- snapshots ---------------------------------------------------------------------
    def write(self, group) -> None:
        """Into an HDF5 group (``/preprocess/<layer>``)."""
        group.attrs.update(scale=self.scale, crop_size=self.crop_size, shift=self.shift,
                           pad_mode=self.pad_mode)
        if self.mean is not None:
            group.create_dataset("mean", data=self.mean)    # float64 values stay exact

    @classmethod
    def read(cls, group, where: str) -> "Preprocessing":
        """From an HDF5 group written by :meth:`write`; a ValueError says what is wrong."""
        attrs = group.attrs
        missing = {"scale", "crop_size", "shift", "pad_mode"} - set(attrs)
        if missing:
            raise ValueError(f"{where} lacks {', '.join(sorted(missing))}")
        pad_mode = attrs["pad_mode"]
        if isinstance(pad_mode, bytes):
            pad_mode = pad_mode.decode("utf-8", "replace")
        scale = float(attrs["scale"])
        crop_size, shift = int(attrs["crop_size"]), int(attrs["shift"])
        if not np.isfinite(scale) or crop_size < 0 or shift < 0 or pad_mode not in ("zero",
                                                                                    "reflect"):
            raise ValueError(f"{where} holds an invalid scale, crop_size, shift or pad_mode")
        mean = None
        if "mean" in group:
            mean = np.asarray(group["mean"][()])
            if mean.dtype.kind != "f" or mean.ndim != 3 or not np.all(np.isfinite(mean)):
                raise ValueError(f"{where}/mean must be a finite (C, 1, 1) or (C, H, W) array, "
                                 f"not {mean.shape}")
        return cls(scale=scale, mean=mean, crop_size=crop_size, shift=shift, pad_mode=pad_mode)
