"""import-prototxt: Caffe's own cifar10 prototxts (written here in Caffe's style from the
published layer lists) become cnntrain configs; .caffemodel.h5 weights become snapshots."""
import json
import textwrap

import h5py
import numpy as np
import pytest
from cnntrain.config import load_experiment
from cnntrain.config.overrides import load_experiment_with
from test_cli_e2e import write_cifar10_binary
from tool_helpers import run

CIFAR10_QUICK = """\
name: "CIFAR10_quick"
layer {
  name: "cifar"
  type: "Data"
  top: "data"
  top: "label"
  include {
    phase: TRAIN
  }
  transform_param {
    mean_file: "examples/cifar10/mean.binaryproto"
  }
  data_param {
    source: "examples/cifar10/cifar10_train_lmdb"
    batch_size: 100
    backend: LMDB
  }
}
layer {
  name: "cifar"
  type: "Data"
  top: "data"
  top: "label"
  include {
    phase: TEST
  }
  transform_param {
    mean_file: "examples/cifar10/mean.binaryproto"
  }
  data_param {
    source: "examples/cifar10/cifar10_test_lmdb"
    batch_size: 100
    backend: LMDB
  }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  convolution_param {
    num_output: 32
    pad: 2
    kernel_size: 5
    stride: 1
    weight_filler {
      type: "gaussian"
      std: 0.0001
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "pool1"
  type: "Pooling"
  bottom: "conv1"
  top: "pool1"
  pooling_param {
    pool: MAX
    kernel_size: 3
    stride: 2
  }
}
layer {
  name: "relu1"
  type: "ReLU"
  bottom: "pool1"
  top: "pool1"
}
layer {
  name: "conv2"
  type: "Convolution"
  bottom: "pool1"
  top: "conv2"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  convolution_param {
    num_output: 32
    pad: 2
    kernel_size: 5
    stride: 1
    weight_filler {
      type: "gaussian"
      std: 0.01
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "relu2"
  type: "ReLU"
  bottom: "conv2"
  top: "conv2"
}
layer {
  name: "pool2"
  type: "Pooling"
  bottom: "conv2"
  top: "pool2"
  pooling_param {
    pool: AVE
    kernel_size: 3
    stride: 2
  }
}
layer {
  name: "conv3"
  type: "Convolution"
  bottom: "pool2"
  top: "conv3"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  convolution_param {
    num_output: 64
    pad: 2
    kernel_size: 5
    stride: 1
    weight_filler {
      type: "gaussian"
      std: 0.01
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "relu3"
  type: "ReLU"
  bottom: "conv3"
  top: "conv3"
}
layer {
  name: "pool3"
  type: "Pooling"
  bottom: "conv3"
  top: "pool3"
  pooling_param {
    pool: AVE
    kernel_size: 3
    stride: 2
  }
}
layer {
  name: "ip1"
  type: "InnerProduct"
  bottom: "pool3"
  top: "ip1"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  inner_product_param {
    num_output: 64
    weight_filler {
      type: "gaussian"
      std: 0.1
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "ip2"
  type: "InnerProduct"
  bottom: "ip1"
  top: "ip2"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  inner_product_param {
    num_output: 10
    weight_filler {
      type: "gaussian"
      std: 0.1
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "accuracy"
  type: "Accuracy"
  bottom: "ip2"
  bottom: "label"
  top: "accuracy"
  include {
    phase: TEST
  }
}
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "ip2"
  bottom: "label"
  top: "loss"
}
"""

