"""The middleware's side of the spend guard: what is reserved at admission is kept only
for a call whose record was written, and given back on every other way out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from metering_middleware import ManualClock, MeteringConfig, MeteringRuntime
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger import SqliteStore
from metering_middleware.limiter import MemoryLimiter
from metering_middleware.middleware import MeteringMiddleware
from metering_middleware.rating import SqliteRatingStore
from tests.support.money import priced_catalog, topup

from .harness import Env, FakeUpstream, error_reply

START = 1_772_431_200.0  # 2026-03-02T06:00Z


@dataclass
class Guarded:
    env: Env
    db: Path

    def estimate(self) -> Decimal:
        guard = self.env.runtime.guard
        assert guard is not None
        return guard.estimate("acme")

    def calls(self) -> int:
        import sqlite3

        with sqlite3.connect(self.db) as conn:
            (n,) = conn.execute("SELECT COUNT(*) FROM calls").fetchone()
        return int(n)


async def _guarded(tmp_path: Path, balance: str, **kwargs: Any) -> Guarded:
    db = tmp_path / "ledger.sqlite"
    clock = ManualClock(START)
    store = SqliteStore(db, clock=clock)
    await store.open()
    row, secret = await CredentialManager(store, SecretBox(None), clock).add("acme")
    async with SqliteRatingStore(db) as rating:
        await topup(rating, "acme", balance, clock.now())
    config = MeteringConfig(ledger_url=f"sqlite:///{db}", enforce_balance=True)
    catalog = kwargs.pop("catalog", priced_catalog())
    runtime = MeteringRuntime(config, clock=clock, store=store, catalog=catalog, **kwargs)
    upstream = FakeUpstream()
    app = MeteringMiddleware(upstream, runtime=runtime)
    await runtime.start()
    return Guarded(Env(clock, store, runtime, upstream, app, row.access_key_id, secret), db)  # type: ignore[arg-type]


@pytest.fixture
async def rich(tmp_path: Path) -> AsyncIterator[Guarded]:
    g = await _guarded(tmp_path, "100.00")
    yield g
    await g.env.runtime.stop()


async def test_a_charged_call_keeps_its_reservation(rich: Guarded) -> None:
    assert (await rich.env.request(**rich.env.v3())).status == 200
    assert rich.estimate() == Decimal("0.50") and rich.calls() == 1


async def test_a_chargeable_error_keeps_it_a_free_one_gives_it_back(rich: Guarded) -> None:
    env = rich.env
    env.upstream.reply = error_reply("InvalidImage.NotFoundFace", 400)
    assert (await env.request(**env.v3())).status == 400
    assert rich.estimate() == Decimal("0.50")
    env.upstream.reply = error_reply("InvalidParameter", 400)
    assert (await env.request(**env.v3())).status == 400
    assert rich.estimate() == Decimal("0.50") and rich.calls() == 1


async def test_an_upstream_that_fails_before_answering_gives_it_back(rich: Guarded) -> None:
    env = rich.env
    env.upstream.reply.raise_before_start = True
    with pytest.raises(RuntimeError):
        await env.request(**env.v3())
    assert rich.estimate() == 0 and rich.calls() == 0


async def test_a_qps_refusal_after_admission_gives_it_back(tmp_path: Path) -> None:
    g = await _guarded(tmp_path, "100.00", catalog=priced_catalog(default_qps=1))
    try:
        env = g.env
        first, second = env.v3(), env.v3()  # signed ahead: both sent in one second
        assert (await env.request(**first)).status == 200
        refused = await env.request(**second)
        assert (refused.status, refused.json()["Code"]) == (429, "Throttling.User")
        assert g.estimate() == Decimal("0.50")  # the throttled one reserved nothing lasting
    finally:
        await env.runtime.stop()


class BrokenLimiter(MemoryLimiter):
    async def admit(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("limiter backend gone")


async def test_a_limiter_that_raises_gives_it_back(tmp_path: Path) -> None:
    clock = ManualClock(START)
    g = await _guarded(tmp_path, "100.00", limiter=BrokenLimiter(clock))
    try:
        with pytest.raises(ConnectionError):
            await g.env.request(**g.env.v3())
        assert g.estimate() == 0
    finally:
        await g.env.runtime.stop()


async def test_a_refusal_is_an_alibaba_error_body_in_the_callers_format(tmp_path: Path) -> None:
    g = await _guarded(tmp_path, "0.00")
    try:
        env = g.env
        answer = await env.request(**env.v1(fmt="XML"))
        assert answer.status == 403
        assert b"<Code>Account.SpendCapExceeded</Code>" in answer.body
        assert b"<RequestId>" in answer.body and answer.headers[b"x-acs-request-id"]
        answer = await env.request(**env.v3())
        doc = answer.json()
        assert (doc["Code"], answer.status) == ("Account.SpendCapExceeded", 403)
        assert set(doc) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
        assert env.upstream.seen == [] and g.calls() == 0  # never forwarded, nothing charged
    finally:
        await env.runtime.stop()
