"""Running a TEST net over its data: averaged outputs, top-1/top-5, a confusion matrix,
superclass accuracy, and test-time augmentation (TTA)."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from cnntrain.backend import to_host
from cnntrain.data.transforms import shifted_view
from cnntrain.errors import CnnTrainError
from cnntrain.layers.loss import label_rank, scored_rows
from cnntrain.net import Net

if TYPE_CHECKING:
    from cnntrain.distributed import Communicator

def tta_views(name: str, shift: int = 2) -> tuple[tuple[bool, int, int], ...]:
    """The views of each test image for test-time augmentation, as (mirror, dy, dx):
    the image moved by (dy, dx) px (see ``data.transforms.shifted_view``). "flip": plain
    and mirrored; "flip+shift": 6 views as in the ConvNetJS CIFAR-10 demo, plain and
    mirrored, each centred, ``shift`` px up-left and ``shift`` px down-right."""
    if name == "flip":
        return ((False, 0, 0), (True, 0, 0))
    if name == "flip+shift":
        return tuple((m, d, d) for m in (False, True) for d in (0, -shift, shift))
    raise CnnTrainError(f"unknown TTA '{name}': expected one of {', '.join(TTA_NAMES)}")


TTA_NAMES = ("flip", "flip+shift")


@dataclass
class Scores:
    """Top-k accuracy and the confusion matrix of one way of predicting."""

    top1: float
    top5: float
    k5: int                         # min(5, classes): the k of "top5"
    confusion: np.ndarray           # rows: true class, columns: predicted
    # Images of each true class whose scores were not finite: no prediction, so in no
    # column of the confusion matrix, and a miss in every accuracy.
    unscored: np.ndarray | None = None


@dataclass
class ImagePredictions:
    """Each tested image's label and single-view prediction, by its place in the split."""

    index: np.ndarray           # position of the image in the dataset split
    label: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray      # softmax probability of the predicted class

    def confident_mistakes(self, count: int) -> np.ndarray:
        """Positions (into these arrays) of the ``count`` wrong predictions made with the
        highest confidence, most confident first."""
        wrong = np.flatnonzero(self.predicted != self.label)
        order = np.argsort(-self.confidence[wrong], kind="stable")
        return wrong[order[:count]]


@dataclass
class Evaluation:
    """Outputs averaged over images (batches weighted by their size)."""

    outputs: dict[str, float]
    loss: float
    images: int
    accuracy_blob: str | None = None
    confusion: np.ndarray | None = None     # rows: true class, columns: predicted
    class_names: list[str] = field(default_factory=list)
    single: Scores | None = None            # one view per image (the net as it is)
    tta: Scores | None = None               # the softmax averaged over the TTA views
    tta_name: str | None = None
    tta_views: int = 1                      # how many views the TTA scores average
    fine_to_coarse: np.ndarray | None = None   # CIFAR-100 fine labels: superclass of each
    coarse_names: list[str] = field(default_factory=list)
    predictions: ImagePredictions | None = None   # single view, when the data layer says
    #                                               which images each batch held
    nonfinite: str = ""     # where the scores first stopped being finite, if they did

    @property
    def nonfinite_note(self) -> str | None:
        """One line on images whose scores were NaN or infinite (counted as misses)."""
        lost = sum(int(s.unscored.sum()) for s in (self.single,) if s is not None
                   and s.unscored is not None)
        if not self.nonfinite and not lost:
            return None
        return (f"warning: the net's outputs are not finite ({self.nonfinite or 'in the scores'}"
                f"): the scores of {lost} of {self.images} images are NaN or infinite and "
                "count as wrong")

    @property
    def accuracy(self) -> float | None:
        return self.outputs.get(self.accuracy_blob) if self.accuracy_blob else None

    @property
    def best(self) -> Scores | None:
        """The TTA scores when TTA ran, else the single-view ones."""
        return self.tta or self.single

    def per_class(self, confusion: np.ndarray | None = None,
                  names: list[str] | None = None) -> list[tuple[str, float, int]]:
        """(class name, accuracy, images) for every class, worst first (classes without
        test images last)."""
        confusion = self.confusion if confusion is None else confusion
        if confusion is None:
            return []
        totals = confusion.sum(axis=1) + self._unscored(confusion)
        acc = np.divide(np.diag(confusion), totals, out=np.zeros(len(totals)),
                        where=totals > 0)
        names = names or self.class_names or [str(i) for i in range(len(totals))]
        rows = [(names[i], float(acc[i]), int(totals[i])) for i in range(len(totals))]
        return sorted(rows, key=lambda r: (r[2] == 0, r[1]))

    def _unscored(self, confusion: np.ndarray) -> np.ndarray | int:
        """The unscored images per true class of the scores whose confusion matrix this is."""
        for scores in (self.single, self.tta):
            if scores is not None and scores.confusion is confusion \
                    and scores.unscored is not None:
                return scores.unscored
        return 0

    def superclass_confusion(self, confusion: np.ndarray | None = None) -> np.ndarray | None:
        """The confusion matrix with fine classes merged into their superclasses."""
        confusion = self.confusion if confusion is None else confusion
        if confusion is None or self.fine_to_coarse is None:
            return None
        groups = len(self.coarse_names)
        mapping = np.asarray(self.fine_to_coarse)
        if len(mapping) != len(confusion) or mapping.max() < 0:
            return None
        merged = np.zeros((groups + 1, groups + 1), np.int64)   # last row/col: unmapped
        idx = np.where(mapping >= 0, mapping, groups)
        np.add.at(merged, (idx[:, None], idx[None, :]), confusion)
        return merged[:groups, :groups]

    def superclass_accuracy(self, confusion: np.ndarray | None = None) -> float | None:
        """Fine predictions counted right when they fall in the true superclass."""
        merged = self.superclass_confusion(confusion)
        confusion = self.confusion if confusion is None else confusion
        total = confusion.sum() + np.sum(self._unscored(confusion))
        return None if merged is None or total == 0 else float(np.trace(merged) / total)


