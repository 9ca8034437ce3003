"""Hostile data files, end to end through the CLI: each is refused with one ``error:``
line, and none runs code.

Pickles that call os.system, exec, subprocess or import a module, and pickles that claim
huge sizes; tar archives with ``..``, absolute paths, links and device files; truncated
and malformed HDF5 files, HDF5 files with links to other files or filters that HDF5 would
load as a plugin; snapshots from another net or solver. Every code-running payload is
aimed at a sentinel file, which must not appear (and, to prove the payload is live, an
ordinary ``pickle.loads`` of the same payload does create its own sentinel).

The library-level versions of some of these live in ``test_data_cifar.py``,
``test_port_native.py`` and ``test_snapshot.py`` (marked ``hostile_file``, counted in
the same figures).
"""
from __future__ import annotations

import os
import pickle
import sys
import tarfile
import urllib.error

import h5py
import numpy as np
import pytest

import fault_figures
from cifar_fixtures import NAMES, add_members, make_fake, member, py2_dumps, write_folder
from test_cli_e2e import CONFIG, weights, write_cifar10_binary
from tool_helpers import run

PY_FOLDER = NAMES[("cifar10", "python")][0]
PY_ARCHIVE = NAMES[("cifar10", "python")][1]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError(OSError("network is off in the fault suite"))

    monkeypatch.setattr("cnntrain.data.download.urlopen", refuse)


@pytest.fixture
def sentinel(tmp_path):
    """A file that hostile payloads try to create; it must never appear."""
    path = tmp_path / "sentinel-pwned"
    yield path
    if path.exists():
        fault_figures.add("code_executed")
    assert not path.exists(), "a data file ran code"


