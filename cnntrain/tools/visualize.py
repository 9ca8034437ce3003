"""Pictures of what a net learned: the first convolution's filters, and the activation
maps of every convolution for one image (``cnntrain visualize`` and the run report).

Images are uint8 arrays for :mod:`cnntrain.tools.png`; no imaging library is needed.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cnntrain.backend import to_host
from cnntrain.errors import CnnTrainError
from cnntrain.tools.png import grid, to_uint8, upscale, write_png

CONVOLUTIONS = ("Convolution", "Deconvolution")
MAX_FILTERS = 256
MAX_INPUT_CHANNELS = 16      # filters of a non-RGB input: one gray tile per input channel
MAX_MAPS = 64
TILE = 36                    # filters and maps are enlarged to about this many pixels

# Viridis at 17 evenly spaced points (matplotlib's values): activation maps in colour.
_VIRIDIS = np.array([[68, 1, 84], [72, 24, 106], [71, 45, 123], [66, 64, 134], [59, 82, 139],
                     [51, 99, 141], [44, 114, 142], [38, 130, 142], [33, 145, 140],
                     [31, 160, 136], [40, 174, 128], [63, 188, 115], [94, 201, 98],
                     [132, 212, 75], [173, 220, 48], [216, 226, 25], [253, 231, 37]], np.float64)


def viridis(gray: np.ndarray) -> np.ndarray:
    """uint8 (...) → uint8 (..., 3) through the viridis colour map."""
    position = gray.astype(np.float64) / 255 * (len(_VIRIDIS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_VIRIDIS) - 2)
    frac = (position - low)[..., None]
    rgb = _VIRIDIS[low] * (1 - frac) + _VIRIDIS[low + 1] * frac
    return np.rint(rgb).astype(np.uint8)


def _factor(size: int) -> int:
    return max(1, min(8, math.ceil(TILE / max(size, 1))))


@dataclass
class Picture:
    """An image with what it shows."""

    name: str            # a layer name ("conv1"), "input", ...
    caption: str
    image: np.ndarray    # uint8 (H, W) or (H, W, 3)


def first_convolution(net):
    """The first Convolution (or Deconvolution) layer of ``net``, or None."""
    return next((n.layer for n in net.nodes if n.layer.type_name in CONVOLUTIONS), None)


def filter_picture(layer) -> Picture:
    """A convolution's filters as a grid: RGB tiles when the input has 3 channels,
    otherwise one gray tile per (filter, input channel), a row per filter. Each RGB
    filter is stretched to the full range on its own (its pattern, not its size);
    gray tiles share one scale per layer."""
    weights = to_host(layer.blobs[0].data).astype(np.float64)
    if layer.type_name == "Deconvolution":      # (C_in, C_out/group, kh, kw): one filter per input
        weights = weights.transpose(1, 0, 2, 3)
    count, channels, kh, kw = weights.shape
    shown = weights[:MAX_FILTERS]
    factor = _factor(max(kh, kw))
    if channels == 3:
        tiles = np.stack([to_uint8(f) for f in shown]).transpose(0, 2, 3, 1)
        image = grid(np.stack([upscale(t, factor) for t in tiles]), pad=2)
        what = f"{len(shown)} of {count}" if len(shown) < count else f"{count}"
        caption = f"{layer.name}: {what} filters of {kh}x{kw}x3, each scaled to its own range"
    else:
        cin = min(channels, MAX_INPUT_CHANNELS)
        rows = shown[:, :cin]
        limit = float(np.abs(rows).max()) or 1.0
        tiles = to_uint8(rows, -limit, limit).reshape(-1, kh, kw)
        image = grid(np.stack([upscale(t, factor) for t in tiles]), columns=cin, pad=2)
        caption = (f"{layer.name}: {len(shown)} of {count} filters, input channels "
                   f"{'all ' + str(channels) if cin == channels else f'1-{cin} of {channels}'}"
                   f" ({kh}x{kw}); gray 128 is 0")
    return Picture(layer.name, caption, image)


def activation_pictures(net, position: int = 0) -> list[Picture]:
    """After a forward of ``net``: the maps of each convolution's top for image
    ``position`` of the batch, as it is after any in-place layers (a ReLU applied in
    place shows), one colour scale per layer (darkest = its lowest value)."""
    pictures = []
    for node in net.nodes:
        layer = node.layer
        if layer.type_name not in CONVOLUTIONS:
            continue
        top = layer.spec.top[0]
        maps = to_host(net.output(top)[position]).astype(np.float64)
        shown = maps[:MAX_MAPS]
        low, high = float(shown.min()), float(shown.max())
        factor = _factor(max(maps.shape[1:]))
        tiles = np.stack([upscale(viridis(to_uint8(m, low, high)), factor) for m in shown])
        what = f"{len(shown)} of {len(maps)}" if len(shown) < len(maps) else f"{len(maps)}"
        caption = (f"{layer.name} → {top}: {what} maps of {maps.shape[1]}x{maps.shape[2]}, "
                   f"values {low:.3g} to {high:.3g}")
        pictures.append(Picture(layer.name, caption, grid(tiles, pad=2)))
    return pictures


def pixels_picture(pixels: np.ndarray, factor: int = 4) -> np.ndarray:
    """(C, H, W) 0..255 pixels as an enlarged RGB or gray image."""
    image = np.clip(np.rint(np.asarray(pixels, np.float64)), 0, 255).astype(np.uint8)
    image = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    return upscale(image, factor)


def safe_name(name: str) -> str:
    """A layer name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip(".") or "layer"


