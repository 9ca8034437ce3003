"""cnntrain report and train --report: one HTML page per run, built from a short run on
generated data; its numbers are cnntrain test's. Where Chromium is installed, the page
is loaded headless and must render without a console message."""
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from test_cli_e2e import CONFIG, weights, write_cifar10_binary
from tool_helpers import run

SVG = "{http://www.w3.org/2000/svg}"


def page_data(html: str) -> dict:
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html,
                      re.S)
    return json.loads(found.group(1))


def svgs(html: str, css_class: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(rf'<svg [^>]*class="{css_class}".*?</svg>',
                                                 html, re.S)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    data = write_cifar10_binary(tmp / "data")
    config = tmp / "tiny.yaml"
    config.write_text(CONFIG)
    result = run("train", config, "--data-dir", data, "--runs-dir", tmp / "runs",
                 "--no-progress", "--report")
    assert result.exit_code == 0, result.output
    return tmp, data, config, tmp / "runs" / "tiny"


def test_report_numbers_are_cnntrain_tests(trained):
    tmp, data, _, run_dir = trained
    for snapshot in (None, run_dir / "snapshots" / "iter_6.h5"):
        out = tmp / f"report-{snapshot.stem if snapshot else 'newest'}.html"
        args = ["--snapshot", snapshot] if snapshot else []
        result = run("report", run_dir, "--data-dir", data, "-o", out, *args)
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[-1] == f"report written to {out}"
        tested = run("test", "--snapshot", snapshot or run_dir / "snapshots" / "iter_12.h5",
                     "--data-dir", data, "--json")
        assert tested.exit_code == 0, tested.output
        want = json.loads(tested.stdout)
        got = page_data(out.read_text())["weights"]
        assert got["source"] == want["snapshot"]
        assert got["images"] == want["images"] == 25
        assert got["loss"] == want["loss"] and got["outputs"] == want["outputs"]
        assert got["single_view"] == {k: want["single_view"][k] for k in ("top1", "top5")}
        assert got["tta"] is None and got["tta_views"] is None
        assert got["per_class"] == want["per_class"]
        assert np.asarray(got["confusion"]).sum() == 25
        # the same numbers printed on the page, as cnntrain test prints them
        html = out.read_text()
        assert f"<th>accuracy</th><td class='n'>{want['outputs']['accuracy']:.4f}</td>" in html
        assert f"<th>top-5 accuracy</th><td class='n'>{want['single_view']['top5']:.4f}</td>" \
            in html


def test_report_tests_with_the_views_cnntrain_test_uses(trained, tmp_path):
    """A config that declares test views: the report averages them as cnntrain test does
    (and --tta none gives one view, as there)."""
    tmp, data, _, run_dir = trained
    declared = tmp_path / "declared"
    declared.mkdir()
    config = tmp / "views.yaml"
    config.write_text(CONFIG.replace("transform_param: {mean_image: true, scale: 0.01}",
                                     "transform_param: {mean_image: true, scale: 0.01, "
                                     "test_views: flip}"))
    assert run("train", config, "--data-dir", data, "--runs-dir", declared,
               "--no-progress").exit_code == 0
    views_run = declared / "tiny"
    snap = views_run / "snapshots" / "iter_12.h5"
    for extra in ([], ["--tta", "none"]):
        out = tmp_path / f"views{len(extra)}.html"
        result = run("report", views_run, "--data-dir", data, "-o", out, *extra)
        assert result.exit_code == 0, result.output
        want = json.loads(run("test", "--snapshot", snap, "--data-dir", data, "--json",
                              *extra).stdout)
        got = page_data(out.read_text())["weights"]
        assert got["tta"] == want["tta"] == (None if extra else "flip")
        assert got["single_view"] == {k: want["single_view"][k] for k in ("top1", "top5")}
        if not extra:
            assert got["tta_views"] == {k: want["tta_views"][k] for k in ("top1", "top5")}
            html = out.read_text()
            assert "top-1 accuracy (flip, 2 views)" in html
            assert "Per-class accuracy (worst first, flip, 2 views)" in html
        assert got["per_class"] == want["per_class"]


def test_report_shows_curves_confusion_mistakes_filters_and_activations(trained):
    tmp, data, _, run_dir = trained
    out = tmp / "contents.html"
    assert run("report", run_dir, "--data-dir", data, "-o", out, "-q").exit_code == 0
    html = out.read_text()
    doc = page_data(html)
    assert doc["curves"] == {"loss": 12, "test_loss": 3, "test_accuracy": 3, "lr": 12}
    # six charts: loss, test accuracy and learning rate against iterations and wall time
    charts = svgs(html, "chart")
    assert [c.find(f"{SVG}title").text for c in charts] == \
        ["loss", "test accuracy", "learning rate"] * 2
    lines = charts[0].findall(f"{SVG}polyline")
    assert [len(p.get("points").split()) for p in lines] == [12, 3]
    # the confusion matrix as a heat map: a cell per pair of classes, counts as in the data
    (matrix,) = svgs(html, "heatmap")
    cells = [r for r in matrix.findall(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(cells) == 100
    confusion = np.asarray(doc["weights"]["confusion"])
    tips = [c.find(f"{SVG}title").text for c in cells]
    assert tips[0].startswith(f"true airplane, predicted airplane: {confusion[0, 0]} ")
    assert sum(int(t.split(": ")[1].split()[0]) for t in tips) == 25
    # the gallery: every misclassified test image, most confident first
    wrong = int(25 - np.trace(confusion))
    assert len(doc["weights"]["misclassified"]) == min(wrong, 24) > 0
    assert html.count("predicted ") >= len(doc["weights"]["misclassified"])
    assert "most confidently misclassified" in html
    # filters of conv1 and the activations of its only convolution
    assert doc["weights"]["filters"] == "conv1" and doc["weights"]["activations"] == ["conv1"]
    assert "conv1: 4 filters of 3x3x3" in html and "conv1 → conv1: 4 maps of 16x16" in html
    # the net drawn, the summary table, the config as trained
    assert len(svgs(html, "netgraph")) == 1
    assert "<td>conv1</td><td>Convolution</td><td>conv1 8x4x16x16</td>" in html
    assert (run_dir / "config.yaml").read_text().split("\n")[0] in html
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    assert "<link" not in html and "@import" not in html


def test_misclassified_are_the_most_confident_mistakes(trained):
    """The gallery against predictions made independently (predict's Input-layer net on
    the test images, with the TEST transform)."""
    from cnntrain.tools.predict import Predictor

    tmp, data, _, run_dir = trained
    out = tmp / "gallery.html"
    assert run("report", run_dir, "--data-dir", data, "-o", out).exit_code == 0
    listed = page_data(out.read_text())["weights"]["misclassified"]
    predictor = Predictor(run_dir / "snapshots" / "iter_12.h5", str(data))
    test = predictor.load_split("test")
    probs = predictor.probabilities(test.images.astype(np.float32))
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != test.labels)
    confidence = probs[wrong, predicted[wrong]]
    assert set(listed) == set(wrong[np.argsort(-confidence)][:24].tolist())
    by_index = dict(zip(wrong.tolist(), confidence))
    ordered = [by_index[i] for i in listed]
    assert ordered == sorted(ordered, reverse=True) or np.allclose(ordered,
                                                                   sorted(ordered, reverse=True))


def test_train_report_is_kept_up_to_date_and_changes_nothing(trained):
    tmp, data, config, run_dir = trained
    html = (run_dir / "report.html").read_text()
    doc = page_data(html)
    assert doc["status"] == "finished"
    assert 'http-equiv="refresh"' not in html        # the run ended: no more reloading
    assert doc["weights"]["source"] == "the net at iteration 12"
    tested = json.loads(run("test", "--snapshot", run_dir / "snapshots" / "iter_12.h5",
                            "--data-dir", data, "--json").stdout)
    assert doc["weights"]["outputs"] == tested["outputs"]
    assert doc["weights"]["per_class"] == tested["per_class"]
    # the same run without --report: the same weights, bit for bit
    plain = run("train", config, "--data-dir", data, "--runs-dir", tmp / "plain", "--no-progress")
    assert plain.exit_code == 0
    a = weights(run_dir / "snapshots" / "iter_12.h5")
    b = weights(tmp / "plain" / "tiny" / "snapshots" / "iter_12.h5")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_live_page_reloads_itself_while_training(trained, tmp_path):
    from cnntrain.tools.report import RunView, render, view_run

    _, _, _, run_dir = trained
    run_view = view_run(run_dir)
    run_view.live, run_view.status = True, "training (iteration 6)"
    html = render(run_view, None, "no test yet")
    assert '<meta http-equiv="refresh" content="30">' in html and "no test yet" in html
    assert isinstance(run_view, RunView)


def test_report_before_any_snapshot_and_errors(trained, tmp_path):
    _, data, _, run_dir = trained
    young = tmp_path / "young"
    (young / "snapshots").mkdir(parents=True)
    shutil.copy(run_dir / "config.yaml", young)
    shutil.copy(run_dir / "metrics.csv", young)
    result = run("report", young, "--data-dir", data)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(f"no snapshot in {young} yet")
    html = (young / "report.html").read_text()
    assert "no snapshot yet" in html and "weights" not in page_data(html)
    assert len(svgs(html, "chart")) == 6

    nothing = run("report", tmp_path / "nope")
    assert nothing.exit_code == 1 and nothing.stderr.count("\n") == 1
    assert "is not a folder" in nothing.stderr
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    broken = run("report", run_dir, "--snapshot", bad, "-o", tmp_path / "r.html")
    assert broken.exit_code == 4 and broken.stderr.count("\n") == 1
    no_data = run("report", run_dir, "--data-dir", tmp_path / "empty", "-o", tmp_path / "r.html")
    assert no_data.exit_code == 3 and "Traceback" not in no_data.output
    assert not (tmp_path / "r.html").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install "
                                             "chromium); the page is checked without a browser")
def test_page_renders_in_headless_chromium_without_console_messages(trained, tmp_path):
    _, _, _, run_dir = trained
    page = run_dir / "report.html"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
         "--v=0", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # The page's script marks the body once every image decoded and it ran without error.
    assert 'data-rendered="ok"' in done.stdout, done.stdout[:500]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
