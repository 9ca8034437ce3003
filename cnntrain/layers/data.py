"""The Data layer: batches of a dataset, transformed, as the net's first blobs."""
from __future__ import annotations

import math

import numpy as np

from cnntrain.data.batches import BatchSampler
from cnntrain.data.store import dataset_split, mean_image
from cnntrain.data.transforms import Transformer
from cnntrain.errors import DatasetError
from cnntrain.layers.base import Layer, SetupError, register


@register("Data")
class Data(Layer):
    """Tops: ``data`` (N, C, H, W) and optionally ``label`` (N,).

    TRAIN shuffles each epoch and wraps around; TEST reads in order, and its last
    batch of a pass may be smaller, so a pass covers the test set exactly once.
    """

    param_blocks = ("data_param", "transform_param")
    num_bottom = (0, 0)
    num_top = (1, 2)

    def setup(self, bottom_shapes):
        p, t = self.param("data_param"), self.param("transform_param")
        if p.dataset is None:
            raise SetupError("is required (cifar10 or cifar100)", "data_param.dataset")
        data_dir = self.ctx.data_dir if p.source is None else p.source
        try:
            self.images = dataset_split(p.dataset, p.split, data_dir, self.ctx.notify)
            mean = None
            if t.mean_image:
                mean = mean_image(p.dataset, data_dir, self.ctx.notify)
            elif t.mean_value is not None:
                if len(t.mean_value) not in (1, self.images.images.shape[1]):
                    raise SetupError(f"needs 1 or {self.images.images.shape[1]} values, got "
                                     f"{len(t.mean_value)}", "transform_param.mean_value")
                mean = np.asarray(t.mean_value).reshape(-1, 1, 1)
        except DatasetError as err:
            # Keep the dataset's own exit code; say which config and layer asked for it.
            raise DatasetError(f"{self.spec.where.file}: layer '{self.name}': {err}") from None
        shape = self.images.images.shape
        if t.crop_size and t.crop_size > min(shape[2:]) + 2 * t.shift:
            raise SetupError(f"crop_size {t.crop_size} is larger than the {shape[2]}x{shape[3]} "
                             "images", "transform_param.crop_size")
        train = self.phase == "TRAIN"
        self.transform = Transformer(scale=t.scale, mean=mean, mirror=t.mirror, shift=t.shift,
                                     crop_size=t.crop_size, train=train, dtype=self.dtype)
        shuffle = train if p.shuffle is None else p.shuffle
        self.sampler = BatchSampler(len(self.images.labels), p.batch_size, shuffle,
                                    self.rngs.get(f"shuffle/{self.name}"), wrap=train)
        self.batch_size = p.batch_size
        out = self.transform.out_shape((p.batch_size,) + shape[1:])
        return [out] + ([(p.batch_size,)] if len(self.spec.top) > 1 else [])

    @property
    def num_classes(self) -> int:
        return len(self.images.label_names)

    def batches_per_pass(self) -> int:
        return math.ceil(len(self.images.labels) / self.batch_size)

    def rewind(self) -> None:
        self.sampler.rewind()

    def forward(self, bottom):
        idx = self.sampler.next()
        data = self.transform(self.images.images[idx], self.rngs.get("augment"))
        tops = [data]
        if len(self.spec.top) > 1:
            tops.append(self.images.labels[idx].astype(self.dtype))
        return tops

    def backward(self, top_diff, propagate_down):
        return []

    def extra_state(self):
        return self.sampler.state()

    def load_extra_state(self, state):
        self.sampler.set_state(state)