def refused(result, code: int, *words: str) -> str:
    """One ``error:`` line with exit ``code`` that holds ``words``; counts one hostile file."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        fault_figures.add("tracebacks")
        raise AssertionError(f"traceback: {result.exception!r}") from result.exception
    lines = result.stderr.splitlines()
    assert result.exit_code == code, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    fault_figures.add("hostile_files")
    return lines[0]


def train(config, data, runs, *extra):
    return run("train", config, "--data-dir", data, "--runs-dir", runs, "--no-progress", *extra)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG)
    return path


# ------------------------------------------------------------------ pickles
class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _touch(path) -> str:
    return f"touch {path}"


def _python(path) -> str:
    return f"open({str(path)!r}, 'w').close()"


# name → payload aimed at ``path`` (each would create ``path`` under pickle.loads)
GADGETS = {
    "os.system, protocol 0": lambda p: f"cos\nsystem\n(S'{_touch(p)}'\ntR.".encode(),
    "posix.system by reduce, protocol 2": lambda p: pickle.dumps(
        {"data": _Reduce(os.system, _touch(p))}, protocol=2),
    "posix.system by reduce, protocol 5": lambda p: pickle.dumps(
        [_Reduce(os.system, _touch(p))], protocol=5),
    "builtins.exec": lambda p: pickle.dumps(_Reduce(exec, _python(p)), protocol=4),
    "builtins.eval": lambda p: pickle.dumps(_Reduce(eval, f"{_python(p)}"), protocol=3),
    "subprocess.call": lambda p: b"csubprocess\ncall\n((S'touch'\nS'" + str(p).encode()
                                 + b"'\nltR.",
    "INST opcode": lambda p: f"(S'{_touch(p)}'\nios\nsystem\n.".encode(),
    "OBJ opcode": lambda p: b"\x80\x02(cos\nsystem\nX" + len(_touch(p)).to_bytes(4, "little")
                            + _touch(p).encode() + b"o.",
    "STACK_GLOBAL of os.system": lambda p: b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00"
        + b"\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c" + bytes([len(_touch(p))])
        + _touch(p).encode() + b"\x85R.",
    "gadget inside a CIFAR dict": lambda p: py2_dumps({"batch_label": "x"})[:-1].replace(
        b"}", b"}", 1) + b"0" + f"cos\nsystem\n(S'{_touch(p)}'\ntR.".encode(),
    "builtins.getattr chain": lambda p: (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\n"
                                         b"tRS'system'\ntR(S'" + _touch(p).encode() + b"'\ntR."),
    "numpy.load with allow_pickle": lambda p: b"cnumpy\nload\n(S'" + str(p).encode()
                                              + b"'\nI01\ntR.",
    "copyreg._reconstructor": lambda p: (b"ccopyreg\n_reconstructor\n(cos\nsystem\ncbuiltins\n"
                                         b"object\nNtR."),
    "functools.partial": lambda p: pickle.dumps(
        _Reduce(__import__("functools").partial(os.system, _touch(p))), protocol=2),
}
LIVE = {"numpy.load with allow_pickle", "copyreg._reconstructor", "gadget inside a CIFAR dict"}


@pytest.mark.parametrize("name", sorted(GADGETS))
def test_pickle_gadget_in_a_dataset_is_refused_and_runs_nothing(tmp_path, config, sentinel, name):
    folder = write_folder(tmp_path / "data", make_fake("cifar10", 10, 5), "python")
    (folder / "data_batch_3").write_bytes(GADGETS[name](sentinel))
    line = refused(train(config, tmp_path / "data", tmp_path / "runs"), 3,
                   str(folder / "data_batch_3"))
    assert "refusing to load" in line or "truncated or corrupt" in line
    assert not sentinel.exists()
    if name not in LIVE:   # the payload is real: an ordinary unpickler runs it
        live = tmp_path / "live"
        try:
            pickle.loads(GADGETS[name](live))
        except Exception:  # noqa: BLE001 - only the side effect matters
            pass
        assert live.exists(), f"{name}: the payload itself is a dud"


def test_pickle_importing_a_module_imports_nothing_through_the_cli(tmp_path, config, sentinel,
                                                                   monkeypatch):
    (tmp_path / "cnntrain_hostile_mod.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cnntrain_hostile_mod", raising=False)
    folder = write_folder(tmp_path / "data", make_fake("cifar10", 10, 5), "python")
    for payload in (b"\x80\x02ccnntrain_hostile_mod\nanything\nq\x00.",
                    b"cimportlib\nimport_module\n(S'cnntrain_hostile_mod'\ntR."):
        (folder / "test_batch").write_bytes(payload)
        refused(train(config, tmp_path / "data", tmp_path / "runs"), 3, "refusing to load",
                str(folder / "test_batch"))
    assert "cnntrain_hostile_mod" not in sys.modules and not sentinel.exists()


class _FakeArray:
    """numpy's array recipe with lying arguments (a shell shape, a shape, raw bytes)."""

    def __init__(self, shell, shape, raw):
        self.args = shell, shape, raw

    def __reduce__(self):
        shell, shape, raw = self.args
        return (np.ndarray.__reduce__(np.zeros(0))[0], (np.ndarray, shell, b"b"),
                (1, shape, np.dtype(np.uint8), False, raw))


HUGE_PICKLES = {
    "array shell of 10^18 elements": lambda: py2_dumps(
        {"data": _FakeArray((10 ** 9, 10 ** 9), (0,), b""), "labels": [0]}),
    "array claiming 10^6 images in 100 bytes": lambda: py2_dumps(
        {"data": _FakeArray((0,), (10 ** 6, 3072), b"\0" * 100), "labels": [0]}),
    "BINBYTES8 of 2^60 bytes": lambda: b"\x80\x04\x8e" + (1 << 60).to_bytes(8, "little") + b"x.",
    "BINUNICODE8 of 2^62 bytes": lambda: b"\x80\x04\x8d" + (1 << 62).to_bytes(8, "little") + b".",
    "LONG4 of 2^31 bytes": lambda: b"\x80\x02\x8b" + (2 ** 31 - 1).to_bytes(4, "little") + b".",
    "FRAME of 2^63 bytes": lambda: b"\x80\x04\x95" + (2 ** 63 - 1).to_bytes(8, "little") + b"N.",
    "10^6 nested lists": lambda: b"\x80\x02" + b"]" * 10 ** 6 + b".",
    "empty file": lambda: b"",
}


