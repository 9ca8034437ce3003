"""The dry-run summary (shapes, parameters, MACs, no data) and --set overrides."""
import json

import pytest
import yaml

from cnntrain.cli.output import print_summary
from cnntrain.config import load_experiment
from cnntrain.config.overrides import apply_overrides, load_experiment_with, parse_value
from cnntrain.errors import ConfigError
from cnntrain.tools.summary import format_summary, summarize


def test_cifar10_quick_summary_without_data(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNTRAIN_DATA", str(tmp_path / "none"))   # no dataset is read
    s = summarize(load_experiment("configs/cifar10_quick.yaml"))
    rows = {r.name: r for r in s.rows}
    assert rows["cifar"].type == "Data" and rows["cifar"].tops == [("data", (100, 3, 32, 32)),
                                                                    ("label", (100,))]
    assert rows["conv1"].params == 32 * 75 + 32 and rows["conv1"].macs == 32 * 32 * 32 * 75
    assert rows["ip1"].tops == [("ip1", (100, 64))] and rows["ip1"].macs == 64 * 1024
    assert rows["relu1"].in_place and rows["pool3"].tops == [("pool3", (100, 64, 4, 4))]
    assert s.params == 145578            # Caffe's cifar10_quick
    assert s.macs == 2457600 + 6553600 + 3276800 + 65536 + 640
    lines = format_summary(s)
    assert lines[0] == "CIFAR10_quick (TRAIN net, batch 100)"
    assert lines[-2] == ("total: 145,578 parameters (0.56 MiB as float32), 12.35M MACs per "
                         "image forward")
    # data + labels, conv1, pool1, conv2, pool2, conv3, pool3, ip1, ip2, loss; the in-place
    # ReLUs add nothing.
    values = 100 * (3072 + 1 + 32768 + 8192 + 8192 + 2048 + 4096 + 1024 + 64 + 10) + 1
    assert s.activation_values == values
    assert lines[-1].startswith(f"activations: {values * 4 / 2 ** 20:.1f} MiB for one batch of 100")
    assert any(l.startswith("conv1  Convolution      conv1 100x32x32x32") for l in lines)


def test_dry_run_printout_and_json(capsys):
    exp = load_experiment("configs/cifar10_quick.yaml")
    print_summary(exp)
    out = capsys.readouterr().out.splitlines()
    assert "TEST net: 14 layers, batch 100; only in TEST: accuracy (Accuracy)" in out
    assert out[-2] == "solver: SGD, base_lr 0.001, lr_policy multistep, max_iter 5000"
    assert out[-1] == "config OK: configs/cifar10_quick.yaml"
    print_summary(exp, as_json=True)
    doc = json.loads(capsys.readouterr().out)
    assert doc["train"]["params"] == 145578 and doc["test"]["layers"][-2]["name"] == "accuracy"


@pytest.mark.parametrize("text, value", [
    ("0.01", 0.01), ("1e-3", 1e-3), ("-2E5", -2e5), ("7", 7), ("true", True),
    ("[4000, 6000]", [4000, 6000]),
    ("{type: gaussian, std: 0.1}", {"type": "gaussian", "std": 0.1}),
    ("MAX", "MAX"), ("", None),
])
def test_values_are_yaml(text, value):
    got = parse_value(text)
    assert got == value and type(got) is type(value)


def test_overrides_reach_solver_fields_and_named_layers():
    raw = yaml.safe_load(open("configs/cifar10_quick.yaml"))
    out = apply_overrides(raw, ["solver.base_lr=0.01", "net.layer.cifar.data_param.batch_size=10",
                                "net.layer.conv1.convolution_param.weight_filler.std=1e-3",
                                "net.layer.2.convolution_param.num_output=16",
                                "solver.stepvalue=[100, 200]", "solver.test_iter=",
                                "name=other"])
    assert raw["solver"]["base_lr"] == 0.001            # the input is not modified
    assert out["solver"]["base_lr"] == 0.01 and "test_iter" not in out["solver"]
    assert [l["data_param"]["batch_size"] for l in out["net"]["layer"][:2]] == [10, 10]
    conv1 = out["net"]["layer"][2]["convolution_param"]
    assert conv1["weight_filler"] == {"type": "gaussian", "std": 1e-3} and conv1["num_output"] == 16
    assert out["solver"]["stepvalue"] == [100, 200] and out["name"] == "other"


@pytest.mark.parametrize("override, words", [
    ("solver.base_lr", "expected PATH=VALUE"),
    ("solver..base_lr=1", "has an empty part"),
    ("net.layer.conv9.convolution_param.num_output=1", "no item named 'conv9' in 'net.layer' "
                                                       "(there are: cifar, cifar, conv1"),
    ("net.layer.99.name=x", "'net.layer' has 15 items, no index 99"),
    ("solver.base_lr.x=1", "'solver.base_lr' is a value (0.001), not a mapping or list"),
    ("solver.base_lr=[1", "the value is not valid YAML"),
])
def test_bad_overrides_are_one_line_errors(override, words):
    raw = yaml.safe_load(open("configs/cifar10_quick.yaml"))
    with pytest.raises(ConfigError) as err:
        apply_overrides(raw, [override])
    assert err.value.exit_code == 2 and words in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"--set {override}: ")


