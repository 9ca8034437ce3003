"""Class probabilities for images, from a snapshot: ``cnntrain predict``.

The snapshot's config gives the TEST net; its Data layer becomes an Input layer and
layers that read labels (loss, accuracy) are left out. Images get the Data layer's
own transform (mean, scale, centre crop), so they are seen exactly as test images
are. Inputs are PNG/JPEG files (decoded by the optional Pillow) or ``.npy`` arrays
of pixel values on the 0..255 scale, uint8 or float, shaped H×W×C, C×H×W, N×C×H×W
or N×H×W×C. Images of another size are resized (bilinear, antialiased when
shrinking) to the dataset's size before the transform.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cnntrain.errors import CnnTrainError, DatasetError, SnapshotError
from cnntrain.layers.loss import scored_rows

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy",)
INSTALL_HINT = ("reading PNG/JPEG images needs Pillow: pip install 'cnntrain[image]' "
                "(or pip install pillow); .npy arrays work without it")
CHUNK = 64


@dataclass
class Prediction:
    source: str                              # the file, with [i] for an array's i-th image
    top: list[tuple[int, str, float]]        # (class index, class name, probability)


# ------------------------------------------------------------------------- reading inputs
def expand_inputs(paths) -> list[Path]:
    """Files as given, and the image/array files of folders (sorted, not recursive)."""
    out = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES + ARRAY_SUFFIXES)
            if not found:
                raise CnnTrainError(f"{path} holds no .png, .jpg, .jpeg or .npy files")
            out += found
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES + ARRAY_SUFFIXES:
                raise CnnTrainError(f"{path}: expected a .png, .jpg, .jpeg or .npy file")
            out.append(path)
        else:
            raise CnnTrainError(f"{path} not found")
    return out


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise CnnTrainError(INSTALL_HINT) from None
    return Image


# Far beyond any image a CIFAR-sized net is meant for; a header claiming more pixels is
# refused before decoding (a small "decompression bomb" file can claim gigapixels).
MAX_IMAGE_PIXELS = 1 << 26
MAX_ARRAY_VALUES = 1 << 30      # a .npy of images: 4 GiB of float32 at most


def read_image(path: Path, channels: int) -> np.ndarray:
    """A PNG/JPEG file as (C, H, W) uint8. 16-bit images are scaled to 8 bits (65535 →
    255), never clipped; 32-bit integer or float images are refused."""
    import warnings

    Image = _pillow()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise CnnTrainError(f"{path}: the image claims {width}x{height} pixels, more "
                                    f"than the {MAX_IMAGE_PIXELS} read at most")
            if img.mode.startswith("I;16"):
                wide = np.asarray(img).astype(np.float64)
                img = Image.fromarray(np.rint(wide / 257).astype(np.uint8), "L")
            elif img.mode in ("I", "F"):
                raise CnnTrainError(f"{path}: a {'32-bit integer' if img.mode == 'I' else 'float'}"
                                    " image; save it with 8 or 16 bits per channel")
            img = img.convert("L" if channels == 1 else "RGB")
            array = np.asarray(img, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise CnnTrainError(f"{path}: refused as a decompression bomb: {err}") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise CnnTrainError(f"{path}: cannot read the image: {err}") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def read_array(path: Path, channels: int) -> np.ndarray:
    """A ``.npy`` file as (N, C, H, W) pixel values."""
    from cnntrain.safe_npy import NpyError, read_npy

    try:
        array = read_npy(path, max_values=MAX_ARRAY_VALUES)
    except NpyError as err:
        raise CnnTrainError(f"{path}: not a readable .npy array of images: {err}") from None
    if array.dtype.kind not in "uif":
        raise CnnTrainError(f"{path}: holds {array.dtype} values; expected uint8 or float pixels")
    shape = array.shape
    if array.ndim == 2 and channels == 1:
        return array[None, None]
    if array.ndim == 3:
        if shape[-1] == channels:
            return array.transpose(2, 0, 1)[None]
        if shape[0] == channels:
            return array[None]
    if array.ndim == 4:
        if shape[1] == channels:
            return array
        if shape[-1] == channels:
            return array.transpose(0, 3, 1, 2)
    raise CnnTrainError(f"{path}: array of shape {shape}; expected H×W×{channels}, "
                        f"{channels}×H×W, N×{channels}×H×W or N×H×W×{channels}")


def _resample_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of a triangle filter, widened when shrinking so every
    input pixel counts (Pillow's antialiased bilinear)."""
    scale = size_in / size_out
    support = max(scale, 1.0)
    centres = (np.arange(size_out) + 0.5) * scale
    pixels = np.arange(size_in) + 0.5
    weights = np.maximum(0.0, 1.0 - np.abs(pixels[None, :] - centres[:, None]) / support)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights


def resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, C, H, W) → (N, C, height, width) as float32; unchanged sizes are only cast."""
    n, c, h, w = images.shape
    x = images.astype(np.float32)
    if (h, w) == (height, width):
        return x
    rows = _resample_matrix(h, height).astype(np.float32)
    cols = _resample_matrix(w, width).astype(np.float32)
    return np.einsum("ih,nchw,jw->ncij", rows, x, cols, optimize=True)


def load_inputs(paths, channels: int, size: tuple[int, int]) -> tuple[list[str], np.ndarray]:
    """Every image of ``paths`` as float32 (N, C, H, W) pixels at ``size``, with a name each."""
    names, arrays = [], []
    for path in expand_inputs(paths):
        if path.suffix.lower() in ARRAY_SUFFIXES:
            batch = read_array(path, channels)
            names += [f"{path}[{i}]" for i in range(len(batch))] if len(batch) > 1 else [str(path)]
        else:
            batch = read_image(path, channels)[None]
            names.append(str(path))
        arrays.append(resize(batch, *size))
    return names, np.concatenate(arrays) if arrays else np.zeros((0, channels) + size, np.float32)


# ------------------------------------------------------------------------- the model
def _softmax(x: np.ndarray) -> np.ndarray:
    from cnntrain.layers.loss import softmax

    return softmax(x.astype(np.float64), axis=1)


class Predictor:
    """The TEST net of a snapshot, fed through an Input layer."""

    def __init__(self, snapshot: str | Path, data_dir: str | None = None,
                 notify: Callable[[str], None] = print):
        from cnntrain.snapshot import load_snapshot, stored_experiment

        self.path = str(snapshot)
        self.snap = load_snapshot(snapshot)
        if self.snap.config is None:
            raise SnapshotError(f"{snapshot} holds no config (a weights-only file): predict "
                                "needs a snapshot written by cnntrain")
        self.exp = stored_experiment(self.snap)
        self.data_dir, self.notify = data_dir, notify
        layers = [s for s in self.exp.net.layers if s.in_phase("TEST")]
        self.data_spec = next((s for s in layers if s.type == "Data"), None)
        self.input_spec = next((s for s in layers if s.type == "Input"), None)
        if self.data_spec is None and self.input_spec is None:
            raise SnapshotError(f"the TEST net in {snapshot} has no Data or Input layer to "
                                "feed images into")
        self.label = (self.data_spec.top[1] if self.data_spec and len(self.data_spec.top) > 1
                      else None)
        scorer = next((s for s in layers if s.type in ("SoftmaxWithLoss", "Accuracy")), None)
        self.score_blob = scorer.bottom[0] if scorer else None
        self.dataset = self.data_spec.blocks["data_param"].dataset if self.data_spec else None
        self._net, self._net_batch = None, 0
        self._prep = None
        self._names: list[str] | None = None

    # --- shapes and transform ----------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) images are resized to before the transform."""
        if self.data_spec is not None:
            from cnntrain.tools.inputs import DATASETS

            return DATASETS[self.dataset][0]
        return tuple(self.input_spec.blocks["input_param"].shape[0][1:])

    def load_split(self, split: str):
        """The snapshot's dataset split, read from the data folder (never downloaded)."""
        from cnntrain.data.cifar import load_cifar, resolve_data_dir

        return load_cifar(self.dataset, split, resolve_data_dir(self.data_dir), download=False,
                          notify=self.notify)

    def preprocessing(self):
        """The TEST Data layer's preprocessing: as the snapshot stores it, or, for older
        snapshots, worked out from the config and the training split's mean image."""
        from cnntrain.data.preprocess import Preprocessing

        if self._prep is None:
            stored = self.snap.preprocessing.get(self.data_spec.name)
            self._prep = stored or Preprocessing.from_transform_param(
                self.data_spec.blocks["transform_param"], self._computed_mean)
        return self._prep

    def _computed_mean(self) -> np.ndarray:
        """The training split's mean image, for snapshots that do not store it."""
        stored = self._stored_mean()
        if stored is not None:
            return stored
        try:
            images = self.load_split("train").images
        except DatasetError as err:
            raise DatasetError(f"the net subtracts the mean image of {self.dataset}'s "
                               f"training split, and {self.path} does not store it; the "
                               f"dataset is needed to compute it ({err})") from None
        # Sums of uint8 pixels are exact in float64, so this equals
        # cnntrain.data.store.mean_image bit for bit.
        return (images.sum(axis=0, dtype=np.float64) / len(images)).astype(np.float32)

    def _stored_mean(self) -> np.ndarray | None:
        """A mean image kept by early snapshots (``transform/mean_image``), if any."""
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                ds = f.get("transform/mean_image")
                return None if ds is None else np.asarray(ds[()], np.float32)
        except OSError:
            return None

    def class_names(self, count: int) -> list[str]:
        """The dataset's class names when it is at hand, else the indices."""
        if self._names is None:
            self._names = []
            if self.dataset is not None:
                try:
                    self._names = list(self.load_split("test").label_names)
                except DatasetError:
                    self._names = []
        if len(self._names) == count:
            return self._names
        return [str(i) for i in range(count)]

    def transform(self, pixels: np.ndarray) -> np.ndarray:
        """The Data layer's TEST-phase transform of (N, C, H, W) pixels."""
        if self.data_spec is None:
            return pixels.astype(np.float32)
        transformer = self.preprocessing().transformer(train=False, dtype=np.float32)
        return transformer(pixels, np.random.default_rng(0))

    # --- the net ------------------------------------------------------------------------
    def build(self, batch: int):
        """The TEST net for ``batch`` images, fed by an Input layer, with the snapshot's
        weights; the layers that read labels are left out."""
        from cnntrain.layers import BuildContext
        from cnntrain.net import Net
        from cnntrain.rng import RngStreams
        from cnntrain.snapshot import copy_weights
        from cnntrain.tools.inputs import input_layer_like, replace_data_layers

        label = self.label

        def keep(spec) -> bool:
            return spec.in_phase("TEST") and (label is None or label not in spec.bottom)

        spec, _ = replace_data_layers(self.exp.net, batch, keep=keep)
        if self.data_spec is None:  # a deploy net: resize its Input layer to the batch
            import dataclasses

            shapes = [(batch,) + tuple(s[1:]) for s in self.input_spec.blocks["input_param"].shape]
            layers = tuple(input_layer_like(s, shapes) if s is self.input_spec else s
                           for s in spec.layers)
            spec = dataclasses.replace(spec, layers=layers)
        ctx = BuildContext(rngs=RngStreams(self.exp.solver.random_seed), dtype=np.float32,
                           notify=self.notify)
        net = Net(spec, "TEST", ctx)
        copy_weights(net, self.snap, strict=True)
        return net

    def _scores(self, net) -> tuple[np.ndarray, bool]:
        """(scores, already probabilities?) after a forward."""
        if self.score_blob is not None:
            return net.output(self.score_blob), False
        last = net.nodes[-1]
        return net.blobs[last.tops[0]], last.layer.type_name == "Softmax"

    def _net_for(self, batch: int):
        if self._net is None or self._net_batch != batch:
            self._net, self._net_batch = self.build(batch), batch
        return self._net

    def _run(self, net, x: np.ndarray) -> np.ndarray:
        """Forward transformed images (at most the net's batch); their probabilities."""
        feed = next(node.layer for node in net.nodes if node.layer.type_name == "Input")
        feed.values[0][...] = 0
        feed.values[0][:len(x)] = x
        net.forward()
        scores, is_prob = self._scores(net)
        scores = scores.reshape(scores.shape[0], -1)[:len(x)]
        unscored = int((~scored_rows(scores)).sum())
        if unscored:
            # A NaN or infinite score ranks nothing: no class can be named for the image.
            raise CnnTrainError(f"the net's scores are not finite for {unscored} of {len(x)} "
                                f"images ({net.first_nonfinite_output()}): no prediction")
        return scores.astype(np.float64) if is_prob else _softmax(scores)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, classes) probabilities for (N, C, H, W) pixels."""
        x = self.transform(pixels)
        n = len(x)
        if n == 0:
            return np.zeros((0, 0))
        net = self._net_for(min(CHUNK, n))
        return np.concatenate([self._run(net, x[start:start + CHUNK])
                               for start in range(0, n, self._net_batch)])

    def forward(self, pixels: np.ndarray):
        """The net after a forward of (N <= 64, C, H, W) pixels, with its blobs kept (for
        activation maps), and the images' probabilities."""
        if not 0 < len(pixels) <= CHUNK:
            raise ValueError(f"forward takes 1 to {CHUNK} images, got {len(pixels)}")
        net = self._net_for(len(pixels))
        return net, self._run(net, self.transform(pixels))

    def predict(self, paths, top_k: int = 5) -> list[Prediction]:
        channels, height, width = self.image_shape
        names, pixels = load_inputs(paths, channels, (height, width))
        probs = self.probabilities(pixels)
        classes = probs.shape[1] if probs.ndim == 2 else 0
        labels = self.class_names(classes)
        k = min(top_k, classes)
        out = []
        for name, row in zip(names, probs):
            order = np.argsort(-row, kind="stable")[:k]
            out.append(Prediction(name, [(int(i), labels[i], float(row[i])) for i in order]))
        return out
