"""A ledger with plans, balances and settings, settled by the gateway's settler, and its
notices read back from the file."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from metering_middleware.catalog import default_catalog
from metering_middleware.rating import AccountSettings, BalanceEntry, EntryKind
from metering_middleware.settler import BackgroundSettler
from tests.rating.helpers import calls_between
from tests.rating.settle_support import Harness

CATALOG = default_catalog()
PLATE_PRICE = Decimal("0.15")  # first tier of ocr.RecognizeLicensePlate; 15 points a call


class Ledger(Harness):
    """The settlement harness, plus money and the settler's pass with its detectors."""

    def __init__(self, path: Path, start: datetime) -> None:
        super().__init__(path, CATALOG, start)
        self._n = 0

    async def calls(self, n: int, account: str = "acct") -> None:
        """``n`` plate calls now (arriving a second later), then an hour passes."""
        start = self.clock.now()
        records = calls_between(
            CATALOG, n, start, timedelta(milliseconds=10), account=account, prefix=f"b{self._n}-"
        )
        self._n += 1
        await self.arrive(records, at=start + timedelta(seconds=1))
        self.clock.advance(3600)

    async def topup(self, account: str, amount: str) -> None:
        self._n += 1
        now = self.clock.now()
        entry = BalanceEntry(
            id=f"topup:test:{self._n}",
            account=account,
            kind=EntryKind.TOPUP,
            amount=Decimal(amount),
            at=now,
            recorded_at=now,
        )
        await self.rating.post_entries([entry], now)

    async def settings(self, account: str, **values: str) -> None:
        s = AccountSettings(account, **{k: Decimal(v) for k, v in values.items()})
        await self.rating.set_account_settings(s, self.clock.now())

    async def settle_pass(self) -> BackgroundSettler:
        """One gateway settlement pass (a settler of its own: like a restarted gateway)."""
        settler = BackgroundSettler(str(self.path), CATALOG, self.clock, interval=3600)
        report = await settler.settle_now()
        assert report is not None and settler.stats.failures == 0
        return settler


def notices(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    try:
        sql = (
            "SELECT n.id, n.kind, n.account, n.subject, n.data, o.attempts, o.delivered_at,"
            " o.failed_at FROM notices n LEFT JOIN notice_outbox o ON o.notice_id = n.id"
        )
        params: list[str] = []
        if kind is not None:
            sql += " WHERE n.kind = ?"
            params.append(kind)
        rows = conn.execute(sql + " ORDER BY n.seq", params).fetchall()
    finally:
        conn.close()
    keys = ("id", "kind", "account", "subject", "data", "attempts", "delivered_at", "failed_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def ids(path: Path, kind: str) -> list[str]:
    return [n["id"] for n in notices(path, kind)]
