"""Usage of an account over a range, by day and API, from the per-minute counters.

The source is ``outcome_counts`` (every call, by outcome: charged; free by upstream code;
refused by the gateway's reason), not the chargeable records: refused and free calls
never become records. Counters are per UTC minute, and every UTC offset is a whole number
of minutes, so cutting them into days of any offset (+08:00, +05:45, -03:30) is exact.
The day of a counter is computed in SQL (``strftime`` with the offset as a modifier),
so a year of minutes is summed by SQLite, not carried into Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo

from ..clock import BEIJING
from ..ledger.records import Outcome
from ._db import LedgerSource, open_ledger
from .errors import BadRange, ReportError
from .results import UsageReport, UsageRow

__all__ = ["GROUPS", "parse_group", "usage"]

#: What usage can be grouped by, in the order rows are keyed and sorted.
GROUPS = ("day", "category", "action")

_Key = tuple[date | None, str | None, str | None]


def parse_group(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"day,action"`` or ``("action", "day")`` -> ``("day", "action")``; ``ReportError``
    for anything else. An API is (category, action), so grouping by action keeps the
    category in the key (two categories may share an action's name)."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    if not parts or any(p not in GROUPS for p in parts) or len(set(parts)) != len(parts):
        raise ReportError(
            f"group by {text!r}: use one or more of {', '.join(GROUPS)}, e.g. day,action"
        )
    wanted = set(parts)
    if "action" in wanted:
        wanted.add("category")
    return tuple(g for g in GROUPS if g in wanted)


def _offset(tz: tzinfo, at: datetime) -> timedelta:
    offset = tz.utcoffset(at)
    if offset is None or offset % timedelta(minutes=1):
        raise BadRange(f"time zone {tz!r} is not a whole number of minutes from UTC")
    if tz.utcoffset(at + timedelta(days=400)) != offset:  # DST zones cut days unevenly
        raise BadRange(f"time zone {tz!r} is not a fixed UTC offset such as +08:00")
    return offset


def _range(since: datetime, until: datetime) -> None:
    for name, value in (("since", since), ("until", until)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise BadRange(f"{name} {value!r} is naive: give a time with its UTC offset")
        if value.second or value.microsecond:
            raise BadRange(f"{name} {value.isoformat()} is not on a whole minute (counters are)")
    if since >= until:
        raise BadRange(f"since {since.isoformat()} must be before until {until.isoformat()}")


class _Tally:
    __slots__ = ("charged", "free", "refused")

    def __init__(self) -> None:
        self.charged = 0
        self.free: dict[str, int] = {}
        self.refused: dict[str, int] = {}

    def add(self, outcome: str, detail: str, n: int) -> None:
        if outcome == Outcome.CHARGED:
            self.charged += n
        elif outcome == Outcome.FREE:
            self.free[detail] = self.free.get(detail, 0) + n
        else:
            self.refused[detail] = self.refused.get(detail, 0) + n

    def row(self, key: _Key) -> UsageRow:
        return UsageRow(key[0], key[1], key[2], self.charged, self.free, self.refused)


def _sort_key(key: _Key) -> tuple[str, str, str]:
    return (key[0].isoformat() if key[0] else "", key[1] or "", key[2] or "")


async def usage(
    ledger: LedgerSource,
    account: str,
    since: datetime,
    until: datetime,
    *,
    tz: tzinfo = BEIJING,
    group: str | Sequence[str] = GROUPS,
) -> UsageReport:
    """Calls of ``account`` in ``[since, until)`` by outcome, grouped by ``group``.

    ``since``/``until`` are aware and on whole minutes (the counters' grain; ``BadRange``
    otherwise, or when ``since >= until``); days are cut at midnight of ``tz``, a fixed
    UTC offset. Only ``account``'s own counters are read (exact match). Raises
    ``UnknownAccount`` for an account never seen, ``ReportError`` for a bad ``group``.
    """
    keys = parse_group(group)
    _range(since, until)
    offset = _offset(tz, since)
    async with open_ledger(ledger) as db:
        found = await db.reads.usage_sums(account, since, until, int(offset.total_seconds()) // 60)
    tallies: dict[_Key, _Tally] = {}
    totals = _Tally()
    for day_text, category, action, outcome, detail, n in found:
        key: _Key = (
            date.fromisoformat(day_text) if "day" in keys else None,
            category if "category" in keys else None,
            action if "action" in keys else None,
        )
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _Tally()
        tally.add(outcome, detail, int(n))
        totals.add(outcome, detail, int(n))
    rows = tuple(tallies[k].row(k) for k in sorted(tallies, key=_sort_key))
    return UsageReport(
        account=account,
        since=since.astimezone(UTC),
        until=until.astimezone(UTC),
        tz=offset,
        group=keys,
        rows=rows,
        totals=totals.row((None, None, None)),
    )
