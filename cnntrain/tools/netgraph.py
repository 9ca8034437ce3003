"""A net as a drawing: Graphviz DOT text in the style of Caffe's ``draw_net.py``, and an
SVG laid out here (no Graphviz needed) for the run report.

Both come from the built net of one phase (Data layers stand in as Input layers of
the same shapes, so no dataset is read): layers with their type, the fields set in
their ``*_param`` blocks and their parameter count; blobs with their shapes.
``cnntrain draw`` renders the DOT text with Graphviz's ``dot`` where it is installed.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from cnntrain.config import schema
from cnntrain.errors import CnnTrainError
from cnntrain.tools.svg import FONT, text_width

DOT_HINT = ("Graphviz's dot program is not installed (apt-get install graphviz, "
            "brew install graphviz or conda install graphviz)")

# Caffe's draw.py colours: layers by type, in-place ("neuron") layers, blobs.
LAYER_COLORS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
                "InnerProduct": "#CC33FF"}
DEFAULT_LAYER_COLOR = "#6495ED"
NEURON_COLOR = "#90EE90"
BLOB_COLOR = "#E0E0E0"
# Softer versions for the report's SVG, which prints dark text on them.
SVG_COLORS = {"Convolution": "#ffd6d6", "Deconvolution": "#ffd6d6", "Pooling": "#ffe6bf",
              "InnerProduct": "#f0d9ff", "Data": "#e3e3e3", "Input": "#e3e3e3"}
SVG_DEFAULT = "#dbe6fb"
SVG_NEURON = "#dcf5dc"


@dataclass
class LayerNode:
    """One layer of the drawing."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[tuple[str, tuple[int, ...]]]     # (blob name, shape)
    params: int
    details: list[str] = field(default_factory=list)   # "kernel_size: 5", ...

    @property
    def in_place(self) -> bool:
        """Caffe's "neuron" layers: one bottom, one top, the same blob."""
        return len(self.bottoms) == 1 and len(self.tops) == 1 and self.bottoms[0] == self.tops[0][0]


@dataclass
class NetGraph:
    name: str
    phase: str
    layers: list[LayerNode]


def _value_text(value) -> str:
    if isinstance(value, tuple):
        if value and isinstance(value[0], tuple):           # shapes
            return "; ".join("x".join(map(str, s)) for s in value)
        return ", ".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def layer_details(spec) -> list[str]:
    """The fields set in a layer's ``*_param`` blocks (those not at their default), as
    "field: value"; fillers are left out."""
    lines = []
    for block, values in spec.blocks.items():
        fields = schema.PARAM_BLOCKS.get(block, {})
        for key, value in values.items():
            spec_field = fields.get(key)
            if spec_field is None or spec_field.kind == "filler" or value is None:
                continue
            if value == spec_field.default:
                continue
            lines.append(f"{key}: {_value_text(value)}")
    return lines


def net_graph(exp, phase: str = "TRAIN", summary=None) -> NetGraph:
    """The drawing of ``exp``'s net in ``phase``, built without data (or from its
    ``summary`` when the caller has it)."""
    from cnntrain.tools.summary import summarize

    summary = summary or summarize(exp, phase)
    specs = {s.name: s for s in exp.net.layers if s.in_phase(phase)}
    layers = []
    for row in summary.rows:
        spec = specs[row.name]
        layers.append(LayerNode(row.name, row.type, list(spec.bottom), list(row.tops),
                                row.params, layer_details(spec)))
    return NetGraph(exp.net.name, phase, layers)


# ----------------------------------------------------------------------------- DOT
def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _record_text(text: str) -> str:
    """Text inside a record label, where {}|<> are syntax."""
    for ch in "\\{}|<>\"":
        text = text.replace(ch, "\\" + ch)
    return text