# ------------------------------------------------------------------------- the command
@dataclass
class Visualized:
    files: list[Path]
    top: list[tuple[int, str, float]]     # the image's top classes (index, name, probability)
    source: str


def visualize_snapshot(snapshot: str | Path, image: str | Path | None, output_dir: str | Path,
                       data_dir: str | None = None, test_index: int | None = None,
                       notify: Callable[[str], None] = print) -> Visualized:
    """Write ``input.png``, ``filters_<layer>.png`` (the first convolution) and
    ``activations_<n>_<layer>.png`` (each convolution, for the image) into
    ``output_dir``. The image is a file (as ``predict`` reads them) or, with
    ``test_index``, that image of the snapshot's test set."""
    from cnntrain.tools.predict import Predictor, load_inputs

    predictor = Predictor(snapshot, data_dir, notify=notify)
    channels, height, width = predictor.image_shape
    if test_index is not None:
        if predictor.dataset is None:
            raise CnnTrainError(f"--test-index needs a snapshot whose net reads a dataset; "
                                f"{snapshot} has an Input layer: give an image file")
        test = predictor.load_split("test")
        if not 0 <= test_index < len(test.labels):
            raise CnnTrainError(f"--test-index {test_index} is outside the test set "
                                f"(0 to {len(test.labels) - 1})")
        pixels = test.images[test_index:test_index + 1].astype(np.float32)
        source = (f"test image {test_index} of {predictor.dataset} "
                  f"({test.label_names[int(test.labels[test_index])]})")
    else:
        names, pixels = load_inputs([image], channels, (height, width))
        if len(pixels) > 1:
            notify(f"note: {image} holds {len(pixels)} images; showing the first")
        pixels, source = pixels[:1], names[0]
    net, probs = predictor.forward(pixels)
    row = probs[0]
    labels = predictor.class_names(len(row))
    top = [(int(i), labels[i], float(row[i])) for i in np.argsort(-row, kind="stable")[:3]]
    out = Path(output_dir)
    files = [write_png(out / "input.png", pixels_picture(pixels[0]))]
    conv = first_convolution(net)
    if conv is None:
        raise CnnTrainError(f"the net in {snapshot} has no Convolution layer to show")
    files.append(write_png(out / f"filters_{safe_name(conv.name)}.png",
                           filter_picture(conv).image))
    for n, picture in enumerate(activation_pictures(net), 1):
        files.append(write_png(out / f"activations_{n}_{safe_name(picture.name)}.png",
                               picture.image))
    return Visualized(files, top, source)
