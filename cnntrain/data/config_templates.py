"""The configs ``cnntrain port`` writes, as templates whose class count comes from the dataset.

Written by hand, CIFAR-100 configs are where Caffe users got 1 % accuracy: a copy of a
CIFAR-10 net keeps ``num_output: 10``. Here the count is filled in from the dataset and
the label kind, so it cannot be wrong (and a hand-edited mismatch is caught when the
net is built, see ``Net``). The files in ``configs/`` are these templates rendered with
the defaults; a test keeps them identical.
"""
from __future__ import annotations

from string import Template

from cnntrain.data.native import CLASSES

_DATA = """\
    - name: cifar
      type: Data
      top: [data, label]
      include: {phase: TRAIN}
      data_param:
        hdf5: $dataset-train.h5     # written by cnntrain port, in the data folder
        dataset: $dataset
$labels_line        batch_size: $batch
      transform_param: $train_transform
    - name: cifar
      type: Data
      top: [data, label]
      include: {phase: TEST}
      data_param:
        hdf5: $dataset-test.h5
        dataset: $dataset
        split: test
$labels_line        batch_size: $test_batch
      transform_param: $test_transform
"""


QUICK = Template("""\
# $comment
# Caffe's cifar10_quick net (configs/cifar10_quick.yaml) with $classes outputs, for
# $what.
# It reads the native files of `cnntrain port $dataset` ($dataset-train.h5 and
# $dataset-test.h5), found in --data-dir, $$CNNTRAIN_DATA or ~/.cache/cnntrain.
name: $name
net:
  name: $net_name
  layer:
""" + _DATA + """\
    - name: conv1
      type: Convolution
      bottom: data
      top: conv1
      param: [{lr_mult: 1}, {lr_mult: 2}]
      convolution_param:
        num_output: 32
        pad: 2
        kernel_size: 5
        stride: 1
        weight_filler: {type: gaussian, std: 0.0001}
        bias_filler: {type: constant}
    - name: pool1
      type: Pooling
      bottom: conv1
      top: pool1
      pooling_param: {pool: MAX, kernel_size: 3, stride: 2}
    - name: relu1
      type: ReLU
      bottom: pool1
      top: pool1
    - name: conv2
      type: Convolution
      bottom: pool1
      top: conv2
      param: [{lr_mult: 1}, {lr_mult: 2}]
      convolution_param:
        num_output: 32
        pad: 2
        kernel_size: 5
        stride: 1
        weight_filler: {type: gaussian, std: 0.01}
        bias_filler: {type: constant}
    - name: relu2
      type: ReLU
      bottom: conv2
      top: conv2
    - name: pool2
      type: Pooling
      bottom: conv2
      top: pool2
      pooling_param: {pool: AVE, kernel_size: 3, stride: 2}
    - name: conv3
      type: Convolution
      bottom: pool2
      top: conv3
      param: [{lr_mult: 1}, {lr_mult: 2}]
      convolution_param:
        num_output: 64
        pad: 2
        kernel_size: 5
        stride: 1
        weight_filler: {type: gaussian, std: 0.01}
        bias_filler: {type: constant}
    - name: relu3
      type: ReLU
      bottom: conv3
      top: conv3
    - name: pool3
      type: Pooling
      bottom: conv3
      top: pool3
      pooling_param: {pool: AVE, kernel_size: 3, stride: 2}
    - name: ip1
      type: InnerProduct
      bottom: pool3
      top: ip1
      param: [{lr_mult: 1}, {lr_mult: 2}]
      inner_product_param:
        num_output: 64
        weight_filler: {type: gaussian, std: 0.1}
        bias_filler: {type: constant}
    - name: ip2
      type: InnerProduct
      bottom: ip1
      top: ip2
      param: [{lr_mult: 1}, {lr_mult: 2}]
      inner_product_param:
        num_output: $classes      # $what
        weight_filler: {type: gaussian, std: 0.1}
        bias_filler: {type: constant}
    - name: accuracy
      type: Accuracy
      bottom: [ip2, label]
      top: accuracy
      include: {phase: TEST}
    - name: loss
      type: SoftmaxWithLoss
      bottom: [ip2, label]
      top: loss
solver:
  type: SGD
  base_lr: 0.001
  momentum: 0.9
  weight_decay: 0.004
  lr_policy: multistep
  gamma: 0.1
  stepvalue: [4000]
  max_iter: 5000
  display: 100
  test_interval: 500
  test_iter: 100
  snapshot: 1000
  random_seed: 1
""")