@pytest.mark.parametrize("name", sorted(HUGE_PICKLES))
def test_pickle_claiming_huge_sizes_is_refused_without_allocating(tmp_path, config, name):
    import resource

    folder = write_folder(tmp_path / "data", make_fake("cifar10", 10, 5), "python")
    (folder / "data_batch_1").write_bytes(HUGE_PICKLES[name]())
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    # 4 GiB of address space more than now: a reader that believed the sizes would fail
    # with MemoryError (a traceback) instead of refusing the file.
    used = _address_space()
    if used and soft == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_AS, (used + (4 << 30), hard))
    try:
        result = train(config, tmp_path / "data", tmp_path / "runs")
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    refused(result, 3, str(folder / "data_batch_1"))


def _address_space() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


# ------------------------------------------------------------------ tar archives
TAR_HOSTILE = [
    (member("../evil"), "leaves the archive folder"),
    (member(f"{PY_FOLDER}/../../evil"), "leaves the archive folder"),
    (member("./../evil"), "leaves the archive folder"),
    (member("..\\evil"), "leaves the archive folder"),
    (member("/tmp/cnntrain-fault-evil"), "has an absolute path"),
    (member("C:/evil"), "has an absolute path"),
    (member(f"{PY_FOLDER}/data_batch_1", tarfile.SYMTYPE, "/etc/passwd"), "is a symbolic link"),
    (member(f"{PY_FOLDER}/up", tarfile.SYMTYPE, "../../.."), "is a symbolic link"),
    (member(f"{PY_FOLDER}/hard", tarfile.LNKTYPE, "/etc/passwd"), "is a hard link"),
    (member(f"{PY_FOLDER}/tty", tarfile.CHRTYPE), "is a device file"),
    (member(f"{PY_FOLDER}/sda", tarfile.BLKTYPE), "is a device file"),
    (member(f"{PY_FOLDER}/pipe", tarfile.FIFOTYPE), "is a fifo"),
]


def _huge_member():
    info = member(f"{PY_FOLDER}/data_batch_9")
    info.size = (1 << 30) + 1
    return info


@pytest.mark.parametrize("bad, words", TAR_HOSTILE + [(_huge_member(), "claims 1073741825 bytes")],
                         ids=[w for _, w in TAR_HOSTILE] + ["huge member"])
def test_hostile_archive_member_stops_training_and_writes_nothing(tmp_path, config, bad, words):
    src = write_folder(tmp_path / "src", make_fake("cifar10", 10, 5), "python")
    files = [(member(f"{PY_FOLDER}/{p.name}"), p.read_bytes()) for p in sorted(src.iterdir())]
    data = tmp_path / "data"
    data.mkdir()
    payload = b"" if bad.size > (1 << 20) else b"evil"
    if bad.size > (1 << 20):
        archive = _write_raw_archive(data / PY_ARCHIVE, files[:2], bad)
    else:
        archive = add_members(data / PY_ARCHIVE, files[:2] + [(bad, payload)] + files[2:])
    before = _tree(tmp_path)
    line = refused(train(config, data, tmp_path / "runs"), 3, f"refusing to read {archive}",
                   words)
    assert "member" in line
    assert _tree(tmp_path) - before <= {p for p in _tree(tmp_path) if "runs" in p}
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()
    assert not os.path.exists("/tmp/cnntrain-fault-evil")


def _write_raw_archive(path, files, header):
    """A .tar.gz whose last header claims ``header.size`` bytes that are not there."""
    import gzip
    import io

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for info, data in files:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    body = raw.getvalue().rstrip(b"\0")
    body = body + b"\0" * (-len(body) % 512) + header.tobuf(format=tarfile.GNU_FORMAT)
    path.write_bytes(gzip.compress(body + b"\0" * 1024))
    return path


def _tree(root) -> set[str]:
    return {str(p) for p in root.rglob("*")}


