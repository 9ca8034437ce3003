"""``cnntrain port`` end to end on generated archives in both official layouts: conversion,
idempotency, hostile and broken sources, the generated configs, train, and ``test``
with top-5, superclasses, TTA and the confusion matrix."""
import csv
import hashlib
import io
import sys
import tarfile
import urllib.error
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cifar_fixtures import add_members, make_fake, member, write_folder, write_layout
from cnntrain.cli import main
from cnntrain.data import cifar as cifar_module
from cnntrain.data import download as download_module
from cnntrain.data.config_templates import render
from cnntrain.data.native import read_native

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    tried = []

    def offline(url, timeout=None):
        tried.append(url)
        raise urllib.error.URLError("tests never use the network")

    monkeypatch.setattr(download_module, "urlopen", offline)
    return tried


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def learnable(name, n_train, n_test, seed=0):
    """A fake dataset whose pictures depend on the label, so a net learns something."""
    fake = make_fake(name, n_train, n_test, seed)
    for split in (fake.train, fake.test):
        split.rows[:] = (split.rows // 2 + (split.fine % 10)[:, None] * 12).astype(np.uint8)
    return fake


def port(tmp, *args, source=None):
    args = list(args) + ["--data-dir", tmp / "data", "--configs-dir", tmp / "configs"]
    if source is not None:
        args += ["--from", source]
    return run("port", *args)


@pytest.fixture
def c100(tmp_path):
    """A small CIFAR-100 python archive in the official layout, outside the data folder."""
    fake = learnable("cifar100", 40, 20)
    return tmp_path, fake, write_layout(tmp_path / "src", fake, "python-archive")


# ------------------------------------------------------------------ converting
@pytest.mark.parametrize("layout", ["python-archive", "binary-archive", "python", "binary"])
def test_port_from_every_official_layout(tmp_path, layout):
    fake = make_fake("cifar100", 12, 5, seed=4)
    source = write_layout(tmp_path / "src", fake, layout)
    result = port(tmp_path, "cifar100", source=source)
    assert result.exit_code == 0, result.output
    for split in ("train", "test"):
        native = read_native(tmp_path / "data" / f"cifar100-{split}.h5")
        want = fake.split(split)
        np.testing.assert_array_equal(native.images.reshape(len(want.fine), -1), want.rows)
        np.testing.assert_array_equal(native.labels, want.fine)
        np.testing.assert_array_equal(native.coarse_labels, want.coarse)
        assert native.label_names[0] == "fine00" and native.coarse_label_names[19] == "coarse19"
        assert native.source.path == str(source)
        kind = "folder" if source.is_dir() else "archive"
        assert native.source.kind == kind
        if kind == "archive":
            assert native.source.md5 == hashlib.md5(source.read_bytes()).hexdigest()
        else:
            assert len(native.source.md5) == 32 and "folder" in native.source.note
    assert "converted cifar100 in" in result.output


def test_second_port_verifies_and_skips_then_notices_changes(c100):
    tmp, fake, archive = c100
    assert port(tmp, "cifar100", source=archive).exit_code == 0
    train = tmp / "data" / "cifar100-train.h5"
    stamp = train.stat().st_mtime_ns
    again = port(tmp, "cifar100", source=archive)
    assert again.exit_code == 0, again.output
    assert "are intact and match the source" in again.output
    assert "skipped converting" in again.output
    assert "checked cifar100 in" in again.output and "wrote" not in again.output
    assert train.stat().st_mtime_ns == stamp
    # a different source at the same path: converted again
    write_layout(tmp / "src2", make_fake("cifar100", 7, 3, seed=9), "python-archive").replace(
        archive)
    changed = port(tmp, "cifar100", source=archive)
    assert "the source now has MD5" in changed.output and "converting again" in changed.output
    assert read_native(train).labels.shape == (7,)
    # a damaged file: converted again
    with h5py.File(train, "r+") as f:
        f["images"][0, 0, 0, 0] ^= 0xFF
    repaired = port(tmp, "cifar100", source=archive)
    assert "do not match their recorded MD5" in repaired.output
    assert "converted cifar100" in repaired.output


def test_port_uses_the_data_folder_or_downloads_the_official_archive(tmp_path, monkeypatch,
                                                                      no_network):
    body = write_layout(tmp_path / "server", make_fake("cifar100", 8, 4), "python-archive"
                        ).read_bytes()
    digest = hashlib.md5(body).hexdigest()
    monkeypatch.setitem(cifar_module.ARCHIVES, "cifar-100-python.tar.gz",
                        cifar_module.Archive("https://example.invalid/c100.tgz", digest))
    offline = port(tmp_path, "cifar100")
    assert offline.exit_code == 3 and "example.invalid/c100.tgz failed" in offline.output
    assert not (tmp_path / "configs").exists()

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(body))}

    monkeypatch.setattr(download_module, "urlopen", lambda url, timeout=None: Response(body))
    result = port(tmp_path, "cifar100")
    assert result.exit_code == 0, result.output
    assert "downloading https://example.invalid/c100.tgz" in result.output
    assert "the official cifar-100-python.tar.gz" in result.output
    assert read_native(tmp_path / "data" / "cifar100-test.h5").source.md5 == digest
    # now found in the data folder: checked, not downloaded again
    monkeypatch.setattr(download_module, "urlopen", None)
    assert "skipped converting" in port(tmp_path, "cifar100").output
    # the archive deleted: the files are still checked (and kept), nothing is downloaded
    (tmp_path / "data" / "cifar-100-python.tar.gz").unlink()
    alone = port(tmp_path, "cifar100")
    assert alone.exit_code == 0 and "were checked on their own" in alone.output


