"""cnntrain visualize: the first convolution's filters and each convolution's activation
maps as PNG files, written without Pillow."""
import json

import numpy as np
import pytest

from cnntrain.tools.png import to_uint8
from cnntrain.tools.visualize import (activation_pictures, filter_picture, first_convolution,
                                      viridis)
from test_cli_e2e import CONFIG, write_cifar10_binary
from test_tools_png import decode
from tool_helpers import run

TWO_CONVS = CONFIG.replace("""    - name: ip
      type: InnerProduct
      bottom: pool1""", """    - name: conv2
      type: Convolution
      bottom: pool1
      top: conv2
      convolution_param: {num_output: 6, kernel_size: 3, pad: 1}
    - name: relu2
      type: ReLU
      bottom: conv2
      top: conv2
    - name: ip
      type: InnerProduct
      bottom: conv2""")


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vis")
    data = write_cifar10_binary(tmp / "data")
    config = tmp / "two.yaml"
    config.write_text(TWO_CONVS)
    result = run("train", config, "--data-dir", data, "--runs-dir", tmp / "runs", "--no-progress",
                 "--set", "solver.max_iter=2", "--set", "solver.test_interval=0")
    assert result.exit_code == 0, result.output
    return tmp, data, tmp / "runs" / "tiny" / "snapshots" / "iter_2.h5"


def test_visualize_a_test_image(snapshot):
    tmp, data, snap = snapshot
    out = tmp / "vis"
    result = run("visualize", "--snapshot", snap, "--test-index", 3, "-o", out, "--data-dir", data)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("test image 3 of cifar10 (")
    assert lines[-1] == f"4 images written to {out}"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["activations_1_conv1.png", "activations_2_conv2.png", "filters_conv1.png",
                     "input.png"]
    _, image = decode((out / "input.png").read_bytes())
    assert image.shape == (128, 128, 3)          # 32x32 enlarged 4 times
    _, filters = decode((out / "filters_conv1.png").read_bytes())
    assert filters.ndim == 3                      # RGB filters of an RGB input
    _, maps = decode((out / "activations_2_conv2.png").read_bytes())
    # 6 maps of 8x8, enlarged 5 times (to about 36 px), 3 to a row, 2 px gaps
    assert maps.shape == (2 * (40 + 2) + 2, 3 * (40 + 2) + 2, 3)


def test_visualize_an_image_file_equals_its_test_image(snapshot, tmp_path):
    from cnntrain.data.store import dataset_split

    tmp, data, snap = snapshot
    test = dataset_split("cifar10", "test", str(data), lambda _: None)
    np.save(tmp_path / "img.npy", test.images[3].transpose(1, 2, 0))      # H x W x 3
    a = tmp / "vis"
    if not a.exists():
        assert run("visualize", "--snapshot", snap, "--test-index", 3, "-o", a,
                   "--data-dir", data).exit_code == 0
    b = tmp_path / "out"
    result = run("visualize", "--snapshot", snap, tmp_path / "img.npy", "-o", b, "--data-dir",
                 data, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["input"] == str(tmp_path / "img.npy") and len(doc["top"]) == 3
    for name in ("activations_1_conv1.png", "activations_2_conv2.png", "input.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_visualize_errors_are_one_line(snapshot, tmp_path):
    tmp, data, snap = snapshot
    both = run("visualize", "--snapshot", snap, tmp_path / "x.npy", "--test-index", 1, "-o",
               tmp_path / "o")
    assert both.exit_code == 1 and both.stderr == ("error: give an IMAGE or --test-index N "
                                                   "(one of them)\n")
    far = run("visualize", "--snapshot", snap, "--test-index", 999, "-o", tmp_path / "o",
              "--data-dir", data)
    assert far.exit_code == 1 and "outside the test set (0 to 24)" in far.stderr
    missing = run("visualize", "--snapshot", tmp_path / "none.h5", "--test-index", 1, "-o",
                  tmp_path / "o")
    assert missing.exit_code == 4 and missing.stderr.count("\n") == 1


class _Blob:
    def __init__(self, data):
        self.data = data


class _Conv:
    type_name, name = "Convolution", "c"

    def __init__(self, weights):
        self.blobs = [_Blob(weights)]


def test_rgb_filters_are_each_scaled_to_their_own_range():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 3, 2, 2)) * np.array([1, 10, 100, 0.1, 1])[:, None, None, None]
    picture = filter_picture(_Conv(w))
    # tiles enlarged 8x (2 px → 16 px, the largest factor), 3 per row, 2 px gaps
    image = picture.image
    assert image.shape == (2 + 2 * 18, 2 + 3 * 18, 3)
    for k in range(5):
        r, c = divmod(k, 3)
        tile = image[2 + 18 * r:2 + 18 * r + 16:8, 2 + 18 * c:2 + 18 * c + 16:8]
        f = w[k]
        expected = np.rint((f - f.min()) / (f.max() - f.min()) * 255).astype(np.uint8)
        np.testing.assert_array_equal(tile, expected.transpose(1, 2, 0))
    assert picture.caption == "c: 5 filters of 2x2x3, each scaled to its own range"


def test_gray_filters_share_a_scale_with_zero_at_mid_gray():
    w = np.array([[[[1.0, -1.0]], [[0.0, 0.5]]]])      # 1 filter, 2 input channels, 1x2
    image = filter_picture(_Conv(w)).image
    tiles = image[2:2 + 8:8, [2, 2 + 8, 2 + 18, 2 + 18 + 8]]
    np.testing.assert_array_equal(tiles[0], [255, 0, 128, 191])


def test_activation_maps_follow_in_place_layers():
    from cnntrain.config import load_experiment
    from cnntrain.tools.inputs import net_with_random_inputs

    net, _ = net_with_random_inputs(load_experiment("configs/cifar10_quick.yaml"), batch=2,
                                    phase="TEST")
    net.forward()
    pictures = activation_pictures(net, 1)
    assert [p.name for p in pictures] == ["conv1", "conv2", "conv3"]
    assert first_convolution(net).name == "conv1"
    # conv2 is followed by relu2 in place: its maps are shown after the ReLU (as Caffe's
    # blobs hold them), so the lowest value is 0
    assert "values 0 to" in pictures[1].caption
    maps = net.output("conv2")[1]
    expected = viridis(to_uint8(maps[0], 0.0, float(maps.max())))
    # the first 16x16 map, enlarged 3 times (to about 36 px) after a 2 px border
    np.testing.assert_array_equal(pictures[1].image[2:2 + 48:3, 2:2 + 48:3], expected)


def test_viridis_follows_matplotlibs_colour_map():
    np.testing.assert_array_equal(viridis(np.array([0, 255], np.uint8)),
                                  [[68, 1, 84], [253, 231, 37]])
    cm = pytest.importorskip("matplotlib.cm", reason="matplotlib (the plot extra) is not "
                                                     "installed")
    gray = np.arange(256, dtype=np.uint8)
    reference = np.rint(cm.viridis(gray / 255)[:, :3] * 255)
    assert np.abs(viridis(gray).astype(int) - reference).max() <= 6
