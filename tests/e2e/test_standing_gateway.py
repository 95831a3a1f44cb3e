"""An account's money through the example gateway, on an injected clock.

Real HTTP, a real SQLite ledger, requests signed by the project's signer at the gateway's
clock, settlement by the gateway's own ``BackgroundSettler``. An account with a small
balance spends into debt and is refused by the spend guard before any settlement;
settlement makes it overdue and even a call its QPS subscription pays is refused;
24 hours later it is suspended; a top-up restores it within the refresh interval; a
monthly cap holds against concurrent calls. Every refusal is free and counted.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import ManualClock, MeteringConfig, MeteringRuntime
from metering_middleware.ledger import SqliteStore
from metering_middleware.rating import (
    AccountSettings,
    Month,
    SqliteRatingStore,
    buy_qps_subscription,
)
from metering_middleware.settler import BackgroundSettler
from tests.support.money import priced_catalog, topup, v3_at
from tests.support.servers import run_server

from .conftest import add_account

START = datetime(2026, 3, 2, 6, tzinfo=UTC)
CATALOG = priced_catalog()
BODY = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"


@dataclass
class Metered:
    base: str
    db: Path
    clock: ManualClock
    runtime: MeteringRuntime
    keys: dict[str, tuple[str, str]]
    capped: list[tuple[str, Month]] = field(default_factory=list)

    async def call(self, key: str, action: str = "DetectFace") -> tuple[int, str]:
        """One signed call at the gateway's clock: (status, Code or "")."""
        key_id, secret = self.keys[key]
        headers = v3_at(key_id, secret, BODY, self.clock.now(), action=action)
        async with httpx.AsyncClient(timeout=10.0) as client:
            answer = await client.post(self.base, content=BODY, headers=headers)
        code = "" if answer.status_code == 200 else json.loads(answer.content)["Code"]
        return answer.status_code, code

    async def settle(self) -> None:
        """The gateway's settler, one pass past the 60 s lag."""
        self.clock.advance(61)
        settler = BackgroundSettler(str(self.db), CATALOG, self.clock, interval=3600)
        assert await settler.settle_now() is not None

    async def refreshed(self) -> None:
        """The first reload that starts after now has finished (a reload already under
        way may have read before a change the test just made)."""
        assert self.runtime.guard is not None
        view = self.runtime.guard.view
        await view.join()
        self.clock.advance(1.0)  # past the refresh interval
        view.start_if_due()  # what the next call does
        await view.join()

    def refusals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (_, _, outcome, reason), n in self.runtime.metrics.snapshot().items():
            if outcome == "refused":
                out[reason] = out.get(reason, 0) + n
        return out

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return list(conn.execute(sql))


@asynccontextmanager
async def metered_gateway(
    tmp_path: Path,
    upstream_app: Any,
    accounts: dict[str, str],
    *,
    hook: bool = True,
    **settings: Any,
) -> AsyncIterator[Metered]:
    """The example gateway on a ManualClock; ``accounts``: key name -> account. Without
    ``hook``, the runtime's own cap hook records the notice."""
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    keys = {name: await add_account(url, account) for name, account in accounts.items()}
    clock = ManualClock(START)
    capped: list[tuple[str, Month]] = []
    runtime = MeteringRuntime(
        MeteringConfig(ledger_url=url, enforce_balance=True, **settings),
        clock=clock,
        catalog=CATALOG,
        store=SqliteStore(db, clock=clock),  # records arrive at the test's clock
        on_cap_reached=(lambda a, m, *_: capped.append((a, m))) if hook else None,
    )
    async with run_server(upstream_app) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream, timeout=10.0), runtime)
        async with run_server(app) as base:
            yield Metered(base, db, clock, runtime, keys, capped)


