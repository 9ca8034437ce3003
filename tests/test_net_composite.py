"""A whole net of BatchNorm, Scale, branches, Concat, Eltwise, LRN and Deconvolution,
written as YAML, gradient-checked end to end by the shared checker."""
import numpy as np
import yaml

from cnntrain.tools.gradcheck import check_net, distinct_values
from net_helpers import build

NET = """
- {name: input, type: Input, top: [data, label],
   input_param: {shape: [{dim: [3, 3, 6, 6]}, {dim: [3]}]}}
- name: conv1
  type: Convolution
  bottom: data
  top: conv1
  convolution_param: {num_output: 4, kernel_size: 3, pad: 1,
                      weight_filler: {type: gaussian, std: 0.3}}
- {name: bn1, type: BatchNorm, bottom: conv1, top: conv1}
- name: scale1
  type: Scale
  bottom: conv1
  top: conv1
  scale_param: {bias_term: true, filler: {type: uniform, min: 0.5, max: 1.5},
                bias_filler: {type: gaussian, std: 0.3}}
- {name: relu1, type: ReLU, bottom: conv1, top: conv1, relu_param: {negative_slope: 0.2}}
# two branches, joined along the channels
- name: left
  type: Convolution
  bottom: conv1
  top: left
  convolution_param: {num_output: 2, kernel_size: 1, weight_filler: {type: gaussian, std: 0.5}}
- name: right
  type: Convolution
  bottom: conv1
  top: right
  convolution_param: {num_output: 2, kernel_size: 3, pad: 1, group: 2,
                      weight_filler: {type: gaussian, std: 0.5}}
- {name: cat, type: Concat, bottom: [left, right], top: cat}
# a residual connection
- {name: res, type: Eltwise, bottom: [cat, conv1], top: res,
   eltwise_param: {operation: SUM, coeff: [1.0, 0.5]}}
- {name: norm, type: LRN, bottom: res, top: norm, lrn_param: {local_size: 3, alpha: 0.5}}
- name: down
  type: Convolution
  bottom: norm
  top: down
  convolution_param: {num_output: 3, kernel_size: 2, stride: 2,
                      weight_filler: {type: gaussian, std: 0.5}}
- name: up
  type: Deconvolution
  bottom: down
  top: up
  convolution_param: {num_output: 2, kernel_size: 4, stride: 2, pad: 1,
                      weight_filler: {type: gaussian, std: 0.5}}
- {name: bn2, type: BatchNorm, bottom: up, top: up}
- {name: ip, type: InnerProduct, bottom: up, top: ip,
   inner_product_param: {num_output: 3, weight_filler: {type: gaussian, std: 0.3}}}
- {name: loss, type: SoftmaxWithLoss, bottom: [ip, label], top: loss}
"""


def test_composite_net_from_yaml_passes_the_whole_net_gradient_check():
    net = build(yaml.safe_load(NET), force_backward=True)
    values = net.layer("input").values
    values[0][...] = distinct_values(values[0].shape, seed=1, spread=2.0)
    values[1][...] = [0, 2, 1]
    results = check_net(net, retry_above=1e-5)
    names = {r.name for r in results}
    for learned in ("conv1.param[0]", "scale1.param[0]", "scale1.param[1]", "right.param[0]",
                    "up.param[0]", "up.param[1]", "ip.param[0]", "input.data"):
        assert learned in names, learned
    bad = [str(r) for r in results if not r.ok(1e-5)]
    assert not bad, "\n".join(bad)
    assert net.shapes[net.blob_ids["up"]] == (3, 2, 6, 6)
    # The TRAIN forwards of the check moved bn1's running statistics.
    assert net.layer("bn1").blobs[2].data[0] > 1 and np.any(net.layer("bn1").blobs[0].data)
