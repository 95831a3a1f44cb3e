"""The usage chart's layout: stacked in one order everywhere, to scale, every count kept."""

from __future__ import annotations

import pytest

from metering_middleware.admin.web._chart import layout_chart

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]


def test_bars_stack_to_scale_in_one_order() -> None:
    chart = layout_chart(
        DAYS,
        {"2026-11-01": {"a.X": 3, "b.Y": 1}, "2026-11-03": {"b.Y": 7, "a.X": 0}},
    )
    assert [b.total for b in chart.bars] == [4, 0, 7]
    assert chart.peak == 10  # the next 1-2-5 step above the highest day
    assert [e.action for e in chart.legend] == ["b.Y", "a.X"]  # the largest overall first
    assert [(e.action, e.calls) for e in chart.legend] == [("b.Y", 8), ("a.X", 3)]
    first, empty, third = chart.bars
    assert [s.action for s in first.segments] == ["b.Y", "a.X"]  # the same order every bar
    assert empty.segments == () and [s.action for s in third.segments] == ["b.Y"]
    plot = chart.baseline - chart.top
    for bar in chart.bars:
        assert sum(s.height for s in bar.segments) == pytest.approx(plot * bar.total / 10)
        bottom = chart.baseline
        for s in bar.segments:  # each segment sits on the one below it
            assert s.y + s.height == pytest.approx(bottom)
            bottom = s.y
    colours = {s.action: s.colour for b in chart.bars for s in b.segments}
    assert colours == {e.action: e.colour for e in chart.legend}
    assert [b.label for b in chart.bars] == ["1", "2", "3"]


def test_an_empty_month() -> None:
    chart = layout_chart(DAYS, {})
    assert chart.empty and chart.peak == 1 and chart.legend == ()


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        layout_chart(DAYS, {"2026-11-01": {"a.X": -1}})
