"""CIFAR readers: every official layout, and every way a file can be broken or hostile."""
import hashlib
import io
import os
import pickle
import shutil
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from cifar_fixtures import (LAYOUTS, add_members, make_fake, member, py2_dumps,
                            write_folder, write_layout, write_tar_gz)
from cnntrain.data import ImageSet, default_data_dir, load_cifar, resolve_data_dir
from cnntrain.data import cifar as cifar_module
from cnntrain.data import download as download_module
from cnntrain.data.download import download
from cnntrain.data.safe_pickle import load_pickle
from cnntrain.data.safe_tar import extract_safely, read_members
from cnntrain.errors import DatasetError


def load(name, split, root, **kw):
    kw.setdefault("download", False)
    kw.setdefault("notify", lambda line: None)
    return load_cifar(name, split, root, **kw)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.fixture
def no_network(monkeypatch):
    """Any download attempt fails as if offline; records the URLs tried."""
    tried = []

    def offline(url, timeout=None):
        tried.append(url)
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(download_module, "urlopen", offline)
    return tried


# ------------------------------------------------------------------ reading every layout
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_every_layout_reads_back_what_was_written(tmp_path, name, layout, no_network):
    fake = make_fake(name)
    written = write_layout(tmp_path, fake, layout)
    for split in ("train", "test"):
        got = load(name, split, tmp_path, download=True)
        want = fake.split(split)
        assert isinstance(got, ImageSet)
        assert got.images.dtype == np.uint8 and got.images.flags.c_contiguous
        assert got.images.shape == (len(want.fine), 3, 32, 32)
        np.testing.assert_array_equal(got.images.reshape(len(want.fine), -1), want.rows)
        assert got.labels.dtype == np.int64
        np.testing.assert_array_equal(got.labels, want.fine)
        assert got.label_names == fake.fine_names
        assert got.source == str(written)
        if name == "cifar100":
            assert got.coarse_labels.dtype == np.int64
            np.testing.assert_array_equal(got.coarse_labels, want.coarse)
            assert got.coarse_label_names == fake.coarse_names
        else:
            assert got.coarse_labels is None and got.coarse_label_names is None
    assert no_network == []


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_all_four_layouts_give_identical_arrays(tmp_path, name):
    fake = make_fake(name, n_train=7, n_test=3, seed=5)
    sets = []
    for layout in LAYOUTS:
        write_layout(tmp_path / layout, fake, layout)
        sets.append(load(name, "train", tmp_path / layout))
    for other in sets[1:]:
        np.testing.assert_array_equal(other.images, sets[0].images)
        np.testing.assert_array_equal(other.labels, sets[0].labels)
        assert other.label_names == sets[0].label_names


def test_cifar10_train_batches_are_concatenated_in_order(tmp_path):
    fake = make_fake("cifar10", n_train=10)
    fake.train.rows[:] = np.arange(10, dtype=np.uint8)[:, None]  # picture i is all i
    fake.train.fine[:] = np.arange(10)[::-1]
    for layout in ("python", "binary"):
        write_layout(tmp_path / layout, fake, layout)
        got = load("cifar10", "train", tmp_path / layout)
        assert [int(img[0, 0, 0]) for img in got.images] == list(range(10))
        assert got.labels.tolist() == list(range(10))[::-1]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_known_pixel_lands_at_its_channel_row_and_column(tmp_path, layout):
    fake = make_fake("cifar100", n_train=3, n_test=2)
    fake.train.rows[:] = 0
    marks = {(0, 0, 31): 11, (1, 5, 7): 22, (2, 31, 0): 33}  # (c, y, x): value
    for (c, y, x), value in marks.items():
        fake.train.rows[1, c * 1024 + y * 32 + x] = value
    write_layout(tmp_path, fake, layout)
    images = load("cifar100", "train", tmp_path).images
    for (c, y, x), value in marks.items():
        assert images[1, c, y, x] == value
    assert np.count_nonzero(images) == len(marks)