CIFAR10_QUICK_SOLVER = """\
# reduce the learning rate after 8 epochs (4000 iters) by a factor of 10

# The train/test net protocol buffer definition
net: "examples/cifar10/cifar10_quick_train_test.prototxt"
# test_iter specifies how many forward passes the test should carry out.
# In the case of MNIST, we have test batch size 100 and 100 test iterations,
# covering the full 10,000 testing images.
test_iter: 100
# Carry out testing every 500 training iterations.
test_interval: 500
# The base learning rate, momentum and the weight decay of the network.
base_lr: 0.001
momentum: 0.9
weight_decay: 0.004
# The learning rate policy
lr_policy: "fixed"
# Display every 100 iterations
display: 100
# The maximum number of iterations
max_iter: 4000
# snapshot intermediate results
snapshot: 4000
snapshot_format: HDF5
snapshot_prefix: "examples/cifar10/cifar10_quick"
# solver mode: CPU or GPU
solver_mode: GPU
"""

# Caffe's examples/cifar10/cifar10_full_train_test.prototxt: LRN after pool1 and pool2.
CIFAR10_FULL = """\
name: "CIFAR10_full"
layer {
  name: "cifar"
  type: "Data"
  top: "data"
  top: "label"
  include {
    phase: TRAIN
  }
  transform_param {
    mean_file: "examples/cifar10/mean.binaryproto"
  }
  data_param {
    source: "examples/cifar10/cifar10_train_lmdb"
    batch_size: 100
    backend: LMDB
  }
}
layer {
  name: "cifar"
  type: "Data"
  top: "data"
  top: "label"
  include {
    phase: TEST
  }
  transform_param {
    mean_file: "examples/cifar10/mean.binaryproto"
  }
  data_param {
    source: "examples/cifar10/cifar10_test_lmdb"
    batch_size: 100
    backend: LMDB
  }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  convolution_param {
    num_output: 32
    pad: 2
    kernel_size: 5
    stride: 1
    weight_filler {
      type: "gaussian"
      std: 0.0001
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "pool1"
  type: "Pooling"
  bottom: "conv1"
  top: "pool1"
  pooling_param {
    pool: MAX
    kernel_size: 3
    stride: 2
  }
}
layer {
  name: "relu1"
  type: "ReLU"
  bottom: "pool1"
  top: "pool1"
}
layer {
  name: "norm1"
  type: "LRN"
  bottom: "pool1"
  top: "norm1"
  lrn_param {
    local_size: 3
    alpha: 5e-05
    beta: 0.75
    norm_region: WITHIN_CHANNEL
  }
}
layer {
  name: "conv2"
  type: "Convolution"
  bottom: "norm1"
  top: "conv2"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  convolution_param {
    num_output: 32
    pad: 2
    kernel_size: 5
    stride: 1
    weight_filler {
      type: "gaussian"
      std: 0.01
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "relu2"
  type: "ReLU"
  bottom: "conv2"
  top: "conv2"
}
layer {
  name: "pool2"
  type: "Pooling"
  bottom: "conv2"
  top: "pool2"
  pooling_param {
    pool: AVE
    kernel_size: 3
    stride: 2
  }
}
layer {
  name: "norm2"
  type: "LRN"
  bottom: "pool2"
  top: "norm2"
  lrn_param {
    local_size: 3
    alpha: 5e-05
    beta: 0.75
    norm_region: WITHIN_CHANNEL
  }
}
layer {
  name: "conv3"
  type: "Convolution"
  bottom: "norm2"
  top: "conv3"
  convolution_param {
    num_output: 64
    pad: 2
    kernel_size: 5
    stride: 1
    weight_filler {
      type: "gaussian"
      std: 0.01
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "relu3"
  type: "ReLU"
  bottom: "conv3"
  top: "conv3"
}
layer {
  name: "pool3"
  type: "Pooling"
  bottom: "conv3"
  top: "pool3"
  pooling_param {
    pool: AVE
    kernel_size: 3
    stride: 2
  }
}
layer {
  name: "ip1"
  type: "InnerProduct"
  bottom: "pool3"
  top: "ip1"
  param {
    lr_mult: 1
    decay_mult: 250
  }
  param {
    lr_mult: 2
    decay_mult: 0
  }
  inner_product_param {
    num_output: 10
    weight_filler {
      type: "gaussian"
      std: 0.01
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "accuracy"
  type: "Accuracy"
  bottom: "ip1"
  bottom: "label"
  top: "accuracy"
  include {
    phase: TEST
  }
}
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "ip1"
  bottom: "label"
  top: "loss"
}
"""

