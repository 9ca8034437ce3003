"""Nets without datasets: Data layers replaced by Input layers of the same top shapes.

The gradient check, the dry-run summary, ``predict`` and the Caffe import build nets
this way, so none of them needs (or downloads) a dataset. The shapes come from the
config alone: the dataset's image shape, the batch size and the transform's crop.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from cnntrain.config import parse_layer
from cnntrain.config.specs import LayerSpec, NetSpec

# Image shape (C, H, W) and class count of each dataset a Data layer can read.
DATASETS: dict[str, tuple[tuple[int, int, int], int]] = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
}


@dataclass(frozen=True)
class DataStandIn:
    """A Data layer that was replaced: its tops and what it would have read."""

    layer: str
    data_top: str
    label_top: str | None
    dataset: str
    classes: int
    data_param: Any          # the validated blocks of the original layer
    transform_param: Any


def data_top_shapes(spec: LayerSpec, batch: int | None = None) -> list[tuple[int, ...]]:
    """The top shapes a Data layer would produce: (N, C, H, W) and (N,) for labels."""
    p, t = spec.blocks["data_param"], spec.blocks["transform_param"]
    if p.dataset is None:
        raise spec.error("is required (cifar10 or cifar100)", "data_param.dataset")
    (c, h, w), _ = DATASETS[p.dataset]
    if t.shift >= min(h, w):
        raise spec.error(f"shift {t.shift} is not smaller than the {h}x{w} images",
                         "transform_param.shift")
    if t.crop_size:
        if t.crop_size > min(h, w) + 2 * t.shift:
            raise spec.error(f"crop_size {t.crop_size} is larger than the {h}x{w} images",
                             "transform_param.crop_size")
        h = w = t.crop_size
    n = batch or p.batch_size
    return [(n, c, h, w)] + ([(n,)] if len(spec.top) > 1 else [])


def input_layer_like(spec: LayerSpec, shapes: list[tuple[int, ...]]) -> LayerSpec:
    """An Input layer with ``spec``'s name, tops, phases and place in the file."""
    raw = {"name": spec.name, "type": "Input", "top": list(spec.top),
           "input_param": {"shape": [{"dim": list(s)} for s in shapes]}}
    new = parse_layer(raw, spec.where.file, 0)
    return dataclasses.replace(new, include=spec.include, exclude=spec.exclude, where=spec.where)


def replace_data_layers(net: NetSpec, batch: int | None = None,
                        keep: Callable[[LayerSpec], bool] | None = None
                        ) -> tuple[NetSpec, list[DataStandIn]]:
    """``net`` with every Data layer turned into an Input layer (batch ``batch``, or the
    layer's own batch_size), and layers for which ``keep`` is false left out."""
    layers, stand_ins = [], []
    for spec in net.layers:
        if keep is not None and not keep(spec):
            continue
        if spec.type == "Data":
            shapes = data_top_shapes(spec, batch)
            p = spec.blocks["data_param"]
            stand_ins.append(DataStandIn(spec.name, spec.top[0],
                                         spec.top[1] if len(spec.top) > 1 else None, p.dataset,
                                         DATASETS[p.dataset][1], p,
                                         spec.blocks["transform_param"]))
            spec = input_layer_like(spec, shapes)
        layers.append(spec)
    return dataclasses.replace(net, layers=tuple(layers)), stand_ins