@pytest.mark.parametrize("layout", ["python", "binary"])
def test_cifar100_fine_and_coarse_labels_are_not_swapped(tmp_path, layout):
    fake = make_fake("cifar100", n_train=40)
    fake.train.fine[:] = np.arange(60, 100)   # every fine label differs from its coarse one
    fake.train.coarse[:] = fake.train.fine // 5
    write_layout(tmp_path, fake, layout)
    got = load("cifar100", "train", tmp_path)
    assert got.labels.tolist() == list(range(60, 100))
    assert got.coarse_labels.tolist() == [f // 5 for f in range(60, 100)]
    assert got.label_names[got.labels[0]] == "fine60"
    assert got.coarse_label_names[got.coarse_labels[0]] == "coarse12"


def test_lookup_order_python_folder_binary_folder_python_archive_binary_archive(tmp_path):
    fakes = {layout: make_fake("cifar10", seed=i) for i, layout in enumerate(LAYOUTS)}
    paths = {layout: write_layout(tmp_path, fakes[layout], layout) for layout in LAYOUTS}
    shutil.rmtree(tmp_path / ".scratch-python"), shutil.rmtree(tmp_path / ".scratch-binary")
    for layout in LAYOUTS:
        got = load("cifar10", "test", tmp_path)
        assert got.source == str(paths[layout])
        np.testing.assert_array_equal(got.labels, fakes[layout].test.fine)
        if paths[layout].is_dir():
            shutil.rmtree(paths[layout])
        else:
            paths[layout].unlink()


def test_archive_members_with_dot_slash_prefix_are_found(tmp_path):
    fake = make_fake("cifar10")
    folder = write_folder(tmp_path / "src", fake, "python")
    write_tar_gz(tmp_path / "cifar-10-python.tar.gz", folder, arcname="./cifar-10-batches-py")
    np.testing.assert_array_equal(load("cifar10", "train", tmp_path).labels, fake.train.fine)


def test_python_files_rebuilt_with_python3_pickle_are_read_too(tmp_path):
    fake = make_fake("cifar10")
    folder = write_folder(tmp_path, fake, "python")
    record = {"data": fake.test.rows, "labels": fake.test.fine.tolist()}  # str keys, protocol 4
    (folder / "test_batch").write_bytes(pickle.dumps(record, protocol=4))
    np.testing.assert_array_equal(load("cifar10", "test", tmp_path).labels, fake.test.fine)


# ------------------------------------------------------------------ archive MD5 notes
def test_local_archive_with_unofficial_md5_is_used_with_one_note(tmp_path):
    write_layout(tmp_path, make_fake("cifar10"), "python-archive")
    notes = []
    load("cifar10", "train", tmp_path, notify=notes.append)
    load("cifar10", "test", tmp_path, notify=notes.append)
    assert len(notes) == 1
    assert "cifar-10-python.tar.gz" in notes[0] and "MD5" in notes[0] and "official" in notes[0]


def test_local_archive_with_official_md5_is_used_silently(tmp_path, monkeypatch):
    archive = write_layout(tmp_path, make_fake("cifar10"), "binary-archive")
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(cifar_module.ARCHIVES, archive.name,
                        cifar_module.Archive("https://example.invalid/x", digest))
    notes = []
    load("cifar10", "test", tmp_path, notify=notes.append)
    assert notes == []


# ------------------------------------------------------------------ hostile pickles
@pytest.mark.hostile_file
def test_pickle_calling_os_system_runs_nothing(tmp_path):
    sentinel = tmp_path / "pwned"
    payload = f"cos\nsystem\n(S'touch {sentinel}'\ntR.".encode()
    folder = write_folder(tmp_path, make_fake("cifar10"), "python")
    (folder / "data_batch_2").write_bytes(payload)
    with pytest.raises(DatasetError) as excinfo:
        load("cifar10", "train", tmp_path)
    message = one_line_error(excinfo)
    assert "os.system" in message and str(folder / "data_batch_2") in message
    assert not sentinel.exists()
    # the payload is live: an ordinary unpickler does run it
    pickle.loads(payload)
    assert sentinel.exists()


@pytest.mark.hostile_file
def test_pickle_built_by_reduce_with_posix_system_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {sentinel}",)

    with pytest.raises(DatasetError, match=r"refusing to load posix\.system from evil.pkl"):
        load_pickle(pickle.dumps({"data": Evil()}, protocol=4), "evil.pkl")
    assert not sentinel.exists()


@pytest.mark.hostile_file
def test_pickle_importing_another_module_imports_nothing(tmp_path, monkeypatch):
    sentinel = tmp_path / "imported"
    (tmp_path / "cnntrain_evil_mod.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cnntrain_evil_mod", raising=False)
    payload = b"\x80\x02ccnntrain_evil_mod\nanything\nq\x00."
    with pytest.raises(DatasetError, match=r"refusing to load cnntrain_evil_mod\.anything"):
        load_pickle(payload, "batch")
    assert "cnntrain_evil_mod" not in sys.modules and not sentinel.exists()
    with pytest.raises(AttributeError):  # the payload is live: pickle.loads imports the module
        pickle.loads(payload)
    assert sentinel.exists()


@pytest.mark.parametrize("module, name", [("numpy", "load"), ("builtins", "eval"),
                                          ("numpy.core.multiarray", "frombuffer"),
                                          ("__builtin__", "getattr")])
@pytest.mark.hostile_file
def test_only_array_rebuilding_globals_are_allowed(module, name):
    with pytest.raises(DatasetError, match=f"refusing to load {module}.{name} from f:"):
        load_pickle(f"c{module}\n{name}\n.".encode(), "f")


def test_py2_pickled_arrays_load_through_the_numpy1_names():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    data = py2_dumps({"data": array, "n": np.uint8(7)})
    assert b"numpy.core.multiarray\n_reconstruct" in data and b"numpy.core.multiarray\nscalar" in data
    loaded = load_pickle(data, "f")
    np.testing.assert_array_equal(loaded[b"data"], array)
    assert loaded[b"n"] == 7


class _FakeArray:
    """Pickles as numpy's array recipe with hand-picked (lying) arguments."""

    def __init__(self, shell_shape, shape, raw):
        self.args = shell_shape, shape, raw

    def __reduce__(self):
        shell, shape, raw = self.args
        return (np.ndarray.__reduce__(np.zeros(0))[0], (np.ndarray, shell, b"b"),
                (1, shape, np.dtype(np.uint8), False, raw))


@pytest.mark.hostile_file
def test_array_claiming_more_elements_than_its_bytes_is_refused():
    data = py2_dumps({"data": _FakeArray((0,), (10 ** 6, 3072), b"\x00" * 100)})
    with pytest.raises(DatasetError, match=r"^batch.bin is truncated or corrupt: "):
        load_pickle(data, "batch.bin")


@pytest.mark.hostile_file
def test_array_shell_with_a_huge_shape_is_refused_before_allocating():
    data = py2_dumps({"data": _FakeArray((10 ** 12, 10 ** 6), (0,), b"")})
    with pytest.raises(DatasetError, match="not empty"):
        load_pickle(data, "b")


@pytest.mark.parametrize("cut", [0.5, 0.99])
@pytest.mark.hostile_file
def test_truncated_pickle_is_one_line_error_naming_the_file(tmp_path, cut):
    folder = write_folder(tmp_path, make_fake("cifar10"), "python")
    batch = folder / "test_batch"
    batch.write_bytes(batch.read_bytes()[:int(batch.stat().st_size * cut)])
    with pytest.raises(DatasetError) as excinfo:
        load("cifar10", "test", tmp_path)
    assert one_line_error(excinfo).startswith(f"{batch} is truncated or corrupt: ")


@pytest.mark.hostile_file
def test_garbage_instead_of_a_pickle_is_reported(tmp_path):
    folder = write_folder(tmp_path, make_fake("cifar10"), "python")
    (folder / "batches.meta").write_bytes(b"\x00not a pickle at all")
    with pytest.raises(DatasetError, match="batches.meta is truncated or corrupt"):
        load("cifar10", "test", tmp_path)


# ------------------------------------------------------------------ malformed contents
@pytest.mark.parametrize("record, complaint", [
    (["not", "a", "dict"], "not a CIFAR dict"),
    ({"labels": [0]}, "no 'data' entry"),
    ({"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]},
     "'data' is an array of uint8, shape (2, 1024)"),
    ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "'data' is an array of float32"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "not 2 integer labels"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]},
     "label 10 of picture 1 is outside 0..9"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [-1, 0]}, "label -1 of picture 0"),
])
@pytest.mark.hostile_file
def test_malformed_python_batch_names_the_file(tmp_path, record, complaint):
    folder = write_folder(tmp_path, make_fake("cifar10"), "python")
    (folder / "test_batch").write_bytes(py2_dumps(record))
    with pytest.raises(DatasetError) as excinfo:
        load("cifar10", "test", tmp_path)
    message = one_line_error(excinfo)
    assert str(folder / "test_batch") in message and complaint in message


