"""Inline SVG charts for the report: horizontal bars and time lines. Every chart has a title (shown, and
as the SVG's accessible ``<title>``), axis labels with units, and ticks; it scales to the page width.
No script, no external file: the report stays one self-contained page."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Sequence

#: The drawing's width in SVG units (it scales to the page); margins around the plot area.
WIDTH = 720
_LEFT, _RIGHT, _TOP, _BOTTOM = 150, 70, 38, 46
#: A line chart's left margin: room for the value ticks and the rotated axis label only.
_LINE_LEFT = 70
#: Bar chart geometry: a bar's height and the gap between bars.
BAR_H, BAR_GAP = 20, 8
#: Height of a line chart's plot area.
PLOT_H = 200
#: A qualitative palette that stays apart for colour-blind readers (Okabe–Ito).
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#f0e442", "#000000")
#: Colour of a bar that fails its check (below the four-fifths band).
FAIL = "#b91c1c"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi]."""
    if not hi > lo:
        hi = lo + 1
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _frame(height: int, title: str, body: list[str], css_class: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {css_class}" role="img" '
            f'viewBox="0 0 {WIDTH} {height}" preserveAspectRatio="xMinYMin meet">'
            f"<title>{_e(title)}</title>"
            f'<text class="chart-title" x="{WIDTH / 2:.0f}" y="18" text-anchor="middle">{_e(title)}</text>'
            + "".join(body) + "</svg>")


@dataclass(frozen=True)
class Bar:
    """One bar: its label, value, colour, and data attributes for readers of the markup."""

    label: str
    value: float
    colour: str = PALETTE[0]
    data: dict[str, str] = field(default_factory=dict)
    note: str = ""


def bars(title: str, items: Sequence[Bar], *, x_label: str, domain: tuple[float, float] | None = None,
         band: tuple[float, float] | None = None, band_label: str = "", fmt: str = ".3f",
         css_class: str = "bars") -> str:
    """Horizontal bars on one value axis (`x_label` names it, with its unit). `band` shades an interval
    of the axis (the four-fifths band)."""
    lo, hi = domain or (0.0, max([b.value for b in items] + [0.0]) or 1.0)
    plot_w = WIDTH - _LEFT - _RIGHT
    x = lambda v: _LEFT + (min(max(v, lo), hi) - lo) / (hi - lo) * plot_w  # noqa: E731
    height = _TOP + len(items) * (BAR_H + BAR_GAP) + _BOTTOM
    axis_y = height - _BOTTOM + 4
    body = []
    if band is not None:
        body.append(f'<rect class="band" x="{x(band[0]):.2f}" y="{_TOP - 4}" width="{x(band[1]) - x(band[0]):.2f}" '
                    f'height="{axis_y - _TOP + 4}" fill="#fde68a" fill-opacity="0.6"/>')
        body.append(f'<text class="band-label" x="{x(band[0]):.2f}" y="{_TOP - 7}" text-anchor="middle">'
                    f"{_e(band_label)}</text>")
    for i, b in enumerate(items):
        y = _TOP + i * (BAR_H + BAR_GAP)
        data = "".join(f' data-{k}="{_e(v)}"' for k, v in b.data.items())
        body.append(f'<text class="bar-label" x="{_LEFT - 8}" y="{y + 14}" text-anchor="end">{_e(b.label)}</text>')
        body.append(f'<rect class="bar"{data} x="{_LEFT}" y="{y}" width="{x(b.value) - _LEFT:.2f}" '
                    f'height="{BAR_H}" fill="{b.colour}"/>')
        body.append(f'<text class="bar-value" x="{x(b.value) + 4:.2f}" y="{y + 14}">{b.value:{fmt}}{_e(b.note)}</text>')
    body.append(f'<line class="axis" x1="{_LEFT}" y1="{axis_y}" x2="{_LEFT + plot_w}" y2="{axis_y}" stroke="#555"/>')
    for tick in nice_ticks(lo, hi):
        if lo <= tick <= hi:
            body.append(f'<text class="tick" x="{x(tick):.2f}" y="{axis_y + 14}" text-anchor="middle">{tick:g}</text>')
    body.append(f'<text class="axis-label x-label" x="{_LEFT + plot_w / 2:.0f}" y="{height - 6}" '
                f'text-anchor="middle">{_e(x_label)}</text>')
    return _frame(height, title, body, css_class)


