"""Record factories for the ledger tests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from metering_middleware.ledger import CallRecord, MemoryStore, OutcomeCount

T0 = datetime(2026, 1, 15, 8, 30, 12, 123456, tzinfo=UTC)
_serial = itertools.count()


def make_record(
    *,
    id: str | None = None,
    account: str = "acct-a",
    category: str = "facebody",
    action: str = "DetectFace",
    item: str = "DetectFace",
    occurred_at: datetime | None = None,
    status: int = 200,
    error_code: str | None = None,
    request_id: str | None = "req-1",
    latency_ms: float = 12.5,
) -> CallRecord:
    n = next(_serial)
    return CallRecord(
        id=id or f"01TEST{n:020d}",
        request_id=request_id,
        account=account,
        access_key_id=f"LTAI-{account}",
        category=category,
        action=action,
        version="2019-12-30",
        item=item,
        occurred_at=occurred_at or T0 + timedelta(microseconds=n),
        status=status,
        error_code=error_code,
        latency_ms=latency_ms,
    )


def make_records(n: int, *, account: str = "acct-a") -> list[CallRecord]:
    return [make_record(account=account) for _ in range(n)]


class GatedStore(MemoryStore):
    """A memory store whose writes wait for ``gate``: holds a commit "in flight"."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def write(self, records: Sequence[CallRecord], counts: Sequence[OutcomeCount]) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().write(records, counts)