def _conv(name: str, bottom: str, outputs: int) -> str:
    return f"""\
    - name: {name}
      type: Convolution
      bottom: {bottom}
      top: {name}
      convolution_param:
        num_output: {outputs}
        kernel_size: 3
        pad: 1
        weight_filler: {{type: msra}}
    - name: relu{name[4:]}
      type: ReLU
      bottom: {name}
      top: {name}
"""


def _pool(stage: int, bottom: str) -> str:
    return f"""\
    - name: pool{stage}
      type: Pooling
      bottom: {bottom}
      top: pool{stage}
      pooling_param: {{pool: MAX, kernel_size: 2, stride: 2}}
"""


def _vgg_body() -> str:
    parts, bottom = [], "data"
    for stage, width in ((1, 32), (2, 64), (3, 128)):
        for k in (1, 2):
            name = f"conv{stage}_{k}"
            parts.append(_conv(name, bottom, width))
            bottom = name
        parts.append(_pool(stage, bottom))
        bottom = f"pool{stage}"
    return "".join(parts)


VGG = Template("""\
# $comment
# A VGG-style net with $classes outputs, for
# $what.
# Three stages of two 3x3 convolutions (32, 64, 128 channels) and 2x2 max pooling, then
# a 256-unit layer with dropout. He (msra) initialization, as VGG nets need when they
# have no BatchNorm layers (this one keeps the net small). Random flips and 2 px shifts. 39 M
# multiply-accumulates per image (3x the quick net's 12 M); 30000 iterations (60 epochs)
# with a linear warm-up and a cosine schedule. It reads the native files of
# `cnntrain port $dataset` ($dataset-train.h5 and $dataset-test.h5), found in
# --data-dir, $$CNNTRAIN_DATA or ~/.cache/cnntrain.
name: $name
net:
  name: $net_name
  layer:
""" + _DATA + _vgg_body() + """\
    - name: ip1
      type: InnerProduct
      bottom: pool3
      top: ip1
      inner_product_param:
        num_output: 256
        weight_filler: {type: msra}
    - name: relu_ip1
      type: ReLU
      bottom: ip1
      top: ip1
    - name: drop1
      type: Dropout
      bottom: ip1
      top: ip1
      dropout_param: {dropout_ratio: 0.5}
    - name: ip2
      type: InnerProduct
      bottom: ip1
      top: ip2
      inner_product_param:
        num_output: $classes      # $what
        weight_filler: {type: gaussian, std: 0.01}
    - name: accuracy
      type: Accuracy
      bottom: [ip2, label]
      top: accuracy
      include: {phase: TEST}
    - name: accuracy_top5
      type: Accuracy
      bottom: [ip2, label]
      top: accuracy_top5
      include: {phase: TEST}
      accuracy_param: {top_k: 5}
    - name: loss
      type: SoftmaxWithLoss
      bottom: [ip2, label]
      top: loss
solver:
  type: SGD
  base_lr: 0.02
  momentum: 0.9
  weight_decay: 0.0005
  lr_policy: cosine
  warmup_iter: 1000
  max_iter: 30000
  display: 100
  test_interval: 2000
  snapshot: 5000
  snapshot_keep: 3
  random_seed: 1
""")

