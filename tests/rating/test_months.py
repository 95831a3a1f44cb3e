from datetime import UTC, datetime, timedelta, timezone

import pytest

from metering_middleware.rating import Month, MonthError, add_months, billing_month, parse_month


def test_month_of_an_instant_is_read_in_beijing_time() -> None:
    assert billing_month(datetime(2026, 1, 31, 15, 59, 59, tzinfo=UTC)) == Month(2026, 1)
    assert billing_month(datetime(2026, 1, 31, 16, 0, tzinfo=UTC)) == Month(2026, 2)
    assert billing_month(datetime(2026, 1, 31, 16, 30, tzinfo=UTC)) == Month(2026, 2)
    # Other offsets are converted, not trusted.
    est = timezone(timedelta(hours=-5))
    assert billing_month(datetime(2026, 2, 28, 12, 0, tzinfo=est)) == Month(2026, 3)


def test_month_bounds_are_utc_instants() -> None:
    feb = Month(2026, 2)
    assert feb.start == datetime(2026, 1, 31, 16, 0, tzinfo=UTC)
    assert feb.end == datetime(2026, 2, 28, 16, 0, tzinfo=UTC)
    assert feb.contains(feb.start)
    assert not feb.contains(feb.end)
    assert Month(2025, 12).next() == Month(2026, 1)
    assert Month(2026, 1).previous() == Month(2025, 12)
    assert Month(2025, 12).end == Month(2026, 1).start


def test_parse_and_format_round_trip() -> None:
    assert parse_month("2026-02") == Month(2026, 2)
    assert str(Month(2026, 2)) == "2026-02"
    assert Month.parse(str(Month(987, 11))) == Month(987, 11)
    assert sorted([Month(2026, 2), Month(2025, 12), Month(2026, 1)])[0] == Month(2025, 12)


@pytest.mark.parametrize(
    "text", ["2026-13", "2026-00", "2026-2", "26-02", "2026/02", "", "2026-02-01"]
)
def test_bad_months_are_refused_with_a_clear_error(text: str) -> None:
    with pytest.raises(MonthError, match="month"):
        parse_month(text)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(MonthError, match="naive"):
        billing_month(datetime(2026, 1, 1))


def test_add_months_clamps_to_the_last_day_in_beijing() -> None:
    # 2026-01-31 10:00 in Beijing, plus a month: 2026-02-28 10:00 in Beijing.
    start = datetime(2026, 1, 31, 2, 0, tzinfo=UTC)
    assert add_months(start, 1) == datetime(2026, 2, 28, 2, 0, tzinfo=UTC)
    assert add_months(start, 12) == datetime(2027, 1, 31, 2, 0, tzinfo=UTC)
    # Beijing's date differs from UTC's here: 2024-02-29 01:00 in Beijing.
    leap = datetime(2024, 2, 28, 17, 0, tzinfo=UTC)
    assert add_months(leap, 12) == datetime(2025, 2, 27, 17, 0, tzinfo=UTC)
