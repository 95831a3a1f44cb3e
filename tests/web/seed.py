"""A seeded ledger for the billing page: real records, counters, plans, top-ups,
settlement and notices, all written through the project's own APIs on one ManualClock.

``initech`` is the account whose numbers the tests know by arithmetic (priced_catalog:
DetectFace 0.50 for a month's first 3 calls, then 0.25; a licence-plate call is 15 points):

- 2026-11-05: 5 DetectFace calls, pay-as-you-go: 3 x 0.50 + 2 x 0.25 = CNY 2.00 due;
- 2026-11-06: 4 licence-plate calls from a 100-point OCR plan: 40 points left.

``acme-vision`` is the demo account of the screenshot (a month of mixed traffic), and two
accounts carry markup in their names, the way a tenant could name itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from metering_middleware.admin.context import AdminContext
from metering_middleware.admin.tokens import AdminTokens
from metering_middleware.clock import ManualClock
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger import CallRecord, SqliteStore
from metering_middleware.ledger.records import Outcome, OutcomeCount
from metering_middleware.notices.detectors import detect_notices
from metering_middleware.rating import SqliteRatingStore, buy_resource_plan, settle
from tests.support.money import priced_catalog, topup

__all__ = [
    "DEMO",
    "KNOWN",
    "NOW",
    "TOKEN",
    "XSS_NAMES",
    "Seeded",
    "context",
    "seed",
]

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)  # 17:30 in Beijing, billing month 2026-11
TOKEN = "web-test-admin-token-0123456789abcdefghij"
KNOWN = "initech"
DEMO = "acme-vision"
XSS_NAMES = ("<img src=x onerror=alert(1)>", '"><script>alert(2)</script>')
# Markup in what the ledger carries too: an upstream error code of a free call.
XSS_CODE = "<svg onload=alert(3)>"

_ITEMS = {
    "facebody.DetectFace": ("facebody", "DetectFace", "2019-12-30"),
    "facebody.CompareFace": ("facebody", "CompareFace", "2019-12-30"),
    "ocr.RecognizeLicensePlate": ("ocr", "RecognizeLicensePlate", "2019-12-30"),
}


def utc(day: int, hour: int = 2, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@dataclass(frozen=True)
class Seeded:
    path: Path
    clock: ManualClock
    keys: dict[str, list[str]]  # account -> its AccessKeyIds


class _Writer:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.n = 0

    async def calls(self, account: str, key: str, item: str, times: list[datetime]) -> None:
        category, action, version = _ITEMS[item]
        records, counts = [], []
        for when in times:
            self.n += 1
            records.append(
                CallRecord(
                    id=f"web{self.n:08d}",
                    request_id=f"up-{self.n}",
                    account=account,
                    access_key_id=key,
                    category=category,
                    action=action,
                    version=version,
                    item=item,
                    occurred_at=when,
                    status=200,
                    error_code=None,
                    latency_ms=20.0,
                )
            )
            minute = when.replace(second=0, microsecond=0)
            counts.append(OutcomeCount(minute, account, category, action, Outcome.CHARGED, "", 1))
        await self.store.write(records, counts)

    async def free(self, account: str, item: str, when: datetime, code: str, n: int) -> None:
        category, action, _ = _ITEMS[item]
        minute = when.replace(second=0, microsecond=0)
        await self.store.write(
            [], [OutcomeCount(minute, account, category, action, Outcome.FREE, code, n)]
        )


async def seed(path: Path) -> Seeded:
    """Write the accounts above into a new ledger at ``path``; the clock ends at NOW."""
    catalog = priced_catalog()
    clock = ManualClock(utc(1, 1))
    store = SqliteStore(path, clock=clock, synchronous="NORMAL")
    rating = SqliteRatingStore(path)
    keys: dict[str, list[str]] = {}
    await store.open()
    await rating.open()
    try:
        manager = CredentialManager(store, SecretBox(None), clock)
        for name in (KNOWN, DEMO, "globex", *XSS_NAMES):
            row, _ = await manager.add(name)
            keys[name] = [row.access_key_id]
        row, _ = await manager.add(DEMO)  # a second key, to be disabled from the page
        keys[DEMO].append(row.access_key_id)
        w = _Writer(store)

        # initech: the numbers the tests check.
        await topup(rating, KNOWN, "50", utc(1, 3))
        await buy_resource_plan(
            rating, catalog, account=KNOWN, kind="single", categories={"ocr"},
            points=Decimal(100), ordered_at=utc(1, 4), price_paid=Decimal("1.00"),
            plan_id="rp-initech-ocr", clock=clock,
        )  # fmt: skip
        await w.calls(KNOWN, keys[KNOWN][0], "facebody.DetectFace",
                      [utc(5, 2, m) for m in range(5)])  # fmt: skip
        await w.calls(KNOWN, keys[KNOWN][0], "ocr.RecognizeLicensePlate",
                      [utc(6, 3, m) for m in range(4)])  # fmt: skip

        # acme-vision: a month of traffic for the screenshot.
        await topup(rating, DEMO, "300", utc(1, 2))
        await buy_resource_plan(
            rating, catalog, account=DEMO, kind="single", categories={"facebody"},
            points=Decimal(2500), ordered_at=utc(2, 1), price_paid=Decimal("25.00"),
            plan_id="rp-acme-facebody", clock=clock,
        )  # fmt: skip
        await buy_resource_plan(
            rating, catalog, account=DEMO, kind="general",
            points=Decimal(2000), ordered_at=utc(2, 2), price_paid=Decimal("20.00"),
            plan_id="rp-acme-general", clock=clock,
        )  # fmt: skip
        for day in range(2, 20):
            detect = 2 + (day * 7) % 5
            compare = (day * 3) % 4
            plate = 1 + (day % 3)
            await w.calls(DEMO, keys[DEMO][0], "facebody.DetectFace",
                          [utc(day, 1, m) for m in range(detect)])  # fmt: skip
            if compare:
                await w.calls(DEMO, keys[DEMO][0], "facebody.CompareFace",
                              [utc(day, 4, m) for m in range(compare)])  # fmt: skip
            await w.calls(DEMO, keys[DEMO][1], "ocr.RecognizeLicensePlate",
                          [utc(day, 6, m) for m in range(plate)])  # fmt: skip
        await w.free(DEMO, "facebody.DetectFace", utc(9, 5), "InvalidImage.URL", 3)

        # globex: a little pay-as-you-go, overdue (no top-up).
        await w.calls("globex", keys["globex"][0], "facebody.CompareFace",
                      [utc(10, 2, m) for m in range(3)])  # fmt: skip

        # The markup names: calls, a top-up and a free call whose code is markup too.
        for i, name in enumerate(XSS_NAMES):
            await topup(rating, name, "10", utc(1, 5))
            await w.calls(name, keys[name][0], "facebody.DetectFace",
                          [utc(12 + i, 2, m) for m in range(2)])  # fmt: skip
            await w.free(name, "facebody.DetectFace", utc(12 + i, 3), XSS_CODE, 1)

        for step in range(1, 20):  # settle day by day, as the gateway's settler would
            clock.set(utc(step + 1, 0))
            await settle(rating, catalog, clock, lag=timedelta(seconds=60))
        clock.set(NOW)
        await settle(rating, catalog, clock, lag=timedelta(seconds=60))
    finally:
        await rating.close()
        await store.close()
    await detect_notices(path, NOW)
    return Seeded(path, clock, keys)


def context(seeded: Seeded, *tokens: str) -> AdminContext:
    """An admin context on the seeded ledger, on its clock."""
    return AdminContext.from_ledger_url(
        f"sqlite:///{seeded.path}",
        AdminTokens(tokens or (TOKEN,)),
        catalog=priced_catalog(),
        clock=seeded.clock,
        secret_box=SecretBox(None),
    )