# ------------------------------------------------------------------ broken and hostile sources
def nothing_written(tmp):
    data = tmp / "data"
    return (not data.exists() or list(data.iterdir()) == []) and not (tmp / "configs").exists()


def one_error_line(result, code=3):
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in result.output
    return errors[0]


@pytest.mark.parametrize("cut", [0.5, -4])   # mid-archive; only the gzip trailer
@pytest.mark.hostile_file
def test_truncated_archive_is_a_clear_error_and_writes_nothing(c100, cut):
    tmp, _, archive = c100
    data = archive.read_bytes()
    archive.write_bytes(data[:int(len(data) * cut)] if cut > 0 else data[:cut])
    line = one_error_line(port(tmp, "cifar100", source=archive))
    assert f"{archive} is truncated or corrupt" in line
    assert nothing_written(tmp)


@pytest.mark.hostile_file
def test_not_an_archive_is_a_clear_error(c100):
    tmp, _, archive = c100
    archive.write_bytes(b"<html>404 not found</html>" * 50)
    assert "is truncated or corrupt" in one_error_line(port(tmp, "cifar100", source=archive))
    assert nothing_written(tmp)


def _archive_with(tmp, extra, name="hostile.tar.gz"):
    folder = write_folder(tmp / "parts", make_fake("cifar100", 6, 3), "python")
    files = [(member(f"cifar-100-python/{p.name}"), p.read_bytes())
             for p in sorted(folder.iterdir())]
    return add_members(tmp / name, files[:1] + [extra] + files[1:])


@pytest.mark.parametrize("bad, words", [
    (member("cifar-100-python/../../evil"), "leaves the archive folder"),
    (member("../evil"), "leaves the archive folder"),
    (member("/tmp/cnntrain-test-evil"), "has an absolute path"),
    (member("cifar-100-python/link", tarfile.SYMTYPE, "/etc/passwd"), "is a symbolic link"),
])
@pytest.mark.hostile_file
def test_tar_member_escaping_the_folder_is_refused(tmp_path, bad, words):
    archive = _archive_with(tmp_path, (bad, b"evil"))
    line = one_error_line(port(tmp_path, "cifar100", source=archive))
    assert f"refusing to read {archive}: member '{bad.name}'" in line and words in line
    assert nothing_written(tmp_path)
    assert not (tmp_path.parent / "evil").exists() and not Path("/tmp/cnntrain-test-evil").exists()


