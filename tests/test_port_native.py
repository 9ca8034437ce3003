"""Native HDF5 files: loading a source from an explicit path, writing and reading them
back, and the Data layer reading them exactly as it reads the CIFAR readers."""
import urllib.error

import h5py
import numpy as np
import pytest

from cifar_fixtures import LAYOUTS, NAMES, make_fake, write_folder, write_layout
from cnntrain.config import parse_layer
from cnntrain.data import download as download_module
from cnntrain.data.cifar import load_cifar, load_cifar_from, local_source
from cnntrain.data.native import (SourceInfo, fine_to_coarse, load_native, native_path,
                                  read_native, train_stats, verify_native, write_native)
from cnntrain.data.store import mean_image
from cnntrain.errors import ConfigError, DatasetError
from cnntrain.layers import BuildContext
from cnntrain.rng import RngStreams

SOURCE = SourceInfo("somewhere.tar.gz", "archive", "0" * 32, "test")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("tests never use the network")

    monkeypatch.setattr(download_module, "urlopen", offline)


def quiet(_line):
    pass


# ------------------------------------------------------------------ load_cifar_from
@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_from_every_official_layout(tmp_path, layout):
    fake = make_fake("cifar100", n_train=9, n_test=4, seed=2)
    written = write_layout(tmp_path, fake, layout)
    got = load_cifar_from("cifar100", written)
    for split in ("train", "test"):
        want = fake.split(split)
        np.testing.assert_array_equal(got[split].images.reshape(len(want.fine), -1), want.rows)
        np.testing.assert_array_equal(got[split].labels, want.fine)
        np.testing.assert_array_equal(got[split].coarse_labels, want.coarse)
        assert got[split].label_names == fake.fine_names
        assert got[split].coarse_label_names == fake.coarse_names
    # a folder holding the layout (as --data-dir would) works too
    assert load_cifar_from("cifar100", tmp_path)["test"].source == str(written)


def test_archive_under_any_name_is_recognised_by_its_members(tmp_path):
    fake = make_fake("cifar10", n_train=10, n_test=3)
    archive = write_layout(tmp_path, fake, "binary-archive")
    renamed = archive.rename(tmp_path / "downloaded (1).tgz")
    got = load_cifar_from("cifar10", renamed)
    np.testing.assert_array_equal(got["train"].labels, fake.train.fine)


def test_wrong_dataset_or_nothing_there_is_a_clear_error(tmp_path):
    archive = write_layout(tmp_path, make_fake("cifar10"), "python-archive")
    with pytest.raises(DatasetError, match="is not a CIFAR-100 archive: it has no "
                                           "cifar-100-python/ or cifar-100-binary/ files"):
        load_cifar_from("cifar100", archive)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no CIFAR-100: expected an official"):
        load_cifar_from("cifar100", tmp_path / "empty")
    with pytest.raises(DatasetError, match="nope.tar.gz not found"):
        load_cifar_from("cifar100", tmp_path / "nope.tar.gz")


def test_local_source_follows_the_readers_lookup_order(tmp_path):
    assert local_source("cifar10", tmp_path) is None
    archive = write_layout(tmp_path, make_fake("cifar10"), "binary-archive")
    assert local_source("cifar10", tmp_path) == archive
    folder = write_folder(tmp_path, make_fake("cifar10"), "binary")
    assert local_source("cifar10", tmp_path) == folder


# ------------------------------------------------------------------ the file itself
def _write_split(tmp_path, fake_name="cifar100", n_train=30, n_test=8, seed=0):
    fake = make_fake(fake_name, n_train=n_train, n_test=n_test, seed=seed)
    write_layout(tmp_path / "src", fake, "python")
    splits = load_cifar_from(fake_name, tmp_path / "src")
    stats = train_stats(splits["train"].images)
    mapping = None
    if fake_name == "cifar100":
        mapping = fine_to_coarse(splits["train"].labels, splits["train"].coarse_labels, 100, "x")
    paths = {}
    for split in ("train", "test"):
        paths[split] = native_path(tmp_path / "data", fake_name, split)
        write_native(paths[split], splits[split], dataset=fake_name, split=split, stats=stats,
                     source=SOURCE, mapping=mapping)
    return fake, splits, paths


