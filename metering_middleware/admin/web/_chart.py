"""Daily usage by action as stacked SVG bars, laid out here and drawn by a template.

The geometry is computed in Python (pure, testable) and the markup is written by
``templates/_chart.html`` with Jinja2's autoescaping, so an action name from the ledger
can only ever be text. Inline SVG needs no script and no asset: the page's CSP allows none.
Every bar segment carries its numbers twice, in a ``<title>`` (a tooltip, read by screen
readers) and in ``data-`` attributes (read by tests); each day's total is printed above
its bar and the legend lists each action's total.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Bar", "Chart", "LegendEntry", "Segment", "layout_chart"]

# Colour-blind-safe (Okabe-Ito), then repeated: actions beyond eight share a colour but
# keep their own legend entry and titles.
_PALETTE = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#56b4e9",
    "#d55e00",
    "#f0e442",
    "#000000",
)
WIDTH = 760
HEIGHT = 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 22, 34


@dataclass(frozen=True, slots=True)
class Segment:
    action: str
    calls: int
    x: float
    y: float
    width: float
    height: float
    colour: str


@dataclass(frozen=True, slots=True)
class Bar:
    day: str  # YYYY-MM-DD (a billing day, UTC+8)
    label: str  # the axis label: the day of the month
    total: int
    x: float
    width: float
    top: float  # y of the bar's top (where the total is printed)
    segments: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class LegendEntry:
    action: str
    calls: int
    colour: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    baseline: float
    left: float
    right: float
    top: float
    peak: int  # the scale's top value
    ticks: tuple[tuple[int, float], ...]  # (value, y) of the horizontal grid lines
    bars: tuple[Bar, ...]
    legend: tuple[LegendEntry, ...]

    @property
    def empty(self) -> bool:
        return not any(bar.total for bar in self.bars)


def _nice_peak(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def layout_chart(days: Sequence[str], calls: Mapping[str, Mapping[str, int]]) -> Chart:
    """Stacked bars for ``days`` (in order); ``calls[day][action]`` is the day's count.

    Actions are stacked in one order for every bar (the largest overall first, at the
    bottom) and coloured alike everywhere, so a colour means one action on the whole chart.
    """
    totals: dict[str, int] = {}
    for day in days:
        for action, n in calls.get(day, {}).items():
            if n < 0:
                raise ValueError(f"negative call count for {action!r} on {day}")
            totals[action] = totals.get(action, 0) + n
    order = sorted((a for a, n in totals.items() if n), key=lambda a: (-totals[a], a))
    colour = {a: _PALETTE[i % len(_PALETTE)] for i, a in enumerate(order)}
    day_totals = [sum(calls.get(day, {}).values()) for day in days]
    peak = _nice_peak(max(day_totals, default=0))
    baseline = HEIGHT - _BOTTOM
    plot_h = baseline - _TOP
    slot = (WIDTH - _LEFT - _RIGHT) / max(len(days), 1)
    bar_w = max(slot * 0.7, 1.0)
    bars: list[Bar] = []
    for i, (day, total) in enumerate(zip(days, day_totals, strict=True)):
        x = _LEFT + i * slot + (slot - bar_w) / 2
        y = float(baseline)
        segments: list[Segment] = []
        for action in order:
            n = calls.get(day, {}).get(action, 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            segments.append(Segment(action, n, x, y, bar_w, h, colour[action]))
        bars.append(Bar(day, day[-2:].lstrip("0"), total, x, bar_w, y, tuple(segments)))
    ticks = tuple((v, baseline - plot_h * v / peak) for v in sorted({0, peak // 2, peak}))
    legend = tuple(LegendEntry(a, totals[a], colour[a]) for a in order)
    return Chart(
        WIDTH, HEIGHT, baseline, _LEFT, WIDTH - _RIGHT, _TOP, peak, ticks, tuple(bars), legend
    )