# ------------------------------------------------------------------ snapshots
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run: (config, data dir, snapshot at iteration 6, at 12)."""
    root = tmp_path_factory.mktemp("hostile_h5")
    data = write_cifar10_binary(root / "data")
    config = root / "tiny.yaml"
    config.write_text(CONFIG)
    assert train(config, data, root / "runs").exit_code == 0
    snaps = root / "runs" / "tiny" / "snapshots"
    return config, data, snaps / "iter_6.h5", snaps / "iter_12.h5"


def _edit(src, dst, fn):
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        fn(f)
    return dst


def _replace(name, value):
    """Replace dataset ``name`` by ``value`` (or ``value(old array)``)."""
    def fn(f):
        old = f[name][()]
        del f[name]
        f.create_dataset(name, data=value(old) if callable(value) else value)
    return fn


def _set_attr(name, value):
    def fn(f):
        f.attrs[name] = value
    return fn


def _external(target):
    def fn(f):
        del f["data/ip/0"]
        f["data/ip/0"] = h5py.ExternalLink(str(target), "/data/ip/0")
    return fn


def _huge_lazy(f):
    del f["data/ip/0"]
    f.create_dataset("data/ip/0", shape=(10 ** 12,), dtype=np.float32, chunks=(1024,))


def _plugin_filter(f):
    # An HDF5 file may name a filter by number; reading it makes HDF5 look for a plugin
    # library to load. A made-up filter id, stored "optional" so that writing works.
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk((10,))
    dcpl.set_filter(32123, h5py.h5z.FLAG_OPTIONAL, (1,))
    del f["data/ip/1"]
    space = h5py.h5s.create_simple((10,))
    h5py.h5d.create(f.id, b"data/ip/1", h5py.h5t.NATIVE_FLOAT, space, dcpl=dcpl)


def _external_storage(f):
    del f["data/ip/1"]
    f.create_dataset("data/ip/1", shape=(10,), dtype=np.float32, external=[("/etc/hostname", 0, 40)])


def _soft_loop(f):
    del f["data/ip"]
    f["data/ip"] = h5py.SoftLink("/data")


ALL = ("resume", "weights", "test")
RESUME = ("resume",)
HOSTILE_SNAPSHOTS = {   # name: (make(good, bad), words in the error, commands that refuse it)
    "empty file": (lambda s, d: d.write_bytes(b""), "not a readable snapshot", ALL),
    "text file": (lambda s, d: d.write_text("weights\n" * 10), "not a readable snapshot", ALL),
    "cut to 1 KiB": (lambda s, d: d.write_bytes(s.read_bytes()[:1024]), "truncated or corrupt",
                     ALL),
    "cut in half": (lambda s, d: d.write_bytes(s.read_bytes()[:s.stat().st_size // 2]),
                    "truncated or corrupt", ALL),
    "cut by 16 bytes": (lambda s, d: d.write_bytes(s.read_bytes()[:-16]), "", ALL),
    "superblock byte flipped": (
        lambda s, d: d.write_bytes(s.read_bytes()[:9] + b"\xff" + s.read_bytes()[10:]), "", ALL),
    "weights as text": (lambda s, d: _edit(s, d, _replace("data/ip/0", np.array([b"x"] * 3))),
                        "'data/ip/0' holds text", ALL),
    "weights as complex": (lambda s, d: _edit(s, d, _replace(
        "data/ip/0", lambda w: w.astype(np.complex64))), "'data/ip/0' holds", ALL),
    "weights as a compound": (lambda s, d: _edit(s, d, _replace(
        "data/ip/0", lambda w: np.zeros(w.shape, [("a", "f4"), ("b", "i4")]))), "'data/ip/0' holds compound",
        ALL),
    "weights of the wrong shape": (lambda s, d: _edit(s, d, _replace(
        "data/ip/0", lambda w: w.T.copy())), "layer 'ip' param 0 has shape", ALL),
    "weights as a scalar": (lambda s, d: _edit(s, d, _replace("data/ip/0", np.float32(1))),
                            "layer 'ip' param 0 has shape ()", ALL),
    "weights with NaN": (lambda s, d: _edit(s, d, _replace(
        "data/ip/0", lambda w: np.full_like(w, np.nan))), "layer 'ip' param 0 holds NaN", ALL),
    "weights as int64": (lambda s, d: _edit(s, d, _replace(
        "data/ip/0", lambda w: w.astype(np.int64))), "not floating point", ALL),
    "10^12 weights claimed": (lambda s, d: _edit(s, d, _huge_lazy), "'data/ip/0' claims", ALL),
    "a link to another file": (lambda s, d: _edit(s, d, _external(s)), "link to another file", ALL),
    "external raw storage": (lambda s, d: _edit(s, d, _external_storage),
                             "keeps its data in another file", ALL),
    "a filter plugin": (lambda s, d: _edit(s, d, _plugin_filter), "HDF5 filter 32123", ALL),
    "a soft link loop": (lambda s, d: _edit(s, d, _soft_loop), "'data/ip' is a soft link", ALL),
    "history of the wrong shape": (lambda s, d: _edit(s, d, _replace(
        "solver/history/ip/0/0", np.zeros(3, "f4"))), "solver buffer has shape", RESUME),
    "history with inf": (lambda s, d: _edit(s, d, _replace(
        "solver/history/ip/0/0", lambda w: np.full_like(w, np.inf))), "history holds NaN", RESUME),
    "history missing": (lambda s, d: _edit(s, d, lambda f: f.__delitem__("solver")),
                        "lacks solver history", RESUME),
    "iteration as text": (lambda s, d: _edit(s, d, _set_attr("iter", "twelve")),
                          "attribute 'iter' is 'twelve'", ALL),
    "negative iteration": (lambda s, d: _edit(s, d, _set_attr("iter", -5)),
                           "attribute 'iter' is -5", ALL),
    "huge iteration": (lambda s, d: _edit(s, d, _set_attr("iter", 2 ** 62)), "past the config's",
                       RESUME),
    "iteration as an array": (lambda s, d: _edit(s, d, _set_attr("iter", np.arange(1000))),
                              "attribute 'iter' is ndarray", ALL),
    "rng not JSON": (lambda s, d: _edit(s, d, _set_attr("rng", "{not json")),
                     "random generator state is not JSON", RESUME),
    "rng of the wrong structure": (lambda s, d: _edit(s, d, _set_attr("rng", '{"init": [1, 2]}')),
                                   "stream 'init' is invalid", RESUME),
    "rng of another generator": (lambda s, d: _edit(s, d, _set_attr(
        "rng", '{"init": {"bit_generator": "MT19937", "state": {"key": [1], "pos": 0}}}')),
        "stream 'init' is invalid", RESUME),
    "data position of the wrong shape": (lambda s, d: _edit(s, d, _data_state_garbage),
                                         "layer 'cifar'", RESUME),
    "data order out of range": (lambda s, d: _edit(s, d, _data_order_out_of_range),
                                "not a permutation", RESUME),
    "solver type unknown": (lambda s, d: _edit(s, d, _set_attr("solver_type", "Evil")),
                            "made by the Evil solver", RESUME),
    "config with a python tag": (lambda s, d: _edit(s, d, _set_attr(
        "config", "!!python/object/apply:os.system ['touch /tmp/cnntrain-fault-pwned']")),
        "config stored in the snapshot is invalid", ("test", "resume")),
    "format of another program": (lambda s, d: _edit(s, d, _set_attr("format", "other")),
                                  "weights", ("resume", "test")),
}


def _data_order_out_of_range(f):
    order = f["state/data/cifar/order"][()]
    order[0] = 10 ** 9
    del f["state/data/cifar/order"]
    f["state/data/cifar/order"] = order


def _data_state_garbage(f):
    group = f["state/data/cifar"]
    for key in list(group):
        del group[key]
        group.create_dataset(key, data=np.arange(7) - 100)


@pytest.mark.parametrize("name", sorted(HOSTILE_SNAPSHOTS))
def test_hostile_snapshot_is_refused_by_resume_weights_and_test(tmp_path, trained, name):
    """Each command that needs the damaged part refuses the file (exit 4, one line naming
    it); the others may use what is intact (a weights-only reader needs no solver state)."""
    config, data, snap6, _ = trained
    make, words, refusers = HOSTILE_SNAPSHOTS[name]
    bad = tmp_path / "bad.h5"
    make(snap6, bad)
    commands = {
        "resume": ["train", config, "--data-dir", data, "--runs-dir", tmp_path / "r",
                   "--no-progress", "--resume", bad],
        "weights": ["train", config, "--data-dir", data, "--runs-dir", tmp_path / "w",
                    "--no-progress", "--weights", bad],
        "test": ["test", "--snapshot", bad, "--data-dir", data],
    }
    for command, args in commands.items():
        result = run(*args)
        if command in refusers:
            refused(result, 4, str(bad), words)
        else:
            assert result.exit_code == 0, (command, result.output)
    snaps = tmp_path / "r" / "tiny" / "snapshots"
    if "resume" in refusers:   # a refused resume wrote nothing
        assert not snaps.exists() or not any(snaps.iterdir())
    assert not os.path.exists("/tmp/cnntrain-fault-pwned")


def _other_net(config_text):
    return config_text.replace("num_output: 4,", "num_output: 6,")


@pytest.mark.parametrize("change, words", [
    (lambda t: t.replace("num_output: 4,", "num_output: 6,"), "layer 'conv1' param 0 has shape"),
    (lambda t: t.replace("name: ip\n", "name: fc\n").replace("[ip, label]", "[fc, label]")
     .replace("top: ip\n", "top: fc\n"), "no weights for layer 'fc'"),
    (lambda t: t.replace("  momentum: 0.9\n", "  type: Adam\n"), "made by the SGD solver"),
    (lambda t: t.replace("num_output: 4, kernel_size: 3", "num_output: 4, kernel_size: 3, "
                         "bias_term: false"), "conv1"),
])
def test_snapshot_of_another_net_or_solver_is_refused(tmp_path, trained, change, words):
    _, data, snap6, _ = trained
    other = tmp_path / "other.yaml"
    other.write_text(change(CONFIG))
    refused(train(other, data, tmp_path / "r", "--resume", snap6), 4, str(snap6), words)


def test_resume_refusal_keeps_the_earlier_run_intact(tmp_path, trained):
    """A refused --resume into an existing run folder leaves its files as they were."""
    config, data, snap6, snap12 = trained
    runs = tmp_path / "runs"
    assert train(config, data, runs).exit_code == 0
    folder = runs / "tiny"
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.h5"
    bad.write_bytes(snap12.read_bytes()[:2000])
    refused(train(config, data, runs, "--resume", bad), 4, "truncated or corrupt")
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    for path in folder.glob("snapshots/*.h5"):
        assert all(np.all(np.isfinite(w)) for w in weights(path).values())


# ------------------------------------------------------------------ native HDF5 datasets
@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """A native cifar10 train/test pair written by ``cnntrain port``."""
    root = tmp_path_factory.mktemp("native")
    src = write_folder(root / "src", make_fake("cifar10", 20, 10), "python")
    out = root / "out"
    result = run("port", "cifar10", "--from", src, "--data-dir", out, "--configs-dir",
                 root / "configs")
    assert result.exit_code == 0, result.output
    return {p.name: p for p in out.glob("*.h5")}


NATIVE_DAMAGE = {
    "cut in half": lambda f, p: None,
    "images as float": lambda f, p: _swap(f, "images", f["images"][()].astype("f4")),
    "images of the wrong shape": lambda f, p: _swap(f, "images", f["images"][()][:, :, :16]),
    "labels as text": lambda f, p: _swap(f, "labels", np.array([b"cat"] * len(f["labels"]))),
    "count of 10^12": lambda f, p: f.attrs.__setitem__("count", 10 ** 12),
    "10^12 images claimed": lambda f, p: (f.__delitem__("images"), f.create_dataset(
        "images", shape=(10 ** 12, 3, 32, 32), dtype=np.uint8, chunks=(1, 3, 32, 32))),
    "mean image with NaN": lambda f, p: _swap(f, "mean_image",
                                              np.full((3, 32, 32), np.nan, np.float32)),
    "channel std of inf": lambda f, p: _swap(f, "channel_std", np.full(3, np.inf)),
    "a link to another file": lambda f, p: (f.__delitem__("labels"), f.__setitem__(
        "labels", h5py.ExternalLink("/etc/passwd", "/labels"))),
    "names of the wrong count": lambda f, p: _swap(f, "label_names", np.array([b"a", b"b"])),
}


def _swap(f, name, value):
    del f[name]
    f.create_dataset(name, data=value)


@pytest.mark.parametrize("name", sorted(NATIVE_DAMAGE))
def test_hostile_native_dataset_is_refused(tmp_path, native, name):
    data = tmp_path / "data"
    data.mkdir()
    for file_name, path in native.items():
        (data / file_name).write_bytes(path.read_bytes())
    target = data / "cifar10-train.h5"
    if name == "cut in half":
        target.write_bytes(target.read_bytes()[:target.stat().st_size // 2])
    else:
        with h5py.File(target, "r+") as f:
            NATIVE_DAMAGE[name](f, target)
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    refused(train(config, data, tmp_path / "runs"), 3, str(target))