def test_written_file_has_the_documented_layout(tmp_path):
    fake, splits, paths = _write_split(tmp_path)
    with h5py.File(paths["train"], "r") as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (30, 3, 32, 32)
        assert f["images"].chunks == (30, 3, 32, 32) and f["images"].compression is None
        assert f["labels"].dtype == np.uint8 and f["coarse_labels"].dtype == np.uint8
        assert f.attrs["dataset"] == "cifar100" and f.attrs["split"] == "train"
        assert f.attrs["source_md5"] == "0" * 32 and f.attrs["count"] == 30
        assert f["mean_image"].dtype == np.float32 and f["channel_std"].shape == (3,)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "cifar100-test.h5", "cifar100-train.h5"]   # no temporary file left


def test_labels_and_fine_to_coarse_map_are_kept_in_order(tmp_path):
    fake, _, paths = _write_split(tmp_path)
    train = read_native(paths["train"])
    np.testing.assert_array_equal(train.labels, fake.train.fine)
    np.testing.assert_array_equal(train.coarse_labels, fake.train.coarse)
    assert train.label_names == fake.fine_names and train.coarse_label_names == fake.coarse_names
    seen = np.unique(fake.train.fine)
    np.testing.assert_array_equal(train.fine_to_coarse[seen], seen // 5)   # fixtures: f // 5
    assert (train.fine_to_coarse[np.setdiff1d(np.arange(100), seen)] == -1).all()
    coarse = train.image_set("coarse")
    np.testing.assert_array_equal(coarse.labels, fake.train.coarse)
    assert coarse.label_names == fake.coarse_names


def test_fine_class_with_two_superclasses_is_refused():
    with pytest.raises(DatasetError, match="fine class 3 appears with more than one coarse"):
        fine_to_coarse(np.array([3, 1, 3]), np.array([0, 0, 1]), 100, "src")


def test_statistics_are_those_of_the_train_split_exactly(tmp_path):
    fake, splits, paths = _write_split(tmp_path)
    images = splits["train"].images.astype(np.float64)
    for split in ("train", "test"):
        stats = read_native(paths[split]).stats
        np.testing.assert_allclose(stats.channel_mean, images.mean(axis=(0, 2, 3)), rtol=1e-12)
        np.testing.assert_allclose(stats.channel_std, images.std(axis=(0, 2, 3)), rtol=1e-12)
        # bit for bit what the readers' path computes
        np.testing.assert_array_equal(stats.mean_image, mean_image("cifar100", tmp_path / "src",
                                                                   quiet))


@pytest.mark.parametrize("damage, complaint", [
    ("truncate", "unreadable or corrupt"),
    ("drop", "has no 'labels' dataset"),
    ("format", "is not a cnntrain native dataset file"),
    ("version", "native format version 99"),
    ("label", "'labels' holds 200, outside 0..99"),
])
@pytest.mark.hostile_file
def test_damaged_native_file_is_a_one_line_error(tmp_path, damage, complaint):
    _, _, paths = _write_split(tmp_path)
    path = paths["train"]
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:5000])
    else:
        with h5py.File(path, "r+") as f:
            if damage == "drop":
                del f["labels"]
            elif damage == "format":
                f.attrs["format"] = "something-else"
            elif damage == "version":
                f.attrs["version"] = 99
            else:
                f["labels"][0] = 200
    with pytest.raises(DatasetError) as excinfo:
        read_native(path)
    assert complaint in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert str(path) in str(excinfo.value)


def test_verify_notices_changed_pixels_and_a_changed_source(tmp_path):
    _, _, paths = _write_split(tmp_path)
    assert verify_native(paths["train"], "cifar100", "train", "0" * 32) is None
    assert "source now has MD5 " in verify_native(paths["train"], "cifar100", "train", "1" * 32)
    assert "not cifar100/test" in verify_native(paths["train"], "cifar100", "test", None)
    with h5py.File(paths["train"], "r+") as f:
        f["images"][0, 0, 0, 0] ^= 0xFF
    assert "do not match their recorded MD5" in verify_native(paths["train"], "cifar100",
                                                              "train", None)


# ------------------------------------------------------------------ the Data layer
def data_layer(data_param, phase="TRAIN", transform=None, data_dir=None, seed=1, name="cifar"):
    from cnntrain.layers.data import Data

    raw = {"name": name, "type": "Data", "top": ["data", "label"], "data_param": data_param,
           "transform_param": transform or {}}
    spec = parse_layer(raw, "t.yaml", 0)
    layer = Data(spec, phase, BuildContext(rngs=RngStreams(seed), data_dir=data_dir,
                                           notify=quiet))
    from cnntrain.layers import SetupError

    try:
        layer.setup([])
    except SetupError as err:   # as Net does
        raise spec.error(str(err), err.field) from None
    return layer