def fast_layers(classes: int, what: str) -> str:
    """The layers of the fast94 recipe after its Data layers (configs/fast94_cifar10.yaml
    holds them for 10 classes, and a test keeps that file equal to this): the whitening
    layer, three blocks conv-pool-BatchNorm-GELU-conv-BatchNorm-GELU of 64, 256 and 256
    channels, max pooling, the classifier and the loss."""
    def conv(name: str, bottom: str, cin: int, cout: int) -> str:
        bound = 1 / (cin * 9) ** 0.5     # PyTorch's default init, as airbench has it
        return f"""\
    - name: {name}
      type: Convolution
      bottom: {bottom}
      top: {name}
      convolution_param:
        num_output: {cout}
        kernel_size: 3
        pad: 1
        bias_term: false
        weight_filler: {{type: uniform, min: {-bound:.6f}, max: {bound:.6f}, dirac: true}}
"""

    def norm(name: str, blob: str) -> str:
        return f"""\
    - name: {name}
      type: BatchNorm
      bottom: {blob}
      top: {blob}
      batch_norm_param: {{moving_average_fraction: 0.6, eps: 1.0e-12}}
    - name: {name}_bias
      type: Bias
      bottom: {blob}
      top: {blob}
      param: [{{lr_mult: 64, decay_mult: 0.015625}}]
"""

    def gelu(name: str, blob: str) -> str:
        return f"""\
    - name: {name}
      type: GELU
      bottom: {blob}
      top: {blob}
      gelu_param: {{approximate: tanh}}
"""

    def pool(name: str, bottom: str, size: int) -> str:
        return f"""\
    - name: {name}
      type: Pooling
      bottom: {bottom}
      top: {name}
      pooling_param: {{pool: MAX, kernel_size: {size}, stride: {size}, round_mode: FLOOR}}
"""
    parts = ["""\
    - name: whiten
      type: Convolution
      bottom: data
      top: whiten
      param: [{lr_mult: 0}, {lr_mult: 1, freeze_iter: 146}]
      convolution_param:
        num_output: 24
        kernel_size: 2
        weight_filler: {type: whitening, images: 5000, eps: 0.0005}
""", gelu("whiten_gelu", "whiten")]
    bottom, cin = "whiten", 24
    for block, width in (("b1", 64), ("b2", 256), ("b3", 256)):
        parts += [conv(f"{block}_conv1", bottom, cin, width), pool(f"{block}_pool", f"{block}_conv1", 2),
                  norm(f"{block}_bn1", f"{block}_pool"), gelu(f"{block}_gelu1", f"{block}_pool"),
                  conv(f"{block}_conv2", f"{block}_pool", width, width),
                  norm(f"{block}_bn2", f"{block}_conv2"), gelu(f"{block}_gelu2", f"{block}_conv2")]
        bottom, cin = f"{block}_conv2", width
    parts.append(pool("pool", bottom, 3))
    top5 = "" if classes <= 10 else """\
    - name: accuracy_top5
      type: Accuracy
      bottom: [logits, label]
      top: accuracy_top5
      include: {phase: TEST}
      accuracy_param: {top_k: 5}
"""
    parts.append(f"""\
    - name: fc
      type: InnerProduct
      bottom: pool
      top: fc
      inner_product_param:
        num_output: {classes}      # {what}
        bias_term: false
        weight_filler: {{type: uniform, min: -0.0625, max: 0.0625}}
    - name: logits
      type: Power
      bottom: fc
      top: logits
      power_param: {{scale: 0.1111111}}
    - name: loss
      type: SoftmaxWithLoss
      bottom: [logits, label]
      top: loss
      loss_param: {{label_smoothing: 0.2}}
    - name: accuracy
      type: Accuracy
      bottom: [logits, label]
      top: accuracy
      include: {{phase: TEST}}
""" + top5)
    return "".join(parts)


