"""Charts for the operators' page, drawn on the server as inline SVG: no script, no CDN.

Two shapes: `line_chart` (one line per series; a gap where a step has no value, so a missing
figure is never drawn as a zero) and `bar_chart` (stacked bars per step). Each chart carries a
`<title>` and a `<desc>` summarising what it shows, for screen readers; every text is escaped.
A chart with nothing measured (or only zeros) says so in words ("No data in this window", or
the caller's `empty` text) over its empty axes, instead of drawing a flat line.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 34, 48  # room for the y labels, the title, the x labels and legend
PALETTE = ("#1f5fbf", "#1e7a46", "#b42318", "#8a5a00", "#6b3fa0", "#0f7c8c")
NO_DATA = "No data in this window"
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float | None]
    color: str = ""


def _nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times 10^n at or above `value` (at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _frame(
    *,
    title: str,
    desc: str,
    unit: str,
    top: float,
    times: Sequence[datetime],
    body: list[str],
    legend: list[Series],
) -> SafeString:
    chart_id = f"chart-{next(_ids)}"
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
        f'<text x="{LEFT}" y="18" class="chart-title" font-size="15" font-weight="600" fill="#1d2430">'
        f"{escape(title)}</text>",
    ]
    # Horizontal grid and y labels: 0, ¼, ½, ¾ and the top.
    for i in range(5):
        y = TOP + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d9dee6" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="12" fill="#5b6472">'
            f"{escape(_number(top * i / 4))}</text>"
        )
    if unit:
        parts.append(
            f'<text x="{WIDTH - RIGHT}" y="18" text-anchor="end" font-size="12" fill="#5b6472">{escape(unit)}</text>'
        )
    # x labels: about six, as HH:MM (UTC), with the first step's date for a day-long window.
    n = len(times)
    if n:
        every = max(1, math.ceil(n / 6))
        for i in range(0, n, every):
            x = LEFT + plot_w * (i + 0.5) / n
            parts.append(
                f'<text x="{x:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle" font-size="12" fill="#5b6472">'
                f"{escape(times[i].strftime('%H:%M'))}</text>"
            )
    parts.append(
        f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#5b6472"/>'
    )
    parts += body
    # Legend, under the x labels.
    x = LEFT
    for series in legend:
        parts.append(
            f'<rect x="{x}" y="{HEIGHT - 14}" width="10" height="10" fill="{series.color}"/>'
            f'<text x="{x + 14}" y="{HEIGHT - 5}" font-size="12" fill="#1d2430">{escape(series.name)}</text>'
        )
        x += 26 + 7.5 * len(series.name)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above went through escape()


def _colored(series: Sequence[Series]) -> list[Series]:
    return [
        Series(s.name, s.values, escape(s.color or PALETTE[i % len(PALETTE)])) for i, s in enumerate(series)
    ]


def _no_data(plot_w: float, plot_h: float, text: str) -> str:
    return (
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'font-size="13" fill="#5b6472" class="chart-empty">{escape(text)}</text>'
    )


def line_chart(
    *,
    title: str,
    desc: str,
    times: Sequence[datetime],
    series: Sequence[Series],
    unit: str = "",
    empty: str = NO_DATA,
) -> SafeString:
    """One line per series over `times` (one value per step; None: nothing measured)."""
    series = _colored(series)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [v for s in series for v in s.values if v is not None]
    top = _nice_max(max(values, default=0.0))
    n = len(times)
    body: list[str] = []
    if not any(values) or not n:
        body.append(_no_data(plot_w, plot_h, empty))
    for s in series:
        # Runs of measured steps are drawn as lines; a lone measured step as a dot.
        run: list[tuple[float, float]] = []
        for i, value in enumerate([*s.values, None]):
            if value is not None and i < n:
                run.append((LEFT + plot_w * (i + 0.5) / n, TOP + plot_h - plot_h * value / top))
                continue
            if len(run) == 1:
                body.append(f'<circle cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="3" fill="{s.color}"/>')
            elif run:
                points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                body.append(
                    f'<polyline points="{points}" fill="none" stroke="{s.color}" stroke-width="2" '
                    f'stroke-linejoin="round"/>'
                )
            run = []
    return _frame(title=title, desc=desc, unit=unit, top=top, times=times, body=body, legend=series)


def bar_chart(
    *,
    title: str,
    desc: str,
    times: Sequence[datetime],
    series: Sequence[Series],
    unit: str = "",
    empty: str = NO_DATA,
) -> SafeString:
    """Stacked bars: per step, each series' value on top of the ones before it."""
    series = _colored(series)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = len(times)
    totals = [sum((s.values[i] or 0) for s in series) for i in range(n)]
    top = _nice_max(max(totals, default=0.0))
    body: list[str] = []
    if not any(totals):
        body.append(_no_data(plot_w, plot_h, empty))
    width = plot_w / max(n, 1)
    for i in range(n):
        base = TOP + plot_h
        for s in series:
            value = s.values[i] or 0
            if not value:
                continue
            height = plot_h * value / top
            base -= height
            body.append(
                f'<rect x="{LEFT + width * i + width * 0.1:.1f}" y="{base:.1f}" width="{width * 0.8:.1f}" '
                f'height="{height:.1f}" fill="{s.color}"><title>{escape(s.name)}: {escape(_number(value))} at '
                f"{escape(times[i].strftime('%H:%M'))}</title></rect>"
            )
    return _frame(title=title, desc=desc, unit=unit, top=top, times=times, body=body, legend=series)