# Caffe's examples/cifar10/cifar10_full_solver.prototxt (its first stage).
CIFAR10_FULL_SOLVER = """\
net: "examples/cifar10/cifar10_full_train_test.prototxt"
test_iter: 100
test_interval: 1000
base_lr: 0.001
momentum: 0.9
weight_decay: 0.004
lr_policy: "fixed"
display: 200
max_iter: 60000
snapshot: 10000
snapshot_format: HDF5
snapshot_prefix: "examples/cifar10/cifar10_full"
solver_mode: GPU
"""

# The pre-2015 syntax, as in Caffe's old examples/mnist/lenet_train_test.prototxt.
LENET_V1 = """\
name: "LeNet"
layers {
  name: "mnist"
  type: DATA
  top: "data"
  top: "label"
  data_param {
    source: "examples/mnist/mnist_train_lmdb"
    backend: LMDB
    batch_size: 64
  }
  transform_param {
    scale: 0.00390625
  }
  include: { phase: TRAIN }
}
layers {
  name: "conv1"
  type: CONVOLUTION
  bottom: "data"
  top: "conv1"
  blobs_lr: 1
  blobs_lr: 2
  convolution_param {
    num_output: 20
    kernel_size: 5
    stride: 1
  }
}
"""


@pytest.fixture
def quick_files(tmp_path):
    net = tmp_path / "cifar10_quick_train_test.prototxt"
    solver = tmp_path / "cifar10_quick_solver.prototxt"
    net.write_text(CIFAR10_QUICK)
    solver.write_text(CIFAR10_QUICK_SOLVER)
    return tmp_path, net, solver


def _layers(spec):
    """What defines a layer, without where it was written."""
    return [(l.name, l.type, l.bottom, l.top, l.param_specs, l.include, l.exclude,
             l.loss_weight, l.propagate_down, l.blocks) for l in spec.layers]


def test_cifar10_quick_imports_to_the_shipped_config(quick_files):
    tmp, net, solver = quick_files
    out = tmp / "cifar10_quick.yaml"
    result = run("import-prototxt", net, solver, "-o", out)
    assert result.exit_code == 0, result.output + result.stderr
    assert "not imported" not in result.stderr          # everything has an equivalent
    assert "solver_mode GPU" in result.stderr and "mean_image: true" in result.stderr
    imported, shipped = load_experiment(out), load_experiment("configs/cifar10_quick.yaml")
    assert imported.name == "cifar10_quick" and imported.net.name == shipped.net.name
    assert _layers(imported.net) == _layers(shipped.net)
    s = imported.solver.values
    assert (s.type, s.base_lr, s.momentum, s.weight_decay, s.lr_policy, s.max_iter, s.display,
            s.test_iter, s.test_interval, s.snapshot) == ("SGD", 0.001, 0.9, 0.004, "fixed",
                                                          4000, 100, 100, 500, 4000)
    text = out.read_text()
    assert text.startswith("# Imported from cifar10_quick_train_test.prototxt")
    # The style of configs/: flow mappings for small blocks, block style for bigger ones.
    assert "      pooling_param: {pool: MAX, kernel_size: 3, stride: 2}\n" in text
    assert "        weight_filler: {type: gaussian, std: 0.0001}\n" in text
    assert "      param: [{lr_mult: 1}, {lr_mult: 2}]\n" in text


