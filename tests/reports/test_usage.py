"""usage(): per-minute counters cut into days of any UTC offset, by API, one account only."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, timedelta, timezone
from pathlib import Path

import pytest

from metering_middleware.clock import BEIJING
from metering_middleware.ledger.records import Outcome
from metering_middleware.reports import BadRange, LedgerSource, ReportError, UnknownAccount, usage
from tests.reports.conftest import LedgerAt
from tests.reports.support import COMPARE, Ledger, source, utc

SINCE = utc(2026, 10, 31, 16)  # 2026-11-01 00:00 +08:00
UNTIL = utc(2026, 11, 2, 16)  # 2026-11-03 00:00 +08:00


async def _build(file: Path | str) -> None:
    async with Ledger(file, utc(2026, 11, 1)) as led:
        for name in ("acme", "acme2"):
            await led.account(name)
        # 23:59 and 00:00 in UTC+8: either side of a Beijing midnight.
        await led.calls("acme", [utc(2026, 11, 1, 15, 59, 30), utc(2026, 11, 1, 16, 0, 5)])
        await led.calls("acme", [utc(2026, 11, 1, 18, 14), utc(2026, 11, 1, 18, 15)], COMPARE)
        await led.counts(
            led.count("acme", utc(2026, 11, 1, 15, 59), Outcome.FREE, "InvalidImage.Format", 2),
            led.count("acme", utc(2026, 11, 1, 16, 1), Outcome.REFUSED, "Throttling.User", 3),
            led.count("acme", utc(2026, 11, 1, 16, 2), Outcome.REFUSED, "Overdue", 1),
        )
        # Another tenant, same minutes, a name acme is a prefix of: never in acme's report.
        await led.calls("acme2", [utc(2026, 11, 1, 15, 59, 31), utc(2026, 11, 1, 16, 0)])
        await led.counts(
            led.count("acme2", utc(2026, 11, 1, 15, 59), Outcome.FREE, "InvalidImage.Format", 9)
        )
        # Outside the range (the day before, the day after).
        await led.calls("acme", [utc(2026, 10, 31, 15, 59), utc(2026, 11, 2, 16, 0)])


@pytest.fixture(scope="module")
def path(module_ledger: LedgerAt) -> LedgerSource:
    """Built once per module and backend: the reports only read it."""
    file = module_ledger("ledger")
    asyncio.run(_build(file))
    return source(file)


async def test_days_of_beijing_by_api(path: LedgerSource) -> None:
    report = await usage(path, "acme", SINCE, UNTIL)
    got = [
        (r.day, r.action, r.charged, dict(r.free), dict(r.refused), r.total) for r in report.rows
    ]
    assert got == [
        (date(2026, 11, 1), "DetectFace", 1, {"InvalidImage.Format": 2}, {}, 3),
        (date(2026, 11, 2), "CompareFace", 2, {}, {}, 2),
        (date(2026, 11, 2), "DetectFace", 1, {}, {"Overdue": 1, "Throttling.User": 3}, 5),
    ]
    t = report.totals
    assert (t.day, t.category, t.action) == (None, None, None)
    assert (t.charged, t.free_total, t.refused_total, t.total) == (4, 2, 4, 10)
    assert report.group == ("day", "category", "action")


async def test_a_utc_day_and_a_quarter_hour_offset(path: LedgerSource) -> None:
    in_utc = await usage(path, "acme", SINCE, UNTIL, tz=UTC, group="day")
    assert [(r.day, r.total) for r in in_utc.rows] == [(date(2026, 11, 1), 10)]
    nepal = timezone(timedelta(hours=5, minutes=45))
    # 18:14Z is 23:59 in +05:45, 18:15Z is 00:00 of the next day.
    split = await usage(path, "acme", SINCE, UNTIL, tz=nepal, group=["day", "action"])
    assert [(r.day, r.action, r.charged) for r in split.rows] == [
        (date(2026, 11, 1), "CompareFace", 1),
        (date(2026, 11, 1), "DetectFace", 2),
        (date(2026, 11, 2), "CompareFace", 1),
    ]
    assert split.to_json()["tz"] == "+05:45"


async def test_grouped_by_action_only(path: LedgerSource) -> None:
    report = await usage(path, "acme", SINCE, UNTIL, group="action", tz=BEIJING)
    assert report.group == ("category", "action")  # an API is (category, action)
    assert [(r.day, r.category, r.action, r.total) for r in report.rows] == [
        (None, "facebody", "CompareFace", 2),
        (None, "facebody", "DetectFace", 8),
    ]


async def test_only_the_account_asked_for(path: LedgerSource) -> None:
    other = await usage(path, "acme2", SINCE, UNTIL, group="day")
    assert [(r.day, r.charged, dict(r.free)) for r in other.rows] == [
        (date(2026, 11, 1), 1, {"InvalidImage.Format": 9}),
        (date(2026, 11, 2), 1, {}),
    ]
    with pytest.raises(UnknownAccount, match="'acm'"):
        await usage(path, "acm", SINCE, UNTIL)
    with pytest.raises(UnknownAccount):
        await usage(path, "acme%", SINCE, UNTIL)


async def test_json_is_plain(path: LedgerSource) -> None:
    doc = (await usage(path, "acme", SINCE, UNTIL, group="day")).to_json()
    assert doc["since"] == "2026-10-31T16:00:00Z" and doc["until"] == "2026-11-02T16:00:00Z"
    assert doc["rows"][0] == {
        "day": "2026-11-01",
        "category": None,
        "action": None,
        "charged": 1,
        "free": {"InvalidImage.Format": 2},
        "refused": {},
        "total": 3,
    }
    assert doc["totals"]["total"] == 10 and doc["group"] == ["day"]


async def test_bad_input_is_refused_precisely(path: LedgerSource) -> None:
    with pytest.raises(BadRange, match="must be before"):
        await usage(path, "acme", UNTIL, SINCE)
    with pytest.raises(BadRange, match="must be before"):
        await usage(path, "acme", SINCE, SINCE)
    with pytest.raises(BadRange, match="whole minute"):
        await usage(path, "acme", SINCE + timedelta(seconds=1), UNTIL)
    with pytest.raises(BadRange, match="naive"):
        await usage(path, "acme", SINCE.replace(tzinfo=None), UNTIL)
    with pytest.raises(BadRange, match="whole number of minutes"):
        await usage(path, "acme", SINCE, UNTIL, tz=timezone(timedelta(seconds=30)))
    with pytest.raises(ReportError, match="group by 'week'"):
        await usage(path, "acme", SINCE, UNTIL, group="week")
    assert BadRange.code == "InvalidParameter.Range" and UnknownAccount.status == 404


async def test_odd_account_names_are_unknown_not_a_failure(path: LedgerSource) -> None:
    # A NUL cannot be stored on PostgreSQL; a wildcard is a character: the same refusal
    # on both backends, never a database error or another tenant's counters.
    for name in ("acme\x00", "acme%", "acm_", "ACME", "acme "):
        with pytest.raises(UnknownAccount):
            await usage(path, name, SINCE, UNTIL)
