"""The graph: gradient flow through a whole net, fan-out sums, in-place layers, phases."""
import numpy as np
import pytest

from cnntrain.errors import ConfigError
from cnntrain.tools.gradcheck import check_net
from net_helpers import GAUSS, build, fill_inputs, input_layer

SMALL_NET = [
    input_layer((2, 3, 9, 9), (2,)),
    {"name": "conv1", "type": "Convolution", "bottom": "data", "top": "conv1",
     "convolution_param": {"num_output": 4, "kernel_size": 3, "stride": 2, "pad": 1, **GAUSS}},
    {"name": "pool1", "type": "Pooling", "bottom": "conv1", "top": "pool1",
     "pooling_param": {"pool": "MAX", "kernel_size": 3, "stride": 2}},
    {"name": "relu1", "type": "ReLU", "bottom": "pool1", "top": "pool1"},
    {"name": "conv2", "type": "Convolution", "bottom": "pool1", "top": "conv2",
     "convolution_param": {"num_output": 4, "kernel_size": 2, "group": 2, **GAUSS}},
    {"name": "tanh", "type": "TanH", "bottom": "conv2", "top": "conv2"},
    {"name": "pool2", "type": "Pooling", "bottom": "conv2", "top": "pool2",
     "pooling_param": {"pool": "AVE", "kernel_size": 2, "stride": 1, "pad": 1}},
    {"name": "ip1", "type": "InnerProduct", "bottom": "pool2", "top": "ip1",
     "inner_product_param": {"num_output": 5, **GAUSS}},
    {"name": "sig", "type": "Sigmoid", "bottom": "ip1", "top": "ip1"},
    {"name": "ip2", "type": "InnerProduct", "bottom": "ip1", "top": "ip2",
     "inner_product_param": {"num_output": 3, **GAUSS}},
    {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip2", "label"], "top": "loss"},
]


def assert_net_gradients(net, tol=1e-5):
    results = check_net(net)
    assert results
    bad = [str(r) for r in results if not r.ok(tol)]
    assert not bad, "\n".join(bad)
    return results


def test_whole_small_net_gradients_including_input():
    net = build(SMALL_NET, force_backward=True)
    fill_inputs(net)
    names = [r.name for r in assert_net_gradients(net)]
    assert "input.data" in names and "conv1.param[0]" in names and "ip2.param[1]" in names


def test_blob_used_twice_gets_the_sum_of_gradients():
    layers = [
        input_layer((3, 4), (3,)),
        {"name": "a", "type": "InnerProduct", "bottom": "data", "top": "a",
         "inner_product_param": {"num_output": 3, **GAUSS}},
        {"name": "b", "type": "InnerProduct", "bottom": "data", "top": "b",
         "inner_product_param": {"num_output": 3, **GAUSS}},
        {"name": "la", "type": "SoftmaxWithLoss", "bottom": ["a", "label"], "top": "la"},
        {"name": "lb", "type": "EuclideanLoss", "bottom": ["a", "b"], "top": "lb",
         "loss_weight": 0.5},
    ]
    net = build(layers, force_backward=True)
    fill_inputs(net)
    assert_net_gradients(net)


def test_loss_weight_scales_gradients():
    def grads(weight):
        layers = SMALL_NET[:-1] + [{**SMALL_NET[-1], "loss_weight": weight}]
        net = build(layers)
        fill_inputs(net)
        loss = net.forward()
        net.backward()
        return loss, net.params[0].diff.copy()

    l1, g1 = grads(1.0)
    l3, g3 = grads(3.0)
    assert l3 == pytest.approx(3 * l1)
    np.testing.assert_allclose(g3, 3 * g1)


def test_layers_that_need_no_gradient_skip_backward():
    layers = [input_layer((2, 3, 5, 5), (2,)),
              {"name": "pool", "type": "Pooling", "bottom": "data", "top": "pool",
               "pooling_param": {"pool": "MAX", "kernel_size": 2}},
              {"name": "ip", "type": "InnerProduct", "bottom": "pool", "top": "ip",
               "inner_product_param": {"num_output": 3}},
              {"name": "frozen", "type": "InnerProduct", "bottom": "ip", "top": "frozen",
               "param": [{"lr_mult": 0}, {"lr_mult": 0}],
               "inner_product_param": {"num_output": 3}},
              {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["frozen", "label"],
               "top": "loss"}]
    net = build(layers)
    plan = {n.layer.name: (n.run_backward, n.propagate_down) for n in net.nodes}
    assert plan["pool"][0] is False                    # nothing below it learns
    assert plan["ip"] == (True, [False])               # learns, but needs no input gradient
    assert plan["frozen"] == (True, [True])            # frozen, but passes the gradient down
    assert plan["loss"] == (True, [True, False])


def test_a_frozen_parameter_drops_the_gradients_only_it_needed():
    layers = [input_layer((2, 3, 5, 5), (2,)),
              {"name": "first", "type": "Convolution", "bottom": "data", "top": "first",
               "param": [{"lr_mult": 0}, {"freeze_iter": 3}],
               "convolution_param": {"num_output": 4, "kernel_size": 3}},
              {"name": "second", "type": "InnerProduct", "bottom": "first", "top": "ip",
               "inner_product_param": {"num_output": 3}},
              {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"],
               "top": "loss"}]
    net = build(layers)
    assert net.freeze_points() == {3}
    plan = {n.layer.name: (n.run_backward, n.propagate_down) for n in net.nodes}
    assert plan["first"] == (True, [False]) and plan["second"] == (True, [True])
    net.plan_backward(3)
    plan = {n.layer.name: (n.run_backward, n.propagate_down) for n in net.nodes}
    assert plan["first"][0] is False and plan["second"] == (True, [False])
    fill_inputs(net)
    net.forward()
    net.clear_param_diffs()
    net.backward()
    assert not net.layer("first").blobs[1].diff.any()
    assert net.layer("second").blobs[0].diff.any()


def test_in_place_relu_versions_the_blob():
    net = build(SMALL_NET)
    relu = next(n for n in net.nodes if n.layer.name == "relu1")
    assert relu.bottoms == ["pool1"] and relu.tops == ["pool1@2"]
    fill_inputs(net)
    net.forward()
    assert (net.output("pool1") >= 0).all()


def test_train_and_test_nets_share_parameters():
    layers = SMALL_NET[:-1] + [
        {"name": "acc", "type": "Accuracy", "bottom": ["ip2", "label"], "top": "acc",
         "include": {"phase": "TEST"}},
        SMALL_NET[-1]]
    train = build(layers)
    test = build(layers, phase="TEST", shared=train.shared)
    for (name_a, i_a, pa), (name_b, i_b, pb) in zip(train.param_keys, test.param_keys):
        assert (name_a, i_a) == (name_b, i_b) and pa is pb
    fill_inputs(test)
    test.forward()
    assert set(test.outputs) == {"acc", "loss"}


def test_explicit_param_names_share_within_a_net():
    layers = [input_layer((2, 4), (2,)),
              {"name": "a", "type": "InnerProduct", "bottom": "data", "top": "a",
               "param": [{"name": "W"}, {"name": "B"}], "inner_product_param": {"num_output": 4}},
              {"name": "b", "type": "InnerProduct", "bottom": "a", "top": "b",
               "param": [{"name": "W"}, {"name": "B"}], "inner_product_param": {"num_output": 4}},
              {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["b", "label"], "top": "loss"}]
    net = build(layers, force_backward=True)
    assert len(net.params) == 2 and net.layer("a").blobs[0] is net.layer("b").blobs[0]
    fill_inputs(net)
    assert_net_gradients(net)


def test_same_seed_same_init_different_seed_differs():
    a, b, c = build(SMALL_NET, seed=3), build(SMALL_NET, seed=3), build(SMALL_NET, seed=4)
    np.testing.assert_array_equal(a.params[0].data, b.params[0].data)
    assert not np.array_equal(a.params[0].data, c.params[0].data)


def test_layers_refill_their_own_buffers_and_keep_no_stale_values():
    """Tops and bottom diffs live in buffers kept between steps (no page faults every
    step); a step must still not depend on what the previous step left in them."""
    used = build(SMALL_NET, force_backward=True)
    fill_inputs(used, seed=1)
    used.forward()
    used.backward()
    first = {name: blob for name, blob in used.blobs.items()}
    fill_inputs(used, seed=2)
    used.clear_param_diffs()
    used.forward()
    used.backward()
    fresh = build(SMALL_NET, force_backward=True)
    fill_inputs(fresh, seed=2)
    fresh.forward()
    fresh.backward()
    for name in ("conv1", "pool1", "conv2"):
        assert np.shares_memory(used.blobs[name], first[name]), name
        np.testing.assert_array_equal(used.blobs[name], fresh.blobs[name])
    np.testing.assert_array_equal(used.input_diffs["data"], fresh.input_diffs["data"])
    for a, b in zip(used.params, fresh.params):
        np.testing.assert_array_equal(a.diff, b.diff)


def _conv_pool_net(shape, **kwargs):
    return build([input_layer(shape, (shape[0],)),
                  {"name": "conv", "type": "Convolution", "bottom": "data", "top": "conv",
                   "convolution_param": {"num_output": 4, "kernel_size": 3, "pad": 1, **GAUSS}},
                  {"name": "pool", "type": "Pooling", "bottom": "conv", "top": "pool",
                   "pooling_param": {"pool": "MAX", "kernel_size": 3, "stride": 2}},
                  {"name": "ip", "type": "InnerProduct", "bottom": "pool", "top": "ip",
                   "inner_product_param": {"num_output": 3, **GAUSS}},
                  {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"],
                   "top": "loss"}], **kwargs)


def test_a_new_batch_size_reshapes_the_layers_as_a_net_built_for_it_runs():
    """Caffe's Reshape: an Input given a batch of another size, the net reshapes each
    layer (its plans, e.g. pooling's scatter indices) and computes what a net built for
    that batch computes."""
    net = _conv_pool_net((2, 3, 9, 9), force_backward=True)
    fill_inputs(net)
    net.forward()
    fresh = _conv_pool_net((5, 3, 9, 9), force_backward=True, shared=net.shared)
    fill_inputs(fresh, seed=4)
    net.layer("input").values = [v.copy() for v in fresh.layer("input").values]
    results = []
    for n in (net, fresh):
        n.clear_param_diffs()
        loss = n.forward()
        n.backward()
        results.append((loss, n.input_diffs["data"].copy(),
                        [p.diff.copy() for p in n.params]))
    assert net.shapes["conv"] == (5, 4, 9, 9) and net.shapes["pool"] == (5, 4, 4, 4)
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-14)
    for a, b in zip(results[0][2], results[1][2]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_a_shape_a_layer_cannot_take_is_a_config_error_naming_it():
    net = _conv_pool_net((2, 3, 9, 9))
    net.layer("input").values = [np.zeros((2, 3, 2, 2)), np.zeros(2)]
    with pytest.raises(ConfigError, match="pool") as err:
        net.forward()
    assert "kernel_size" in str(err.value)
