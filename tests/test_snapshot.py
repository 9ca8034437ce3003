"""Snapshots: Caffe's weight layout, atomic writes, clear errors for bad files."""
import h5py
import numpy as np
import pytest

from cnntrain import snapshot as snap_mod
from cnntrain.errors import SnapshotError
from cnntrain.snapshot import copy_weights, load_snapshot, save_snapshot
from net_helpers import build, input_layer

LAYERS = [input_layer((2, 3, 6, 6), (2,)),
          {"name": "conv", "type": "Convolution", "bottom": "data", "top": "conv",
           "convolution_param": {"num_output": 2, "kernel_size": 3}},
          {"name": "ip", "type": "InnerProduct", "bottom": "conv", "top": "ip",
           "inner_product_param": {"num_output": 3}},
          {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip", "label"], "top": "loss"}]


def save(net, path, iteration=7):
    save_snapshot(path, params=net.param_keys, config="name: x\n", iteration=iteration,
                  solver_type="SGD", history=[[np.full_like(p.data, 0.5)] for p in net.params],
                  rng='{"init": 1}', data_state={"d": {"cursor": np.int64(3)}})


def test_round_trip_in_caffe_layout(tmp_path):
    net = build(LAYERS, seed=1)
    path = tmp_path / "s.h5"
    save(net, path)
    with h5py.File(path) as f:
        assert f["data/conv/0"].shape == (2, 3, 3, 3) and f["data/ip/1"].shape == (3,)
    snap = load_snapshot(path)
    assert snap.iteration == 7 and snap.solver_type == "SGD" and snap.resumable
    other = build(LAYERS, seed=2)
    copy_weights(other, snap, strict=True)
    for a, b in zip(net.params, other.params):
        np.testing.assert_array_equal(a.data, b.data)
    assert int(snap.data_state["d"]["cursor"]) == 3


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    net = build(LAYERS)
    path = tmp_path / "s.h5"
    save(net, path, iteration=1)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snap_mod.os, "replace", boom)
    with pytest.raises(SnapshotError, match="the disk is full"):
        save(net, path, iteration=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"]


@pytest.mark.hostile_file
def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    net = build(LAYERS)
    path = tmp_path / "s.h5"
    save(net, path)
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(SnapshotError, match="truncated or corrupt"):
        load_snapshot(tmp_path / "cut.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(SnapshotError, match="not a readable snapshot"):
        load_snapshot(tmp_path / "text.h5")
    with pytest.raises(SnapshotError, match="not found"):
        load_snapshot(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    with pytest.raises(SnapshotError, match="no weights"):
        load_snapshot(tmp_path / "empty.h5")


@pytest.mark.hostile_file
def test_snapshot_from_another_net_is_refused(tmp_path):
    path = tmp_path / "s.h5"
    save(build(LAYERS), path)
    bigger = [dict(LAYERS[0]), {**LAYERS[1], "convolution_param": {"num_output": 4,
                                                                   "kernel_size": 3}}] + LAYERS[2:]
    with pytest.raises(SnapshotError, match="layer 'conv' param 0 has shape"):
        copy_weights(build(bigger), load_snapshot(path), strict=False)
    renamed = LAYERS[:2] + [{**LAYERS[2], "name": "fc"}] + LAYERS[3:]
    with pytest.raises(SnapshotError, match="no weights for layer 'fc'"):
        copy_weights(build(renamed), load_snapshot(path), strict=True)
    # Fine-tuning (not strict) keeps unmatched layers as initialized, as Caffe does.
    assert copy_weights(build(renamed), load_snapshot(path), strict=False) == ["conv"]


def test_caffe_weights_only_file_loads_but_is_not_resumable(tmp_path):
    net = build(LAYERS)
    path = tmp_path / "caffe.h5"
    with h5py.File(path, "w") as f:
        for layer, i, p in net.param_keys:
            f.create_dataset(f"data/{layer}/{i}", data=p.data * 2)
    snap = load_snapshot(path)
    assert not snap.resumable
    copy_weights(net, snap, strict=True)
