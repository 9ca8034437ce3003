"""One self-contained HTML page per run: ``cnntrain report`` and ``train --report``.

The page holds everything inline (SVG charts and net drawing, PNG pictures as data
URIs, CSS), loads nothing from the network and opens from disk in any browser; it
renders fully without JavaScript. It shows the run's curves (from metrics.csv), the
config as trained, the net drawn and its summary table, and for one set of weights
(a snapshot, or the live net during training): the test numbers of ``cnntrain test``,
per-class accuracy, the confusion matrix, the most confidently misclassified test
images, the first convolution's filters and every convolution's activation maps for
one test image. A JSON block (``<script id="report-data">``) repeats the numbers
for scripts.

Built from the core install only (numpy): no matplotlib, no Pillow, no Graphviz.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Callable

import numpy as np

from cnntrain.callbacks import Callback
from cnntrain.errors import CnnTrainError
from cnntrain.tools.png import png_data_uri
from cnntrain.tools.svg import Series, heatmap, line_chart
from cnntrain.tools.visualize import (Picture, activation_pictures, filter_picture,
                                      first_convolution, pixels_picture)

MISCLASSIFIED = 24        # images in the gallery
LOG_LINES = 40            # last lines of train.log shown
REFRESH_SECONDS = 30      # the page reloads itself this often while training runs
CURVE_COLUMNS = ("loss", "test_loss", "test_accuracy", "lr")


# ------------------------------------------------------------------------- what it shows
@dataclass
class Misclassified:
    index: int            # place in the test split
    true: str
    predicted: str
    confidence: float
    image: np.ndarray     # uint8, enlarged


@dataclass
class WeightsView:
    """What the report shows about one set of weights."""

    source: str                       # "snapshots/iter_1500.h5", "the live net"
    iteration: int | None
    evaluation: object                # cnntrain.evaluate.Evaluation
    class_names: list[str]
    filters: Picture | None
    activations: list[Picture]
    probe: Picture | None             # the test image the activations are of
    probe_text: str = ""
    misclassified: list[Misclassified] = field(default_factory=list)


def _names(evaluation, classes: int) -> list[str]:
    names = evaluation.class_names
    return list(names) if len(names) == classes else [str(i) for i in range(classes)]


def view_weights(net, evaluation, source: str, iteration: int | None) -> WeightsView:
    """Pictures and numbers of a TEST net whose weights ``evaluation`` measured. Runs
    the net once more, on its first test batch, for the activation maps."""
    scores = evaluation.best
    classes = len(scores.confusion) if scores is not None else len(evaluation.class_names)
    names = _names(evaluation, classes)
    conv = first_convolution(net)
    data = net.data_layers()[0]
    pixels = getattr(getattr(data, "images", None), "images", None)
    activations, probe, probe_text = [], None, ""
    if conv is not None:
        data.rewind()
        net.forward()
        activations = activation_pictures(net, 0)
        first = data.last_indices
        data.rewind()
        if pixels is not None and first is not None and len(first):
            index = int(first[0])
            probe = Picture("input", f"test image {index}", pixels_picture(pixels[index]))
            probe_text = f"test image {index}"
            pred = evaluation.predictions
            if pred is not None:
                hit = np.flatnonzero(pred.index == index)
                if len(hit):
                    k = int(hit[0])
                    probe_text += (f": {names[int(pred.label[k])]}, predicted "
                                   f"{names[int(pred.predicted[k])]} "
                                   f"({pred.confidence[k]:.0%})")
    mistakes = []
    pred = evaluation.predictions
    if pred is not None and pixels is not None:
        for k in pred.confident_mistakes(MISCLASSIFIED):
            index = int(pred.index[k])
            mistakes.append(Misclassified(index, names[int(pred.label[k])],
                                          names[int(pred.predicted[k])],
                                          float(pred.confidence[k]),
                                          pixels_picture(pixels[index], 3)))
    return WeightsView(source, iteration, evaluation, names,
                       filter_picture(conv) if conv is not None else None, activations,
                       probe, probe_text, mistakes)


@dataclass
class RunView:
    """The run folder's side: curves, config, log."""

    path: Path
    name: str
    exp: object                       # ExperimentSpec
    config_text: str
    metrics: object | None            # plot.RunMetrics
    log_tail: list[str]
    status: str = ""                  # "training", "finished", a stop reason ...
    live: bool = False                # still training: the page refreshes itself


def _log_tail(path: Path) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-LOG_LINES:]
    except OSError:
        return []