@pytest.mark.hostile_file
def test_pickle_importing_anything_else_is_refused_without_running(tmp_path):
    sentinel = tmp_path / "pwned"
    payload = f"cos\nsystem\n(S'touch {sentinel}'\ntR.".encode()
    folder = write_folder(tmp_path / "src", make_fake("cifar100", 6, 3), "python")
    (folder / "train").write_bytes(payload)
    archive = add_members(tmp_path / "evil.tar.gz",   # the same files as an archive
                          [(member(f"cifar-100-python/{p.name}"), p.read_bytes())
                           for p in sorted(folder.iterdir())])
    for source in (folder, archive):
        line = one_error_line(port(tmp_path, "cifar100", source=source))
        assert "refusing to load os.system from" in line and "train" in line
        assert not sentinel.exists() and nothing_written(tmp_path)


def test_labels_coarse_is_refused_for_cifar10(tmp_path):
    source = write_layout(tmp_path / "src", make_fake("cifar10"), "binary-archive")
    line = one_error_line(port(tmp_path, "cifar10", "--labels", "coarse", source=source), 1)
    assert "cifar10 has no coarse labels" in line


# ------------------------------------------------------------------ configs
def test_shipped_configs_are_the_rendered_templates():
    for dataset, kind, file in (("cifar100", "quick", "cifar100_quick.yaml"),
                                ("cifar100", "vgg", "cifar100_vgg.yaml"),
                                ("cifar100", "fast", "cifar100_fast.yaml"),
                                ("cifar10", "quick", "cifar10_native_quick.yaml")):
        assert (REPO / "configs" / file).read_text() == render(dataset, "fine", kind), file
    # The CIFAR-10 recipe holds the same layers as cifar100_fast's template.
    from cnntrain.data.config_templates import fast_layers

    text = (REPO / "configs" / "fast94_cifar10.yaml").read_text()
    assert fast_layers(10, "the 10 classes of CIFAR-10") in text


def outputs(text):
    """num_output of the last InnerProduct, and the Data layers' data_param."""
    cfg = yaml.safe_load(text)
    layers = cfg["net"]["layer"]
    ip = [l for l in layers if l["type"] == "InnerProduct"][-1]
    return ip["inner_product_param"]["num_output"], [l["data_param"] for l in layers
                                                     if l["type"] == "Data"]


@pytest.mark.parametrize("dataset, labels, classes", [("cifar100", "fine", 100),
                                                      ("cifar100", "coarse", 20),
                                                      ("cifar10", "fine", 10)])
def test_class_count_of_every_config_comes_from_the_dataset(dataset, labels, classes):
    kinds = ("quick", "vgg", "fast") if dataset == "cifar100" else ("quick",)
    for kind in kinds:
        count, data = outputs(render(dataset, labels, kind))
        assert count == classes
        assert [d["hdf5"] for d in data] == [f"{dataset}-train.h5", f"{dataset}-test.h5"]
        if dataset == "cifar100":
            assert {d["labels"] for d in data} == {labels}


def test_edited_config_is_kept_unless_overwrite(c100):
    tmp, _, archive = c100
    assert port(tmp, "cifar100", source=archive).exit_code == 0
    quick = tmp / "configs" / "cifar100_quick.yaml"
    quick.write_text(quick.read_text() + "# my edit\n")
    kept = port(tmp, "cifar100", source=archive)
    assert "differs from what port writes" in kept.output and "my edit" in quick.read_text()
    replaced = port(tmp, "cifar100", "--overwrite-configs", source=archive)
    assert f"wrote {quick}" in replaced.output and "my edit" not in quick.read_text()


# ------------------------------------------------------------------ port → train → test
def short(config: Path, out: Path, iters=3, test_iter=1) -> Path:
    cfg = yaml.safe_load(config.read_text())
    cfg["solver"].update(max_iter=iters, display=1, test_interval=0, snapshot=0,
                         test_initialization=False)
    cfg["solver"].pop("test_iter", None)
    for layer in cfg["net"]["layer"]:
        if layer["type"] == "Data":
            layer["data_param"]["batch_size"] = 10
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def train_and_test(tmp, config, *test_args):
    trained = run("train", config, "--data-dir", tmp / "data", "--runs-dir", tmp / "runs",
                  "--no-progress")
    assert trained.exit_code == 0, trained.output
    name = yaml.safe_load(config.read_text())["name"]
    snaps = sorted((tmp / "runs" / name / "snapshots").iterdir())
    tested = run("test", "--snapshot", snaps[-1], "--data-dir", tmp / "data", *test_args)
    assert tested.exit_code == 0, tested.output
    return tested.output