@dataclass(frozen=True)
class Series:
    """One line: its name (in the legend), its (x, y) points in x order, its colour."""

    name: str
    points: Sequence[tuple[float, float]]
    colour: str = PALETTE[0]


def time_label(span_s: float) -> Callable[[float], str]:
    """A formatter of Unix seconds as UTC, as precise as a window of `span_s` seconds needs."""
    if span_s < 10:
        return lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S.%f")[:-5]
    if span_s < 2 * 86_400:
        return lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S")
    return lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%m-%d %H:%M")


def lines(title: str, series: Sequence[Series], *, x_label: str, y_label: str,
          x_domain: tuple[float, float], y_domain: tuple[float, float] | None = None,
          x_format: Callable[[float], str] = str, css_class: str = "lines") -> str:
    """Lines with markers over a time axis (`x_label`, `y_label` name the axes with their units)."""
    x_lo, x_hi = x_domain
    if not x_hi > x_lo:
        x_hi = x_lo + 1
    ys = [y for s in series for _, y in s.points]
    y_lo, y_hi = y_domain or (0.0, max(ys + [0.0]) * 1.1 or 1.0)
    plot_w = WIDTH - _LINE_LEFT - _RIGHT
    legend_h = 18 * len(series)
    height = _TOP + PLOT_H + _BOTTOM + legend_h
    px = lambda t: _LINE_LEFT + (t - x_lo) / (x_hi - x_lo) * plot_w  # noqa: E731
    py = lambda v: _TOP + PLOT_H - (v - y_lo) / (y_hi - y_lo) * PLOT_H  # noqa: E731
    left, bottom = _LINE_LEFT, _TOP + PLOT_H
    body = [f'<line class="axis" x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" stroke="#555"/>',
            f'<line class="axis" x1="{left}" y1="{_TOP}" x2="{left}" y2="{bottom}" stroke="#555"/>']
    for tick in nice_ticks(y_lo, y_hi):
        if y_lo <= tick <= y_hi:
            body.append(f'<line class="grid" x1="{_LINE_LEFT}" y1="{py(tick):.2f}" x2="{_LINE_LEFT + plot_w}" '
                        f'y2="{py(tick):.2f}" stroke="#e5e7eb"/>')
            body.append(f'<text class="tick" x="{left - 6}" y="{py(tick) + 4:.2f}" text-anchor="end">{tick:g}</text>')
    for tick in nice_ticks(x_lo, x_hi, 4):
        if x_lo <= tick <= x_hi:
            body.append(f'<text class="tick" x="{px(tick):.2f}" y="{_TOP + PLOT_H + 16}" text-anchor="middle">'
                        f"{_e(x_format(tick))}</text>")
    for s in series:
        if len(s.points) > 1:
            path = " ".join(f"{px(t):.2f},{py(v):.2f}" for t, v in s.points)
            body.append(f'<polyline class="series" data-series="{_e(s.name)}" points="{path}" fill="none" '
                        f'stroke="{s.colour}" stroke-width="2"/>')
        for t, v in s.points:
            body.append(f'<circle class="point" data-series="{_e(s.name)}" data-x="{t!r}" data-y="{v!r}" '
                        f'cx="{px(t):.2f}" cy="{py(v):.2f}" r="3" fill="{s.colour}"/>')
    body.append(f'<text class="axis-label x-label" x="{_LINE_LEFT + plot_w / 2:.0f}" y="{_TOP + PLOT_H + 36}" '
                f'text-anchor="middle">{_e(x_label)}</text>')
    body.append(f'<text class="axis-label y-label" transform="translate(16 {_TOP + PLOT_H / 2:.0f}) rotate(-90)" '
                f'text-anchor="middle">{_e(y_label)}</text>')
    for i, s in enumerate(series):
        y = _TOP + PLOT_H + _BOTTOM + 4 + 18 * i
        body.append(f'<rect class="legend" x="{_LINE_LEFT}" y="{y - 9}" width="12" height="12" fill="{s.colour}"/>')
        body.append(f'<text class="legend-label" x="{_LINE_LEFT + 18}" y="{y + 1}">{_e(s.name)}</text>')
    return _frame(height, title, body, css_class)