async def test_debt_overdue_suspended_and_restored(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    async with SqliteRatingStore(db) as rating:
        await topup(rating, "acme", "1.20", START, key="first")
        await buy_qps_subscription(
            rating, CATALOG, account="acme", category="facebody", action="CompareFace",
            qps=20, ordered_at=START, price_paid="0",
        )  # fmt: skip
    accounts = {"k1": "acme", "k2": "acme"}  # one account, two AccessKeys
    async with metered_gateway(tmp_path, create_mock_upstream(), accounts) as gw:
        # 1.20 pays two calls at 0.50 and admits a third (into debt by 0.30, at most one call).
        assert [await gw.call("k1") for _ in range(3)] == [(200, "")] * 3
        # Refused before any settlement, whichever AccessKey asks; free of charge.
        assert await gw.call("k2") == (403, "Account.SpendCapExceeded")
        # The subscription pays CompareFace: a zero balance still uses what it bought.
        assert await gw.call("k2", "CompareFace") == (200, "")
        assert gw.rows("SELECT COUNT(*) FROM account_standing") == [(0,)]  # no overdue clock

        await gw.settle()  # settlement posts the 1.50: balance -0.30, overdue
        (overdue_since,) = gw.rows("SELECT overdue_since FROM account_standing")[0]
        assert overdue_since is not None
        await gw.refreshed()
        assert await gw.call("k1") == (403, "Account.Arrearage")
        assert await gw.call("k2", "CompareFace") == (403, "Account.Arrearage")  # covered, too
        assert gw.refusals() == {"spend_guard": 1, "overdue": 2}

        gw.clock.advance(24 * 3600)  # no settlement ran since: the clock alone suspends
        assert await gw.call("k1") == (403, "Account.Arrearage")
        assert gw.refusals()["suspended"] == 1
        assert gw.rows("SELECT suspended_at FROM account_standing") == [(None,)]

        async with SqliteRatingStore(db) as rating:
            await topup(rating, "acme", "5.00", gw.clock.now(), key="second")
        assert gw.rows("SELECT COUNT(*) FROM account_standing") == [(0,)]  # restored in the DB
        await gw.refreshed()  # and in the gateway within one refresh, without a restart
        assert await gw.call("k2") == (200, "")
        assert await gw.call("k1", "CompareFace") == (200, "")
        assert gw.refusals() == {"spend_guard": 1, "overdue": 2, "suspended": 1}

    # Refusals are free: only the six served calls are in the ledger, and the per-minute
    # outcome counters hold every refusal with its reason.
    async with SqliteRatingStore(db) as rating:
        # 1.20 - 1.50 + 5.00: the last calls are not settled yet.
        assert await rating.balances() == {"acme": Decimal("4.70")}
    assert gw.rows("SELECT action, COUNT(*) FROM calls GROUP BY action ORDER BY action") == [
        ("CompareFace", 2),
        ("DetectFace", 4),
    ]
    refused = gw.rows(
        "SELECT detail, SUM(count) FROM outcome_counts WHERE outcome = 'refused'"
        " GROUP BY detail ORDER BY detail"
    )
    assert refused == [("overdue", 2), ("spend_guard", 1), ("suspended", 1)]


class HeldUpstream:
    """Answers every call 200, but only once released: calls stay in flight until then."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].removeprefix("lifespan.")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        while (await receive()).get("more_body"):
            pass
        self.waiting += 1
        await self.release.wait()
        request_id = str(uuid.uuid4()).upper()
        body = json.dumps({"RequestId": request_id, "Data": {"FaceCount": 1}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-acs-request-id", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _burst(gw: Metered, upstream: HeldUpstream, key: str, n: int, admitted: int) -> list:
    """``n`` concurrent calls; released once ``admitted`` wait upstream and the rest answered."""
    tasks = [asyncio.ensure_future(gw.call(key)) for _ in range(n)]
    for _ in range(1000):  # a hang detector, not a speed check
        if upstream.waiting >= admitted and sum(t.done() for t in tasks) >= n - admitted:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError(f"{upstream.waiting} in flight, {sum(t.done() for t in tasks)} done")
    upstream.release.set()
    return sorted(await asyncio.gather(*tasks))


async def test_a_cap_and_a_balance_hold_against_calls_in_flight(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    async with SqliteRatingStore(db) as rating:
        await topup(rating, "capped", "100.00", START)
        await rating.set_account_settings(
            AccountSettings("capped", monthly_cap=Decimal("1.00")), START
        )
        await topup(rating, "thin", "0.60", START)
    upstream = HeldUpstream()
    async with metered_gateway(tmp_path, upstream, {"c": "capped", "t": "thin"}) as gw:
        # Six at once: two fit the cap (0.50 each), the four others are refused while
        # the two are still in flight.
        answers = await _burst(gw, upstream, "c", 6, admitted=2)
        assert answers == [(200, "")] * 2 + [(403, "Account.SpendCapExceeded")] * 4
        assert gw.capped == [("capped", Month(2026, 3))]  # the notice hook, once
        # 0.60 admits two in flight (0.60 > 0, then 0.10 > 0) and no more.
        upstream.release.clear()
        upstream.waiting = 0
        answers = await _burst(gw, upstream, "t", 5, admitted=2)
        assert answers == [(200, "")] * 2 + [(403, "Account.SpendCapExceeded")] * 3
        await gw.settle()
        await gw.refreshed()
        assert await gw.call("c") == (403, "Account.SpendCapExceeded")  # settled spend: 1.00
        assert gw.refusals() == {"cap": 5, "spend_guard": 3}
    async with SqliteRatingStore(db) as rating:
        spent = await rating.balances()
        standings = await rating.standings()
    assert spent == {"capped": Decimal("99.00"), "thin": Decimal("-0.40")}  # cap: exactly 1.00
    assert list(standings) == ["thin"]  # debt of the last call admitted: overdue, no more


async def test_the_refusal_answers_as_configured_and_an_operator_hold_refuses(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.sqlite"
    async with SqliteRatingStore(db) as rating:
        await topup(rating, "acme", "50.00", START)
        await rating.set_hold("acme", START, "chargeback", hold=True)
    settings = {"arrearage_code": "InvalidApi.ForbiddenInvoke", "arrearage_status": 400}
    async with metered_gateway(tmp_path, create_mock_upstream(), {"k": "acme"}, **settings) as gw:
        # VIAPI's own answer for an account in arrears, with a balance to spare: held.
        assert await gw.call("k") == (400, "InvalidApi.ForbiddenInvoke")
        async with SqliteRatingStore(db) as rating:
            await rating.set_hold("acme", gw.clock.now(), "cleared", hold=False)
        await gw.refreshed()
        assert await gw.call("k") == (200, "")
        assert gw.refusals() == {"held": 1}


async def test_a_cap_reached_by_the_guard_is_a_notice_recorded_once(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    async with SqliteRatingStore(db) as rating:
        await topup(rating, "capped", "100.00", START)
        await rating.set_account_settings(
            AccountSettings("capped", monthly_cap=Decimal("1.00")), START
        )
    upstream = create_mock_upstream()
    async with metered_gateway(tmp_path, upstream, {"c": "capped"}, hook=False) as gw:
        answers = [await gw.call("c") for _ in range(4)]
    assert answers == [(200, "")] * 2 + [(403, "Account.SpendCapExceeded")] * 2
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, kind, data FROM notices").fetchall()
        owed = conn.execute("SELECT COUNT(*) FROM notice_outbox").fetchone()
    assert [(r[0], r[1]) for r in rows] == [
        ("account.cap_reached:capped:2026-03", "account.cap_reached")
    ]
    data = json.loads(rows[0][2])
    assert Decimal(data["cap"]) == Decimal("1.00") and Decimal(data["spend"]) == Decimal("1.50")
    assert owed == (1,)  # a webhook delivery is owed with it
