"""The graph: layers in file order over named blobs, with Caffe's semantics."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnntrain.blob import Param
from cnntrain.config.specs import LayerSpec, NetSpec
from cnntrain.engine.parallel import ufunc_over_batch
from cnntrain.engine.workspace import Workspace
from cnntrain.errors import ConfigError
from cnntrain.layers import LAYER_TYPES, BuildContext, Layer, SetupError
from cnntrain.layers.base import check_count


@dataclass
class Node:
    """One layer in the graph with its (versioned) blob ids."""

    layer: Layer
    bottoms: list[str]
    tops: list[str]
    loss_weights: list[float]
    bottom_shapes: tuple[tuple[int, ...], ...] = ()   # as the layer was last shaped for
    run_backward: bool = False
    propagate_down: list[bool] = field(default_factory=list)


class Net:
    """A DAG of layers for one phase.

    Blobs are plain arrays keyed by name; a top that reuses a bottom's name (an
    in-place layer) gets a new internal version, so the graph stays acyclic and each
    version's gradient is summed over all the layers that consumed it. Parameters
    are shared by key (``param.name``, else ``layer/index``) through ``shared``: the
    TEST net is built with the TRAIN net's parameters.
    """

    def __init__(self, spec: NetSpec, phase: str, ctx: BuildContext,
                 shared: dict[str, Param] | None = None, force_backward: bool = False):
        self.spec, self.phase, self.ctx = spec, phase, ctx
        self.xp = ctx.device.xp
        # Gradient sums of blobs with several consumers, kept from step to step.
        self.ws = Workspace(self.xp)
        self.force_backward = force_backward
        self.shared: dict[str, Param] = {} if shared is None else shared
        self.nodes: list[Node] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.param_keys: list[tuple[str, int, Param]] = []   # (layer, index, param), owners only
        latest: dict[str, str] = {}     # blob name → id of its newest version
        versions: dict[str, int] = {}
        for layer_spec in spec.layers:
            if layer_spec.in_phase(phase):
                self._add(layer_spec, latest, versions)
        self.blob_ids = latest
        consumed = {b for node in self.nodes for b in node.bottoms}
        self.output_ids = {name: i for name, i in latest.items() if i not in consumed}
        self._check_class_counts()
        self.plan_backward(0)

    # --- building ------------------------------------------------------------------
    def _add(self, spec: LayerSpec, latest: dict[str, str], versions: dict[str, int]) -> None:
        layer = LAYER_TYPES[spec.type](spec, self.phase, self.ctx)
        layer.shared = self.shared
        bottoms = [latest[b] for b in spec.bottom]
        bottom_shapes = tuple(self.shapes[b] for b in bottoms)
        try:
            top_shapes = layer.setup(list(bottom_shapes))
            for name, shape in zip(spec.top, top_shapes):
                check_count(shape, f"top '{name}'", "top")
        except SetupError as err:
            raise spec.error(str(err), err.field) from None
        self._register_params(layer)
        tops = []
        for name in spec.top:
            versions[name] = versions.get(name, 0) + 1
            tops.append(name if versions[name] == 1 else f"{name}@{versions[name]}")
            latest[name] = tops[-1]
        for top_id, shape in zip(tops, top_shapes):
            self.shapes[top_id] = tuple(shape)
        if spec.loss_weight is not None:
            weights = list(spec.loss_weight)
        else:
            weights = [layer.default_loss_weight(i) for i in range(len(tops))]
        for w, top_id in zip(weights, tops):
            if w and self.shapes[top_id] != ():
                raise spec.error(f"loss_weight needs a scalar top, '{top_id}' has shape "
                                 f"{self.shapes[top_id]}", "loss_weight")
        self.nodes.append(Node(layer, bottoms, tops, weights, bottom_shapes))

    def _check_class_counts(self) -> None:
        """A loss or accuracy layer scoring a Data layer's labels must get one score per
        class of that dataset: the CIFAR-10 net left at ``num_output: 10`` for CIFAR-100
        (or 100 for its 20 superclasses) is caught here, before any training."""
        producer = {top: node for node in self.nodes for top in node.tops}
        for node in self.nodes:
            layer = node.layer
            if not layer.takes_class_labels or len(node.bottoms) < 2:
                continue
            source = producer.get(node.bottoms[1])
            classes = getattr(source.layer, "num_classes", None) if source else None
            got = self.shapes[node.bottoms[0]][layer.axis]
            if classes is None or got == classes:
                continue
            what = (f"but layer '{layer.name}' ({layer.type_name}) compares it with the labels "
                    f"of layer '{source.layer.name}': {source.layer.describe()} has "
                    f"{classes} classes")
            # Walk back through one-in one-out layers (ReLU, Dropout, ...) to num_output.
            blob = node.bottoms[0]
            while blob in producer:
                spec = producer[blob].layer.spec
                block = next((b for b in ("inner_product_param", "convolution_param")
                              if b in spec.blocks), None)
                if block is not None:
                    raise spec.error(f"is {got}, {what}; set num_output: {classes}",
                                     f"{block}.num_output")
                if len(producer[blob].bottoms) != 1:
                    break
                blob = producer[blob].bottoms[0]
            raise layer.spec.error(f"bottom '{node.bottoms[0]}' has {got} scores per image, {what}",
                                   "bottom")

    def _register_params(self, layer: Layer) -> None:
        """Record parameters this layer owns (first user of the key) for snapshots."""
        known = {id(p) for _, _, p in self.param_keys}
        for i, param in enumerate(layer.blobs):
            if id(param) not in known:
                self.param_keys.append((layer.name, i, param))
                known.add(id(param))

    def plan_backward(self, iteration: int) -> None:
        """Caffe's rule: run a layer's backward only if it leads to a loss and either
        learns something or has a bottom whose producers learn something.

        "Learns" is as of ``iteration``: once a parameter passes its ``freeze_iter``,
        a new plan skips the gradients nothing needs any more (airbench's whitening
        layer stops learning after three epochs, and with it the input gradient of
        the convolution after it, a twelfth of a step). The trainer re-plans when a
        parameter freezes (see ``freeze_points``)."""
        self.planned_at = iteration
        needs_grad: set[str] = set()
        for node in self.nodes:
            learns = any(p.learns_at(iteration) for p in node.layer.blobs)
            prop = node.layer.spec.propagate_down
            node.propagate_down = [b in needs_grad and (prop is None or prop[i])
                                   for i, b in enumerate(node.bottoms)]
            if learns or any(node.propagate_down) or self.force_backward:
                needs_grad.update(node.tops)
        feeds_loss: set[str] = set()
        for node in reversed(self.nodes):
            leads = any(w for w in node.loss_weights) or any(t in feeds_loss for t in node.tops)
            learns = any(p.learns_at(iteration) for p in node.layer.blobs)
            node.run_backward = leads and (learns or any(node.propagate_down))
            if node.run_backward:
                feeds_loss.update(b for b, p in zip(node.bottoms, node.propagate_down) if p)
            else:
                node.propagate_down = [False] * len(node.bottoms)

    def freeze_points(self) -> set[int]:
        """The iterations at which a parameter stops learning (its ``freeze_iter``)."""
        return {p.freeze_iter for p in self.params if p.freeze_iter is not None}

    # --- running -------------------------------------------------------------------
    @property
    def params(self) -> list[Param]:
        return [p for _, _, p in self.param_keys]

    @property
    def layers(self) -> list[Layer]:
        return [n.layer for n in self.nodes]

    def layer(self, name: str) -> Layer:
        for node in self.nodes:
            if node.layer.name == name:
                return node.layer
        raise KeyError(name)

    # Overflow is not warned about: callers check the outputs they use (the trainer
    # names the first layer at fault, evaluation counts non-finite scores as misses).
    @np.errstate(over="ignore", invalid="ignore", divide="ignore")
    def forward(self) -> float:
        """Run every layer; returns the weighted loss. Blobs stay in ``self.blobs``.

        A layer whose bottoms changed shape since it was last shaped (an Input given a
        new batch) is reshaped first, as Caffe's Net::Reshape does."""
        blobs: dict[str, np.ndarray] = {}
        loss = 0.0
        for node in self.nodes:
            bottom = [blobs[b] for b in node.bottoms]
            shapes = tuple(b.shape for b in bottom)
            if shapes != node.bottom_shapes:
                self._reshape(node, shapes)
            tops = node.layer.forward(bottom)
            for top_id, value, weight in zip(node.tops, tops, node.loss_weights):
                blobs[top_id] = value
                if weight:
                    loss += weight * float(value)
        self.blobs = blobs
        return loss

    def _reshape(self, node: Node, shapes: tuple[tuple[int, ...], ...]) -> None:
        """``node``'s layer reshaped for bottoms of ``shapes``; a shape the layer cannot
        take is a config error naming it, as at setup."""
        try:
            node.layer.reshape(list(shapes))
        except SetupError as err:
            raise node.layer.spec.error(f"cannot take bottoms of shapes {list(shapes)}: {err}",
                                        err.field) from None
        node.bottom_shapes = shapes
        for b, shape in zip(node.bottoms, shapes):
            self.shapes[b] = shape

    @np.errstate(over="ignore", invalid="ignore", divide="ignore")
    def backward(self) -> None:
        """Back-propagate the loss; adds into every parameter's ``diff``."""
        diffs: dict[str, np.ndarray] = {}
        for node in reversed(self.nodes):
            if not node.run_backward:
                continue
            top_diffs = []
            for top_id, weight in zip(node.tops, node.loss_weights):
                d = diffs.pop(top_id, None)
                if weight:
                    seed = self.xp.asarray(weight, dtype=self.blobs[top_id].dtype)
                    d = seed if d is None else d + seed
                if d is None:
                    d = self.xp.zeros_like(self.blobs[top_id])
                top_diffs.append(d)
            bottom_diffs = node.layer.backward(top_diffs, node.propagate_down)
            for b, d, wanted in zip(node.bottoms, bottom_diffs, node.propagate_down):
                if wanted and d is not None:
                    # Several consumers of one blob: their gradients add up.
                    diffs[b] = d if b not in diffs else self._gradient_sum(b, diffs[b], d)
        self.input_diffs = diffs

    def _gradient_sum(self, blob: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a + b`` in a buffer of the net's own for ``blob`` (``a`` may be that buffer
        already, with a third consumer). A fresh array for every sum was faulted in
        anew each step: ResNet-20 sums nine gradients of up to 8 MB per step."""
        out = self.ws.get(f"sum:{blob}", np.broadcast_shapes(a.shape, b.shape),
                          np.result_type(a.dtype, b.dtype))
        return ufunc_over_batch(self.xp.add, out, a, b)

    def clear_param_diffs(self) -> None:
        for p in self.params:
            p.diff[...] = 0

    def output(self, name: str) -> np.ndarray:
        """The newest value of blob ``name`` after forward."""
        return self.blobs[self.blob_ids[name]]

    @property
    def outputs(self) -> dict[str, np.ndarray]:
        """Blobs no layer consumed (losses, accuracies), by name."""
        return {name: self.blobs[i] for name, i in self.output_ids.items()}

    def first_nonfinite_output(self) -> str:
        """After a forward: the first layer, in forward order, whose output holds a NaN
        or an infinity, in words ("" when every output is finite)."""
        for node in self.nodes:
            for top in node.tops:
                value = self.blobs.get(top)
                if value is not None and not self.xp.all(self.xp.isfinite(value)):
                    return f"first non-finite output: layer '{node.layer.name}' (top '{top}')"
        return ""

    def data_layers(self) -> list[Layer]:
        return [n.layer for n in self.nodes if hasattr(n.layer, "sampler")]

    def init_from_data(self) -> list[str]:
        """Fill the weights whose filler learns from the data (``fillers.DATA_FILLERS``)
        from the Data layer each such layer reads; returns those layers' names.

        Whitening: the second moment of the receptive-field patches of the first
        ``images`` training images, normalized as the Data layer does (no augmentation),
        then ``fillers.whitening_filters``. The config validator has checked that the
        layer reads a Data layer's images directly."""
        from cnntrain.fillers import DATA_FILLERS, whitening_filters

        producer = {top: node for node in self.nodes for top in node.tops}
        filled = []
        for node in self.nodes:
            block = node.layer.spec.blocks.get("convolution_param")
            if block is None or block.weight_filler["type"] not in DATA_FILLERS:
                continue
            source = producer[node.bottoms[0]].layer
            if not hasattr(source, "images"):
                continue          # an Input layer standing in for the data: no images
            layer, filler = node.layer, block.weight_filler
            images = source.images.images[:filler["images"]]
            moment = patch_second_moment(images, source.transform.normalize,
                                         (layer.kh, layer.kw), (layer.dh, layer.dw))
            weights = layer.blobs[0].data
            weights[...] = self.ctx.device.to_device(
                whitening_filters(moment, weights.shape, filler["eps"]))
            filled.append(layer.name)
        return filled