FAST = Template("""\
# $comment
# The fast94 recipe (configs/fast94_cifar10.yaml, where every part is explained) with
# $classes outputs, for $what:
# patch whitening, Dirac-initialized 3x3 convolutions, BatchNorm without a learned
# scale, GELU, label smoothing, Nesterov at batch 1024 with a warm-up and a linear
# decay, fast BatchNorm biases, Lookahead, alternating flips and reflect-padded 2 px
# shifts, and 6 test views. 15 epochs (the CIFAR-10 file trains 12: a hundred classes
# learn from 500 images each, not 5,000). The mean image replaces CIFAR-10's mean
# colour. It reads the native files of `cnntrain port $dataset` ($dataset-train.h5 and
# $dataset-test.h5), found in --data-dir, $$CNNTRAIN_DATA or ~/.cache/cnntrain.
name: $name
net:
  name: $net_name
  layer:
""" + _DATA + "${layers}" + """\
solver:
  type: Nesterov
  momentum: 0.85
  base_lr: 1.5
  weight_decay: 0.00133
  lr_policy: piecewise
  piecewise_iters: [0, 169, 733]
  piecewise_factors: [0.2, 1.0, 0.07]
  lookahead_interval: 5
  lookahead_decay: 0.7738
  lookahead_decay_power: 3
  max_iter: 733             # 15 epochs of 50,000 images
  display: 10
  test_interval: 147        # every 3 epochs
  test_initialization: false
  snapshot: 147
  random_seed: 1
""")

_TRANSFORMS = {
    "quick": ("{mean_image: true}", "{mean_image: true}"),
    "vgg": ("{mean_image: true, scale: 0.00390625, mirror: true, shift: 2}",
            "{mean_image: true, scale: 0.00390625}"),
    "fast": ("{mean_image: true, scale: 0.015625, mirror: true, mirror_mode: alternate, "
             "shift: 2,\n                        pad_mode: reflect}",
             "{mean_image: true, scale: 0.015625, pad_mode: reflect, test_views: flip+shift,"
             "\n                       test_shift: 1}"),
}
_BATCHES = {"quick": (100, 100), "vgg": (100, 100), "fast": (1024, 500)}
_TEMPLATES = {"quick": QUICK, "vgg": VGG, "fast": FAST}


def config_name(dataset: str, labels: str, kind: str) -> str:
    """cifar100_quick, cifar100_coarse_vgg, cifar10_native_quick, ..."""
    if dataset == "cifar10":
        return f"cifar10_native_{kind}"
    return f"{dataset}{'_coarse' if labels == 'coarse' else ''}_{kind}"


def kinds(dataset: str) -> tuple[str, ...]:
    """The configs port writes for a dataset (CIFAR-10 has its own cifar10_* configs)."""
    return ("quick",) if dataset == "cifar10" else ("quick", "vgg", "fast")


def render(dataset: str, labels: str, kind: str) -> str:
    """The YAML text of one generated config."""
    fine, coarse = CLASSES[dataset]
    classes = coarse if labels == "coarse" else fine
    what = {"cifar10": "the 10 classes of CIFAR-10",
            "cifar100": ("the 20 superclasses of CIFAR-100 (coarse labels)" if labels == "coarse"
                         else "the 100 classes of CIFAR-100 (fine labels)")}[dataset]
    name = config_name(dataset, labels, kind)
    train_t, test_t = _TRANSFORMS[kind]
    batch, test_batch = _BATCHES[kind]
    return _TEMPLATES[kind].substitute(
        batch=batch, test_batch=test_batch, layers=fast_layers(classes, what),
        comment=f"Written by `cnntrain port {dataset}"
                f"{' --labels coarse' if labels == 'coarse' else ''}`, from its template in\n"
                "# cnntrain/data/config_templates.py (the class count comes from the dataset).",
        name=name, net_name=name.upper().replace("_QUICK", "_quick").replace("_VGG", "_vgg")
        .replace("_FAST", "_fast"),
        dataset=dataset, classes=classes, what=what,
        labels_line="" if dataset == "cifar10" else f"        labels: {labels}\n",
        train_transform=train_t, test_transform=test_t)
