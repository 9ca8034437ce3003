"""The report's SVG charts: ticks, where points land, the heat map's cells."""
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from cnntrain.tools.svg import Series, heatmap, line_chart, log_ticks, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("low, high", [(0.1, 0.76), (0, 1500), (0.52, 2.31), (3, 3),
                                       (-1.5, 0.2), (1e-4, 3e-4)])
def test_ticks_are_round_and_cover_the_range(low, high):
    ticks = nice_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high and 2 <= len(ticks) <= 8
    steps = np.diff(ticks)
    np.testing.assert_allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert round(mantissa, 6) in (1, 2, 2.5, 5)
    assert log_ticks(0.0003, 0.02) == [1e-4, 1e-3, 1e-2, 1e-1]


def test_points_land_where_their_values_say():
    chart = ET.fromstring(line_chart([Series("a", [(0, 0.0), (50, 0.5), (100, 1.0)])],
                                     title="t", xlabel="iteration", width=400, height=300))
    rect = chart.find(f"{SVG}rect")
    left, top = float(rect.get("x")), float(rect.get("y"))
    width, height = float(rect.get("width")), float(rect.get("height"))
    points = [tuple(map(float, p.split(","))) for p in
              chart.find(f"{SVG}polyline").get("points").split()]
    # y ticks 0..1 exactly, so 0 is the bottom edge and 1 the top
    assert points[0] == pytest.approx((left, top + height), abs=0.06)
    assert points[1] == pytest.approx((left + width / 2, top + height / 2), abs=0.06)
    assert points[2] == pytest.approx((left + width, top), abs=0.06)
    tips = [c.find(f"{SVG}title").text for c in chart.findall(f"{SVG}circle")]
    assert tips[1] == "a: 0.5 at iteration 50"


def test_log_scale_and_empty_charts():
    chart = line_chart([Series("lr", [(0, 0.01), (10, 0.001)])], title="lr", xlabel="i",
                       log_y=True)
    labels = re.findall(r'text-anchor="end" font-size="10" fill="#555">([^<]*)<', chart)
    assert labels == ["0.001", "0.01"]
    empty = line_chart([Series("x", [])], title="nothing", xlabel="i")
    assert "no data yet" in empty and "polyline" not in empty


def test_heatmap_cells_are_shares_of_the_true_class():
    counts = np.array([[3, 1], [0, 4]])
    svg = ET.fromstring(heatmap(counts, ["cat", "dog"], title="c"))
    cells = [r for r in svg.findall(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert [c.find(f"{SVG}title").text for c in cells] == [
        "true cat, predicted cat: 3 (75.0% of 4)", "true cat, predicted dog: 1 (25.0% of 4)",
        "true dog, predicted cat: 0 (0.0% of 4)", "true dog, predicted dog: 4 (100.0% of 4)"]
    fills = [c.get("fill") for c in cells]
    assert fills[2] == "#f7fbff" and fills[3] == "#08306b"      # 0 % white, 100 % dark blue


def test_heatmap_of_many_classes_is_one_image():
    n = 100
    svg = heatmap(np.eye(n, dtype=int) * 5, [f"c{i}" for i in range(n)], title="big")
    root = ET.fromstring(svg)
    assert len(root.findall(f"{SVG}image")) == 1
    assert not [r for r in root.findall(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(svg) < 60_000