def test_missing_file_in_a_folder_is_named(tmp_path):
    folder = write_folder(tmp_path, make_fake("cifar10"), "python")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=f"{folder / 'data_batch_3'} is missing"):
        load("cifar10", "train", tmp_path)


def test_missing_member_in_an_archive_is_named(tmp_path):
    folder = write_folder(tmp_path / "src", make_fake("cifar100"), "binary")
    (folder / "coarse_label_names.txt").unlink()
    write_tar_gz(tmp_path / "cifar-100-binary.tar.gz", folder)
    with pytest.raises(DatasetError, match="has no member cifar-100-binary/coarse_label_names.txt"):
        load("cifar100", "test", tmp_path)


@pytest.mark.parametrize("name, file, record", [("cifar10", "data_batch_4.bin", 3073),
                                                ("cifar100", "train.bin", 3074)])
@pytest.mark.parametrize("change", [b"\x00", -1])
@pytest.mark.hostile_file
def test_binary_file_of_wrong_length_is_refused(tmp_path, name, file, record, change):
    folder = write_folder(tmp_path, make_fake(name), "binary")
    data = (folder / file).read_bytes()
    (folder / file).write_bytes(data + change if isinstance(change, bytes) else data[:change])
    with pytest.raises(DatasetError) as excinfo:
        load(name, "train", tmp_path)
    message = one_line_error(excinfo)
    assert str(folder / file) in message and f"whole number of {record}-byte records" in message


