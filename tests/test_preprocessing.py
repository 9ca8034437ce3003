"""Preprocessing is defined once (cnntrain.data.preprocess), stored in snapshots, and
used alike by training, ``test`` and ``predict``."""
import shutil

import h5py
import numpy as np
import pytest

from cnntrain.data.preprocess import Preprocessing
from test_cli_e2e import CONFIG, run
from tool_helpers import train_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prep")
    data, snapshot = train_tiny(tmp)
    # The test images alone: no training split to compute a mean image from.
    only_test = tmp / "only_test" / "cifar-10-batches-bin"
    only_test.mkdir(parents=True)
    for name in ("test_batch.bin", "batches.meta.txt"):
        shutil.copy(data / "cifar-10-batches-bin" / name, only_test / name)
    return tmp, data, snapshot, only_test.parent


def test_test_needs_only_the_test_images_with_a_new_snapshot(trained, tmp_path):
    tmp, data, snap, only_test = trained
    full = run("test", "--snapshot", snap, "--data-dir", data, "--json")
    alone = run("test", "--snapshot", snap, "--data-dir", only_test, "--json")
    assert full.exit_code == 0 and alone.exit_code == 0, alone.output
    assert alone.stdout == full.stdout.replace(str(data), str(only_test))

    old = tmp_path / "old.h5"          # as written before snapshots held preprocessing
    shutil.copy(snap, old)
    with h5py.File(old, "a") as f:
        del f["preprocess"]
    assert run("test", "--snapshot", old, "--data-dir", data, "--json").stdout == \
        full.stdout.replace(str(snap), str(old))
    refused = run("test", "--snapshot", old, "--data-dir", only_test)
    assert refused.exit_code == 3, refused.output


def test_mean_image_and_mean_value_together_are_a_config_error(tmp_path):
    config = tmp_path / "both.yaml"
    config.write_text(CONFIG.replace("transform_param: {mean_image: true, scale: 0.01}",
                                     "transform_param: {mean_image: true, mean_value: [1, 2, 3]}"))
    result = run("train", config, "--dry-run")
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and "layer 'cifar'" in line and "mean_value" in line
    assert "both" in line


def test_caffe_mean_file_with_mean_value_is_refused_on_import(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text('name: "n"\nlayer { name: "d" type: "Data" top: "data" top: "label"\n'
                     '  transform_param { mean_file: "m.binaryproto" mean_value: 104 }\n'
                     '  data_param { source: "x" batch_size: 4 } }\n')
    result = run("import-prototxt", proto, "-o", tmp_path / "out.yaml")
    assert result.exit_code == 2, result.output
    assert "mean_file and mean_value" in result.output
    assert not (tmp_path / "out.yaml").exists()


def test_stored_preprocessing_round_trips_exactly(tmp_path):
    prep = Preprocessing(scale=0.0078125, mean=np.array([104.00698793, 116.66876762,
                                                         122.67891434]).reshape(3, 1, 1),
                         crop_size=28, shift=2, pad_mode="reflect")
    with h5py.File(tmp_path / "p.h5", "w") as f:
        prep.write(f.create_group("preprocess/d"))
    with h5py.File(tmp_path / "p.h5") as f:
        back = Preprocessing.read(f["preprocess/d"], "preprocess/d")
    assert (back.scale, back.crop_size, back.shift, back.pad_mode) == (0.0078125, 28, 2, "reflect")
    np.testing.assert_array_equal(back.mean, prep.mean)
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32)).astype(np.uint8)
    rng = np.random.default_rng(1)
    np.testing.assert_array_equal(back.transformer()(x, rng), prep.transformer()(x, rng))
    assert back.transformer()(x, rng).shape == (2, 3, 28, 28)