def build_nets(spec: NetSpec, ctx: BuildContext) -> tuple[Net, Net]:
    """The TRAIN net and the TEST net sharing its parameters."""
    train = Net(spec, "TRAIN", ctx)
    if not any(w for n in train.nodes for w in n.loss_weights):
        raise ConfigError("the TRAIN net has no loss layer (e.g. SoftmaxWithLoss)",
                          file=spec.where.file, line=spec.where.line)
    test = Net(spec, "TEST", ctx, shared=train.shared)
    return train, test


def patch_second_moment(images: np.ndarray, normalize, kernel: tuple[int, int],
                        dilation: tuple[int, int] = (1, 1), chunk: int = 256) -> np.ndarray:
    """E[p pᵀ] over every kernel-sized patch p (stride 1, no padding, flattened in the
    (c, i, j) order of convolution weights) of ``normalize(images)``: a few hundred
    images at a time, in float64, never the whole patch matrix at once."""
    (kh, kw), (dh, dw) = kernel, dilation
    total, count = None, 0
    for start in range(0, len(images), chunk):
        x = normalize(images[start:start + chunk]).astype(np.float64)
        windows = np.lib.stride_tricks.sliding_window_view(
            x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))[..., ::dh, ::dw]
        patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * kh * kw)
        part = patches.T @ patches
        total = part if total is None else total + part
        count += len(patches)
    return total / count
