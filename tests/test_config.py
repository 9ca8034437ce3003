"""Config parsing: every mistake is one line naming the file, line, layer and field."""
import textwrap

import pytest

from cnntrain.config import load_experiment
from cnntrain.errors import ConfigError

GOOD_NET = """\
name: tiny
net:
  name: tiny
  layer:
    - name: input
      type: Input
      top: [data, label]
      input_param: {shape: [{dim: [2, 3, 8, 8]}, {dim: [2]}]}
    - name: conv1
      type: Convolution
      bottom: data
      top: conv1
      convolution_param: {num_output: 4, kernel_size: 3}
    - name: relu1
      type: ReLU
      bottom: conv1
      top: conv1
    - name: ip
      type: InnerProduct
      bottom: conv1
      top: ip
      inner_product_param: {num_output: 10}
    - name: loss
      type: SoftmaxWithLoss
      bottom: [ip, label]
      top: loss
solver:
  base_lr: 0.01
  max_iter: 10
"""


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_for(tmp_path, text) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        exp = load_experiment(path)
        from cnntrain.layers import BuildContext
        from cnntrain.net import build_nets
        from cnntrain.rng import RngStreams
        build_nets(exp.net, BuildContext(RngStreams(0)))
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    return err.value


def test_good_config_parses(tmp_path):
    exp = load_experiment(write(tmp_path, GOOD_NET))
    assert [layer.name for layer in exp.net.layers] == ["input", "conv1", "relu1", "ip", "loss"]
    assert exp.solver.lr_policy == "fixed" and exp.solver.momentum == 0.0


@pytest.mark.parametrize("old, new, layer, field, words, line", [
    ("type: Convolution", "type: Convolutoin", "conv1", "type", "did you mean 'Convolution'", 10),
    ("num_output: 4, kernel_size: 3", "num_output: 4, kernel_sise: 3", "conv1", "convolution_param.kernel_sise",
     "did you mean 'kernel_size'", 13),
    ("num_output: 4, kernel_size: 3", "num_output: four, kernel_size: 3", "conv1", "convolution_param.num_output",
     "must be an integer", 13),
    ("num_output: 4, kernel_size: 3", "num_output: -4, kernel_size: 3", "conv1", "convolution_param.num_output",
     "must be >= 1", 13),
    ("bottom: conv1\n      top: ip", "bottom: conv9\n      top: ip", "ip", "bottom",
     "'conv9' is not produced", 20),
    ("num_output: 4, kernel_size: 3", "num_output: 4, kernel_size: 30", "conv1", "convolution_param.kernel_size",
     "larger than the padded input", 13),
    ("top: ip\n", "top: data\n", "ip", "top", "already produced", 21),
    ("top: ip\n", "top: conv1\n", "ip", "top", "cannot run in place", 21),
    ("base_lr: 0.01", "base_lr: -1", None, "solver.base_lr", "must be > 0", 28),
    ("base_lr: 0.01", "base_lr: 0.01\n  lr_policy: step", None, "solver.gamma", "needs 'gamma'", 28),
    ("      top: loss\n", "      top: loss\n      weight: 3\n", "loss", "weight", "did you mean 'loss_weight'", 27),
    ("inner_product_param: {num_output: 10}", "convolution_param: {num_output: 10}", "ip",
     "convolution_param", "InnerProduct reads inner_product_param", 22),
])
def test_config_errors(tmp_path, old, new, layer, field, words, line):
    assert old in GOOD_NET
    err = error_for(tmp_path, GOOD_NET.replace(old, new, 1))
    assert err.layer == layer
    assert err.field == field
    assert words in str(err)
    assert err.line == line, str(err)


def test_yaml_syntax_error_has_a_line(tmp_path):
    err = error_for(tmp_path, GOOD_NET.replace("top: conv1\n", "top: [conv1\n", 1))
    assert "invalid YAML" in str(err) and err.line is not None


def test_wrong_label_shape_is_a_shape_mismatch(tmp_path):
    err = error_for(tmp_path, GOOD_NET.replace("{dim: [2]}", "{dim: [3]}"))
    assert err.layer == "loss" and "label shape" in str(err)


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_experiment(tmp_path / "nope.yaml")
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_experiment(path)


def test_net_from_separate_file(tmp_path):
    net_text = "net:\n" + GOOD_NET.split("net:\n", 1)[1].split("solver:")[0]
    write(tmp_path, net_text, "net.yaml")
    exp = load_experiment(write(tmp_path, "name: sep\nnet: net.yaml\nsolver: {base_lr: 0.1, max_iter: 3}\n"))
    assert exp.net.layers[1].name == "conv1"
    assert "conv1" in exp.text  # the stored config text holds the net inline


def test_phase_rules_and_same_name_across_phases(tmp_path):
    text = GOOD_NET.replace("""    - name: loss
      type: SoftmaxWithLoss""", """    - name: acc
      type: Accuracy
      bottom: [ip, label]
      top: acc
      include: {phase: TEST}
    - name: loss
      type: SoftmaxWithLoss""")
    exp = load_experiment(write(tmp_path, text))
    acc = next(layer for layer in exp.net.layers if layer.name == "acc")
    assert acc.in_phase("TEST") and not acc.in_phase("TRAIN")
    bad = text.replace("include: {phase: TEST}", "include: {phase: VALIDATE}")
    assert "TRAIN or TEST" in str(error_for(tmp_path, bad))


def test_net_without_loss_is_refused(tmp_path):
    text = GOOD_NET.split("    - name: loss")[0] + "solver: {base_lr: 0.1, max_iter: 3}\n"
    assert "no loss layer" in str(error_for(tmp_path, text))
