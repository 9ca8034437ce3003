"""cnntrain predict: images and arrays through a snapshot's TEST transform and net."""
import json
import sys

import h5py
import numpy as np
import pytest

from cnntrain.tools.predict import resize
from tool_helpers import run, train_tiny



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A snapshot of the end-to-end test's tiny net, and its dataset."""
    tmp = tmp_path_factory.mktemp("predict")
    data, snapshot = train_tiny(tmp)
    return tmp, data, snapshot


def _probs(doc):
    return {item["input"]: {e["class"]: e["probability"] for e in item["top"]} for item in doc}


def test_arrays_in_every_layout_give_the_same_answer(trained):
    tmp, data, snap = trained
    rng = np.random.default_rng(1)
    chw = rng.integers(0, 256, (3, 32, 32)).astype(np.uint8)
    layouts = {"chw.npy": chw, "hwc.npy": chw.transpose(1, 2, 0),
               "nchw.npy": np.stack([chw, chw]), "nhwc.npy": np.stack([chw]).transpose(0, 2, 3, 1),
               "float.npy": chw.astype(np.float32)}
    folder = tmp / "arrays"
    folder.mkdir()
    for name, array in layouts.items():
        np.save(folder / name, array)
    result = run("predict", "--snapshot", snap, folder, "--data-dir", data, "--json", "-k", "10")
    assert result.exit_code == 0, result.stderr
    probs = _probs(json.loads(result.stdout))
    assert len(probs) == 6 and f"{folder / 'nchw.npy'}[1]" in probs
    first = probs[str(folder / "chw.npy")]
    assert sum(first.values()) == pytest.approx(1.0)
    for got in probs.values():
        assert got.keys() == first.keys()
        for k in got:
            assert got[k] == pytest.approx(first[k], abs=1e-6)


def test_top_k_and_class_names(trained):
    tmp, data, snap = trained
    np.save(tmp / "one.npy", np.zeros((32, 32, 3), np.uint8))
    result = run("predict", "--snapshot", snap, tmp / "one.npy", "--data-dir", data, "-k", "3")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(tmp / "one.npy") and len(lines) == 4
    assert lines[1].startswith("  1. ") and lines[1].endswith(")") and "%" in lines[1]
    quiet = run("predict", "--snapshot", snap, tmp / "one.npy", "--data-dir", data, "-q")
    path, name, prob = quiet.stdout.strip().split("\t")
    assert path == str(tmp / "one.npy") and name in lines[1] and 0 < float(prob) <= 1


def test_png_and_jpeg_need_pillow_and_match_arrays(trained):
    Image = pytest.importorskip("PIL.Image")
    tmp, data, snap = trained
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp / "img.png")
    np.save(tmp / "img.npy", pixels)
    big = rng.integers(0, 256, (48, 64, 3)).astype(np.uint8)   # resized to 32x32
    Image.fromarray(big).save(tmp / "big.png")
    np.save(tmp / "big.npy", big)
    result = run("predict", "--snapshot", snap, tmp / "img.png", tmp / "img.npy", tmp / "big.png",
                 tmp / "big.npy", "--data-dir", data, "--json", "-k", "10")
    assert result.exit_code == 0, result.stderr
    probs = _probs(json.loads(result.stdout))
    for name in ("img", "big"):
        png, npy = probs[str(tmp / f"{name}.png")], probs[str(tmp / f"{name}.npy")]
        assert all(png[k] == pytest.approx(npy[k], abs=1e-6) for k in png)
    Image.fromarray(pixels[:, :, 0]).save(tmp / "gray.jpg")      # grey JPEG: read as RGB
    jpeg = run("predict", "--snapshot", snap, tmp / "gray.jpg", "--data-dir", data, "-q")
    assert jpeg.exit_code == 0 and jpeg.stdout.startswith(f"{tmp / 'gray.jpg'}\t")


def test_without_pillow_images_fail_in_one_line_and_arrays_still_work(trained, monkeypatch):
    tmp, data, snap = trained
    (tmp / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    np.save(tmp / "x.npy", np.zeros((32, 32, 3), np.uint8))
    monkeypatch.setitem(sys.modules, "PIL", None)             # import PIL → ImportError
    result = run("predict", "--snapshot", snap, tmp / "x.png", "--data-dir", data)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: reading PNG/JPEG images needs Pillow: pip install 'cnntrain[image]' "
        "(or pip install pillow); .npy arrays work without it"]
    assert run("predict", "--snapshot", snap, tmp / "x.npy", "--data-dir", data).exit_code == 0