def _accuracy_node(net: Net):
    for node in net.nodes:
        if node.layer.type_name == "Accuracy":
            return node
    return None


def _scored_node(net: Net):
    """The layer whose bottoms are (scores, labels): an Accuracy, else a SoftmaxWithLoss."""
    node = _accuracy_node(net)
    if node is None:
        node = next((n for n in net.nodes if n.layer.type_name == "SoftmaxWithLoss"), None)
    return node


def _rows(scores: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(scores, axis, -1).reshape(-1, scores.shape[axis])


def _softmax(rows: np.ndarray) -> np.ndarray:
    e = np.exp(rows - rows.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _forward_from(net: Net, data_node, tops: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Net.forward with the data layer's tops given (its sampler does not move)."""
    blobs: dict[str, np.ndarray] = {}
    for node in net.nodes:
        outs = tops if node is data_node else node.layer.forward([blobs[b] for b in node.bottoms])
        for top_id, value in zip(node.tops, outs):
            blobs[top_id] = value
    return blobs


class _Tally:
    """Top-1, top-k (by ``label_rank``, as the Accuracy layer counts) and the confusion
    matrix, accumulated over batches."""

    def __init__(self, classes: int):
        self.k = min(5, classes)
        self.hits1 = self.hitsk = self.count = 0
        self.confusion = np.zeros((classes, classes), np.int64)
        self.unscored = np.zeros(classes, np.int64)
        self.images: list[tuple[np.ndarray, ...]] = []   # (index, label, predicted, confidence)

    def add(self, rows: np.ndarray, labels: np.ndarray, ignore: int | None,
            indices: np.ndarray | None = None) -> None:
        """Count a batch; ``indices`` (the images' places in the split, one per row)
        also keeps each image's prediction."""
        valid = labels != ignore if ignore is not None else np.ones(len(labels), bool)
        rows, labels = rows[valid], labels[valid]
        rank = label_rank(rows, labels)
        self.hits1 += int((rank < 1).sum())
        self.hitsk += int((rank < self.k).sum())
        self.count += len(labels)
        scored = scored_rows(rows)
        np.add.at(self.unscored, labels[~scored], 1)
        rows, labels = rows[scored], labels[scored]
        predicted = rows.argmax(axis=1)
        np.add.at(self.confusion, (labels, predicted), 1)
        if indices is not None:
            confidence = _softmax(rows)[np.arange(len(rows)), predicted]
            self.images.append((np.asarray(indices)[valid][scored], labels, predicted,
                                confidence))

    def predictions(self) -> ImagePredictions | None:
        if not self.images:
            return None
        return ImagePredictions(*(np.concatenate(parts) for parts in zip(*self.images)))

    def scores(self) -> Scores:
        n = max(self.count, 1)
        return Scores(self.hits1 / n, self.hitsk / n, self.k, self.confusion, self.unscored)


# NaN and overflow in the scores are counted (as misses, see ``Evaluation.nonfinite``)
# and reported once, not warned about at every operation.
@np.errstate(over="ignore", invalid="ignore", divide="ignore")
def evaluate(net: Net, iterations: int | None = None, tta: str | None = None,
             comm: "Communicator | None" = None,
             progress: Callable[[int], Any] | None = None) -> Evaluation:
    """Forward ``iterations`` batches, or exactly one pass over the test data if None.

    ``progress(batches)``, if given, makes a progress bar (``cnntrain.progress``) that
    is advanced once per batch and closed at the end.

    With ``tta`` ("flip" or "flip+shift"), each batch is also run through the net in
    the other views of :func:`tta_views` (shifted by the Data layer's ``test_shift``,
    the border filled as its ``pad_mode`` says) and the softmax of the scores is
    averaged.

    With ``comm`` (several MPI processes) rank r tests batches r, r + N, ... and the
    counts are summed over the ranks: every rank gets the result of the whole test
    (without per-image predictions).
    """
    data_layers = net.data_layers()
    views: tuple[tuple[bool, int, int], ...] = ()
    if tta is not None:
        views = tta_views(tta, data_layers[0].test_shift if data_layers else 2)
    for layer in data_layers:
        layer.rewind()
    if iterations is None:
        iterations = data_layers[0].batches_per_pass() if data_layers else 1
    acc_node = _accuracy_node(net)
    scored = _scored_node(net)
    data_node = None
    if tta is not None:
        nodes = [n for n in net.nodes if n.layer in data_layers]
        if len(nodes) != 1 or scored is None:
            raise CnnTrainError("--tta needs a TEST net with one Data layer and an Accuracy or "
                                "SoftmaxWithLoss layer")
        data_node = nodes[0]
    sums: dict[str, float] = {}
    loss_sum, images = 0.0, 0
    single = averaged = None
    nonfinite = ""
    bar = progress(iterations) if progress is not None else None
    for i in range(iterations):
        if bar is not None:
            bar.update(1)
        if comm is not None and i % comm.size != comm.rank:
            for layer in data_layers:      # another rank tests this batch
                layer.sampler.next()
            continue
        loss = net.forward()
        if not nonfinite and not np.isfinite(loss):
            nonfinite = net.first_nonfinite_output() or f"the loss is {loss}"
        batch = next(iter(net.blobs.values())).shape[0] if net.blobs else 1
        images += batch
        loss_sum += loss * batch
        for name, value in net.outputs.items():
            if np.ndim(value) == 0:
                sums[name] = sums.get(name, 0.0) + float(value) * batch
        if scored is None:
            continue
        axis, ignore = scored.layer.axis, getattr(scored.layer, "ignore", None)
        # Counted on the host: the scores and labels come over once per batch.
        scores = to_host(net.blobs[scored.bottoms[0]])
        labels = to_host(net.blobs[scored.bottoms[1]]).reshape(-1).astype(np.int64)
        rows = _rows(scores, axis).astype(np.float64)
        if not nonfinite and not scored_rows(rows).all():
            nonfinite = net.first_nonfinite_output()
        if single is None:
            single = _Tally(rows.shape[1])
        indices = getattr(data_layers[0], "last_indices", None) if data_layers else None
        if indices is not None and not len(indices) == len(rows) == len(labels):
            indices = None     # several score rows per image: no one prediction each
        single.add(rows, labels, ignore, indices)
        if data_node is not None:
            tops = [net.blobs[t] for t in data_node.tops]
            probs = _softmax(rows)
            layer = data_node.layer
            batch_images = to_host(tops[0])
            for mirror, dy, dx in views[1:]:
                moved = shifted_view(batch_images, mirror, dy, dx, layer.transform.pad_mode)
                blobs = _forward_from(net, data_node, [layer.device.to_device(moved)] + tops[1:])
                probs += _softmax(_rows(to_host(blobs[scored.bottoms[0]]), axis).astype(np.float64))
            if averaged is None:
                averaged = _Tally(rows.shape[1])
            averaged.add(probs / len(views), labels, ignore)
    if bar is not None:
        bar.close()
    if comm is not None:
        loss_sum, images, single, averaged = _sum_over_ranks(
            comm, net, scored, loss_sum, images, sums, single, averaged, tta is not None)
    outputs = {k: v / max(images, 1) for k, v in sums.items()}
    names, mapping, coarse = [], None, []
    if data_layers and hasattr(data_layers[0], "images"):
        names = list(data_layers[0].images.label_names)
        mapping = getattr(data_layers[0], "fine_to_coarse", None)
        coarse = list(getattr(data_layers[0], "coarse_names", None) or [])
    acc_blob = acc_node.layer.spec.top[0] if acc_node is not None else None
    single_scores = single.scores() if single is not None else None
    confusion = single_scores.confusion if single_scores is not None else None
    return Evaluation(outputs, loss_sum / max(images, 1), images, acc_blob, confusion, names,
                      single_scores, averaged.scores() if averaged is not None else None,
                      tta, len(views) or 1, mapping if coarse else None, coarse,
                      single.predictions() if single is not None and comm is None else None,
                      nonfinite)


def _sum_over_ranks(comm: "Communicator", net: Net, scored, loss_sum: float, images: int,
                    sums: dict[str, float], single: "_Tally | None",
                    averaged: "_Tally | None", with_tta: bool):
    """Add up the sums and tallies of all ranks in one float64 buffer. Its layout comes
    from the net, not from what this rank ran, so a rank that tested no batch still
    sends zeros of the right shape; ``sums`` is completed in place."""
    for name, blob in net.output_ids.items():
        if net.shapes[blob] == ():
            sums.setdefault(name, 0.0)
    names = sorted(sums)
    tallies = []
    if scored is not None:
        classes = net.shapes[scored.bottoms[0]][scored.layer.axis]
        single = single or _Tally(classes)
        tallies.append(single)
        if with_tta:
            averaged = averaged or _Tally(classes)
            tallies.append(averaged)
    parts = [np.array([loss_sum, images] + [sums[n] for n in names], np.float64)]
    for tally in tallies:
        parts.append(np.array([tally.hits1, tally.hitsk, tally.count], np.float64))
        parts.append(tally.confusion.reshape(-1).astype(np.float64))
        parts.append(tally.unscored.astype(np.float64))
    buf = np.concatenate(parts)
    comm.sum_in_place(buf, "the test reduction")
    loss_sum, images = float(buf[0]), int(buf[1])
    for i, name in enumerate(names):
        sums[name] = float(buf[2 + i])
    offset = 2 + len(names)
    for tally in tallies:
        tally.hits1, tally.hitsk, tally.count = (int(v) for v in buf[offset:offset + 3])
        size = tally.confusion.size
        tally.confusion = buf[offset + 3:offset + 3 + size].astype(np.int64).reshape(
            tally.confusion.shape)
        offset += 3 + size
        tally.unscored = buf[offset:offset + len(tally.unscored)].astype(np.int64)
        offset += len(tally.unscored)
    return loss_sum, images, single, averaged


# ---------------------------------------------------------------- confusion files
PLOT_HINT = "pip install 'cnntrain[plot]' (or pip install matplotlib)"


def write_confusion_csv(path: Path, confusion: np.ndarray, names: list[str]) -> None:
    """Rows: true class, columns: predicted class, with the class names as headers."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["true \\ predicted"] + list(names))
            for name, row in zip(names, confusion):
                out.writerow([name] + [int(v) for v in row])
    except OSError as exc:
        raise CnnTrainError(f"cannot write {path}: {exc.strerror or exc}") from None


def plot_confusion(path: Path, confusion: np.ndarray, names: list[str], title: str) -> bool:
    """Draw the row-normalized confusion matrix to a PNG; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    totals = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    n = len(names)
    size = min(4 + 0.22 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    font = max(3.0, min(9.0, 0.5 * size * 0.8 * 72 / max(n, 1)))   # half a cell, in points
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise CnnTrainError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return True