AUGMENT = {"mean_image": True, "scale": 0.01, "mirror": True, "shift": 2}


@pytest.mark.parametrize("how", ["hdf5", "hdf5-absolute", "dataset"])
def test_native_and_reader_sources_give_identical_batches(tmp_path, how):
    fake, _, paths = _write_split(tmp_path)
    readers = data_layer({"dataset": "cifar100", "batch_size": 7}, transform=AUGMENT,
                         data_dir=tmp_path / "src")
    param = {"batch_size": 7, "dataset": "cifar100"}     # required, also with hdf5
    if how == "hdf5":
        param["hdf5"] = "cifar100-train.h5"     # relative: in the data directory
    elif how == "hdf5-absolute":
        param["hdf5"] = str(paths["train"])
    else:
        pass                                    # prefers the native file when it is there
    native = data_layer(param, transform=AUGMENT, data_dir=tmp_path / "data")
    assert native.images.source == str(paths["train"])
    assert readers.images.source != native.images.source
    for _ in range(6):   # across an epoch boundary (30 images, batches of 7)
        for a, b in zip(readers.forward([]), native.forward([])):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(readers.fine_to_coarse[np.unique(fake.train.fine)],
                                  native.fine_to_coarse[np.unique(fake.train.fine)])


def test_coarse_labels_from_native_and_readers(tmp_path):
    fake, _, _ = _write_split(tmp_path)
    for data_dir in (tmp_path / "data", tmp_path / "src"):
        layer = data_layer({"dataset": "cifar100", "labels": "coarse", "batch_size": 30,
                            "shuffle": False}, phase="TEST", data_dir=data_dir)
        assert layer.num_classes == 20 and layer.fine_to_coarse is None
        np.testing.assert_array_equal(layer.forward([])[1], fake.train.coarse)


def test_split_comes_from_the_file_and_mismatches_name_the_field(tmp_path):
    _write_split(tmp_path)
    test = data_layer({"hdf5": "cifar100-test.h5", "dataset": "cifar100", "batch_size": 4},
                      phase="TEST",
                      data_dir=tmp_path / "data")
    assert test.split == "test" and len(test.images.labels) == 8
    cases = [({"hdf5": "cifar100-train.h5", "dataset": "cifar100", "split": "test"},
              "data_param.split",
              "is test, but"),
             ({"hdf5": "cifar100-train.h5", "dataset": "cifar10"}, "data_param.dataset",
              "is cifar10, but"),
             ({}, "data_param.dataset", "is required"),
             ({"hdf5": "cifar100-train.h5"}, "data_param.dataset", "is required")]
    for param, field, words in cases:
        with pytest.raises(ConfigError) as excinfo:
            data_layer({**param, "batch_size": 4}, data_dir=tmp_path / "data")
        message = str(excinfo.value)
        assert f"field '{field}'" in message and words in message and "t.yaml" in message


def test_coarse_labels_of_cifar10_are_refused(tmp_path):
    _write_split(tmp_path, "cifar10")
    for data_dir in (tmp_path / "data", tmp_path / "src"):
        with pytest.raises(ConfigError, match="data_param.labels.*cifar10 has no coarse labels"):
            data_layer({"dataset": "cifar10", "labels": "coarse", "batch_size": 4},
                       data_dir=data_dir)


def test_missing_native_file_says_how_to_make_it(tmp_path):
    with pytest.raises(DatasetError) as excinfo:
        data_layer({"hdf5": "cifar100-train.h5", "dataset": "cifar100", "batch_size": 4},
                   data_dir=tmp_path)
    message = str(excinfo.value)
    assert message.startswith("t.yaml: layer 'cifar': data_param.hdf5: ")
    assert "cnntrain port cifar100" in message and "\n" not in message


def test_native_files_are_loaded_once_per_process(tmp_path):
    _, _, paths = _write_split(tmp_path)
    assert load_native(paths["train"]) is load_native(paths["train"])
    assert load_native(paths["train"]).images.flags.writeable is False


def test_lookup_in_the_readers_is_unchanged_by_native_files(tmp_path):
    """The readers never look at native files: ``load_cifar`` still reads the source."""
    fake, _, _ = _write_split(tmp_path)
    got = load_cifar("cifar100", "test", tmp_path / "src", download=False, notify=quiet)
    assert got.source == str(tmp_path / "src" / NAMES[("cifar100", "python")][0])
