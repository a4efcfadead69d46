"""Horizontal bar charts written straight as SVG text (the report's charts).

A few hundred elements of plain SVG take milliseconds; drawing the same through matplotlib took
1-3 s per compile (its import and its SVG backend), which every compile paid for its report.
The output is deterministic: no dates, no random ids, fixed number formatting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Callable

WIDTH = 640             # px, the chart as a whole
BAR = 18                # px per bar row
LABEL_CHARS = 32
FONT = 'font-family="sans-serif" font-size="10"'


@dataclass
class Bars:
    """Bars from top to bottom; each bar is segments [(start, length, colour)] on one value axis."""
    title: str
    labels: list[str]
    segments: list[list[tuple[float, float, str]]]
    notes: list[str]                              # written after each bar's end
    fmt: Callable[[float], str]                   # tick labels
    legend: list[tuple[str, str]] = field(default_factory=list)    # (name, colour)
    xlabel: str = ""
    outlined: set[int] = field(default_factory=set)               # bars drawn with a black edge
    margin: float = 0.2                           # room right of the longest bar for its note


def _ticks(top: float) -> list[float]:
    """About five round ticks from 0 to top."""
    if top <= 0:
        return [0.0]
    step = 10 ** math.floor(math.log10(top / 5))
    for mult in (1, 2, 2.5, 5, 10):
        if top / (step * mult) <= 6:
            step *= mult
            break
    return [i * step for i in range(int(top / step + 1e-9) + 1)]


def _text(x: float, y: float, s: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{escape(s)}</text>'


def render(chart: Bars, salt: str) -> str:
    """The chart as an inline <svg> element (class "chart", data-chart=salt)."""
    n = len(chart.labels)
    label_w = 7 + 6 * min(LABEL_CHARS, max((len(s) for s in chart.labels), default=0))
    left, right, top = label_w, 16, 28
    plot_w = WIDTH - left - right
    plot_h = max(n, 1) * BAR
    ends = [max((a + b for a, b, _ in seg), default=0.0) for seg in chart.segments]
    vmax = max(ends, default=0.0)
    span = (vmax * (1 + chart.margin)) or 1.0
    legend_rows = math.ceil(len(chart.legend) / 5)
    height = top + plot_h + 34 + (14 if chart.xlabel else 0) + 16 * legend_rows

    def x(v: float) -> float:
        return left + plot_w * v / span

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{salt}" width="{WIDTH}" '
           f'height="{height}" viewBox="0 0 {WIDTH} {height}" {FONT}>',
           _text(WIDTH / 2, 16, chart.title, "middle", 'font-size="12"')]
    for t in _ticks(span):
        out.append(f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{top + plot_h}" stroke="#ddd"/>')
        out.append(_text(x(t), top + plot_h + 13, chart.fmt(t), "middle"))
    for i, (label, seg) in enumerate(zip(chart.labels, chart.segments)):
        y = top + i * BAR
        out.append(_text(left - 4, y + BAR * 0.7, label[:LABEL_CHARS], "end"))
        edge = ' stroke="black"' if i in chart.outlined else ""
        for start, length, colour in seg:
            if length > 0:
                out.append(f'<rect x="{x(start):.1f}" y="{y + 2}" width="{max(x(start + length) - x(start), 0.5):.1f}" '
                           f'height="{BAR - 4}" fill="{colour}"{edge}/>')
        out.append(_text(x(ends[i]) + 3, y + BAR * 0.7, chart.notes[i], extra='font-size="9"'))
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>')
    y = top + plot_h + 30
    if chart.xlabel:
        out.append(_text(left + plot_w / 2, y, chart.xlabel, "middle", 'font-size="8"'))
        y += 14
    for j, (name, colour) in enumerate(chart.legend):
        lx, ly = left + (j % 5) * (plot_w / 5), y + (j // 5) * 16
        out.append(f'<rect x="{lx:.1f}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>')
        out.append(_text(lx + 14, ly, name, extra='font-size="8"'))
    out.append("</svg>")
    return "".join(out)
