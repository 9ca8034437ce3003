"""Datasets: the CIFAR readers and where their files live.

The names below load on first use, so importing a sibling module (``batches``,
``transforms``) does not pull in the readers and their archive and network code.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cnntrain.data.cifar import ImageSet, default_data_dir, load_cifar, resolve_data_dir

__all__ = ["ImageSet", "load_cifar", "resolve_data_dir", "default_data_dir"]


def __getattr__(name: str):
    if name in __all__:
        from cnntrain.data import cifar

        return getattr(cifar, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
