"""Running a TEST net over its data: averaged outputs and a confusion matrix."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnntrain.net import Net


@dataclass
class Evaluation:
    """Outputs averaged over images (batches weighted by their size)."""

    outputs: dict[str, float]
    loss: float
    images: int
    accuracy_blob: str | None = None
    confusion: np.ndarray | None = None     # rows: true class, columns: predicted
    class_names: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.outputs.get(self.accuracy_blob) if self.accuracy_blob else None

    def per_class(self) -> list[tuple[str, float, int]]:
        """(class name, accuracy, images) for every class, worst first."""
        if self.confusion is None:
            return []
        totals = self.confusion.sum(axis=1)
        acc = np.divide(np.diag(self.confusion), totals, out=np.zeros(len(totals)),
                        where=totals > 0)
        names = self.class_names or [str(i) for i in range(len(totals))]
        rows = [(names[i], float(acc[i]), int(totals[i])) for i in range(len(totals))]
        return sorted(rows, key=lambda r: r[1])


def _accuracy_node(net: Net):
    for node in net.nodes:
        if node.layer.type_name == "Accuracy":
            return node
    return None


def evaluate(net: Net, iterations: int | None = None) -> Evaluation:
    """Forward ``iterations`` batches, or exactly one pass over the test data if None."""
    data_layers = net.data_layers()
    for layer in data_layers:
        layer.rewind()
    if iterations is None:
        iterations = data_layers[0].batches_per_pass() if data_layers else 1
    acc_node = _accuracy_node(net)
    sums: dict[str, float] = {}
    loss_sum, images, confusion = 0.0, 0, None
    for _ in range(iterations):
        loss = net.forward()
        batch = next(iter(net.blobs.values())).shape[0] if net.blobs else 1
        images += batch
        loss_sum += loss * batch
        for name, value in net.outputs.items():
            if np.ndim(value) == 0:
                sums[name] = sums.get(name, 0.0) + float(value) * batch
        if acc_node is not None:
            scores = net.blobs[acc_node.bottoms[0]]
            labels = net.blobs[acc_node.bottoms[1]].reshape(-1).astype(np.int64)
            axis = acc_node.layer.axis
            pred = np.moveaxis(scores, axis, -1).reshape(-1, scores.shape[axis]).argmax(axis=1)
            classes = scores.shape[axis]
            if confusion is None:
                confusion = np.zeros((classes, classes), np.int64)
            np.add.at(confusion, (labels, pred), 1)
    outputs = {k: v / max(images, 1) for k, v in sums.items()}
    names = []
    if data_layers and hasattr(data_layers[0], "images"):
        names = list(data_layers[0].images.label_names)
    acc_blob = acc_node.layer.spec.top[0] if acc_node is not None else None
    return Evaluation(outputs, loss_sum / max(images, 1), images, acc_blob, confusion, names)
