"""What a config builds, without data: each layer's top shapes, parameters and MACs.

``cnntrain train --dry-run`` prints this. Data layers are replaced by Input layers of
the same shapes (:mod:`cnntrain.tools.inputs`), so no dataset is read or downloaded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cnntrain.blob import Statistic


@dataclass
class LayerRow:
    name: str
    type: str
    tops: list[tuple[str, tuple[int, ...]]]
    params: int                    # learned parameters this layer owns (shared ones count once)
    param_shapes: list[tuple[int, ...]]
    macs: int                      # multiply-accumulates of one forward, per image
    in_place: bool = False
    statistics: int = 0            # running statistics it owns (BatchNorm): saved, not learned


@dataclass
class NetSummary:
    name: str
    phase: str
    batch: int
    rows: list[LayerRow] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def activation_values(self) -> int:
        """Values of all top blobs of one batch (an in-place top reuses its bottom's)."""
        return sum(math.prod(shape) for r in self.rows if not r.in_place for _, shape in r.tops)

    @property
    def statistics(self) -> int:
        return sum(r.statistics for r in self.rows)

    def as_dict(self) -> dict:
        return {"net": self.name, "phase": self.phase, "batch": self.batch,
                "params": self.params, "statistics": self.statistics,
                "macs_per_image": self.macs, "activation_values": self.activation_values,
                "layers": [{"name": r.name, "type": r.type,
                            "tops": {t: list(s) for t, s in r.tops},
                            "params": r.params, "statistics": r.statistics,
                            "param_shapes": [list(s) for s in r.param_shapes],
                            "macs_per_image": r.macs} for r in self.rows]}


def forward_macs(layer, bottom_shapes, top_shapes) -> int:
    """Multiply-accumulates of one forward per image: Convolution, Deconvolution,
    MapCombination (one convolution with effective weights) and InnerProduct (the
    GEMMs); other layers count 0."""
    kind = layer.type_name
    if kind in ("Convolution", "MapCombination"):
        n, cout, ho, wo = top_shapes[0]
        cin = bottom_shapes[0][1]
        return cout * ho * wo * (cin // layer.group) * layer.kh * layer.kw
    if kind == "Deconvolution":
        # Every input value is multiplied into a kernel of each output channel of its group.
        n, cin, h, w = bottom_shapes[0]
        return cin * h * w * (layer.cout // layer.group) * layer.kh * layer.kw
    if kind == "InnerProduct":
        shape = bottom_shapes[0]
        k = math.prod(shape[layer.axis:])
        rows = math.prod(shape[1:layer.axis]) if layer.axis > 1 else 1
        return rows * k * layer.num_output
    return 0


def _size(params) -> int:
    return sum(int(np.prod(p.data.shape)) for p in params)


def summarize_net(net, batch: int) -> NetSummary:
    """The rows of a built net (any phase)."""
    out = NetSummary(net.spec.name, net.phase, batch)
    owned = {id(p) for _, _, p in net.param_keys}
    seen: set[int] = set()
    for node in net.nodes:
        layer = node.layer
        mine = [p for p in layer.blobs if id(p) in owned and id(p) not in seen]
        seen.update(id(p) for p in mine)
        bottoms = [net.shapes[b] for b in node.bottoms]
        tops = [net.shapes[t] for t in node.tops]
        macs = forward_macs(layer, bottoms, tops)
        in_place = any(i < len(layer.spec.bottom) and layer.spec.bottom[i] == t
                       for i, t in enumerate(layer.spec.top))
        stats = [p for p in mine if isinstance(p, Statistic)]
        learned = [p for p in mine if not isinstance(p, Statistic)]
        out.rows.append(LayerRow(layer.name, layer.type_name,
                                 list(zip(layer.spec.top, tops)), _size(learned),
                                 [tuple(p.data.shape) for p in layer.blobs],
                                 macs, in_place, _size(stats)))
    return out


def summarize(exp, phase: str = "TRAIN") -> NetSummary:
    """Build ``exp``'s net for ``phase`` without data and summarize it."""
    from cnntrain.layers import BuildContext
    from cnntrain.net import Net
    from cnntrain.rng import RngStreams
    from cnntrain.tools.inputs import replace_data_layers

    spec, stand_ins = replace_data_layers(exp.net)
    ctx = BuildContext(RngStreams(exp.solver.random_seed), np.float32, notify=lambda _: None)
    net = Net(spec, phase, ctx)
    batch = 0
    for node in net.nodes:
        if node.layer.type_name == "Input":
            batch = net.shapes[node.tops[0]][0] if net.shapes[node.tops[0]] else 1
            break
    summary = summarize_net(net, batch or 1)
    replaced = {s.layer for s in stand_ins}
    for row in summary.rows:
        if row.name in replaced and row.type == "Input":
            row.type = "Data"
    return summary


def _count(n: int) -> str:
    for unit, size in (("G", 10 ** 9), ("M", 10 ** 6), ("k", 10 ** 3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


SUMMARY_HEAD = ("layer", "type", "top shape", "params", "MACs/image")


def summary_cells(summary: NetSummary) -> list[tuple[str, str, str, str, str]]:
    """The table's rows as text: layer, type, top shapes, parameters, MACs per image."""
    rows = []
    for r in summary.rows:
        tops = ", ".join(f"{t} {'x'.join(map(str, s)) or 'scalar'}" for t, s in r.tops)
        rows.append((r.name, r.type + (" (in place)" if r.in_place else ""), tops,
                     f"{r.params:,}" if r.params else "-", _count(r.macs) if r.macs else "-"))
    return rows


def summary_totals(summary: NetSummary) -> list[str]:
    """The lines under the table: parameters and MACs, activation memory."""
    stats = f" and {summary.statistics:,} running statistics" if summary.statistics else ""
    mib = summary.activation_values * 4 / 2 ** 20
    return [f"total: {summary.params:,} parameters{stats} ({summary.params * 4 / 2 ** 20:.2f} "
            f"MiB as float32), {_count(summary.macs)} MACs per image forward",
            f"activations: {mib:.1f} MiB for one batch of {summary.batch} as float32 "
            f"(training keeps about as much again for their gradients)"]


def format_summary(summary: NetSummary) -> list[str]:
    """A table: layer, type, top shape, parameters, MACs per image; then the totals."""
    head = SUMMARY_HEAD
    rows = summary_cells(summary)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [f"{summary.name} ({summary.phase} net, batch {summary.batch})", line(head),
             line(["-" * w for w in widths])]
    lines += [line(row) for row in rows]
    return lines + summary_totals(summary)
