"""The new layer types through the net, the summary and the Caffe importer."""
import textwrap

import numpy as np
import pytest

from cnntrain.config import load_experiment
from cnntrain.tools.gradcheck import check_net
from cnntrain.tools.summary import summarize_net
from net_helpers import build, fill_inputs, input_layer
from tool_helpers import run


def _bouvrie_net(penalty_weight=None, sparsity_type="ENTROPY"):
    combo = {"name": "c3", "type": "MapCombination", "bottom": "s2", "top": ["c3", "omega"],
             "map_combination_param": {"num_output": 3, "kernel_size": 3, "sparsity": 0.5,
                                       "sparsity_type": sparsity_type,
                                       "weight_filler": {"type": "gaussian", "std": 0.3},
                                       "combination_filler": {"type": "gaussian", "std": 1}}}
    if penalty_weight is not None:
        combo["loss_weight"] = [0, penalty_weight]
    return build([
        input_layer((2, 2, 8, 8), (2,)),
        {"name": "s2", "type": "Subsampling", "bottom": "data", "top": "s2",
         "subsampling_param": {"kernel_size": 2, "activation": "TANH",
                               "scale_filler": {"type": "gaussian", "mean": 0.5, "std": 0.2}}},
        combo,
        {"name": "act", "type": "PReLU", "bottom": "c3", "top": "c3"},
        {"name": "ip", "type": "InnerProduct", "bottom": "c3", "top": "ip",
         "inner_product_param": {"num_output": 3}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"},
    ])


def test_the_sparsity_penalty_counts_in_the_loss_by_default():
    net = _bouvrie_net()
    fill_inputs(net)
    total = net.forward()
    assert total == pytest.approx(float(net.output("loss")) + float(net.output("omega")))
    off = _bouvrie_net(penalty_weight=0)
    fill_inputs(off)
    assert off.forward() == pytest.approx(float(off.output("loss")))


def test_net_gradients_through_subsampling_map_combination_and_penalty():
    net = _bouvrie_net()
    fill_inputs(net)
    results = check_net(net, max_elements=30)
    bad = [str(r) for r in results if not r.ok(1e-5)]
    assert not bad, "\n".join(bad)


def test_summary_counts_the_new_parameters():
    rows = {r.name: r for r in summarize_net(_bouvrie_net(), 2).rows}
    assert rows["s2"].params == 2 * 2                     # beta and b per map
    assert rows["c3"].params == 3 * 2 * 9 + 2 * 3 + 3     # kernels, c, biases
    assert rows["c3"].macs == 3 * 2 * 2 * 2 * 9           # Cout*Ho*Wo*Cin*kh*kw
    assert rows["act"].params == 3


NET = """\
name: "caffe_types"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "prelu" type: "PReLU" bottom: "conv" top: "conv"
        prelu_param { filler { type: "constant" value: 0.1 } channel_shared: true } }
layer { name: "elu" type: "ELU" bottom: "conv" top: "conv" elu_param { alpha: 0.5 } }
layer { name: "abs" type: "AbsVal" bottom: "conv" top: "abs" }
layer { name: "bnll" type: "BNLL" bottom: "abs" top: "bnll" }
layer { name: "pow" type: "Power" bottom: "bnll" top: "pow"
        power_param { power: 2 scale: 0.5 shift: 1 } }
layer { name: "log" type: "Log" bottom: "pow" top: "log" log_param { base: 10 } }
layer { name: "exp" type: "Exp" bottom: "log" top: "exp" exp_param { base: 2 scale: -1 } }
layer { name: "swish" type: "Swish" bottom: "exp" top: "swish" swish_param { beta: 1.5 } }
layer { name: "ip" type: "InnerProduct" bottom: "swish" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "hinge" type: "HingeLoss" bottom: "ip" bottom: "label" top: "hinge"
        hinge_loss_param { norm: L2 } }
layer { name: "ip2" type: "InnerProduct" bottom: "swish" top: "ip2"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 2 dim: 2 } } }
layer { name: "bce" type: "SigmoidCrossEntropyLoss" bottom: "ip2" bottom: "target" top: "bce"
        loss_param { normalize: true } }
"""


def test_caffe_prototxt_with_the_new_types_imports(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text(NET)
    out = tmp_path / "net.yaml"
    result = run("import-prototxt", net, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "not imported" not in result.stderr
    exp = load_experiment(out)
    layers = {l.name: l for l in exp.net.layers}
    assert layers["prelu"].blocks["prelu_param"].filler["value"] == 0.1
    assert layers["prelu"].blocks["prelu_param"].channel_shared is True
    assert layers["pow"].blocks["power_param"].power == 2
    assert layers["log"].blocks["log_param"].base == 10
    assert layers["hinge"].blocks["hinge_loss_param"].norm == "L2"
    assert layers["bce"].blocks["loss_param"].normalization == "VALID"


def test_a_bad_subsampling_size_is_a_one_line_config_error():
    from cnntrain.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        build([input_layer((1, 2, 7, 8)),
               {"name": "s", "type": "Subsampling", "bottom": "data", "top": "s",
                "subsampling_param": {"kernel_size": 2}}])
    text = str(err.value)
    assert "\n" not in text and "layer 's'" in text and "subsampling_param.kernel_size" in text
