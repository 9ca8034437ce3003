"""Wrong answers: a net whose outputs overflow (weights of 3e38 are finite) must never
be scored as right, and an image must be read at its true bit depth or refused.

Every NaN or infinite score row is a miss in the Accuracy layer, in ``cnntrain test``'s
top-k, per-class table and confusion matrix, and ``predict`` names no class for it;
the overflow is reported in one line, without NumPy's ``RuntimeWarning`` lines.
"""
from __future__ import annotations

import json
import struct
import warnings
import zlib

import h5py
import numpy as np
import pytest

import fault_figures
from cnntrain.layers.loss import label_rank
from tool_helpers import run, train_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wrong")
    data, snapshot = train_tiny(tmp)
    return tmp, data, snapshot


def overflowing(tmp, snap, layers, name):
    """A copy of ``snap`` whose ``layers``' weights are all 3e38 (finite, so it loads)."""
    out = tmp / name
    out.write_bytes(snap.read_bytes())
    with h5py.File(out, "r+") as f:
        for layer in layers:
            ds = f[f"data/{layer}/0"]
            ds[...] = np.full(ds.shape, 3e38, np.float32)
    return out


def no_raw_warnings(record):
    shown = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert not shown, shown


@pytest.mark.parametrize("layers", [("ip",), ("conv1", "ip")], ids=["inf-scores", "mixed"])
@pytest.mark.parametrize("tta", [None, "flip"])
def test_overflowing_scores_are_misses_everywhere(trained, layers, tta):
    tmp, data, snap = trained
    bad = overflowing(tmp, snap, layers, f"overflow-{'-'.join(layers)}.h5")
    extra = ["--tta", tta] if tta else []
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = run("test", "--snapshot", bad, "--data-dir", data, "--json", *extra)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 0, result.output
    no_raw_warnings(record)
    notes = [line for line in result.stderr.splitlines() if "not finite" in line]
    assert len(notes) == 1 and "count as wrong" in notes[0] and "layer '" in notes[0], \
        result.stderr
    doc = json.loads(result.stdout)
    # All 25 rows of "inf-scores" are +inf/-inf; "mixed" leaves some rows finite, and a
    # finite row may be right, but never more often than the finite rows allow.
    unscored = int(notes[0].split("the scores of ")[1].split(" of ")[0])
    assert unscored > 0
    allowed = (doc["images"] - unscored) / doc["images"]
    for scores in (doc["single_view"], doc["tta_views"]):
        if scores is not None:
            assert scores["top1"] <= allowed + 1e-9, doc
    assert doc["outputs"]["accuracy"] <= allowed + 1e-9, doc
    assert sum(row["images"] for row in doc["per_class"]) == doc["images"]
    weighted = sum(row["accuracy"] * row["images"] for row in doc["per_class"]) / doc["images"]
    best = doc["tta_views"] or doc["single_view"]
    assert weighted == pytest.approx(best["top1"]), doc   # the table agrees with top-1
    fault_figures.add("wrong_answers")


def test_label_rank_puts_every_non_finite_row_last():
    rows = np.array([[np.inf, np.inf, 1.0], [np.nan, 0.0, 1.0], [-np.inf, 0.0, 1.0],
                     [3.0, 1.0, 2.0]])
    ranks = label_rank(rows, np.array([0, 2, 2, 0]))
    assert ranks.tolist() == [3, 3, 3, 0]
    fault_figures.add("wrong_answers")


def test_predict_refuses_to_name_a_class_for_overflowing_scores(trained):
    tmp, data, snap = trained
    bad = overflowing(tmp, snap, ("ip",), "overflow-predict.h5")
    np.save(tmp / "img.npy", np.full((32, 32, 3), 7, np.uint8))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = run("predict", "--snapshot", bad, tmp / "img.npy", "--data-dir", data)
    no_raw_warnings(record)
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "not finite" in lines[0] and "layer 'ip'" in lines[0], lines
    fault_figures.add("wrong_answers")


def png(width, height, bit_depth, color_type, raw: bytes) -> bytes:
    """A PNG of unfiltered scanlines ``raw`` (filter bytes included by the caller)."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_a_16_bit_png_is_scaled_not_clipped(trained):
    pytest.importorskip("PIL", reason="reading PNG needs the optional Pillow")
    tmp, data, snap = trained
    gray8 = np.random.default_rng(4).integers(0, 256, (32, 32)).astype(np.uint8)
    gray16 = gray8.astype(">u2") * 257          # the same picture, 16 bits per pixel
    rows16 = b"".join(b"\0" + row.tobytes() for row in gray16)
    (tmp / "g16.png").write_bytes(png(32, 32, 16, 0, rows16))
    np.save(tmp / "g8.npy", np.repeat(gray8[:, :, None], 3, axis=2))
    result = run("predict", "--snapshot", snap, tmp / "g16.png", tmp / "g8.npy",
                 "--data-dir", data, "--json", "-k", "10")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    a, b = ({e["class"]: e["probability"] for e in item["top"]} for item in doc)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-6)
    fault_figures.add("wrong_answers")


@pytest.mark.parametrize("size", [(100_000, 100_000), (9000, 9000)], ids=["bomb", "too-big"])
def test_a_decompression_bomb_png_is_refused_in_one_line(trained, size):
    pytest.importorskip("PIL", reason="reading PNG needs the optional Pillow")
    tmp, data, snap = trained
    width, height = size
    # A few KB that would inflate to width*height bytes: only the header is read.
    raw = zlib.compress(b"\0" * (width + 1) * 8)
    (tmp / "bomb.png").write_bytes(png(width, height, 8, 0, zlib.decompress(raw)))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = run("predict", "--snapshot", snap, tmp / "bomb.png", "--data-dir", data)
    no_raw_warnings(record)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bomb.png" in lines[0], lines
    fault_figures.add("wrong_answers")
