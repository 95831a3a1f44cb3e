"""Record <-> row/JSON conversion."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering_middleware.ledger import CallRecord, Outcome, OutcomeCount
from metering_middleware.ledger.codec import (
    count_from_json,
    count_from_row,
    count_to_json,
    count_to_row,
    format_time,
    minute_of,
    parse_time,
    record_from_json,
    record_from_row,
    record_to_json,
    record_to_row,
)

aware_times = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))]),
)
texts = st.text(max_size=20)
records = st.builds(
    CallRecord,
    id=st.text(min_size=1, max_size=26),
    request_id=st.none() | texts,
    account=texts,
    access_key_id=texts,
    category=texts,
    action=texts,
    version=texts,
    item=texts,
    occurred_at=aware_times,
    status=st.integers(100, 599),
    error_code=st.none() | texts,
    latency_ms=st.floats(min_value=0, max_value=1e9, allow_nan=False),
)


@given(aware_times)
def test_times_round_trip_as_fixed_width_text(when: datetime) -> None:
    text = format_time(when)

    assert len(text) == 27
    assert text.endswith("Z")
    assert parse_time(text) == when
    assert parse_time(text).tzinfo is UTC


@given(aware_times, aware_times)
def test_text_order_is_time_order(a: datetime, b: datetime) -> None:
    assert (format_time(a) < format_time(b)) == (a < b)


@given(records)
def test_records_round_trip_through_rows_and_json(record: CallRecord) -> None:
    row = record_to_row(record, "2026-01-01T00:00:00.000000Z")

    assert record_from_row(row) == record
    assert record_from_json(json.loads(json.dumps(record_to_json(record)))) == record


def test_counts_round_trip() -> None:
    count = OutcomeCount(
        datetime(2026, 1, 1, 0, 5, tzinfo=UTC), "a", "ocr", "X", Outcome.REFUSED, "bad", 3
    )

    assert count_from_row(count_to_row(count)) == count
    assert count_from_json(json.loads(json.dumps(count_to_json(count)))) == count


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        minute_of(datetime(2026, 1, 1))


def test_minute_of_truncates_in_utc() -> None:
    beijing = datetime(2026, 1, 1, 8, 59, 59, 999999, tzinfo=timezone(timedelta(hours=8)))

    assert minute_of(beijing) == datetime(2026, 1, 1, 0, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    "change",
    [{"status": "200"}, {"account": 5}, {"occurred_at": "yesterday"}, {"status": True}],
)
def test_malformed_json_records_are_rejected(change: dict[str, object]) -> None:
    data = record_to_json(
        CallRecord("id", None, "a", "k", "c", "x", "v", "i", datetime.now(UTC), 200, None, 1.0)
    )
    data.update(change)

    with pytest.raises((TypeError, ValueError)):
        record_from_json(data)
