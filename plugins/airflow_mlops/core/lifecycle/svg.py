"""Server-rendered SVG line charts over dates: no script, every label escaped."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
WIDTH, HEIGHT = 880, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 24, 36


@dataclass(frozen=True)
class Series:
    """A named line over dates (YYYY-MM-DD); None values break the line."""

    name: str
    points: Sequence[tuple[str, float | None]]
    dashed: bool = False
    color: str | None = None


@dataclass(frozen=True)
class Marks:
    """Dates to mark on the chart: alarms as red dots on the first series, retrains as vertical lines."""

    alarms: Sequence[str] = field(default=())
    retrains: Sequence[str] = field(default=())
    alarm_label: str = "alarm"
    """What a red dot means, shown on hover (e.g. prediction drift that is reported only, not an alarm)."""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _day(ds: str) -> int:
    return date.fromisoformat(ds).toordinal()


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def line_chart(
    title: str, series: Sequence[Series], marks: Marks | None = None, y_range: tuple[float, float] | None = None
) -> str:
    """An SVG chart of the series (x: dates, y: values), a legend on the right, alarms and retrains marked."""
    marks = marks or Marks()
    values = [y for s in series for _, y in s.points if y is not None]
    days = [_day(ds) for s in series for ds, _ in s.points] + [_day(d) for d in (*marks.alarms, *marks.retrains)]
    head = f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" class="chart">'
    head += f"<title>{_e(title)}</title>"
    if not values or not days:
        return head + f'<text x="{LEFT}" y="{HEIGHT // 2}" class="empty">{_e(title)}: no data yet</text></svg>'
    lo, hi = y_range if y_range is not None else (min(values), max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    x0, x1 = min(days), max(days)
    span = max(x1 - x0, 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(ds: str) -> float:
        return LEFT + (_day(ds) - x0) / span * plot_w

    def y(v: float) -> float:
        return TOP + (1 - (min(max(v, lo), hi) - lo) / (hi - lo)) * plot_h

    parts = [head, f'<text x="{LEFT}" y="16" class="title">{_e(title)}</text>']
    for frac in (0.0, 0.5, 1.0):
        value = lo + frac * (hi - lo)
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" class="axis" text-anchor="end">{_e(_fmt(value))}</text>'
        )
    first, last = date.fromordinal(x0).isoformat(), date.fromordinal(x1).isoformat()
    parts.append(f'<text x="{LEFT}" y="{HEIGHT - 10}" class="axis">{_e(first)}</text>')
    parts.append(f'<text x="{LEFT + plot_w}" y="{HEIGHT - 10}" class="axis" text-anchor="end">{_e(last)}</text>')
    for ds in marks.retrains:
        parts.append(
            f'<line x1="{x(ds):.1f}" x2="{x(ds):.1f}" y1="{TOP}" y2="{TOP + plot_h}" class="retrain">'
            f"<title>retrain triggered {_e(ds)}</title></line>"
        )
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        for run in _runs(s.points):
            coords = " ".join(f"{x(ds):.1f},{y(v):.1f}" for ds, v in run)
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.6" '
                f'stroke-linecap="round"{dash}/>'
            )
        ly = TOP + 14 * i + 6
        parts.append(
            f'<line x1="{WIDTH - RIGHT + 10}" x2="{WIDTH - RIGHT + 28}" y1="{ly}" y2="{ly}" stroke="{color}" '
            f'stroke-width="2"{dash}/>'
            f'<text x="{WIDTH - RIGHT + 32}" y="{ly + 4}" class="legend">{_e(s.name[:22])}</text>'
        )
    if series and marks.alarms:
        on_line = dict(series[0].points)
        for ds in marks.alarms:
            v = on_line.get(ds)
            cy = y(v) if v is not None else TOP
            parts.append(
                f'<circle cx="{x(ds):.1f}" cy="{cy:.1f}" r="4" class="alarm">'
                f"<title>{_e(marks.alarm_label)} {_e(ds)}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _runs(points: Sequence[tuple[str, float | None]]) -> list[list[tuple[str, float]]]:
    runs: list[list[tuple[str, float]]] = [[]]
    for ds, v in sorted(points):
        if v is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((ds, v))
    return [r if len(r) > 1 else r * 2 for r in runs if r]  # a single point shows as a dot-length line


CSS = """
svg.chart{width:100%;max-width:880px;height:auto;background:#fff}
svg .title{font:600 13px system-ui,sans-serif;fill:#1d2330}
svg .axis,svg .legend{font:11px system-ui,sans-serif;fill:#5a6374}
svg .empty{font:13px system-ui,sans-serif;fill:#8a93a3}
svg .grid{stroke:#eceef2;stroke-width:1}
svg .retrain{stroke:#ef8f00;stroke-width:1.5;stroke-dasharray:3 3}
svg .alarm{fill:#c62828}
""".strip()
