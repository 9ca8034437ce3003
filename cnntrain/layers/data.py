"""The Data layer: batches of a dataset, transformed, as the net's first blobs."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from cnntrain.data import augment
from cnntrain.data.batches import BatchSampler
from cnntrain.data.store import dataset_split, mean_image, resolve_data_dir
from cnntrain.data.preprocess import Preprocessing
from cnntrain.errors import DatasetError
from cnntrain.layers.base import Layer, SetupError, register


@register("Data")
class Data(Layer):
    """Tops: ``data`` (N, C, H, W) and optionally ``label`` (N,).

    The images come from a native file (``data_param.hdf5``, written by ``cnntrain
    port``), else from ``<data dir>/<dataset>-<split>.h5`` when that file is there, else
    from the CIFAR readers. All three give the same pixels, labels and mean image.
    TRAIN shuffles each epoch and wraps around; TEST reads in order, and its last
    batch of a pass may be smaller, so a pass covers the test set exactly once.
    """

    param_blocks = ("data_param", "transform_param")
    num_bottom = (0, 0)
    num_top = (1, 2)

    def setup(self, bottom_shapes):
        p, t = self.param("data_param"), self.param("transform_param")
        data_dir = self.ctx.data_dir if p.source is None else p.source
        try:
            mean_image = self._open(p, t, data_dir)
            stored = (self.ctx.preprocessing or {}).get(self.name) \
                if self.phase == "TEST" else None
            # A snapshot's stored preprocessing spares recomputing the mean image from
            # the training split (test and predict need only the test images).
            self.preprocessing = stored or Preprocessing.from_transform_param(t, mean_image)
        except DatasetError as err:
            # Keep the dataset's own exit code; say which config and layer asked for it.
            raise DatasetError(f"{self.spec.where.file}: layer '{self.name}': {err}") from None
        shape = self.images.images.shape
        for name, value in (("shift", t.shift), ("test_shift", t.test_shift)):
            if value >= min(shape[2:]):
                raise SetupError(f"{name} {value} is not smaller than the {shape[2]}x{shape[3]} "
                                 "images", f"transform_param.{name}")
        if t.crop_size and t.crop_size > min(shape[2:]) + 2 * t.shift:
            raise SetupError(f"crop_size {t.crop_size} is larger than the {shape[2]}x{shape[3]} "
                             "images", "transform_param.crop_size")
        train = self.phase == "TRAIN"
        mirror = t.mirror and t.mirror_mode
        flip_bits = None
        if train and mirror == "alternate":
            # Each image's flip in even epochs, drawn once from a stream of its own; a
            # resumed run draws the same bits again when it builds the net.
            flip_bits = self.rngs.get(f"flip/{self.name}").random(shape[0]) < 0.5
        resized_crop, erase, self.mix = (augment.resized_crop_from(t), augment.erase_from(t),
                                         augment.mix_from(t))
        if resized_crop is not None and t.shift:
            raise SetupError("random resized crop replaces the shifted window: set shift to 0",
                             "transform_param.resized_crop")
        if self.mix is not None and len(self.spec.top) < 2:
            raise SetupError("mixup and CutMix mix the labels too: give the layer a label top",
                             "transform_param.mixup_alpha" if t.mixup_alpha
                             else "transform_param.cutmix_alpha")
        self.transform = self.preprocessing.transformer(
            train=train, mirror=mirror, flip_bits=flip_bits, dtype=self.dtype,
            resized_crop=resized_crop, erase=erase)
        # The test-time views ``cnntrain test`` averages over (see ``evaluate``).
        self.test_views, self.test_shift = t.test_views, t.test_shift
        shuffle = train if p.shuffle is None else p.shuffle
        self.sampler = BatchSampler(len(self.images.labels), p.batch_size, shuffle,
                                    self.rngs.get(f"shuffle/{self.name}"), wrap=train)
        self.prefetcher = None
        self._prefetch = train and p.prefetch   # started at the first batch: the streams are
        # then created in the same order as without it, so snapshots match byte for byte
        self.batch_size = p.batch_size
        # Several MPI processes: each draws the whole (global) batch, as one process
        # would, and runs its own rows of it (see cnntrain.distributed). TEST is not
        # split by rows: the ranks test different batches.
        self.rows = slice(None)
        rows = p.batch_size
        if train and self.ctx.shard is not None:
            try:
                self.ctx.shard.check(p.batch_size)
            except ValueError as err:
                raise SetupError(str(err), "data_param.batch_size") from None
            self.rows = self.ctx.shard.rows(p.batch_size)
            rows = p.batch_size // self.ctx.shard.size
            if resized_crop is not None or erase is not None or self.mix is not None:
                # Their draws are made per row of what they are given; a split batch
                # would draw differently from the whole one.
                raise SetupError("random resized crop, erasing, mixup and CutMix need the "
                                 "whole batch in one process (not yet with MPI)",
                                 "transform_param")
        self.last_indices: np.ndarray | None = None
        out = self.transform.out_shape((rows,) + shape[1:])
        # Mixed targets are (label_a, label_b, lam) per image (see data/augment.py).
        label_shape = (rows, 3) if self.mix is not None else (rows,)
        return [out] + ([label_shape] if len(self.spec.top) > 1 else [])

    def _open(self, p, t, data_dir) -> Callable[[], np.ndarray]:
        """Find the images (native file or readers); set ``images``, the class names and
        the fine→coarse map. Returns what gives the training split's mean image (called
        only when ``mean_image`` asks for it)."""
        from cnntrain.data.native import load_native, native_path

        split = p.split or "train"
        path = None
        if p.hdf5 is not None:
            path = Path(p.hdf5).expanduser()
            if not path.is_absolute():
                path = resolve_data_dir(None if data_dir is None else str(data_dir)) / path
            if not path.is_file():
                what = f"cnntrain port {p.dataset}" if p.dataset else "cnntrain port"
                raise DatasetError(f"data_param.hdf5: {path} not found; write it with `{what}` "
                                   "(with the same --data-dir)")
        elif p.dataset is not None:
            found = native_path(resolve_data_dir(None if data_dir is None else str(data_dir)),
                                p.dataset, split)
            path = found if found.is_file() else None
        self.fine_to_coarse = self.coarse_names = None
        if path is not None:
            native = load_native(path)
            if p.dataset is not None and native.dataset != p.dataset:
                raise SetupError(f"is {p.dataset}, but {path} holds {native.dataset}",
                                 "data_param.dataset")
            if p.split is not None and native.split != p.split:
                raise SetupError(f"is {p.split}, but {path} holds the {native.split} split",
                                 "data_param.split")
            self.dataset, self.split = native.dataset, native.split
            if p.labels == "coarse" and native.coarse_labels is None:
                raise SetupError(f"{native.dataset} has no coarse labels (only CIFAR-100 "
                                 "has superclasses)", "data_param.labels")
            self.images = native.image_set(p.labels)
            if p.labels == "fine" and native.fine_to_coarse is not None:
                self.fine_to_coarse = native.fine_to_coarse
                self.coarse_names = native.coarse_label_names
            return lambda: native.stats.mean_image
        self.dataset, self.split = p.dataset, split
        full = dataset_split(p.dataset, split, data_dir, self.ctx.notify)
        if p.labels == "coarse":
            if full.coarse_labels is None:
                raise SetupError(f"{p.dataset} has no coarse labels (only CIFAR-100 has "
                                 "superclasses)", "data_param.labels")
            from cnntrain.data.cifar import ImageSet

            self.images = ImageSet(full.images, full.coarse_labels, full.coarse_label_names,
                                   full.source)
        else:
            self.images = full
            if full.coarse_labels is not None:
                from cnntrain.data.native import fine_to_coarse

                self.fine_to_coarse = fine_to_coarse(full.labels, full.coarse_labels,
                                                     len(full.label_names), full.source)
                self.coarse_names = full.coarse_label_names
        return lambda: mean_image(p.dataset, data_dir, self.ctx.notify)

    @property
    def num_classes(self) -> int:
        return len(self.images.label_names)

    def describe(self) -> str:
        """What the labels are, for messages: "cifar100 (fine labels)"."""
        if self.dataset == "cifar100":
            return f"{self.dataset} ({self.param('data_param').labels} labels)"
        return str(self.dataset)

    def batches_per_pass(self) -> int:
        return math.ceil(len(self.images.labels) / self.batch_size)

    def rewind(self) -> None:
        self.sampler.rewind()

    def _cut(self, sampler: BatchSampler, rng: np.random.Generator):
        """One batch: the indices drawn by ``sampler``, their transformed images, and their
        mixed targets when mixup or CutMix is on (else None: the plain labels are used)."""
        idx = sampler.next()
        data = self.transform(self.images.images[idx], rng, idx, sampler.last_epochs, self.rows)
        if self.mix is None:
            return idx[self.rows], data, None
        data, targets = self.mix(data, self.images.labels[idx], rng)
        return idx, data, targets

    def forward(self, bottom):
        if self._prefetch and self.prefetcher is None:
            from cnntrain.data.prefetch import Prefetcher

            self.prefetcher = Prefetcher(self.sampler, self.rngs.get("augment"), self._cut)
        if self.prefetcher is not None:
            idx, data, targets = self.prefetcher.next()
        else:
            idx, data, targets = self._cut(self.sampler, self.rngs.get("augment"))
        self.last_indices = idx     # which images this batch holds (for reports)
        tops = [data]
        if len(self.spec.top) > 1:
            tops.append(self.images.labels[idx].astype(self.dtype) if targets is None
                        else targets)
        # Read and augmented on the host; handed to the device once, here.
        return [self.device.to_device(t) for t in tops]

    def backward(self, top_diff, propagate_down):
        return []

    def extra_state(self):
        return self.sampler.state()

    def load_extra_state(self, state):
        self.sampler.set_state(state)
