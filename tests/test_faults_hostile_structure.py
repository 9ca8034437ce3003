"""Snapshots, prototxts and archives with hostile structure, and resource bombs: each is
refused with one ``error:`` line (no SystemError, RecursionError or OverflowError
traceback, no attribute names of Python objects), before anything large is allocated.
"""
from __future__ import annotations

import json
import os
import tarfile

import h5py
import numpy as np
import pytest

import fault_figures
from cifar_fixtures import add_members, member
from test_faults_run_folder import SHORT, data, train  # noqa: F401 (fixture)
from tool_helpers import DEPLOY, run



def refused(result, code: int, *words: str) -> str:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        fault_figures.add("tracebacks")
        raise AssertionError(repr(result.exception)) from result.exception
    lines = result.stderr.splitlines()
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "object has no attribute" not in lines[0], lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    fault_figures.add("hostile_structure")
    return lines[0]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory, data):  # noqa: F811
    tmp = tmp_path_factory.mktemp("hostile")
    config = tmp / "tiny.yaml"
    config.write_text(SHORT)
    assert train(config, data, tmp / "runs").exit_code == 0
    return config, tmp / "runs" / "tiny" / "snapshots" / "iter_1.h5"


def edited(tmp_path, snap, edit):
    out = tmp_path / "edited.h5"
    out.write_bytes(snap.read_bytes())
    with h5py.File(out, "r+") as f:
        edit(f)
    return out


def _empty(f):
    del f["data/ip/1"]
    f.create_dataset("data/ip/1", data=h5py.Empty("f4"))


def _dataset_for_group(f):
    del f["data/ip"]
    f["data/ip"] = np.zeros(3, np.float32)


EDITS = {
    "null dataspace": (_empty, "empty dataset"),
    "dataset for a group": (_dataset_for_group, "where a group belongs"),
    "future version": (lambda f: f.attrs.__setitem__("version", 99), "version 99"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
@pytest.mark.parametrize("command", ["test", "resume", "predict"])
def test_a_snapshot_of_hostile_structure_is_refused(tmp_path, data, snapshot, case,  # noqa: F811
                                                     command):
    config, snap = snapshot
    edit, words = EDITS[case]
    bad = edited(tmp_path, snap, edit)
    if command == "test":
        result = run("test", "--snapshot", bad, "--data-dir", data)
    elif command == "resume":
        result = train(config, data, tmp_path / "runs", "--resume", bad)
    else:
        np.save(tmp_path / "x.npy", np.zeros((32, 32, 3), np.uint8))
        result = run("predict", "--snapshot", bad, tmp_path / "x.npy", "--data-dir", data)
    refused(result, 4, words)


@pytest.mark.parametrize("rng", ["[" * 100_000 + "]" * 100_000,
                                 json.dumps({"augment": {"bit_generator": "PCG64", "state": {
                                     "state": 10 ** 400, "inc": 1}, "has_uint32": 0,
                                     "uinteger": 0}})], ids=["deep", "huge-int"])
def test_a_hostile_rng_state_is_refused_on_resume(tmp_path, data, snapshot, rng):  # noqa: F811
    config, snap = snapshot
    bad = edited(tmp_path, snap, lambda f: f.attrs.__setitem__("rng", rng))
    refused(train(config, data, tmp_path / "runs", "--resume", bad), 4, "random generator")


@pytest.mark.parametrize("text", ["a { " * 20_000 + "}" * 20_000,
                                  DEPLOY.replace("num_output: 4", "num_output: " + "9" * 5000)],
                         ids=["nested-20000", "5000-digits"])
def test_a_hostile_prototxt_is_one_line(tmp_path, text):
    net = tmp_path / "net.prototxt"
    net.write_text(text)
    refused(run("import-prototxt", net, "-o", tmp_path / "out.yaml"), 2, "net.prototxt")
    assert not (tmp_path / "out.yaml").exists()


def caffemodel(path, weights):
    with h5py.File(path, "w") as f:
        for (layer, i), value in weights.items():
            f.create_dataset(f"data/{layer}/{i}", data=value)
    return path


@pytest.mark.parametrize("case", ["nan", "missing bias"])
def test_caffe_weights_with_nan_or_half_a_layer_are_refused(tmp_path, case):
    net = tmp_path / "net.prototxt"
    net.write_text(DEPLOY)
    w = np.ones((4, 192), np.float32)
    weights = {("ip", 0): w, ("ip", 1): np.zeros(4, np.float32)}
    if case == "nan":
        weights[("ip", 0)] = np.full((4, 192), np.nan, np.float32)
    else:
        del weights[("ip", 1)]
    model = caffemodel(tmp_path / "w.caffemodel.h5", weights)
    out = tmp_path / "out.yaml"
    refused(run("import-prototxt", net, "-o", out, "--weights", model), 4, "layer 'ip'")
    assert not out.with_suffix(".h5").exists()


def test_a_tar_with_two_members_of_one_name_is_refused(tmp_path):
    from cnntrain.data.safe_tar import read_members
    from cnntrain.errors import DatasetError

    archive = add_members(tmp_path / "dup.tar.gz", [(member("a/data_batch_1"), b"one"),
                                                    (member("a/data_batch_1"), b"two")])
    with pytest.raises(DatasetError, match="two members named 'a/data_batch_1'"):
        read_members(archive, {"a/data_batch_1"})
    fault_figures.add("hostile_structure")


def test_a_member_claiming_more_than_the_format_allows_is_refused_before_reading(tmp_path):
    from cnntrain.data.safe_tar import MAX_MEMBER_BYTES, read_members
    from cnntrain.errors import DatasetError

    info = member("cifar-10-batches-py/data_batch_1")
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info.size = 0
        tar.addfile(info)
    # Patch the header's size field: it now claims 300 MiB that the archive lacks.
    import gzip
    raw = bytearray(gzip.decompress(archive.read_bytes()))
    raw[124:136] = f"{300 << 20:011o}\0".encode()
    raw[148:156] = b"        "
    raw[148:156] = f"{sum(raw[:512]):06o}\0 ".encode()
    archive.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetError, match=f"more than {MAX_MEMBER_BYTES}"):
        read_members(archive, lambda name: True)
    fault_figures.add("hostile_structure")


def test_a_later_port_removes_a_killed_ports_temporary(tmp_path, monkeypatch):
    from cnntrain.data import port as port_module

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    dead = 2 ** 22 + 12345          # above any pid_max default: no such process
    stale = data_dir / f".cifar10-train.h5.tmp-{dead}"
    stale.write_bytes(b"\0" * 1000)
    mine = data_dir / f".cifar10-test.h5.tmp-{os.getpid()}"
    mine.write_bytes(b"\0")
    monkeypatch.setattr(port_module, "local_source", lambda name, d: None)

    def offline(*args, **kwargs):
        from cnntrain.errors import DatasetError
        raise DatasetError("network is off in the fault suite")

    monkeypatch.setattr(port_module, "fetch_official", offline)
    result = run("port", "cifar10", "--data-dir", data_dir)
    assert result.exit_code == 3, result.output
    assert not stale.exists() and mine.exists()
    fault_figures.add("hostile_structure")
