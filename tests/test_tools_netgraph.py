"""cnntrain draw and the net drawing: DOT as Caffe's draw_net.py writes it, the report's own
SVG layout, and Graphviz optional."""
import re
import shutil
import xml.etree.ElementTree as ET

import pytest

from cnntrain.config import load_experiment
from cnntrain.tools import netgraph
from cnntrain.tools.netgraph import net_graph, to_dot, to_svg
from tool_helpers import run

QUICK = "configs/cifar10_quick.yaml"
RESNET = "configs/resnet20_cifar10.yaml"


@pytest.fixture(scope="module")
def quick():
    return net_graph(load_experiment(QUICK), "TRAIN")


def test_layers_carry_type_settings_parameters_and_top_shapes(quick):
    conv1 = next(layer for layer in quick.layers if layer.name == "conv1")
    assert conv1.type == "Convolution" and conv1.params == 32 * 3 * 5 * 5 + 32
    assert conv1.details == ["num_output: 32", "kernel_size: 5", "stride: 1", "pad: 2"]
    assert conv1.tops == [("conv1", (100, 32, 32, 32))]
    data = quick.layers[0]
    assert data.type == "Data" and data.tops == [("data", (100, 3, 32, 32)), ("label", (100,))]
    relu1 = next(layer for layer in quick.layers if layer.name == "relu1")
    assert relu1.in_place and not conv1.in_place
    # TEST adds the accuracy layer; TRAIN does not have it
    assert "accuracy" not in {layer.name for layer in quick.layers}
    test = net_graph(load_experiment(QUICK), "TEST")
    assert "accuracy" in {layer.name for layer in test.layers}


def test_dot_is_caffes_drawing(quick):
    text = to_dot(quick)
    assert text.startswith('digraph "CIFAR10_quick" {') and "rankdir=LR;" in text
    # a layer: a record coloured by type, with its settings and parameter count
    conv = re.search(r'"conv1_Convolution" \[([^\]]*)\]', text).group(1)
    assert 'fillcolor="#FF5050"' in conv and "shape=record" in conv
    assert "conv1\\n(Convolution)\\nnum_output: 32" in conv and "params: 2,432" in conv
    # a blob: a grey octagon with its shape
    assert '"pool1_blob" [shape=octagon, style=filled, fillcolor="#E0E0E0", ' \
           'label="pool1\\n100x32x16x16"];' in text
    # in place: the ReLU reads and writes the same blob node, drawn green
    assert '"pool1_blob" -> "relu1_ReLU";' in text and '"relu1_ReLU" -> "pool1_blob";' in text
    assert re.search(r'"relu1_ReLU" \[[^\]]*fillcolor="#90EE90"', text)
    assert '"label_blob" -> "loss_SoftmaxWithLoss";' in text
    assert text.count(" -> ") == sum(len(layer.bottoms) + len(layer.tops) for layer in quick.layers)
    assert "\\n" not in to_dot(quick, "TB").split("conv1_Convolution")[1].split("];")[0] \
        .split("label=")[1].split("params")[0]      # TB separates with spaces, as Caffe does


def test_record_syntax_in_names_is_escaped():
    graph = netgraph.NetGraph("n", "TRAIN", [netgraph.LayerNode(
        "a|b{c}", "ReLU", ["x<y>"], [("x<y>", (2,))], 0)])
    text = to_dot(graph)
    assert "a\\|b\\{c\\}" in text


def test_svg_layout_puts_every_layer_in_a_box_and_branches_side_by_side():
    graph = net_graph(load_experiment(RESNET), "TRAIN")
    svg = to_svg(graph)
    root = ET.fromstring(svg)          # well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    boxes = root.findall(f"{ns}g")
    assert len(boxes) == len(graph.layers)
    titles = [g.find(f"{ns}title").text.splitlines()[0] for g in boxes]
    assert titles == [f"{layer.name} ({layer.type})" for layer in graph.layers]
    edges = root.findall(f"{ns}path")
    assert len(edges) == sum(len(set(layer.bottoms)) for layer in graph.layers)

    def box(name):
        g = boxes[[layer.name for layer in graph.layers].index(name)]
        r = g.find(f"{ns}rect")
        return float(r.get("x")), float(r.get("y")), float(r.get("width"))

    # the projection shortcut sits beside the first conv of its block, at the same height
    proj, conv = box("res2_1_proj"), box("res2_1_conv1")
    assert proj[1] == pytest.approx(conv[1]) and abs(proj[0] - conv[0]) >= min(proj[2], conv[2])
    # each layer is below the layers it reads from
    y = {layer.name: box(layer.name)[1] for layer in graph.layers}
    producer = {}
    for layer in graph.layers:
        for bottom in layer.bottoms:
            assert y[producer[bottom]] < y[layer.name] or producer[bottom] == layer.name
        for top, _ in layer.tops:
            producer[top] = layer.name


@pytest.fixture
def no_dot(monkeypatch):
    monkeypatch.setattr(netgraph, "dot_program", lambda: None)


def test_draw_dot_needs_no_graphviz(tmp_path, no_dot):
    result = run("draw", QUICK, "-o", tmp_path / "net.dot", "--phase", "TEST")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"drawing written to {tmp_path / 'net.dot'}\n"
    text = (tmp_path / "net.dot").read_text()
    assert '"accuracy_Accuracy"' in text and 'label="CIFAR10_quick (TEST)"' in text


def test_draw_without_graphviz_svg_uses_the_own_layout_png_writes_dot(tmp_path, no_dot):
    result = run("draw", QUICK, "-o", tmp_path / "net.svg")
    assert result.exit_code == 0
    assert result.stderr.startswith("note: Graphviz's dot program is not installed")
    assert result.stderr.count("\n") == 1
    assert 'class="netgraph"' in (tmp_path / "net.svg").read_text()

    result = run("draw", QUICK, "-o", tmp_path / "net.png")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: cannot draw {tmp_path / 'net.png'}: Graphviz's dot")
    assert f"wrote the graph as {tmp_path / 'net.dot'} instead" in result.stderr
    assert not (tmp_path / "net.png").exists()
    assert (tmp_path / "net.dot").read_text().startswith('digraph "CIFAR10_quick"')


@pytest.mark.skipif(shutil.which("dot") is None,
                    reason="Graphviz's dot is not installed (apt-get install graphviz)")
def test_draw_with_graphviz_renders_svg_and_png(tmp_path):
    result = run("draw", QUICK, "-o", tmp_path / "net.png", "--rankdir", "TB")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "net.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = run("draw", RESNET, "-o", tmp_path / "net.svg")
    assert result.exit_code == 0, result.output
    svg = (tmp_path / "net.svg").read_text()
    assert "res3_3_sum" in svg and "Generated by graphviz" in svg


def test_draw_errors_are_one_line(tmp_path):
    result = run("draw", QUICK, "-o", tmp_path / "net.pdf")
    assert result.exit_code == 1
    assert result.stderr == (f"error: {tmp_path / 'net.pdf'}: the drawing is written as .dot, "
                             ".svg or .png, not '.pdf'\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnet: {layer: []}\nsolver: {base_lr: 1, max_iter: 1}\n")
    result = run("draw", bad, "-o", tmp_path / "net.dot")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
