"""cnntrain gradcheck, and the shared checker's max_elements / retry options."""
import json

import numpy as np
import pytest

from cnntrain.config import load_experiment
from cnntrain.layers.inner_product import InnerProduct
from cnntrain.tools.gradcheck import (check_layer, checked_indices, distinct_values,
                                      gradcheck_experiment, numeric_gradient)
from layer_helpers import make_layer
from test_cli_e2e import CONFIG
from tool_helpers import run


@pytest.fixture
def config(tmp_path, monkeypatch):
    """The end-to-end test's tiny net; no dataset anywhere (the check needs none)."""
    import cnntrain.data.download

    def offline(*a, **k):
        raise AssertionError("gradcheck must not look for a dataset")

    monkeypatch.setattr(cnntrain.data.download, "urlopen", offline)
    monkeypatch.setenv("CNNTRAIN_DATA", str(tmp_path / "no-data"))
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG)
    return path


def test_default_checks_every_element_and_max_elements_a_fixed_subset():
    x = np.arange(12.0).reshape(3, 4)
    full = numeric_gradient(lambda: float((x ** 2).sum()), x, 1e-6)
    np.testing.assert_allclose(full, 2 * x, atol=1e-6)
    part = numeric_gradient(lambda: float((x ** 2).sum()), x, 1e-6, max_elements=5, seed=3)
    idx = checked_indices(12, 5, seed=3)
    assert len(idx) == 5 and np.array_equal(idx, checked_indices(12, 5, seed=3))
    assert np.isfinite(part.reshape(-1)[idx]).all() and np.isnan(part).sum() == 7
    assert checked_indices(12, 12) is None and checked_indices(12, None) is None


def test_check_layer_reports_how_many_elements_it_checked():
    layer, _ = make_layer("InnerProduct", [(2, 30)], inner_product_param={
        "num_output": 4, "weight_filler": {"type": "gaussian", "std": 0.5}})
    results = check_layer(layer, [distinct_values((2, 30))], max_elements=10)
    weight, bias, bottom = results
    assert (weight.size, weight.checked) == (120, 10) and bias.checked is None
    assert "10 of 120 values" in str(weight) and all(r.ok() for r in results)


def test_whole_net_from_a_config_passes(config):
    result = run("gradcheck", config, "--max-elements", "20")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gradient check of net 'tiny'") and "float64, batch 2" in lines[0]
    names = [line.split()[0] for line in lines[2:-1]]
    assert names == ["conv1.param[0]", "conv1.param[1]", "ip.param[0]", "ip.param[1]",
                     "cifar.data"]
    assert lines[-1] == "all 5 arrays within tol 1e-05"


def test_one_layer_and_json(config):
    result = run("gradcheck", config, "--layer", "loss", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] and doc["target"] == "layer 'loss'"
    assert [r["name"] for r in doc["results"]] == ["loss.bottom[0]"]   # labels are not checked
    assert doc["results"][0]["checked"] == 20 and doc["results"][0]["max_rel_err"] < 1e-6


def test_a_wrong_gradient_fails_with_exit_code_1(config, monkeypatch):
    backward = InnerProduct.backward

    def wrong(self, top_diff, propagate_down):
        out = backward(self, top_diff, propagate_down)
        self.blobs[1].diff *= 1.01
        return out

    monkeypatch.setattr(InnerProduct, "backward", wrong)
    result = run("gradcheck", config, "--max-elements", "10")
    assert result.exit_code == 1
    assert "FAIL ip.param[1]" in result.stdout and "ip.param[0]" not in result.stderr
    assert result.stderr.strip() == "error: 1 of 5 arrays exceed tol 1e-05: ip.param[1]"


@pytest.mark.parametrize("args, code, words", [
    (["--layer", "nope"], 2, "no layer 'nope' in the TRAIN net (layers: cifar, conv1"),
    (["--layer", "cifar"], 2, "layer 'cifar' is Data: it has no gradient to check"),
])
def test_bad_layer_names_are_one_line_errors(config, args, code, words):
    result = run("gradcheck", config, *args)
    assert result.exit_code == code and words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_kinks_of_a_real_net_are_retried_with_smaller_steps():
    """cifar10_quick's tiny initial weights put many activations within eps of a ReLU
    kink: plain central differences miss there; smaller steps do not."""
    exp = load_experiment("configs/cifar10_quick.yaml")
    plain = gradcheck_experiment(exp, max_elements=6)
    assert not all(r.ok() for r in plain)
    retried = gradcheck_experiment(exp, max_elements=6, retry_above=1e-5)
    assert all(r.ok() for r in retried) and sum(r.retried for r in retried) > 0


def test_dropout_masks_stay_fixed_from_the_first_forward():
    """The checker keeps the random streams' state after a first forward, so a fresh
    Dropout layer (its stream not created yet) is a fixed function too."""
    layer, _ = make_layer("Dropout", [(4, 5)], dropout_param={"dropout_ratio": 0.4})
    assert all(r.ok() for r in check_layer(layer, [distinct_values((4, 5))]))