def _without_preprocessing(snap, copy):
    """``snap`` as snapshots were written before they stored their preprocessing."""
    import shutil

    shutil.copy(snap, copy)
    with h5py.File(copy, "a") as f:
        del f["preprocess"]
    return copy


def test_an_older_snapshots_mean_image_needs_the_dataset(trained, tmp_path):
    _, _, snap = trained
    old = _without_preprocessing(snap, tmp_path / "old.h5")
    np.save(tmp_path / "x.npy", np.zeros((32, 32, 3), np.uint8))
    result = run("predict", "--snapshot", old, tmp_path / "x.npy", "--data-dir", tmp_path / "none")
    assert result.exit_code == 3
    line = result.stderr.strip()
    assert "\n" not in line and "mean image of cifar10's training split" in line
    assert "downloading is off" in line


def test_a_snapshot_stores_its_preprocessing_so_predict_needs_no_dataset(trained, tmp_path):
    tmp, data, snap = trained
    images = np.concatenate([np.frombuffer((data / "cifar-10-batches-bin" / f"data_batch_{i}.bin")
                                           .read_bytes(), np.uint8).reshape(-1, 3073)[:, 1:]
                             for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    with h5py.File(snap) as f:
        group = f["preprocess/cifar"]
        assert dict(group.attrs) == {"scale": 0.01, "crop_size": 0, "shift": 0,
                                     "pad_mode": "zero"}
        np.testing.assert_allclose(group["mean"][()], images.mean(axis=0), rtol=1e-6)
    np.save(tmp_path / "x.npy", np.random.default_rng(4).integers(0, 256, (2, 32, 32, 3)))
    old = _without_preprocessing(snap, tmp_path / "old.h5")
    with_data = run("predict", "--snapshot", old, tmp_path / "x.npy", "--data-dir", data,
                    "--json", "-k", "10")
    without = run("predict", "--snapshot", snap, tmp_path / "x.npy", "--data-dir",
                  tmp_path / "none", "--json", "-k", "10")
    assert with_data.exit_code == 0 and without.exit_code == 0, without.stderr
    a, b = _probs(json.loads(with_data.stdout)), _probs(json.loads(without.stdout))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key]


def test_resize_keeps_constants_and_same_sizes():
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 10, 12))
    np.testing.assert_array_equal(resize(x, 10, 12), x.astype(np.float32))
    flat = np.full((1, 3, 50, 40), 77.0)
    np.testing.assert_allclose(resize(flat, 32, 32), 77.0, rtol=1e-6)
    np.testing.assert_allclose(resize(flat, 64, 64), 77.0, rtol=1e-6)


def test_a_mean_image_stored_in_the_snapshot_needs_no_dataset(trained, tmp_path):
    """Snapshots that keep the mean (transform/mean_image) predict without the dataset,
    exactly as with it."""
    import shutil

    _, data, snap = trained
    np.save(tmp_path / "x.npy", np.random.default_rng(4).integers(0, 256, (2, 32, 32, 3)))
    with_data = run("predict", "--snapshot", snap, tmp_path / "x.npy", "--data-dir", data,
                    "--json", "-k", "10")
    images = np.concatenate([np.frombuffer((data / "cifar-10-batches-bin" / f"data_batch_{i}.bin")
                                           .read_bytes(), np.uint8).reshape(-1, 3073)[:, 1:]
                             for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    copy = tmp_path / "with_mean.h5"
    shutil.copy(snap, copy)
    with h5py.File(copy, "a") as f:
        f["transform/mean_image"] = images.mean(axis=0).astype(np.float32)
    without = run("predict", "--snapshot", copy, tmp_path / "x.npy", "--data-dir",
                  tmp_path / "none", "--json", "-k", "10")
    assert without.exit_code == 0, without.stderr
    a, b = _probs(json.loads(with_data.stdout)), _probs(json.loads(without.stdout))
    for key in a:
        other = b[key.replace(str(snap), str(copy))]
        assert all(a[key][k] == pytest.approx(other[k], abs=1e-6) for k in a[key])
    assert json.loads(without.stdout)[0]["top"][0]["name"].isdigit()  # no dataset: indices