def test_overridden_config_is_validated_and_recorded(tmp_path):
    exp = load_experiment_with("configs/cifar10_quick.yaml",
                               ["solver.base_lr=0.05", "solver.max_iter=10"])
    assert exp.solver.base_lr == 0.05 and "base_lr: 0.05" in exp.text   # what runs/ records
    with pytest.raises(ConfigError, match="did you mean 'base_lr'"):
        load_experiment_with("configs/cifar10_quick.yaml", ["solver.base_rate=0.1"])
    with pytest.raises(ConfigError, match="must be a number"):
        load_experiment_with("configs/cifar10_quick.yaml", ["solver.base_lr=fast"])
    # A net kept in its own file is read in when an override reaches into it.
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(
        {"net": yaml.safe_load(open("configs/cifar10_quick.yaml"))["net"]}))
    (tmp_path / "exp.yaml").write_text("net: net.yaml\nsolver: {base_lr: 0.1, max_iter: 5}\n")
    exp = load_experiment_with(tmp_path / "exp.yaml",
                               ["net.layer.ip2.inner_product_param.num_output=5"])
    assert next(l for l in exp.net.layers if l.name == "ip2").blocks[
        "inner_product_param"].num_output == 5


SEED_EXAMPLE = """\
name: seed
net:
  name: seed
  layer:
    - {name: data, type: Input, top: data, input_param: {shape: [{dim: [1, 3, 32, 32]}]}}
    - name: conv
      type: Convolution
      bottom: data
      top: conv
      convolution_param: {num_output: 10, kernel_size: 5}
solver: {base_lr: 0.1, max_iter: 1}
"""


def test_summary_command_counts_the_seed_example(tmp_path):
    """The lecture's example: ten 5x5 filters on a 32x32x3 image have 10*(5*5*3+1) = 760
    parameters and give 10 maps of 28x28."""
    from tool_helpers import run

    config = tmp_path / "seed.yaml"
    config.write_text(SEED_EXAMPLE)
    result = run("summary", config, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["train"]["params"] == 760
    assert doc["train"]["layers"][1]["tops"] == {"conv": [1, 10, 28, 28]}
    assert doc["train"]["macs_per_image"] == 10 * 28 * 28 * 75
    table = run("summary", config)
    assert "total: 760 parameters" in table.stdout
    bad = run("summary", config, "--set", "net.layer.conv.convolution_param.kernel_size=40")
    assert bad.exit_code == 2 and "larger than the padded input" in bad.stderr


def test_running_statistics_are_not_counted_as_parameters_and_deconvolution_macs():
    from cnntrain.config import parse_net
    from cnntrain.layers import BuildContext
    from cnntrain.net import Net
    from cnntrain.rng import RngStreams
    from cnntrain.tools.summary import summarize_net

    raw = yaml.safe_load("""
        name: t
        layer:
          - {name: input, type: Input, top: data, input_param: {shape: {dim: [2, 4, 5, 5]}}}
          - {name: bn, type: BatchNorm, bottom: data, top: data}
          - {name: scale, type: Scale, bottom: data, top: data, scale_param: {bias_term: true}}
          - name: up
            type: Deconvolution
            bottom: data
            top: up
            convolution_param: {num_output: 6, kernel_size: 4, stride: 2, pad: 1, group: 2}
    """)
    net = Net(parse_net(raw, "t.yaml"), "TRAIN", BuildContext(RngStreams(0)))
    s = summarize_net(net, 2)
    rows = {r.name: r for r in s.rows}
    assert (rows["bn"].params, rows["bn"].statistics) == (0, 4 + 4 + 1)
    assert (rows["scale"].params, rows["scale"].statistics) == (4 + 4, 0)
    assert rows["up"].tops == [("up", (2, 6, 10, 10))]
    assert rows["up"].params == 4 * 3 * 16 + 6
    # Each of the 4*5*5 input values meets the 3 output channels of its group, 16 taps each.
    assert rows["up"].macs == 4 * 25 * 3 * 16
    assert s.params == 8 + 198 and s.statistics == 9
    assert "206 parameters and 9 running statistics" in format_summary(s)[-2]
    assert s.as_dict()["layers"][1]["statistics"] == 9
