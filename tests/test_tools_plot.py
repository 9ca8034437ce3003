"""cnntrain plot: metrics.csv of one or more runs → curves; matplotlib is optional."""
import json
import sys

import pytest

from cnntrain.errors import CnnTrainError
from cnntrain.tools.plot import read_metrics, training_plot_hook
from tool_helpers import run

# As the trainer writes it: display rows and test rows, then a resume at iteration 4
# (its clock restarts), which kept the rows up to 4.
METRICS = """\
iter,loss,lr,test_loss,test_accuracy,seconds
0,,,2.31,0.1,0.5
2,2.2,0.01,,,1.0
4,2.0,0.01,,,2.0
4,,,2.0,0.3,2.5
6,1.8,0.01,,,0.8
8,1.7,0.01,,,1.6
8,,,1.9,0.4,1.9
"""


@pytest.fixture
def runs(tmp_path):
    dirs = []
    for name, shift in (("a", 0.0), ("b", 0.1)):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        text = METRICS if not shift else METRICS.replace("2.0,0.3", f"{2.0 - shift},0.35")
        (folder / "metrics.csv").write_text(text)
        dirs.append(folder)
    return dirs


def test_read_metrics_keeps_wall_time_cumulative_across_a_resume(runs):
    m = read_metrics(runs[0])
    assert m.name == "a" and m.rows == 10
    assert [p[0] for p in m.points("loss")] == [2, 4, 6, 8]
    assert [p[1] for p in m.points("loss")] == [1.0, 2.0, 3.3, 4.1]
    assert m.points("test_accuracy") == [(0, 0.5, 0.1), (4, 2.5, 0.3), (8, 4.4, 0.4)]


def test_plot_overlays_runs(runs, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    result = run("plot", *runs, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.stdout.splitlines() == ["a: 3 test_loss, 3 test_accuracy, 4 loss",
                                          "b: 3 test_loss, 3 test_accuracy, 4 loss",
                                          f"plot written to {out}"]
    doc = json.loads(run("plot", runs[0], "-o", tmp_path / "c.svg", "--json").stdout)
    assert doc["runs"][0]["points"] == {"test_loss": 3, "test_accuracy": 3, "loss": 4}
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")


def test_without_matplotlib_one_line_says_how_to_install(runs, tmp_path, monkeypatch):
    # Every matplotlib module hidden, not just the package: an already imported
    # submodule would otherwise still import (as on a machine that has matplotlib).
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib → ImportError
    result = run("plot", *runs, "-o", tmp_path / "x.png")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: plotting needs matplotlib: pip install 'cnntrain[plot]' "
        "(or pip install matplotlib)"]
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(CnnTrainError, match="cnntrain\\[plot\\]"):
        training_plot_hook(runs[0])       # train --plot fails before training starts


def test_a_folder_without_metrics_is_a_one_line_error(tmp_path):
    result = run("plot", tmp_path, "-o", tmp_path / "x.png")
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: {tmp_path / 'metrics.csv'} not found: give a run "
                                      "folder written by cnntrain train (runs/<name>/)")


def test_training_hook_redraws_and_never_raises(runs):
    pytest.importorskip("matplotlib")
    told = []
    refresh = training_plot_hook(runs[0], notify=told.append)
    refresh()
    assert (runs[0] / "curves.png").stat().st_size > 1000 and not told
    (runs[0] / "metrics.csv").unlink()
    refresh()
    refresh()
    assert len(told) == 1 and told[0].startswith("warning: could not draw")


def test_each_run_keeps_one_colour_in_every_panel_and_all_are_in_the_legend(tmp_path):
    """A run without training-loss rows (tested only) used to take the colour another
    run had in the other panels, and to be left out of the legend."""
    pytest.importorskip("matplotlib", reason="the figure needs the optional matplotlib")
    from matplotlib.colors import to_hex

    from cnntrain.tools.plot import figure_for

    folders = []
    for name, text in (("tested_only", "iter,loss,lr,test_loss,test_accuracy,seconds\n"
                                       "0,,,2.3,0.1,0.5\n10,,,2.0,0.3,1.0\n"),
                       ("full", METRICS), ("third", METRICS)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "metrics.csv").write_text(text)
        folders.append(folder)
    fig = figure_for([read_metrics(f) for f in folders])
    try:
        colours: dict[str, set] = {}
        for ax in fig.axes:
            for line in ax.lines:
                colours.setdefault(line.get_label(), set()).add(to_hex(line.get_color()))
        assert set(colours) == {"tested_only", "full", "third"}
        assert all(len(c) == 1 for c in colours.values()), colours
        assert len({next(iter(c)) for c in colours.values()}) == 3
        legends = fig.legends
        assert len(legends) == 1
        shown = {t.get_text(): to_hex(h.get_color())
                 for t, h in zip(legends[0].get_texts(), legends[0].legend_handles
                                 if hasattr(legends[0], "legend_handles")
                                 else legends[0].legendHandles)}
        assert shown == {label: next(iter(c)) for label, c in colours.items()}
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
