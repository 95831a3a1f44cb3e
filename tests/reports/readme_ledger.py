"""The ledger of the README's report example (tests/reports/test_readme_example.py)."""

from __future__ import annotations

from pathlib import Path

from metering_middleware.ledger.records import Outcome
from tests.reports.support import COMPARE, Ledger, utc

START = utc(2026, 11, 1)


async def build(path: Path | str) -> None:
    """acme: a plan of 100 points (two DetectFace calls), 2 DetectFace calls either side of
    a Beijing midnight, 3 CompareFace at 0.40, 2 calls refused by the QPS limit; settled."""
    async with Ledger(path, START) as led:
        for name in ("acme", "acme2", "AC%ME"):
            await led.account(name)
        await led.topup("acme", "20", START)
        await led.plan("acme", "100", START, "P1")
        await led.calls("acme", [utc(2026, 11, 1, 15, 59), utc(2026, 11, 1, 16, 0)])
        await led.calls("acme", [utc(2026, 11, 2, 1)] * 3, COMPARE)
        await led.counts(
            led.count("acme", utc(2026, 11, 1, 16, 0), Outcome.REFUSED, "Throttling.User", 2)
        )
        await led.calls("acme2", [utc(2026, 11, 1, 15, 59)])
        await led.settle(utc(2026, 11, 5))
