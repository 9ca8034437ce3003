"""Datasets loaded once per process and shared by the TRAIN and TEST nets."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from cnntrain.data.cifar import ImageSet


def resolve_data_dir(value: str | None) -> Path:
    from cnntrain.data.cifar import resolve_data_dir as resolve

    return resolve(value)


@lru_cache(maxsize=8)
def _load(name: str, split: str, data_dir: Path, notify: Callable[[str], None]) -> "ImageSet":
    from cnntrain.data.cifar import load_cifar  # the readers load only when data is needed

    return load_cifar(name, split, data_dir, notify=notify)


def dataset_split(name: str, split: str, data_dir: str | Path | None,
                  notify: Callable[[str], None] = print) -> "ImageSet":
    """The images and labels of one split (loaded, or downloaded, on first use)."""
    return _load(name, split, resolve_data_dir(None if data_dir is None else str(data_dir)),
                 notify)


@lru_cache(maxsize=8)
def _mean(name: str, data_dir: Path, notify) -> np.ndarray:
    images = _load(name, "train", data_dir, notify).images
    total = np.zeros(images.shape[1:], np.float64)
    for start in range(0, len(images), 5000):  # bounded memory: no float copy of the whole set
        total += images[start:start + 5000].sum(axis=0, dtype=np.float64)
    return (total / len(images)).astype(np.float32)


def mean_image(name: str, data_dir: str | Path | None,
               notify: Callable[[str], None] = print) -> np.ndarray:
    """The per-pixel mean of the training split (what Caffe's compute_image_mean makes)."""
    return _mean(name, resolve_data_dir(None if data_dir is None else str(data_dir)), notify)