def view_run(run_dir: Path, exp=None, config_text: str | None = None) -> RunView:
    """Read a run folder; ``exp`` / ``config_text`` when the caller has them already."""
    from cnntrain.config import experiment_from_text
    from cnntrain.errors import ConfigError
    from cnntrain.tools.plot import read_metrics

    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if config_text is None:
        try:
            config_text = config_path.read_text()
        except OSError as err:
            raise CnnTrainError(f"cannot read {config_path}: {err.strerror or err}; give a "
                                "run folder written by cnntrain train") from None
    if exp is None:
        try:
            exp = experiment_from_text(config_text, str(config_path))
        except ConfigError as err:
            raise CnnTrainError(f"the run's config is invalid: {err}") from None
    metrics = None
    if (run_dir / "metrics.csv").is_file():
        metrics = read_metrics(run_dir, CURVE_COLUMNS)
    return RunView(run_dir, exp.name, exp, config_text, metrics,
                   _log_tail(run_dir / "train.log"))


# ------------------------------------------------------------------------- rendering
CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 0;
       background: #f4f5f7; color: #1d1f23; }
header { background: #20262e; color: #fff; padding: 18px 28px 14px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header .sub { color: #c5ccd6; font-size: 13px; }
main { padding: 8px 28px 40px; max-width: 1320px; }
section { background: #fff; border: 1px solid #dfe2e6; border-radius: 8px; margin: 16px 0;
          padding: 14px 18px; }
h2 { font-size: 17px; margin: 0 0 10px; font-weight: 600; }
h3 { font-size: 14px; margin: 14px 0 6px; font-weight: 600; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 14px; }
.card { background: #fff; border: 1px solid #dfe2e6; border-radius: 8px; padding: 8px 14px;
        min-width: 120px; }
.card .v { font-size: 21px; font-weight: 600; }
.card .k { font-size: 12px; color: #5b6470; }
.charts { display: flex; flex-wrap: wrap; gap: 6px; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
th { color: #5b6470; font-weight: 600; border-bottom: 1px solid #dfe2e6; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bar { display: inline-block; height: 10px; background: #4a7fc1; border-radius: 2px;
       vertical-align: middle; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; font-size: 12px; }
figure img { display: block; image-rendering: pixelated; border: 1px solid #ccd; }
figcaption { color: #3d4550; max-width: 220px; }
.wrong { color: #b3261e; }
.pictures img { image-rendering: pixelated; border: 1px solid #ccd; max-width: 100%; }
pre { background: #f7f8fa; border: 1px solid #e3e6ea; border-radius: 6px; padding: 10px;
      overflow: auto; font-size: 12px; max-height: 520px; }
.netgraph-box { overflow: auto; max-height: 900px; border: 1px solid #e3e6ea;
                border-radius: 6px; padding: 6px; background: #fcfcfd; }
.muted { color: #6b7480; }
.status-live { color: #1a7f37; font-weight: 600; }
"""

# Sets a marker once the page and its images loaded without a script error (the
# headless-browser test reads it); nothing else depends on JavaScript.
SCRIPT = """<script>
(function () {
  function check() {
    var broken = 0, images = document.images;
    for (var i = 0; i < images.length; i++) {
      if (!images[i].complete || !images[i].naturalWidth) broken++;
    }
    document.body.setAttribute("data-rendered", broken ? "broken-images-" + broken : "ok");
  }
  if (document.readyState === "complete") check(); else window.addEventListener("load", check);
})();
</script>"""


def _card(value: str, key: str) -> str:
    return f'<div class="card"><div class="v">{escape(value)}</div><div class="k">{escape(key)}</div></div>'


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _img(image: np.ndarray, alt: str) -> str:
    return f'<img src="{png_data_uri(image)}" alt="{escape(alt)}">'


def _curves(run: RunView) -> str:
    metrics = run.metrics
    points = (lambda c, i: [(p[i], p[2]) for p in metrics.points(c)
                            if math.isfinite(p[i])]) if metrics else (lambda c, i: [])
    charts = []
    for axis, xlabel in ((0, "iteration"), (1, "wall time (s)")):
        charts.append(line_chart([Series("training", points("loss", axis)),
                                  Series("test", points("test_loss", axis))],
                                 title="loss", xlabel=xlabel))
        charts.append(line_chart([Series("test", points("test_accuracy", axis), "#2ca02c")],
                                 title="test accuracy", xlabel=xlabel, y_range=(0, None)))
        lr = points("lr", axis)
        positive = [v for _, v in lr if v > 0]
        log_y = bool(positive) and max(positive) / min(positive) > 10
        charts.append(line_chart([Series("learning rate", lr, "#9467bd")],
                                 title="learning rate" + (" (log scale)" if log_y else ""),
                                 xlabel=xlabel, log_y=log_y,
                                 y_range=(None, None) if log_y else (0, None)))
    return '<section id="curves"><h2>Training curves</h2><div class="charts">' + \
        "".join(charts) + "</div></section>"


def _views(ev) -> str:
    """"flip, 2 views" when the scores average test-time views, else ""."""
    return f"{ev.tta_name}, {ev.tta_views} views" if ev.tta_name else ""


def _test_numbers(view: WeightsView) -> list[tuple[str, str]]:
    """The lines of ``cnntrain test``, as (label, value)."""
    ev = view.evaluation
    rows = [("tested images", f"{ev.images:,}")]
    if "loss" not in ev.outputs:
        rows.append(("loss", f"{ev.loss:.4f}"))
    rows += [(name, f"{value:.4f}") for name, value in ev.outputs.items()]
    for label, scores in (("", ev.single), (f" ({_views(ev)})", ev.tta)):
        if scores is None:
            continue
        rows.append((f"top-1 accuracy{label}", f"{scores.top1:.4f}"))
        rows.append((f"top-{scores.k5} accuracy{label}", f"{scores.top5:.4f}"))
        sup = ev.superclass_accuracy(scores.confusion)
        if sup is not None:
            rows.append((f"superclass accuracy{label}", f"{sup:.4f}"))
    return rows


def _evaluation_section(view: WeightsView | None, note: str) -> str:
    if view is None:
        return f'<section id="evaluation"><h2>Test set</h2><p class="muted">{escape(note)}</p></section>'
    ev = view.evaluation
    numbers = "".join(f"<tr><th>{escape(k)}</th><td class='n'>{escape(v)}</td></tr>"
                      for k, v in _test_numbers(view))
    parts = [f'<section id="evaluation"><h2>Test set: {escape(view.source)}</h2>',
             '<div class="row"><div><h3>As <code>cnntrain test</code> reports it</h3>'
             f'<table class="numbers">{numbers}</table></div>']
    scores = ev.best          # as cnntrain test: the averaged views where there are some
    views = f", {_views(ev)}" if ev.tta else ""
    if scores is not None:
        rows = ev.per_class(scores.confusion, view.class_names)
        body = "".join(
            f"<tr><td>{escape(name)}</td><td class='n'>{acc:.4f}</td>"
            f"<td><span class='bar' style='width:{acc * 120:.0f}px'></span></td>"
            f"<td class='n'>{count:,}</td></tr>" for name, acc, count in rows)
        parts.append(f'<div><h3>Per-class accuracy (worst first{views})</h3>'
                     '<table class="per-class">'
                     '<tr><th>class</th><th>accuracy</th><th></th><th>images</th></tr>'
                     f"{body}</table></div>")
        parts.append('<div class="confusion">' + heatmap(
            scores.confusion, view.class_names,
            title=f"confusion matrix ({ev.images:,} images{views})") + "</div>")
    parts.append("</div>")
    if view.misclassified:
        figures = "".join(
            f'<figure>{_img(m.image, f"test image {m.index}")}<figcaption>'
            f'#{m.index}: <b>{escape(m.true)}</b><br><span class="wrong">predicted '
            f"{escape(m.predicted)} ({m.confidence:.0%})</span></figcaption></figure>"
            for m in view.misclassified)
        single = " (one view each)" if ev.tta else ""
        parts.append(f"<h3>The {len(view.misclassified)} most confidently misclassified test "
                     f'images{single}</h3><div class="gallery">{figures}</div>')
    parts.append("</section>")
    return "".join(parts)


def _pictures_section(view: WeightsView | None) -> str:
    if view is None or (view.filters is None and not view.activations):
        return ""
    parts = ['<section id="pictures"><h2>Filters and activations</h2>']
    if view.filters is not None:
        parts.append(f'<h3>Filters of the first convolution</h3><div class="pictures">'
                     f'<figure>{_img(view.filters.image, view.filters.caption)}'
                     f"<figcaption>{escape(view.filters.caption)}</figcaption></figure></div>")
    if view.activations:
        parts.append(f"<h3>Activation maps of each convolution for {escape(view.probe_text)}</h3>"
                     '<div class="row pictures">')
        if view.probe is not None:
            parts.append(f"<figure>{_img(view.probe.image, view.probe_text)}"
                         "<figcaption>the input</figcaption></figure>")
        for picture in view.activations:
            parts.append(f"<figure>{_img(picture.image, picture.caption)}"
                         f"<figcaption>{escape(picture.caption)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def net_section(exp) -> str:
    """The net drawn and its summary table (the same during a whole run)."""
    from cnntrain.tools.netgraph import net_graph, to_svg
    from cnntrain.tools.summary import SUMMARY_HEAD, summarize, summary_cells, summary_totals

    summary = summarize(exp, "TRAIN")
    head = "".join(f"<th>{escape(h)}</th>" for h in SUMMARY_HEAD)
    body = "".join("<tr>" + "".join(f"<td{' class=n' if i >= 3 else ''}>{escape(c)}</td>"
                                    for i, c in enumerate(cells)) + "</tr>"
                   for cells in summary_cells(summary))
    totals = "".join(f"<p class='muted'>{escape(line)}</p>" for line in summary_totals(summary))
    return ('<section id="net"><h2>The net</h2><div class="row">'
            f'<div class="netgraph-box">{to_svg(net_graph(exp, "TRAIN", summary))}</div>'
            f'<div><h3>{escape(summary.name)} ({summary.phase} net, batch {summary.batch})</h3>'
            f'<table class="summary"><tr>{head}</tr>{body}</table>{totals}</div>'
            "</div></section>")


def _data(run: RunView, view: WeightsView | None) -> dict:
    """The numbers of the page, for scripts (and the tests)."""
    doc = {"run": run.name, "path": str(run.path), "status": run.status,
           "curves": {c: len(run.metrics.points(c)) if run.metrics else 0
                      for c in CURVE_COLUMNS}}
    if view is not None:
        ev = view.evaluation
        scores = ev.best

        def tops(sc):
            return None if sc is None else {"top1": sc.top1, f"top{sc.k5}": sc.top5}

        doc["weights"] = {
            "source": view.source, "iteration": view.iteration, "images": ev.images,
            "loss": ev.loss, "outputs": ev.outputs, "single_view": tops(ev.single),
            "tta": ev.tta_name, "tta_views": tops(ev.tta),
            "per_class": [{"class": n, "accuracy": a, "images": c}
                          for n, a, c in ev.per_class(scores.confusion if scores else None,
                                                      view.class_names)],
            "confusion": scores.confusion.tolist() if scores else None,
            "misclassified": [m.index for m in view.misclassified],
            "filters": view.filters.name if view.filters else None,
            "activations": [p.name for p in view.activations]}
    return doc


def render(run: RunView, view: WeightsView | None, note: str = "",
           net_html: str | None = None) -> str:
    """The whole page as text (``net_html``: :func:`net_section`, if made already)."""
    exp = run.exp
    cards = []
    if view is not None:
        ev = view.evaluation
        if ev.accuracy is not None:
            cards.append(_card(f"{ev.accuracy:.2%}", "test accuracy"))
        if ev.tta is not None:
            cards.append(_card(f"{ev.tta.top1:.2%}", f"accuracy ({_views(ev)})"))
        best = ev.best
        if best is not None:
            views = f" ({_views(ev)})" if ev.tta else ""
            cards.append(_card(f"{best.top5:.2%}", f"top-{best.k5} accuracy{views}"))
        cards.append(_card(f"{ev.loss:.4f}", "test loss"))
    metrics = run.metrics
    last_iter = max((p[0] for c in CURVE_COLUMNS for p in metrics.points(c)), default=0) \
        if metrics else 0
    seconds = max((p[1] for c in CURVE_COLUMNS for p in metrics.points(c)
                   if math.isfinite(p[1])), default=float("nan")) if metrics else float("nan")
    cards.append(_card(f"{last_iter:,} / {exp.solver.max_iter:,}", "iterations"))
    cards.append(_card(_duration(seconds), "wall time"))
    if view is not None and view.iteration is not None:
        cards.append(_card(f"{view.iteration:,}", "weights at iteration"))
    status = escape(run.status)
    if run.live:
        status = f'<span class="status-live">{status}</span>'
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if run.live else ""
    data = json.dumps(_data(run, view)).replace("</", "<\\/")
    log = escape("\n".join(run.log_tail)) or "(empty)"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<title>{escape(run.name)}: cnntrain run report</title>
<style>{CSS}</style></head>
<body data-rendered="no-script">
<header><h1>{escape(run.name)}</h1>
<div class="sub">net {escape(exp.net.name)} · solver {escape(exp.solver.type)}, base_lr
{exp.solver.base_lr:g}, lr_policy {escape(exp.solver.lr_policy)} · {status} · written
{stamp} by cnntrain report</div></header>
<main>
<div class="cards">{''.join(cards)}</div>
{_curves(run)}
{_evaluation_section(view, note)}
{_pictures_section(view)}
{net_html or net_section(exp)}
<section id="config"><h2>Config as trained</h2><pre>{escape(run.config_text)}</pre></section>
<section id="log"><details><summary><b>train.log</b> (last {LOG_LINES} lines)</summary>
<pre>{log}</pre></details></section>
</main>
<script type="application/json" id="report-data">{data}</script>
{SCRIPT}
</body></html>
"""


def write_report(path: str | Path, html: str) -> Path:
    from cnntrain.errors import os_error_reason
    from cnntrain.snapshot import atomic_write

    path = Path(path)
    try:
        atomic_write(path, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    except OSError as err:
        raise CnnTrainError(f"could not write {path}: {os_error_reason(err)}") from None
    return path


# ------------------------------------------------------------------------- entry points
def newest_snapshot(run_dir: Path) -> Path | None:
    from cnntrain.rundir import RunDir

    files = RunDir(run_dir.parent, run_dir.name).snapshot_files()
    return files[max(files)] if files else None


def report_run(run_dir: str | Path, output: str | Path | None = None,
               snapshot: str | Path | None = None, data_dir: str | None = None,
               iterations: int | None = None, tta: str | None = None,
               notify: Callable[[str], None] = print) -> tuple[Path, WeightsView | None]:
    """``cnntrain report``: the page of a run folder and one snapshot (default: the
    newest), tested as ``cnntrain test`` tests it (``tta`` as there)."""
    from cnntrain.trainer import evaluate_snapshot_net, load_test_net

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnTrainError(f"{run_dir} is not a folder: give a run folder written by "
                            "cnntrain train (runs/<name>/)")
    snapshot = Path(snapshot) if snapshot else newest_snapshot(run_dir)
    run = view_run(run_dir)
    run.status = "run folder as it is now"
    view, note = None, "no snapshot yet: the test-set section appears once one is written"
    if snapshot is not None:
        snap, _, net = load_test_net(snapshot, data_dir, notify)
        ev = evaluate_snapshot_net(net, iterations, tta)
        source = str(snapshot)
        view = view_weights(net, ev, source, snap.iteration)
    output = Path(output) if output else run_dir / "report.html"
    return write_report(output, render(run, view, note)), view


class ReportRefresher(Callback):
    """``train --report``: rewrites ``runs/<name>/report.html`` after every test from the
    live net and that test's evaluation (no second pass over the test set). The page
    reloads itself while training runs; the last write, when training ends, says how
    it ended."""

    def __init__(self, path: str | Path | None = None,
                 notify: Callable[[str], None] = print):
        self.path = Path(path) if path else None
        self.notify = notify
        self.failed = False
        self.trainer = None
        self.view: WeightsView | None = None   # of the last test
        self.net_html: str | None = None

    def _write(self, trainer, view: WeightsView | None, live: bool) -> None:
        path = self.path or trainer.run.path / "report.html"
        try:
            if self.net_html is None:
                self.net_html = net_section(trainer.exp)
            run = view_run(trainer.run.path, trainer.exp, trainer.exp.text)
            if live:
                run.status, run.live = f"training (iteration {trainer.solver.iter})", True
            else:
                run.status = trainer.stop_reason or (
                    "finished" if trainer.solver.iter >= trainer.s.max_iter
                    else f"stopped at iteration {trainer.solver.iter} (see train.log)")
            note = ("no test yet" if trainer.has_test else "this run does not test "
                    "(no test_interval or no TEST data layer); cnntrain report RUN_DIR tests "
                    "a snapshot")
            write_report(path, render(run, view, note, self.net_html))
        except Exception as err:  # noqa: BLE001 - a report must never stop training
            if not self.failed:
                self.notify(f"warning: could not write {path}: {err}")
            self.failed = True

    def on_train_start(self, trainer) -> None:
        self.trainer = trainer
        self._write(trainer, None, live=True)

    def on_test(self, trainer, evaluation):
        iteration = trainer.solver.iter
        try:
            view = view_weights(trainer.test_net, evaluation, f"the net at iteration {iteration}",
                                iteration)
        except Exception as err:  # noqa: BLE001
            if not self.failed:
                self.notify(f"warning: could not draw the report's pictures: {err}")
            self.failed = True
            view = None
        self.view = view
        self._write(trainer, view, live=True)
        return None

    def close(self) -> None:
        if self.trainer is not None:
            self._write(self.trainer, self.view, live=False)