def value(output, label):
    return float(output.split(f"\n{label}: ")[1].split()[0])


def test_port_train_test_cifar100_quick(c100):
    tmp, fake, archive = c100
    ported = port(tmp, "cifar100", source=archive)
    assert ported.exit_code == 0, ported.output
    assert f"train with: cnntrain train {tmp / 'configs' / 'cifar100_quick.yaml'}" in ported.output
    out = train_and_test(tmp, short(tmp / "configs" / "cifar100_quick.yaml", tmp / "q.yaml"),
                         "--superclasses")
    assert "tested 20 images" in out
    top1, top5, acc = value(out, "top-1 accuracy"), value(out, "top-5 accuracy"), \
        value(out, "accuracy")
    assert top1 == pytest.approx(acc, abs=1e-4) and top5 >= top1
    sup = value(out, "superclass accuracy")
    assert sup >= top1
    assert "per-class accuracy (worst first):" in out and "fine" in out
    assert "superclass accuracy (worst first):" in out and "coarse" in out


def test_port_coarse_then_train_and_test_on_superclasses(c100):
    tmp, fake, archive = c100
    ported = port(tmp, "cifar100", "--labels", "coarse", source=archive)
    assert ported.exit_code == 0 and "cifar100_coarse_quick.yaml" in ported.output
    config = tmp / "configs" / "cifar100_coarse_quick.yaml"
    assert outputs(config.read_text())[0] == 20
    out = train_and_test(tmp, short(config, tmp / "c.yaml"), "--confusion", tmp / "conf.csv")
    assert "top-5 accuracy" in out and "superclass accuracy" not in out
    with open(tmp / "conf.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == fake.coarse_names and len(rows) == 21
    assert sum(int(v) for row in rows[1:] for v in row[1:]) == 20
    counts = np.bincount(fake.test.coarse, minlength=20)
    assert [sum(int(v) for v in row[1:]) for row in rows[1:]] == counts.tolist()


def test_port_cifar10_writes_a_native_config_that_trains(tmp_path):
    source = write_layout(tmp_path / "src", learnable("cifar10", 30, 10), "binary-archive")
    ported = port(tmp_path, "cifar10", source=source)
    assert ported.exit_code == 0, ported.output
    config = tmp_path / "configs" / "cifar10_native_quick.yaml"
    assert [p.name for p in (tmp_path / "configs").iterdir()] == [config.name]
    out = train_and_test(tmp_path, short(config, tmp_path / "n.yaml"), "--tta", "flip")
    assert "top-5 accuracy: " in out and "top-1 accuracy (flip, 2 views): " in out


def test_tta_and_confusion_outputs(c100, monkeypatch):
    tmp, fake, archive = c100
    assert port(tmp, "cifar100", source=archive).exit_code == 0
    config = short(tmp / "configs" / "cifar100_quick.yaml", tmp / "q.yaml")
    out = train_and_test(tmp, config, "--tta", "flip+shift", "--confusion", tmp / "c.csv")
    for label in ("top-1 accuracy", "top-5 accuracy", "superclass accuracy"):
        assert value(out, label) >= 0
        assert 0 <= value(out, f"{label} (flip+shift, 6 views)") <= 1
    assert "per-class accuracy (worst first, flip+shift, 6 views):" in out
    assert f"confusion matrix written to {tmp / 'c.csv'}" in out
    if "matplotlib" in sys.modules or _has_matplotlib():
        assert (tmp / "c.png").is_file() and f"confusion plot written to {tmp / 'c.png'}" in out
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib → ImportError
    snap = sorted((tmp / "runs" / "cifar100_quick" / "snapshots").iterdir())[-1]
    again = run("test", "--snapshot", snap, "--data-dir", tmp / "data", "--confusion",
                tmp / "d.csv")
    assert again.exit_code == 0 and (tmp / "d.csv").is_file() and not (tmp / "d.png").exists()
    note = [line for line in again.output.splitlines() if "matplotlib" in line]
    assert len(note) == 1 and "pip install" in note[0] and "no confusion plot" in note[0]


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------ the 10-versus-100 mistake
def test_num_output_mismatch_is_one_line_before_training(c100):
    tmp, _, archive = c100
    assert port(tmp, "cifar100", source=archive).exit_code == 0
    # Caffe's cifar10_quick pointed at CIFAR-100: the classic mistake
    text = (REPO / "configs" / "cifar10_quick.yaml").read_text().replace(
        "dataset: cifar10,", "dataset: cifar100,")
    config = tmp / "mistake.yaml"
    config.write_text(text)
    result = run("train", config, "--data-dir", tmp / "data", "--runs-dir", tmp / "runs",
                 "--no-progress")
    line = one_error_line(result, 2)
    line_no = text.splitlines().index("        num_output: 10") + 1
    assert line.startswith(f"error: {config}:")
    assert "layer 'ip2', field 'inner_product_param.num_output': is 10" in line
    assert ("compares it with the labels of layer 'cifar': cifar100 (fine labels) has 100 "
            "classes; set num_output: 100") in line
    assert f":{line_no - 1}:" in line or f":{line_no}:" in line
    assert not (tmp / "runs").exists()    # nothing started

    fine = (tmp / "configs" / "cifar100_quick.yaml").read_text()
    config.write_text(fine.replace("labels: fine", "labels: coarse"))
    line = one_error_line(run("train", config, "--data-dir", tmp / "data", "--runs-dir",
                              tmp / "runs", "--no-progress"), 2)
    assert "is 100" in line and "cifar100 (coarse labels) has 20 classes" in line
    assert "set num_output: 20" in line


def test_mismatch_behind_in_place_layers_is_traced_to_num_output(tmp_path):
    write_layout(tmp_path / "data", make_fake("cifar10", 10, 5), "binary")
    config = tmp_path / "c.yaml"
    config.write_text("""\
name: m
net:
  layer:
    - {name: d, type: Data, top: [data, label], data_param: {dataset: cifar10, batch_size: 5}}
    - {name: fc, type: InnerProduct, bottom: data, top: fc, inner_product_param: {num_output: 7}}
    - {name: relu, type: ReLU, bottom: fc, top: fc}
    - {name: drop, type: Dropout, bottom: fc, top: fc}
    - {name: loss, type: SoftmaxWithLoss, bottom: [fc, label], top: loss}
solver: {base_lr: 0.1, max_iter: 1}
""")
    line = one_error_line(run("train", config, "--data-dir", tmp_path / "data", "--runs-dir",
                              tmp_path / "runs", "--no-progress"), 2)
    assert f"{config}:5: layer 'fc', field 'inner_product_param.num_output': is 7" in line
    assert "layer 'loss' (SoftmaxWithLoss)" in line and "'d': cifar10 has 10 classes" in line


# ------------------------------------------------------------------ evaluation pieces
def test_views_mirror_and_shift_with_zero_fill():
    from cnntrain.data.transforms import shifted_view as view
    from cnntrain.evaluate import tta_views

    x = np.arange(2 * 3 * 5 * 6, dtype=np.float32).reshape(2, 3, 5, 6) + 1
    np.testing.assert_array_equal(view(x, True, 0, 0), x[..., ::-1])
    down_right = view(x, False, 2, 2)
    np.testing.assert_array_equal(down_right[..., 2:, 2:], x[..., :-2, :-2])
    assert not down_right[..., :2, :].any() and not down_right[..., :, :2].any()
    up_left = view(x, True, -1, -2)
    np.testing.assert_array_equal(up_left[..., :-1, :-2], x[..., ::-1][..., 1:, 2:])
    assert not up_left[..., -1:, :].any() and not up_left[..., :, -2:].any()
    views = tta_views("flip+shift")
    assert len(views) == 6 and views[0] == (False, 0, 0) and len(set(views)) == 6
    assert set(tta_views("flip+shift", 1)) == {(m, d, d) for m in (False, True)
                                                for d in (-1, 0, 1)}


def test_shifted_views_can_reflect_the_border():
    from cnntrain.data.transforms import shifted_view

    x = np.arange(1 * 1 * 4 * 5, dtype=np.float32).reshape(1, 1, 4, 5)
    moved = shifted_view(x, False, 1, 1, "reflect")[0, 0]
    # Row -1 of x, reflected about row 0, is row 1; column -1 is column 1.
    np.testing.assert_array_equal(moved[1:, 1:], x[0, 0, :-1, :-1])
    np.testing.assert_array_equal(moved[0, 1:], x[0, 0, 1, :-1])
    np.testing.assert_array_equal(moved[1:, 0], x[0, 0, :-1, 1])
    assert moved[0, 0] == x[0, 0, 1, 1]


def test_tta_averages_the_softmax_of_the_views(tmp_path):
    from cnntrain.config import load_experiment
    from cnntrain.data.transforms import shifted_view as view
    from cnntrain.evaluate import evaluate, tta_views
    from cnntrain.layers.loss import softmax
    from cnntrain.trainer import build_for

    write_layout(tmp_path / "data", learnable("cifar10", 10, 12), "python")
    config = tmp_path / "c.yaml"
    config.write_text("""\
name: t
net:
  layer:
    - {name: d, type: Data, top: [data, label], include: {phase: TRAIN},
       data_param: {dataset: cifar10, batch_size: 5}}
    - {name: d, type: Data, top: [data, label], include: {phase: TEST},
       data_param: {dataset: cifar10, split: test, batch_size: 5},
       transform_param: {mean_image: true, scale: 0.01}}
    - {name: conv, type: Convolution, bottom: data, top: conv,
       convolution_param: {num_output: 4, kernel_size: 3, weight_filler: {type: gaussian, std: 1}}}
    - {name: fc, type: InnerProduct, bottom: conv, top: fc,
       inner_product_param: {num_output: 10, weight_filler: {type: gaussian, std: 1}}}
    - {name: acc, type: Accuracy, bottom: [fc, label], top: acc, include: {phase: TEST}}
    - {name: loss, type: SoftmaxWithLoss, bottom: [fc, label], top: loss}
solver: {base_lr: 0.1, max_iter: 1}
""")
    _, net, _ = build_for(load_experiment(config), str(tmp_path / "data"), lambda m: None,
                          np.float64)
    ev = evaluate(net, tta="flip+shift")
    data, conv, fc = net.layer("d"), net.layer("conv"), net.layer("fc")
    data.rewind()
    hits1 = hits5 = 0
    for _ in range(3):   # 12 images: 5, 5, 2
        x, label = data.forward([])
        probs = sum(softmax(fc.forward(conv.forward([view(x, *v)]))[0], 1)
                    for v in tta_views("flip+shift")) / 6
        target = probs[np.arange(len(label)), label.astype(int)]
        higher = (probs > target[:, None]).sum(axis=1)
        hits1 += int((higher < 1).sum())
        hits5 += int((higher < 5).sum())
    assert ev.images == 12
    assert ev.tta.top1 == pytest.approx(hits1 / 12) and ev.tta.top5 == pytest.approx(hits5 / 12)
    assert ev.single.top1 == pytest.approx(ev.accuracy)
    assert ev.tta.confusion.sum() == 12


def test_superclass_accuracy_merges_the_confusion_matrix():
    from cnntrain.evaluate import Evaluation

    confusion = np.zeros((4, 4), np.int64)
    confusion[0, 1] = 3    # wrong class, right superclass (0 and 1 → A)
    confusion[2, 2] = 2    # right
    confusion[3, 0] = 5    # wrong superclass (3 → B, 0 → A)
    ev = Evaluation({}, 0.0, 10, confusion=confusion, class_names=list("abcd"),
                    fine_to_coarse=np.array([0, 0, 1, 1]), coarse_names=["A", "B"])
    assert ev.superclass_accuracy() == pytest.approx(0.5)
    assert ev.per_class(ev.superclass_confusion(), ev.coarse_names) == [("B", 2 / 7, 7),
                                                                         ("A", 1.0, 3)]
    assert [r[0] for r in ev.per_class()] == ["a", "d", "c", "b"]   # empty class b last