@pytest.mark.parametrize("offset, limit", [(0, 19), (1, 99)])  # coarse byte, then fine byte
@pytest.mark.hostile_file
def test_binary_label_out_of_range_is_refused(tmp_path, offset, limit):
    folder = write_folder(tmp_path, make_fake("cifar100"), "binary")
    data = bytearray((folder / "test.bin").read_bytes())
    data[3074 * 2 + offset] = limit + 1
    (folder / "test.bin").write_bytes(bytes(data))
    complaint = f"test.bin: label {limit + 1} of picture 2 is outside 0..{limit}"
    with pytest.raises(DatasetError, match=complaint):
        load("cifar100", "test", tmp_path)


def test_wrong_number_of_class_names_is_refused(tmp_path):
    folder = write_folder(tmp_path, make_fake("cifar10"), "binary")
    (folder / "batches.meta.txt").write_text("a\nb\nc\n")
    with pytest.raises(DatasetError, match="batches.meta.txt lists 3 class names, CIFAR-10 has 10"):
        load("cifar10", "test", tmp_path)


# ------------------------------------------------------------------ hostile or broken archives
def _good_archive(tmp_path) -> Path:
    return write_layout(tmp_path, make_fake("cifar10"), "python-archive")


@pytest.mark.parametrize("keep", [0.5, -4])   # cut in the middle; cut only the gzip trailer
@pytest.mark.hostile_file
def test_truncated_tar_gz_is_reported(tmp_path, keep):
    archive = _good_archive(tmp_path)
    data = archive.read_bytes()
    archive.write_bytes(data[:int(len(data) * keep)] if keep > 0 else data[:keep])
    with pytest.raises(DatasetError) as excinfo:
        load("cifar10", "train", tmp_path)
    assert one_line_error(excinfo).startswith(f"{archive} is truncated or corrupt: ")


@pytest.mark.hostile_file
def test_not_a_gzip_file_is_reported(tmp_path):
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"PK\x03\x04 this is a zip" * 10)
    with pytest.raises(DatasetError, match="cifar-10-binary.tar.gz is truncated or corrupt"):
        load("cifar10", "test", tmp_path)


def test_missing_archive_is_reported(tmp_path):
    with pytest.raises(DatasetError, match="cannot read .*nothing.tar.gz"):
        read_members(tmp_path / "nothing.tar.gz", {"x"})


