"""A seeded ledger and crafted exports: every reason class where the tests expect it.

Beijing hours of 2026-11-02 (UTC+8), per item (U upstream, C charged records, free
answers and gateway give-ups from the per-minute counters):

| hour  | item                        | U | C | counters                      | reason            |
| 10:00 | facebody.DetectFace         | 6 | 5 | free InvalidParameter 2       | free_billed       |
| 11:00 | facebody.DetectFace         | 5 | 3 | refused overdue 10            | outside_gateway   |
| 12:00 | ocr.RecognizeLicensePlate   | 3 | 4 |                               | period_boundary   |
| 13:00 | ocr.RecognizeLicensePlate   | 3 | 2 |                               | period_boundary   |
| 14:00 | imageseg.SegmentBody        | 1 | 2 |                               | not_billed        |
| 15:00 | facebody.CompareFace        | 2 | 1 | free GatewayTimeout 1         | unanswered_billed |
| 16:00 | facebody.DetectFace         | 2 | 2 |                               | (match)           |
| 16:00 | facebody.DetectCelebrity    | 7 | - |                               | unknown_item      |
| 01:00 | facebody.DetectFace (11-03) | 1 | 1 | 2026-11-02T17:00Z: a UTC day says 11-02 |
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from metering_middleware.catalog import default_catalog
from metering_middleware.clock import ManualClock
from metering_middleware.ledger import SqliteStore
from metering_middleware.ledger.records import CallRecord, Outcome, OutcomeCount
from metering_middleware.rating import SqliteRatingStore, buy_resource_plan, settle

CATALOG = default_catalog()
D, P, S, C2 = (
    "facebody.DetectFace",
    "ocr.RecognizeLicensePlate",
    "imageseg.SegmentBody",
    "facebody.CompareFace",
)


def z(day: int, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, micro, tzinfo=UTC)


def _record(n: int, item: str, account: str, when: datetime) -> CallRecord:
    it = CATALOG.by_item()[item]
    return CallRecord(
        id=f"r{n:04d}",
        request_id=None,
        account=account,
        access_key_id="AK" + account,
        category=it.category,
        action=it.action,
        version=it.version,
        item=item,
        occurred_at=when,
        status=200,
        error_code=None,
        latency_ms=1.0,
    )


def _count(
    account: str, item: str, when: datetime, outcome: Outcome, detail: str, n: int
) -> OutcomeCount:
    it = CATALOG.by_item()[item]
    return OutcomeCount(when, account, it.category, it.action, outcome, detail, n)


CALLS: list[tuple[str, str, datetime]] = [
    *[("acme", D, z(2, 2, m)) for m in (5, 10, 15, 20, 25)],
    *[("acme", D, z(2, 3, m)) for m in (1, 2, 3)],
    *[("acme", D, z(2, 8, m)) for m in (0, 30)],
    ("acme", D, z(2, 17)),
    *[("globex", P, z(2, 4, m)) for m in (10, 20, 30)],
    ("globex", P, z(2, 4, 59, 59, 900_000)),  # 12:59:59.9 in Beijing: the upstream says 13:00
    *[("globex", P, z(2, 5, m)) for m in (10, 20)],
    *[("initech", S, z(2, 6, m)) for m in (10, 20)],
    ("initech", C2, z(2, 7, 10)),
]

COUNTS = [
    _count("acme", D, z(2, 2, 30), Outcome.FREE, "InvalidParameter", 2),
    _count("acme", D, z(2, 3, 30), Outcome.REFUSED, "overdue", 10),
    _count("initech", C2, z(2, 7, 20), Outcome.FREE, "GatewayTimeout", 1),
]


def seed_ledger(path: Path, *, settled: bool = True) -> None:
    """The ledger above; globex's first two plate calls come out of a 30-point plan."""

    async def fill() -> None:
        clock = ManualClock(z(2, 1))
        async with SqliteStore(path, clock=clock) as ledger:
            records = [_record(i, item, acct, when) for i, (acct, item, when) in enumerate(CALLS)]
            await ledger.write(records, COUNTS)
        clock.set(datetime(2026, 12, 5, tzinfo=UTC))
        async with SqliteRatingStore(path) as store:
            await buy_resource_plan(
                store,
                CATALOG,
                account="globex",
                kind="single",
                categories={"ocr"},
                points=30,
                ordered_at=z(1, 0),
                price_paid="0.30",
                plan_id="ocr30",
            )
            if settled:
                await settle(store, CATALOG, clock, lag=timedelta(seconds=60))

    asyncio.run(fill())


DATA = Path(__file__).parent / "data"

#: Alibaba's Bill Details by billable item and hour, API column names, with a BOM. The
#: 10:00 DetectFace usage is split by tier into two rows (Alibaba does since 2024).
HOURLY = (DATA / "usage-hourly.csv").read_text("utf-8")  # the BOM stays in the text
HOURLY_COST = Decimal("1.0156")  # the PretaxAmount column's sum

#: The console's daily export with Chinese column names and Alibaba's own (Chinese)
#: billable-item names, no BOM, no amount column; names mapped with ITEM_MAP.
DAILY = (DATA / "usage-daily-zh.csv").read_text("utf-8")
ITEM_MAP = (DATA / "item-map.csv").read_text("utf-8")
