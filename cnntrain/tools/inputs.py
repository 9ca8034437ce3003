"""Nets without datasets: Data layers replaced by Input layers of the same top shapes.

The gradient check, the dry-run summary, ``predict`` and the Caffe import build nets
this way, so none of them needs (or downloads) a dataset. The shapes come from the
config alone: the dataset's image shape, the batch size and the transform's crop.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cnntrain.backend import CPU, Device
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
    for name, value in (("shift", t.shift), ("test_shift", t.test_shift)):
        if value >= min(h, w):
            raise spec.error(f"{name} {value} is not smaller than the {h}x{w} images",
                             f"transform_param.{name}")
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


def distinct_values(shape, seed: int = 0, spread: float = 1.0) -> np.ndarray:
    """Random values in [-spread, spread], spread out and away from 0 (n values are
    about 2*spread/n apart, none within 1e-3 of 0), so ReLU and max-pool kinks are
    rarely within eps of an input."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    values = (rng.permutation(n) - n / 2) / n * 2 * spread + rng.uniform(-2e-4, 2e-4, n)
    values[np.abs(values) < 1e-3] += 2e-3
    return values.reshape(shape)



def label_blobs(net) -> dict[str, int]:
    """Blobs that loss/accuracy layers read as labels, with their class counts (the
    channel count of the scores they are compared with)."""
    labels: dict[str, int] = {}
    for node in net.nodes:
        if node.layer.takes_class_labels:
            classes = net.shapes[node.bottoms[0]][node.layer.axis]
            labels[node.bottoms[1]] = min(classes, labels.get(node.bottoms[1], classes))
    return labels


def _pixel_range(transform) -> tuple[float, float]:
    """(centre, half-width) of what a Data layer feeds: pixels 0..255, minus the mean
    if there is one, times the scale."""
    half = 127.5 * abs(transform.scale)
    centred = transform.mean_image or transform.mean_value is not None
    return (0.0 if centred else 127.5 * transform.scale), half


def net_with_random_inputs(exp, *, batch: int | None = None, seed: int = 0,
                           dtype=np.float32, phase: str = "TRAIN",
                           force_backward: bool = False, device: Device = CPU):
    """``exp``'s net with Data layers replaced by Input layers (batch ``batch``, or the
    config's) holding random inputs: labels are random valid classes, other inputs are
    spread away from kinks (:func:`distinct_values`) over the range the Data layer's
    transform would produce (pixels 0..255, mean subtracted, scaled), so activations
    have their real scale; inputs of the config's own Input layers lie in [-1, 1].
    ``device``: where the net runs (the inputs are drawn on the host either way). Returns the net and its label blobs (name -> class count)."""
    from cnntrain.layers import BuildContext
    from cnntrain.net import Net
    from cnntrain.rng import RngStreams

    spec, stand_ins = replace_data_layers(exp.net, batch)
    ranges = {s.data_top: _pixel_range(s.transform_param) for s in stand_ins}
    ctx = BuildContext(RngStreams(exp.solver.random_seed), dtype, notify=lambda _: None,
                       device=device)
    net = Net(spec, phase, ctx, force_backward=force_backward)
    labels = label_blobs(net)
    rng = np.random.default_rng(seed)
    k = 0
    for node in net.nodes:
        if node.layer.type_name != "Input":
            continue
        for top_id, value in zip(node.tops, node.layer.values):
            if top_id in labels:
                value[...] = rng.integers(0, labels[top_id], value.shape)
            else:
                centre, half = ranges.get(top_id, (0.0, 1.0))
                value[...] = centre + distinct_values(value.shape, seed + k, half)
                k += 1
    return net, labels