def test_imported_cifar10_quick_trains_exactly_like_the_shipped_config(quick_files):
    """Same seed: same initial weights, same losses, same weights after a few steps."""
    from cnntrain.trainer import Trainer

    tmp, net, solver = quick_files
    out = tmp / "cifar10_quick.yaml"
    assert run("import-prototxt", net, solver, "-o", out).exit_code == 0
    data = write_cifar10_binary(tmp / "data")
    small = ["net.layer.cifar.data_param.batch_size=4", "solver.max_iter=3",
             "solver.display=1", "solver.test_interval=0", "solver.snapshot=0"]
    runs = {}
    for label, path in (("imported", out), ("shipped", "configs/cifar10_quick.yaml")):
        exp = load_experiment_with(path, small + [f"name={label}"])
        trainer = Trainer(exp, runs_root=tmp / "runs", data_dir=str(data), notify=lambda m: None,
                          progress=False)
        initial = {(l, i): p.data.copy() for l, i, p in trainer.train_net.param_keys}
        shapes = dict(trainer.train_net.shapes)
        trainer.train()
        final = {(l, i): p.data.copy() for l, i, p in trainer.train_net.param_keys}
        losses = (tmp / "runs" / label / "metrics.csv").read_text().splitlines()[1:]
        runs[label] = (initial, shapes, losses, final)
    (init_a, shapes_a, loss_a, final_a), (init_b, shapes_b, loss_b, final_b) = (
        runs["imported"], runs["shipped"])
    assert shapes_a == shapes_b
    assert init_a.keys() == init_b.keys() and len(init_a) == 10
    for key in init_a:
        np.testing.assert_array_equal(init_a[key], init_b[key])
    assert len(loss_a) == 3 and [r.split(",")[1] for r in loss_a] == [r.split(",")[1]
                                                                      for r in loss_b]
    for key in final_a:
        np.testing.assert_array_equal(final_a[key], final_b[key])
    assert not np.array_equal(final_a[("conv1", 0)], init_a[("conv1", 0)])  # it did train


def cifar10_full_files(tmp_path, net_text=CIFAR10_FULL):
    net = tmp_path / "cifar10_full_train_test.prototxt"
    solver = tmp_path / "cifar10_full_solver.prototxt"
    net.write_text(net_text)
    solver.write_text(CIFAR10_FULL_SOLVER)
    return net, solver