def to_dot(graph: NetGraph, rankdir: str = "LR") -> str:
    """Graphviz DOT text as Caffe's draw_net.py writes it: layers are records coloured by
    type (in-place layers green), blobs grey octagons with their shapes; an in-place
    layer reads and writes the same blob node."""
    sep = "\\n" if rankdir in ("LR", "RL") else " "   # Caffe's separators
    lines = [f"digraph {_dot_string(graph.name)} {{",
             f"  rankdir={rankdir};",
             f"  label={_dot_string(f'{graph.name} ({graph.phase})')}; labelloc=t;",
             '  node [fontname="Helvetica", fontsize=11];',
             '  edge [color="#555555"];']
    blobs: dict[str, tuple[int, ...]] = {}
    edges = []
    for layer in graph.layers:
        node_id = f"{layer.name}_{layer.type}"
        parts = [_record_text(layer.name), f"({_record_text(layer.type)})"]
        parts += [_record_text(d) for d in layer.details]
        if layer.params:
            parts.append(f"params: {layer.params:,}")
        color = NEURON_COLOR if layer.in_place else LAYER_COLORS.get(layer.type,
                                                                     DEFAULT_LAYER_COLOR)
        label = sep.join(parts).replace('"', '\\"')
        lines.append(f'  {_dot_string(node_id)} [shape=record, style=filled, '
                     f'fillcolor="{color}", label="{label}"];')
        for bottom in layer.bottoms:
            edges.append((f"{bottom}_blob", node_id))
        for top, shape in layer.tops:
            blobs.setdefault(top, shape)
            edges.append((node_id, f"{top}_blob"))
    for blob, shape in blobs.items():
        label = _dot_string(blob)[:-1] + "\\n" + _shape_text(shape) + '"'
        lines.append(f'  {_dot_string(blob + "_blob")} [shape=octagon, style=filled, '
                     f'fillcolor="{BLOB_COLOR}", label={label}];')
    for src, dst in edges:
        lines.append(f"  {_dot_string(src)} -> {_dot_string(dst)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_program() -> str | None:
    return shutil.which("dot")


def render_dot(dot_text: str, fmt: str) -> bytes:
    """``dot -T<fmt>`` of the text; a failure is a one-line error."""
    program = dot_program()
    if program is None:
        raise CnnTrainError(DOT_HINT)
    try:
        done = subprocess.run([program, f"-T{fmt}"], input=dot_text.encode(),
                              capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CnnTrainError(f"could not run {program}: {err}") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise CnnTrainError(f"{program} failed (exit code {done.returncode})"
                            + (f": {message[0]}" if message else ""))
    return done.stdout


# ----------------------------------------------------------------------------- SVG
LINE = 14          # px per text line in a box
PAD_X, PAD_Y = 8, 6
ROW_GAP, COL_GAP = 26, 16
LANE = 9           # px between the lanes of edges that skip rows
FONT_SIZE = 11


@dataclass(eq=False)
class _Box:
    layer: LayerNode
    lines: list[tuple[str, str]]      # (text, css class)
    rank: int = 0
    order: float = 0.0
    x: float = 0.0                    # left edge
    y: float = 0.0                    # top edge
    width: float = 0.0
    height: float = 0.0

    @property
    def cx(self) -> float:
        return self.x + self.width / 2


def _wrapped(details: list[str], width: int = 36, max_lines: int = 3) -> list[str]:
    """The details joined with commas into lines of about ``width`` characters."""
    lines: list[str] = []
    for item in details:
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += ", " + item
        else:
            lines.append(item)
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [lines[max_lines - 1] + ", …"]
    return lines


def _box_lines(layer: LayerNode) -> list[tuple[str, str]]:
    lines = [(f"{layer.name} · {layer.type}", "name")]
    lines += [(d, "detail") for d in _wrapped(layer.details, max_lines=1 if layer.in_place else 3)]
    if layer.params:
        lines.append((f"{layer.params:,} parameters", "detail"))
    if not layer.in_place:
        lines += [(f"→ {top} {_shape_text(shape)}", "blob") for top, shape in layer.tops]
    return lines


def _layout(graph: NetGraph) -> tuple[list[_Box], list[tuple[_Box, _Box]]]:
    """Rows by longest path from the inputs (the file order is a topological order);
    within a row, boxes ordered by the mean position of their inputs."""
    boxes, edges = [], []
    producer: dict[str, _Box] = {}     # blob name → box of its newest version
    for layer in graph.layers:
        box = _Box(layer, _box_lines(layer))
        parents = [producer[b] for b in layer.bottoms if b in producer]
        box.rank = 1 + max((p.rank for p in parents), default=-1)
        for p in dict.fromkeys(parents):     # once per parent
            edges.append((p, box))
        for top, _ in layer.tops:
            producer[top] = box
        widest = max(text_width(t, 13.2 if c == "name" else FONT_SIZE) for t, c in box.lines)
        box.width = widest + 2 * PAD_X
        box.height = len(box.lines) * LINE + 2 * PAD_Y
        boxes.append(box)
    rows: dict[int, list[_Box]] = {}
    for box in boxes:
        rows.setdefault(box.rank, []).append(box)
    parents_of: dict[int, list[_Box]] = {}
    for p, c in edges:
        parents_of.setdefault(id(c), []).append(p)
    row_width = {}
    y = 10.0
    for rank in sorted(rows):
        row = rows[rank]
        for i, box in enumerate(row):
            ps = parents_of.get(id(box), [])
            box.order = sum(p.order for p in ps) / len(ps) + i * 1e-3 if ps else float(i)
        row.sort(key=lambda b: b.order)
        for i, box in enumerate(row):
            box.order = sum(b.width for b in row[:i]) + i * COL_GAP + box.width / 2
        width = sum(b.width for b in row) + COL_GAP * (len(row) - 1)
        row_width[rank] = width
        x = -width / 2
        height = max(b.height for b in row)
        for box in row:
            box.x, box.y = x, y + (height - box.height) / 2
            x += box.width + COL_GAP
            box.order = box.cx
        y += height + ROW_GAP
    return boxes, edges


def to_svg(graph: NetGraph) -> str:
    """The net drawn top to bottom: one row per step of the longest path from the
    inputs, branches side by side; edges that skip rows run in lanes on the right."""
    boxes, edges = _layout(graph)
    if not boxes:
        return ""
    long_edges = [(p, c) for p, c in edges if c.rank - p.rank > 1]
    # Greedy lanes: edges whose row spans overlap get different lanes.
    lanes: list[list[tuple[int, int]]] = []
    lane_of = {}
    for p, c in sorted(long_edges, key=lambda e: (e[0].rank, e[1].rank)):
        for k, used in enumerate(lanes):
            if all(c.rank <= a or p.rank >= b for a, b in used):
                used.append((p.rank, c.rank))
                lane_of[(id(p), id(c))] = k
                break
        else:
            lanes.append([(p.rank, c.rank)])
            lane_of[(id(p), id(c))] = len(lanes) - 1
    left = min(b.x for b in boxes)
    right = max(b.x + b.width for b in boxes)
    lane_x0 = right + 14
    width = (right - left) + 28 + LANE * len(lanes) + 10
    height = max(b.y + b.height for b in boxes) + 12
    shift = 10 - left

    def sx(x: float) -> float:
        return x + shift

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="netgraph" width="{width:.0f}" '
             f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
             f'aria-label="{escape(graph.name)} ({graph.phase} net)" style="{FONT}">',
             f"<title>{escape(graph.name)} ({graph.phase} net)</title>",
             '<defs><marker id="netgraph-arrow" viewBox="0 0 8 8" refX="7" refY="4" '
             'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
             '<path d="M0,0 L8,4 L0,8 z" fill="#666"/></marker></defs>']
    for p, c in edges:
        x1, y1 = sx(p.cx), p.y + p.height
        x2, y2 = sx(c.cx), c.y
        if c.rank - p.rank > 1:
            lane = sx(lane_x0) + LANE * lane_of[(id(p), id(c))]
            d = (f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + 12:.1f} {lane:.1f},{y1 + 2:.1f} "
                 f"{lane:.1f},{y1 + 14:.1f} L{lane:.1f},{y2 - 14:.1f} "
                 f"C{lane:.1f},{y2 - 2:.1f} {x2:.1f},{y2 - 12:.1f} {x2:.1f},{y2:.1f}")
        else:
            mid = (y1 + y2) / 2
            d = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2:.1f}"
        parts.append(f'<path d="{d}" fill="none" stroke="#888" stroke-width="1.2" '
                     'marker-end="url(#netgraph-arrow)"/>')
    for box in boxes:
        layer = box.layer
        fill = SVG_NEURON if layer.in_place else SVG_COLORS.get(layer.type, SVG_DEFAULT)
        tip = [f"{layer.name} ({layer.type})"] + layer.details
        if layer.params:
            tip.append(f"{layer.params:,} parameters")
        tip += [f"bottom {b}" for b in layer.bottoms]
        tip += [f"top {t} {_shape_text(s)}" for t, s in layer.tops]
        parts.append(f'<g class="layer"><title>{escape(chr(10).join(tip))}</title>'
                     f'<rect x="{sx(box.x):.1f}" y="{box.y:.1f}" width="{box.width:.1f}" '
                     f'height="{box.height:.1f}" rx="5" fill="{fill}" stroke="#8a8a8a"/>')
        for i, (text, css) in enumerate(box.lines):
            y = box.y + PAD_Y + LINE * (i + 1) - 3.5
            style = {"name": 'font-weight="600" font-size="12"',
                     "detail": f'font-size="{FONT_SIZE}" fill="#444"',
                     "blob": f'font-size="{FONT_SIZE}" fill="#1d4f91"'}[css]
            parts.append(f'<text x="{sx(box.x) + PAD_X:.1f}" y="{y:.1f}" {style}>'
                         f"{escape(text)}</text>")
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------- draw
FORMATS = ("dot", "svg", "png")