HOSTILE = [
    (member("../evil"), "'../evil' leaves the archive folder"),
    (member("cifar-10-batches-py/../../evil"), "leaves the archive folder"),
    (member("/etc/evil"), "'/etc/evil' has an absolute path"),
    (member("cifar-10-batches-py/link", tarfile.SYMTYPE, "/etc/passwd"), "is a symbolic link"),
    (member("cifar-10-batches-py/hard", tarfile.LNKTYPE, "cifar-10-batches-py/ok"), "is a hard link"),
    (member("cifar-10-batches-py/tty", tarfile.CHRTYPE), "is a device file"),
    (member("cifar-10-batches-py/disk", tarfile.BLKTYPE), "is a device file"),
    (member("cifar-10-batches-py/pipe", tarfile.FIFOTYPE), "is a fifo"),
]


@pytest.mark.parametrize("bad, complaint", HOSTILE, ids=[h[1] for h in HOSTILE])
@pytest.mark.hostile_file
def test_hostile_member_is_refused_even_when_not_wanted(tmp_path, bad, complaint):
    archive = add_members(tmp_path / "x.tar.gz", [(member("cifar-10-batches-py/ok"), b"fine"),
                                                  (bad, b"evil")])
    for wanted in ({"cifar-10-batches-py/ok"}, lambda name: name.endswith("/ok")):
        with pytest.raises(DatasetError) as excinfo:
            read_members(archive, wanted)
        message = one_line_error(excinfo)
        assert message.startswith(f"refusing to read {archive}: member '{bad.name}'")
        assert complaint in message


@pytest.mark.hostile_file
def test_hostile_member_in_a_dataset_archive_stops_loading(tmp_path):
    folder = write_folder(tmp_path / "s", make_fake("cifar10"), "python")
    files = [(member(f"cifar-10-batches-py/{p.name}"), p.read_bytes())
             for p in sorted(folder.iterdir())]
    files.insert(2, (member("cifar-10-batches-py/x", tarfile.SYMTYPE, "/etc/shadow"), b""))
    add_members(tmp_path / "cifar-10-python.tar.gz", files)
    with pytest.raises(DatasetError, match="member 'cifar-10-batches-py/x' is a symbolic link"):
        load("cifar10", "test", tmp_path)


def test_read_members_returns_only_wanted_regular_files(tmp_path):
    archive = add_members(tmp_path / "x.tar.gz", [(member("d", tarfile.DIRTYPE), b""),
                                                  (member("d/a"), b"A"), (member("./d/b"), b"B")])
    assert read_members(archive, {"d/b", "d/missing"}) == {"d/b": b"B"}
    assert read_members(archive, lambda name: True) == {"d/a": b"A", "d/b": b"B"}


def test_extract_safely_puts_everything_in_place(tmp_path):
    archive = add_members(tmp_path / "x.tar.gz", [(member("d", tarfile.DIRTYPE), b""),
                                                  (member("d/a"), b"A"), (member("d/e/b"), b"B")])
    dest = extract_safely(archive, tmp_path / "out")
    assert (dest / "d" / "a").read_bytes() == b"A" and (dest / "d" / "e" / "b").read_bytes() == b"B"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "x.tar.gz"]


@pytest.mark.parametrize("bad, complaint", HOSTILE[:4], ids=[h[1] for h in HOSTILE[:4]])
@pytest.mark.hostile_file
def test_extract_safely_leaves_nothing_behind_on_a_bad_member(tmp_path, bad, complaint):
    archive = add_members(tmp_path / "x.tar.gz", [(member("d/a"), b"A" * 5000), (bad, b"evil")])
    with pytest.raises(DatasetError, match=complaint):
        extract_safely(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tar.gz"]
    assert not (tmp_path.parent / "evil").exists()


@pytest.mark.hostile_file
def test_extract_safely_leaves_nothing_behind_on_a_truncated_archive(tmp_path):
    archive = add_members(tmp_path / "x.tar.gz",
                          [(member("d/a"), os.urandom(4000)), (member("d/b"), os.urandom(40000))])
    archive.write_bytes(archive.read_bytes()[:-20000])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        extract_safely(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tar.gz"]


# ------------------------------------------------------------------ downloading
class _Response(io.BytesIO):
    def __init__(self, body: bytes, length: int | None = None):
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body) if length is None else length)}


def _serve(monkeypatch, body: bytes, length: int | None = None):
    seen = []

    def fake_urlopen(url, timeout=None):
        seen.append(url)
        return _Response(body, length)

    monkeypatch.setattr(download_module, "urlopen", fake_urlopen)
    return seen


