"""Fillers: Dirac identity filters and the whitening filler, against direct computations."""
import numpy as np
import pytest

from cnntrain.config import load_experiment
from cnntrain.errors import ConfigError
from cnntrain.fillers import dirac, fill, whitening_filters
from cnntrain.net import patch_second_moment
from layer_helpers import make_layer
from test_cli_e2e import write_cifar10_binary


def test_dirac_makes_the_first_filters_pass_their_channel_on():
    layer, _ = make_layer("Convolution", [(2, 3, 5, 5)], convolution_param=dict(
        num_output=5, kernel_size=3, pad=1, weight_filler={"type": "gaussian", "std": 1.0,
                                                           "dirac": True}))
    w = layer.blobs[0].data
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 5))
    (y,) = layer.forward([x])
    np.testing.assert_allclose(y[:, :3], x, atol=1e-12)     # identity on channels 0..2
    assert np.abs(w[3:]).sum() > 0                          # the rest keep their draw


def test_dirac_with_fewer_filters_than_channels_and_an_even_kernel():
    w = np.ones((2, 4, 2, 2))
    dirac(w)
    expected = np.zeros((2, 4, 2, 2))
    expected[0, 0, 1, 1] = expected[1, 1, 1, 1] = 1
    np.testing.assert_array_equal(w, expected)


def loop_second_moment(x, kh, kw):
    n, c, h, w = x.shape
    rows = [x[i, :, a:a + kh, b:b + kw].reshape(-1) for i in range(n)
            for a in range(h - kh + 1) for b in range(w - kw + 1)]
    rows = np.array(rows)
    return rows.T @ rows / len(rows)


def test_patch_second_moment_matches_loops_over_patches():
    x = np.random.default_rng(1).integers(0, 256, (5, 3, 6, 7)).astype(np.uint8)
    scale = lambda im: (im.astype(np.float64) - 100) / 50
    got = patch_second_moment(x, scale, (2, 3), chunk=2)
    np.testing.assert_allclose(got, loop_second_moment(scale(x), 2, 3), rtol=1e-12)


def test_whitening_filters_decorrelate_the_patches():
    rng = np.random.default_rng(2)
    mix = rng.normal(size=(12, 12))
    patches = rng.normal(size=(20000, 12)) @ mix        # strongly correlated
    moment = patches.T @ patches / len(patches)
    filters = whitening_filters(moment, (24, 3, 2, 2), eps=1e-9)
    out = patches @ filters.reshape(24, -1).T
    cov = out[:, :12].T @ out[:, :12] / len(out)
    np.testing.assert_allclose(cov, np.eye(12), atol=1e-6)
    np.testing.assert_array_equal(filters[12:], -filters[:12])
    variances = np.diag(out[:, :12].T @ out[:, :12] / len(out))
    assert np.allclose(variances, 1)
    # The first filter is the direction of largest variance of the raw patches.
    values = np.linalg.eigvalsh(moment)
    top = filters[0].reshape(-1) / np.linalg.norm(filters[0])
    assert top @ moment @ top == pytest.approx(values.max(), rel=1e-9)


WHITEN_CONFIG = """\
name: w
net:
  layer:
    - {{name: d, type: Data, top: [data, label],
       data_param: {{dataset: cifar10, batch_size: 4}},
       transform_param: {{mean_value: [120, 110, 100], scale: 0.02}}}}
    - {{name: whiten, type: Convolution, bottom: {bottom}, top: whiten,
       param: [{{lr_mult: 0}}],
       convolution_param: {{num_output: {out}, kernel_size: 2,
                           weight_filler: {{type: whitening, images: 30, eps: 0.001}}}}}}
    - {{name: fc, type: InnerProduct, bottom: whiten, top: fc,
       inner_product_param: {{num_output: 10}}}}
    - {{name: loss, type: SoftmaxWithLoss, bottom: [fc, label], top: loss}}
solver: {{base_lr: 0.1, max_iter: 2}}
"""


def test_trainer_fills_the_whitening_layer_from_the_training_images(tmp_path):
    from cnntrain.data.store import dataset_split
    from cnntrain.trainer import Trainer

    data = write_cifar10_binary(tmp_path / "data")
    config = tmp_path / "w.yaml"
    config.write_text(WHITEN_CONFIG.format(bottom="data", out=24))
    trainer = Trainer(load_experiment(config), runs_root=tmp_path / "runs", data_dir=str(data),
                      notify=lambda m: None, progress=False)
    images = dataset_split("cifar10", "train", str(data), lambda m: None).images[:30]
    x = (images.astype(np.float32) - np.array([120, 110, 100], np.float32).reshape(3, 1, 1)) \
        * np.float32(0.02)
    expected = whitening_filters(loop_second_moment(x.astype(np.float64), 2, 2),
                                 (24, 3, 2, 2), 0.001)
    np.testing.assert_allclose(trainer.train_net.layer("whiten").blobs[0].data, expected,
                               rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("bottom, out, words", [
    ("label", 24, "needs the layer's bottom to be the images of a TRAIN Data layer"),
    ("data", 20, "num_output 12 (C*kh*kw"),
])
def test_whitening_misuse_is_a_config_error_in_dry_run_and_train(tmp_path, bottom, out, words):
    from click.testing import CliRunner

    from cnntrain.cli import main

    data = write_cifar10_binary(tmp_path / "data")
    config = tmp_path / "w.yaml"
    config.write_text(WHITEN_CONFIG.format(bottom=bottom, out=out))
    for extra in (["--dry-run"], ["--no-progress", "--data-dir", str(data), "--runs-dir",
                                  str(tmp_path / "runs")]):
        result = CliRunner().invoke(main, ["train", str(config), *extra])
        assert result.exit_code == 2, result.output
        assert words in result.output and "weight_filler" in result.output


def test_whitening_fills_only_convolution_weights():
    from cnntrain.config import parse_net

    layers = [{"name": "in", "type": "Input", "top": "x",
               "input_param": {"shape": {"dim": [2, 3]}}},
              {"name": "fc", "type": "InnerProduct", "bottom": "x", "top": "y",
               "inner_product_param": {"num_output": 2, "weight_filler": {"type": "whitening"}}}]
    with pytest.raises(ConfigError, match="fills only a Convolution's weight_filler"):
        parse_net({"name": "n", "layer": layers}, "t.yaml")


def test_the_whitening_stand_in_is_a_xavier_draw():
    """Built without data (summary, time), the layer holds xavier's values."""
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    w = fill({"type": "whitening", "variance_norm": "FAN_IN"}, (24, 3, 2, 2), 12, 96, rng_a)
    x = fill({"type": "xavier", "variance_norm": "FAN_IN"}, (24, 3, 2, 2), 12, 96, rng_b)
    np.testing.assert_array_equal(w, x)