def test_cifar10_full_imports_with_its_lrn_layers(tmp_path):
    net, solver = cifar10_full_files(tmp_path)
    out = tmp_path / "full.yaml"
    result = run("import-prototxt", net, solver, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "NOT IMPORTED" not in out.read_text()
    exp = load_experiment(out)
    norm1 = next(l for l in exp.net.layers if l.name == "norm1")
    assert norm1.type == "LRN" and norm1.bottom == ("pool1",)
    assert dict(norm1.blocks["lrn_param"]) == {"local_size": 3, "alpha": 5e-05, "beta": 0.75,
                                               "k": 1.0, "norm_region": "WITHIN_CHANNEL"}
    conv2 = next(l for l in exp.net.layers if l.name == "conv2")
    assert conv2.bottom == ("norm1",)
    ip1 = next(l for l in exp.net.layers if l.name == "ip1")
    assert [p.decay_mult for p in ip1.param_specs] == [250, 0]
    assert exp.solver.max_iter == 60000 and exp.solver.display == 200
    shown = run("train", out, "--dry-run")
    assert shown.exit_code == 0, shown.output
    assert "norm2" in shown.output and "LRN" in shown.output


def test_unsupported_layer_types_are_listed_and_fail_unless_skipped(tmp_path):
    # Python layers run user code inside Caffe: cnntrain will never have them.
    net, solver = cifar10_full_files(tmp_path, CIFAR10_FULL.replace('type: "LRN"',
                                                                    'type: "Python"'))
    out = tmp_path / "full.yaml"
    failed = run("import-prototxt", net, solver, "-o", out)
    assert failed.exit_code == 2 and not out.exists()
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Python" in lines[0] and "norm1" in lines[0] and "norm2" in lines[0]
    assert "--skip-unsupported" in lines[0] and "Traceback" not in failed.output

    skipped = run("import-prototxt", net, solver, "-o", out, "--skip-unsupported")
    assert skipped.exit_code == 0, skipped.stderr
    assert "not imported: " in skipped.stderr and "type Python" in skipped.stderr
    text = out.read_text()
    head = text.split("\nname:")[0]
    assert "NOT IMPORTED" in head and "layer 'norm1': type Python" in head
    assert "layer 'norm2': type Python" in head
    exp = load_experiment(out)
    conv2 = next(l for l in exp.net.layers if l.name == "conv2")
    conv3 = next(l for l in exp.net.layers if l.name == "conv3")
    assert conv2.bottom == ("pool1",) and conv3.bottom == ("pool2",)  # bypassed


RESIDUAL_NET = """\
name: "residual"
input: "data"
input_shape { dim: 2 dim: 3 dim: 8 dim: 8 }
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "msra" } }
}
layer {
  name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }
  batch_norm_param { use_global_stats: false moving_average_fraction: 0.9 }
}
layer {
  name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
  scale_param { bias_term: true }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer {
  name: "branch" type: "Convolution" bottom: "conv1" top: "branch"
  convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "xavier" } }
}
layer {
  name: "sum" type: "Eltwise" bottom: "conv1" bottom: "branch" top: "sum"
  eltwise_param { operation: SUM coeff: 1 coeff: 0.5 }
}
layer {
  name: "cat" type: "Concat" bottom: "sum" bottom: "conv1" top: "cat"
  concat_param { axis: 1 }
}
layer {
  name: "norm" type: "LRN" bottom: "cat" top: "norm"
  lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 }
}
layer {
  name: "up" type: "Deconvolution" bottom: "norm" top: "up"
  convolution_param { num_output: 2 kernel_size: 4 stride: 2 pad: 1 bias_term: false
                      weight_filler { type: "gaussian" std: 0.01 } }
}
layer {
  name: "halves" type: "Slice" bottom: "up" top: "a" top: "b"
  slice_param { axis: 1 slice_point: 1 }
}
layer { name: "crop" type: "Crop" bottom: "a" bottom: "data" top: "crop"
        crop_param { axis: 2 offset: 4 } }
layer { name: "flat" type: "Reshape" bottom: "crop" top: "flat"
        reshape_param { shape { dim: 0 dim: -1 } } }
"""


def test_batchnorm_scale_and_routing_layers_import(tmp_path):
    net = tmp_path / "residual.prototxt"
    net.write_text(RESIDUAL_NET)
    out = tmp_path / "residual.yaml"
    result = run("import-prototxt", net, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "not imported" not in result.stderr
    exp = load_experiment(out)
    layers = {l.name: l for l in exp.net.layers}
    assert [p.lr_mult for p in layers["bn1"].param_specs] == [0, 0, 0]
    assert layers["bn1"].blocks["batch_norm_param"].moving_average_fraction == 0.9
    assert layers["scale1"].blocks["scale_param"].bias_term is True
    assert layers["sum"].blocks["eltwise_param"].coeff == (1.0, 0.5)
    assert layers["halves"].blocks["slice_param"].slice_point == (1,)
    assert layers["crop"].blocks["crop_param"].offset == (4,)
    assert layers["flat"].blocks["reshape_param"].shape == ((0, -1),)
    assert layers["up"].type == "Deconvolution"
    shown = run("train", out, "--dry-run")   # the nets build: every shape fits
    assert shown.exit_code == 0, shown.output
    assert "flat 2x64" in shown.output


def test_v1_layers_syntax_is_named_in_the_error(tmp_path):
    net = tmp_path / "lenet.prototxt"
    net.write_text(LENET_V1)
    result = run("import-prototxt", net, "-o", tmp_path / "x.yaml")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and f"{net}:2:" in line and "V1" in line and "'layers" in line
    assert "upgrade_net_proto_text" in line


def test_unsupported_fields_are_listed_not_dropped(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text(textwrap.dedent("""\
        name: "odd"
        force_backward: true
        input: "data"
        input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
        layer {
          name: "conv" type: "Convolution" bottom: "data" top: "conv"
          param { lr_mult: 1 share_mode: STRICT }
          convolution_param {
            num_output: 4 kernel_size: 3 dilation: 2 engine: CUDNN
            weight_filler { type: "bilinear" }
          }
        }
        layer {
          name: "pool" type: "Pooling" bottom: "conv" top: "pool"
          pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 round_mode: CEIL }
        }
        layer { name: "relu" type: "ReLU" bottom: "pool" top: "pool" relu_param { engine: CAFFE } }
        layer {
          name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
          include { phase: TEST stage: "deploy" }
          inner_product_param { num_output: 2 }
        }
        layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" include { phase: TEST } }
        """))
    solver = tmp_path / "solver.prototxt"
    solver.write_text(textwrap.dedent("""\
        type: "AdaGrad"
        base_lr: 0.01
        momentum: 0.9
        max_iter: 10
        lr_policy: "step" gamma: 0.1 stepsize: 5 random_seed: -1
        iter_size: 2 test_state { stage: "x" } clip_gradients: -1
        """))
    out = tmp_path / "odd.yaml"
    result = run("import-prototxt", net, solver, "-o", out)
    assert result.exit_code == 0, result.stderr
    listed = [l for l in result.stderr.splitlines() if l.startswith("not imported: ")]
    text = " ".join(listed)
    for words in ("force_backward", "share_mode", "filler type 'bilinear'",
                  "pool: STOCHASTIC", "include.stage", "momentum: 0.9 (not read by the AdaGrad",
                  "test_state"):
        assert words in text, words
    for quiet in ("engine", "round_mode", "clip_gradients", "dilation"):
        assert quiet not in text, quiet
    assert all(l.split("not imported: ")[1] in out.read_text() for l in listed)
    exp = load_experiment(out)
    assert exp.net.layers[0].type == "Input"
    assert exp.net.layers[0].blocks["input_param"].shape == ((1, 3, 8, 8),)
    assert exp.net.layers[1].blocks["convolution_param"].dilation == (2,)   # imported, not dropped
    assert exp.solver.type == "AdaGrad" and exp.solver.iter_size == 2
    assert exp.solver.stepsize == 5 and exp.solver.random_seed == 1


def test_json_output_for_scripts(quick_files):
    tmp, net, solver = quick_files
    result = run("import-prototxt", net, solver, "-o", tmp / "q.yaml", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["config"] == str(tmp / "q.yaml") and doc["layers"] == 15
    assert doc["unsupported"] == [] and any("solver_mode" in n for n in doc["notes"])


# --- a .caffemodel.h5 from Caffe: import with --weights, then test and predict -----------
SMALL_NET = """\
name: "small"
layer {
  name: "cifar" type: "Data" top: "data" top: "label"
  include { phase: TRAIN }
  transform_param { mean_file: "mean.binaryproto" scale: 0.0078125 }
  data_param { source: "cifar10_train_lmdb" batch_size: 8 backend: LMDB }
}
layer {
  name: "cifar" type: "Data" top: "data" top: "label"
  include { phase: TEST }
  transform_param { mean_file: "mean.binaryproto" scale: 0.0078125 }
  data_param { source: "cifar10_test_lmdb" batch_size: 5 backend: LMDB }
}
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer {
  name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layer {
  name: "ip" type: "InnerProduct" bottom: "pool1" top: "ip"
  inner_product_param { num_output: 10 }
}
layer {
  name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
  include { phase: TEST }
}
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def _read_binary(folder, names):
    records = np.concatenate([np.frombuffer((folder / n).read_bytes(), np.uint8).reshape(-1, 3073)
                              for n in names])
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _numpy_forward(images, mean, w):
    """The small net by hand: (x - mean) * scale, conv 3x3 pad 1 stride 2, ReLU,
    max pool 2/2, inner product, softmax."""
    x = (images.astype(np.float64) - mean) * 0.0078125
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((len(x), 4, 16, 16))
    for i in range(3):
        for j in range(3):
            patch = xp[:, :, i:i + 31:2, j:j + 31:2]                 # (N, 3, 16, 16)
            conv += np.einsum("nchw,oc->nohw", patch, w["conv1/0"][:, :, i, j])
    conv = np.maximum(conv + w["conv1/1"][None, :, None, None], 0)
    pool = conv.reshape(len(x), 4, 8, 2, 8, 2).max(axis=(3, 5))
    scores = pool.reshape(len(x), -1) @ w["ip/0"].reshape(10, -1).T + w["ip/1"]
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_caffemodel_h5_weights_test_and_predict_like_numpy(tmp_path):
    data = write_cifar10_binary(tmp_path / "data")
    net = tmp_path / "small.prototxt"
    net.write_text(SMALL_NET)
    rng = np.random.default_rng(5)
    w = {"conv1/0": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
         "conv1/1": rng.normal(0, 0.1, 4).astype(np.float32),
         # Old Caffe wrote InnerProduct blobs 4-D: (1, 1, num_output, K).
         "ip/0": rng.normal(0, 0.1, (1, 1, 10, 256)).astype(np.float32),
         "ip/1": rng.normal(0, 0.1, 10).astype(np.float32)}
    model = tmp_path / "small_iter_100.caffemodel.h5"
    with h5py.File(model, "w") as f:          # Caffe's Net::ToHDF5 layout
        for key, value in w.items():
            f[f"data/{key}"] = value
            f[f"diff/{key}"] = np.zeros_like(value)
        f.create_group("data/relu1")           # layers without blobs appear empty
    out = tmp_path / "small.yaml"
    result = run("import-prototxt", net, "-o", out, "--weights", model)
    assert result.exit_code == 0, result.stderr
    snapshot = tmp_path / "small.h5"
    assert f"wrote {snapshot}" in result.stdout and "conv1, ip" in result.stdout
    assert "(1, 1, 10, 256) read as (10, 256)" in result.stderr

    folder = data / "cifar-10-batches-bin"
    train_images, _ = _read_binary(folder, [f"data_batch_{i}.bin" for i in range(1, 6)])
    test_images, test_labels = _read_binary(folder, ["test_batch.bin"])
    mean = train_images.astype(np.float64).mean(axis=0)
    expected = _numpy_forward(test_images, mean, {k: v.astype(np.float64) for k, v in w.items()})

    tested = run("test", "--snapshot", snapshot, "--data-dir", data)
    assert tested.exit_code == 0, tested.stderr
    accuracy = float(tested.stdout.split("accuracy: ")[1].split()[0])
    loss = float(tested.stdout.split("loss: ")[1].split()[0])
    assert accuracy == pytest.approx((expected.argmax(axis=1) == test_labels).mean(), abs=1e-4)
    assert loss == pytest.approx(-np.log(expected[np.arange(25), test_labels]).mean(), abs=1e-4)

    arrays = tmp_path / "test_images.npy"
    np.save(arrays, test_images)
    predicted = run("predict", "--snapshot", snapshot, arrays, "--data-dir", data, "--json",
                    "--top-k", "10")
    assert predicted.exit_code == 0, predicted.stderr
    doc = json.loads(predicted.stdout)
    assert len(doc) == 25 and doc[3]["input"] == f"{arrays}[3]"
    got = np.zeros((25, 10))
    for row, item in enumerate(doc):
        for entry in item["top"]:
            got[row, entry["class"]] = entry["probability"]
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert doc[0]["top"][0]["name"] in ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                        "frog", "horse", "ship", "truck")


def test_weights_of_another_net_are_a_snapshot_error(tmp_path):
    net = tmp_path / "small.prototxt"
    net.write_text(SMALL_NET)
    model = tmp_path / "other.caffemodel.h5"
    with h5py.File(model, "w") as f:
        f["data/conv1/0"] = np.zeros((8, 3, 3, 3), np.float32)
    result = run("import-prototxt", net, "-o", tmp_path / "s.yaml", "--weights", model)
    assert result.exit_code == 4
    assert "conv1" in result.stderr and "(8, 3, 3, 3)" in result.stderr