def test_no_data_and_no_network_explains_what_to_do(tmp_path, no_network):
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError) as excinfo:
        load("cifar10", "train", data_dir, download=True)
    message = one_line_error(excinfo)
    for part in (str(data_dir), "cifar-10-batches-py/", "cifar-10-binary.tar.gz",
                 "downloading https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz failed",
                 "no network here", "--data-dir", "CNNTRAIN_DATA"):
        assert part in message
    assert no_network == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert list(data_dir.iterdir()) == []


def test_http_error_is_reported(tmp_path, monkeypatch):
    def not_found(url, timeout=None):
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)

    monkeypatch.setattr(download_module, "urlopen", not_found)
    with pytest.raises(DatasetError, match="cifar-100-python.tar.gz failed: HTTP 404 Not Found"):
        load("cifar100", "test", tmp_path, download=True)


def test_download_off_does_not_touch_the_network(tmp_path, no_network):
    with pytest.raises(DatasetError, match="CIFAR-100 not found.*downloading is off"):
        load("cifar100", "test", tmp_path, download=False)
    assert no_network == []


def test_download_with_wrong_md5_leaves_no_file(tmp_path, monkeypatch):
    seen = _serve(monkeypatch, b"not the archive you are looking for" * 100)
    with pytest.raises(DatasetError) as excinfo:
        load("cifar10", "train", tmp_path, download=True)
    message = one_line_error(excinfo)
    assert "MD5" in message and "c58f30108f718f92721af3b95e74349a" in message
    assert seen and list(tmp_path.iterdir()) == []


def test_download_cut_short_leaves_no_file(tmp_path, monkeypatch):
    _serve(monkeypatch, b"x" * 100, length=1000)
    with pytest.raises(DatasetError, match="after 100 of 1000 bytes"):
        download("https://example.invalid/a.tar.gz", tmp_path / "a.tar.gz", None)
    assert list(tmp_path.iterdir()) == []


def test_download_then_load(tmp_path, monkeypatch):
    fake = make_fake("cifar100")
    body = write_layout(tmp_path / "server", fake, "python-archive").read_bytes()
    digest = hashlib.md5(body).hexdigest()
    monkeypatch.setitem(cifar_module.ARCHIVES, "cifar-100-python.tar.gz",
                        cifar_module.Archive("https://example.invalid/c100.tgz", digest))
    seen = _serve(monkeypatch, body)
    notes = []
    got = load("cifar100", "train", tmp_path / "data", download=True, notify=notes.append)
    np.testing.assert_array_equal(got.coarse_labels, fake.train.coarse)
    assert seen == ["https://example.invalid/c100.tgz"]
    assert (tmp_path / "data" / "cifar-100-python.tar.gz").read_bytes() == body
    assert os.listdir(tmp_path / "data") == ["cifar-100-python.tar.gz"]
    assert len(notes) == 1 and "downloading https://example.invalid/c100.tgz" in notes[0]
    load("cifar100", "test", tmp_path / "data", download=True)  # now found locally
    assert len(seen) == 1


def test_official_urls_and_md5s_are_the_published_ones():
    table = {name: (a.url, a.md5) for name, a in cifar_module.ARCHIVES.items()}
    base = "https://www.cs.toronto.edu/~kriz/"
    assert table == {
        "cifar-10-python.tar.gz": (base + "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
        "cifar-10-binary.tar.gz": (base + "cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),
        "cifar-100-python.tar.gz": (base + "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
        "cifar-100-binary.tar.gz": (base + "cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8"),
    }


# ------------------------------------------------------------------ names and folders
def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CNNTRAIN_DATA", raising=False)
    assert default_data_dir() == tmp_path / "home" / ".cache" / "cnntrain"
    assert resolve_data_dir(None) == tmp_path / "home" / ".cache" / "cnntrain"
    assert resolve_data_dir("/from/cli") == Path("/from/cli")
    monkeypatch.setenv("CNNTRAIN_DATA", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir("/from/cli") == Path("/from/cli")
    assert resolve_data_dir("~/d") == tmp_path / "home" / "d"


@pytest.mark.parametrize("name, split, complaint", [("mnist", "train", "unknown dataset 'mnist'"),
                                                    ("cifar10", "val", "unknown split 'val'")])
def test_unknown_dataset_or_split(tmp_path, name, split, complaint):
    with pytest.raises(DatasetError, match=complaint):
        load(name, split, tmp_path)
