"""Inline SVG charts for the run report: line charts and a heat map.

Plain strings, no plotting library: the report must build with the core install.
Every value shown is in the SVG as text (axes, legend, ``<title>`` tooltips), so the
charts read the same with or without JavaScript.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

# Colours of the series, in order (Tableau 10, readable on white).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


def text_width(text: str, size: float) -> float:
    """About how wide ``text`` is in a sans-serif font of ``size`` px."""
    return len(text) * size * 0.58


def fmt(value: float) -> str:
    """A number as a tick label or tooltip: short, no trailing zeros."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f"{value:.2g}"
    if magnitude >= 100:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2, 2.5 or 5 times a power of ten) covering
    [low, high]."""
    if not high > low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = [first]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


def log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten covering [low, high] (both > 0)."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    return [10.0 ** e for e in range(first, last + 1)]


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]     # (x, y), x increasing
    color: str | None = None


def line_chart(series: list[Series], *, title: str, xlabel: str, ylabel: str = "",
               width: int = 380, height: int = 240, log_y: bool = False,
               y_range: tuple[float | None, float | None] = (None, None)) -> str:
    """An SVG line chart of ``series`` with axes, ticks, a grid and a legend.

    ``log_y`` plots y on a log scale (values must be > 0); ``y_range`` pins either end
    of the y axis (e.g. (0, None) for accuracies)."""
    drawn = [s for s in series if s.points]
    left, right, top, bottom = 54, 12, 28, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(title)}" style="{FONT}">',
             f'<title>{escape(title)}</title>',
             f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-size="13" '
             f'font-weight="600">{escape(title)}</text>']
    plot_w, plot_h = width - left - right, height - top - bottom
    if not drawn:
        parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" '
                     'fill="#fafafa" stroke="#ddd"/>')
        parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" '
                     'text-anchor="middle" font-size="12" fill="#888">no data yet</text></svg>')
        return "".join(parts)
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points if not log_y or y > 0]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_hi = x_lo + 1
    if log_y and ys:
        y_ticks = log_ticks(min(ys), max(ys))
        y_lo, y_hi = y_ticks[0], y_ticks[-1]
        to_y = lambda v: math.log10(v)  # noqa: E731
    else:
        lo = min(ys) if y_range[0] is None else y_range[0]
        hi = max(ys) if y_range[1] is None else y_range[1]
        y_ticks = nice_ticks(lo, hi)
        y_lo, y_hi = min(y_ticks[0], lo), max(y_ticks[-1], hi)
        to_y = float
    x_ticks = [t for t in nice_ticks(x_lo, x_hi) if x_lo <= t <= x_hi] or [x_lo, x_hi]
    ty_lo, ty_hi = to_y(y_lo), to_y(y_hi)
    if ty_hi == ty_lo:
        ty_hi = ty_lo + 1

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (to_y(y) - ty_lo) / (ty_hi - ty_lo) * plot_h

    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" '
                 'stroke="#ccc"/>')
    for t in y_ticks:
        y = py(t)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#eee"/>')
        parts.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end" font-size="10" '
                     f'fill="#555">{fmt(t)}</text>')
    for t in x_ticks:
        x = px(t)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" '
                     'stroke="#f2f2f2"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                     f'font-size="10" fill="#555">{fmt(t)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" '
                 f'font-size="11" fill="#333">{escape(xlabel)}</text>')
    if ylabel:
        parts.append(f'<text transform="translate(12 {top + plot_h / 2:.1f}) rotate(-90)" '
                     f'text-anchor="middle" font-size="11" fill="#333">{escape(ylabel)}</text>')
    for i, s in enumerate(drawn):
        color = s.color or PALETTE[i % len(PALETTE)]
        points = [(x, y) for x, y in s.points if not log_y or y > 0]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" '
                     f'points="{path}"><title>{escape(s.label)}</title></polyline>')
        if len(points) <= 60:
            for x, y in points:
                parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.4" fill="{color}">'
                             f'<title>{escape(s.label)}: {fmt(y)} at {escape(xlabel)} '
                             f'{fmt(x)}</title></circle>')
    legend_x = left + 6
    for i, s in enumerate(drawn):
        color = s.color or PALETTE[i % len(PALETTE)]
        parts.append(f'<rect x="{legend_x}" y="{top + 6}" width="10" height="10" '
                     f'fill="{color}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{top + 15}" font-size="10" '
                     f'fill="#333">{escape(s.label)}</text>')
        legend_x += 24 + text_width(s.label, 10)
    parts.append("</svg>")
    return "".join(parts)


_WHITE, _DARK_BLUE = (247, 251, 255), (8, 48, 107)
CELL_TOOLTIPS_UP_TO = 30      # classes; larger matrices are drawn as one PNG


def _blue(fraction: float) -> str:
    """White → dark blue for 0 → 1."""
    f = min(max(fraction, 0.0), 1.0)
    r, g, b = (round(lo + (hi - lo) * f) for lo, hi in zip(_WHITE, _DARK_BLUE))
    return f"#{r:02x}{g:02x}{b:02x}"


def _blue_pixels(shares):
    """The ``_blue`` colours of an array of fractions, as uint8 RGB."""
    import numpy as np

    f = np.clip(np.asarray(shares, np.float64), 0, 1)[..., None]
    low, high = np.array(_WHITE, np.float64), np.array(_DARK_BLUE, np.float64)
    return np.rint(low + (high - low) * f).astype(np.uint8)


def heatmap(counts, names: list[str], *, title: str) -> str:
    """The confusion matrix as an SVG: rows true class, columns predicted, each cell
    coloured by its share of the true class; counts printed where the cells are big
    enough, and every cell's numbers in its tooltip."""
    import numpy as np

    counts = np.asarray(counts)
    n = len(counts)
    totals = counts.sum(axis=1)
    cell = 34 if n <= 12 else 22 if n <= 25 else max(5, 600 // n)
    label_size = 11 if cell >= 22 else max(5, cell - 1)
    margin = int(max((text_width(name, label_size) for name in names), default=20)) + 14
    left, top = margin + 18, 30 + margin
    size = cell * n
    width, height = left + size + 70, top + size + 12
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="heatmap" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(title)}" style="{FONT}">',
             f'<title>{escape(title)}</title>',
             f'<text x="{left + size / 2:.1f}" y="16" text-anchor="middle" font-size="13" '
             f'font-weight="600">{escape(title)}</text>',
             f'<text x="{left + size / 2:.1f}" y="{top - margin - 2}" text-anchor="middle" '
             'font-size="11" fill="#333">predicted</text>',
             f'<text transform="translate(12 {top + size / 2:.1f}) rotate(-90)" '
             'text-anchor="middle" font-size="11" fill="#333">true</text>']
    for i, name in enumerate(names):
        y = top + i * cell + cell / 2 + label_size * 0.35
        parts.append(f'<text x="{left - 4}" y="{y:.1f}" text-anchor="end" '
                     f'font-size="{label_size}">{escape(name)}</text>')
        x = left + i * cell + cell / 2 + label_size * 0.35
        parts.append(f'<text transform="translate({x:.1f} {top - 4}) rotate(-90)" '
                     f'font-size="{label_size}">{escape(name)}</text>')
    if n > CELL_TOOLTIPS_UP_TO:
        # Thousands of <rect>s would weigh megabytes: one pixel per cell, scaled up crisp.
        from cnntrain.tools.png import png_data_uri

        shares = np.divide(counts, totals[:, None], out=np.zeros(counts.shape),
                           where=totals[:, None] > 0)
        parts.append(f'<image x="{left}" y="{top}" width="{size}" height="{size}" '
                     f'preserveAspectRatio="none" style="image-rendering:pixelated" '
                     f'href="{png_data_uri(_blue_pixels(shares))}"/>')
    for i in range(n if n <= CELL_TOOLTIPS_UP_TO else 0):
        for j in range(n):
            count = int(counts[i, j])
            share = count / totals[i] if totals[i] else 0.0
            x, y = left + j * cell, top + i * cell
            tip = (f"true {names[i]}, predicted {names[j]}: {count} "
                   f"({share:.1%} of {int(totals[i])})")
            parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" '
                         f'fill="{_blue(share)}" stroke="#fff" stroke-width="0.5">'
                         f'<title>{escape(tip)}</title></rect>')
            if cell >= 22 and count:
                color = "#fff" if share > 0.5 else "#222"
                parts.append(f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" '
                             f'text-anchor="middle" font-size="{10 if cell >= 30 else 8}" '
                             f'fill="{color}" pointer-events="none">{count}</text>')
    # Colour scale: share of the true class.
    bar_x = left + size + 16
    steps = 20
    for k in range(steps):
        y = top + k * size / steps
        parts.append(f'<rect x="{bar_x}" y="{y:.1f}" width="12" height="{size / steps + 0.5:.1f}" '
                     f'fill="{_blue(1 - k / (steps - 1))}"/>')
    parts.append(f'<text x="{bar_x + 16}" y="{top + 9}" font-size="10">100%</text>')
    parts.append(f'<text x="{bar_x + 16}" y="{top + size}" font-size="10">0%</text>')
    parts.append("</svg>")
    return "".join(parts)