def draw(exp, output: str | Path, phase: str = "TRAIN", rankdir: str = "LR"
         ) -> tuple[Path, str | None]:
    """Write the drawing of ``exp``'s net to ``output`` (.dot, .svg or .png).

    .dot is the text itself; .svg and .png go through Graphviz's ``dot``. Without
    ``dot``, an .svg is laid out here instead (a note says so) and a .png cannot be
    made: the DOT text is written beside it and a CnnTrainError says how to install
    Graphviz. Returns the file written and a note (or None)."""
    from cnntrain.errors import os_error_reason
    from cnntrain.snapshot import atomic_write

    output = Path(output)
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise CnnTrainError(f"{output}: the drawing is written as .dot, .svg or .png, "
                            f"not '{output.suffix or 'no suffix'}'")
    graph = net_graph(exp, phase)
    text = to_dot(graph, rankdir)
    note = None

    def write(path: Path, data: bytes) -> Path:
        try:
            atomic_write(path, lambda tmp: tmp.write_bytes(data))
        except OSError as err:
            raise CnnTrainError(f"could not write {path}: {os_error_reason(err)}") from None
        return path

    if fmt == "dot":
        return write(output, text.encode()), None
    if dot_program() is None:
        if fmt == "svg":
            note = f"{DOT_HINT}; drew {output.name} with cnntrain's own layout instead"
            return write(output, to_svg(graph).encode()), note
        dot_path = write(output.with_suffix(".dot"), text.encode())
        raise CnnTrainError(f"cannot draw {output}: {DOT_HINT}; wrote the graph as "
                            f"{dot_path} instead (dot -Tpng {dot_path} -o {output} "
                            "renders it where Graphviz is installed)")
    return write(output, render_dot(text, fmt)), note
