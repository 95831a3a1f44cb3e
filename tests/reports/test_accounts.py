"""accounts(), account_overview(), plan_balances(): names matched literally, one tenant's
rows only, standing and plan states as of a given instant."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from metering_middleware.rating import hold_account, refund_plan, set_low_balance, set_monthly_cap
from metering_middleware.reports import (
    LedgerSource,
    ReportError,
    UnknownAccount,
    account_overview,
    accounts,
    plan_balances,
)
from tests.reports.conftest import LedgerAt
from tests.reports.support import DETECT, PLATE, Ledger, source, utc

NOW = utc(2026, 11, 20)


async def _build(file: Path | str) -> None:
    async with Ledger(file, utc(2026, 9, 1)) as led:
        for name in ("acme", "acme2", "AC%ME", "a_cme", "zeta"):
            await led.account(name)
        await led.topup("walkin", "7", utc(2026, 9, 1))  # a balance, no key yet
        await led.topup("acme", "100", utc(2026, 9, 1))
        await led.topup("acme2", "5", utc(2026, 9, 1))
        await led.plan("acme", "100", utc(2026, 9, 1), "P0-old", months=1)
        await led.plan("acme", "100", utc(2026, 11, 1), "P1-small")
        await led.plan("acme", "500", utc(2026, 11, 1), "P2-big")
        await led.plan("acme", "300", utc(2026, 11, 1), "P9-refunded")
        await led.plan("acme2", "500", utc(2026, 11, 1), "Q-other")
        await refund_plan(led.rating, "P9-refunded", at=utc(2026, 11, 1, 1), clock=led.clock)
        # 2 calls empty P1 (50 points each), 8 leave P2 at 100 of 500: the 20% mark.
        await led.calls("acme", [utc(2026, 11, 2, 1, i) for i in range(10)])
        await led.calls("acme", [utc(2026, 11, 3, 1, i) for i in range(4)], PLATE)  # 0.60
        await led.calls("acme2", [utc(2026, 11, 2, 1, i) for i in range(3)])
        await led.settle(utc(2026, 11, 10))
        await set_monthly_cap(led.rating, "acme", "30", clock=led.clock)
        await set_low_balance(led.rating, "acme", "100", clock=led.clock)
        await hold_account(led.rating, "acme2", "chargeback", clock=led.clock)


@pytest.fixture(scope="module")
def path(module_ledger: LedgerAt) -> LedgerSource:
    """Built once per module and backend: the reports only read it."""
    file = module_ledger("ledger")
    asyncio.run(_build(file))
    return source(file)


async def test_the_list_and_its_search(path: LedgerSource) -> None:
    page = await accounts(path)
    assert [a.account for a in page.items] == ["AC%ME", "a_cme", "acme", "acme2", "walkin", "zeta"]
    assert page.total == 6
    walkin = page.items[4]
    assert (walkin.keys, walkin.enabled, walkin.balance, walkin.standing) == (
        0,
        False,
        Decimal(7),
        "good",
    )
    acme2 = page.items[3]
    assert (acme2.balance, acme2.standing, acme2.keys) == (Decimal(4), "held", 1)

    async def names(search: str) -> list[str]:
        return [a.account for a in (await accounts(path, search=search)).items]

    assert await names("acme") == ["acme", "acme2"]
    assert await names("ACME") == ["acme", "acme2"]  # case-insensitive
    assert await names("%") == ["AC%ME"]  # not a LIKE wildcard
    assert await names("_") == ["a_cme"]
    assert await names("c%m") == ["AC%ME"]
    assert await names("nobody") == []


async def test_pages(path: LedgerSource) -> None:
    page = await accounts(path, limit=2, offset=2)
    assert [a.account for a in page.items] == ["acme", "acme2"] and page.total == 6
    assert page.to_json()["items"][0] == {
        "account": "acme",
        "enabled": True,
        "keys": 1,
        "enabled_keys": 1,
        "balance": "95.40",
        "standing": "good",
    }
    assert page.next_after == "acme2"
    assert (await accounts(path, limit=2, offset=6)).items == ()
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": 1, "after": "a"}):
        with pytest.raises(ReportError):
            await accounts(path, **bad)  # type: ignore[arg-type]


async def test_keyset_pages_walk_every_account_once(path: LedgerSource) -> None:
    every = [a.account for a in (await accounts(path, limit=1000)).items]
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await accounts(path, limit=2, after=after)
        seen += [a.account for a in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == every and len(every) == 6
    last = await accounts(path, limit=len(every))
    assert last.next_after is None  # exactly one page: nothing after it


async def test_overview(path: LedgerSource) -> None:
    acme = await account_overview(path, "acme", NOW)
    # 100 topped up, four plans at 1 each, the month's settled pay-as-you-go 0.60.
    assert acme.balance == Decimal("95.40") and acme.month_spend == Decimal("0.60")
    assert acme.standing == "good" and acme.standing_since is None
    assert (acme.monthly_cap, acme.low_balance) == (Decimal(30), Decimal(100))
    assert acme.low_balance_reached is True  # 95.40 < 100
    assert str(acme.month) == "2026-11" and acme.enabled
    assert acme.settled_until == utc(2026, 11, 10) - timedelta(seconds=60)
    held = await account_overview(path, "acme2", NOW)
    assert held.standing == "held" and held.held_reason == "chargeback"
    assert held.standing_since is not None
    doc = held.to_json()
    assert doc["balance"] == str(held.balance) and doc["standing_since"].endswith("Z")
    with pytest.raises(UnknownAccount):
        await account_overview(path, "acme3", NOW)


async def test_plans_of_one_account(path: LedgerSource) -> None:
    plans = await plan_balances(path, "acme", NOW)
    got = [(p.id, p.state, p.points, p.points_left, p.low) for p in plans]
    assert got == [
        ("P0-old", "expired", Decimal(100), Decimal(100), False),
        ("P1-small", "exhausted", Decimal(100), Decimal(0), True),
        ("P2-big", "active", Decimal(500), Decimal(100), True),
        ("P9-refunded", "refunded", Decimal(300), Decimal(300), False),
    ]
    assert all(p.account == "acme" for p in plans)
    assert [p.id for p in await plan_balances(path, "acme2", NOW)] == ["Q-other"]
    big = plans[2].to_json()
    assert big["points_left"] == "100" and big["categories"] == ["facebody"]
    assert big["starts"] == "2026-11-01T00:00:00Z" and big["kind"] == "single"
    assert await plan_balances(path, "zeta", NOW) == ()


async def test_plan_state_moves_with_now(path: LedgerSource) -> None:
    later = await plan_balances(path, "acme", utc(2027, 11, 2))
    assert [p.state for p in later] == ["expired", "expired", "expired", "refunded"]
    assert DETECT  # the calls above were DetectFace


async def test_a_nul_in_a_search_or_a_cursor_is_no_failure(path: LedgerSource) -> None:
    assert (await accounts(path, search="ac\x00me")).items == ()
    after = await accounts(path, after="acme\x00")
    assert [a.account for a in after.items][:2] == ["acme2", "walkin"]
