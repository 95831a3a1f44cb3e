"""/metrics of a real gateway after a settlement, a throttled call, a refused overdue call,
and a delivered and a failed webhook: every new series with its value."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import ManualClock, MeteringConfig, MeteringRuntime
from metering_middleware.ledger import SqliteStore
from metering_middleware.notices import Notice, NoticeKind
from metering_middleware.rating import SqliteRatingStore
from tests.e2e.conftest import add_account
from tests.notices.receiver import Receiver
from tests.notices.test_webhooks import SECRET, START
from tests.support.money import priced_catalog, topup, v3_at
from tests.support.servers import run_server

BODY = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"


async def eventually(check: Callable[[], bool], limit: float = 20.0) -> None:
    async def until() -> None:
        while not check():  # noqa: ASYNC110 - delivery happens in the runtime's own task
            await asyncio.sleep(0.02)

    await asyncio.wait_for(until(), limit)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return scraped[(name, tuple(sorted(labels.items())))]


async def test_metrics_after_settlement_throttle_overdue_and_webhooks(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    acme = await add_account(url, "acme")
    debtor = await add_account(url, "debtor")
    clock = ManualClock(START)
    async with SqliteRatingStore(db) as rating:
        await topup(rating, "acme", "10", START)
        await topup(rating, "debtor", "0.40", START)  # one call at 0.50 takes it into debt
    receiver = Receiver(SECRET, script=[200], then=500, now=clock.time)
    async with run_server(receiver) as hook:
        runtime = MeteringRuntime(
            MeteringConfig(
                ledger_url=url,
                enforce_balance=True,
                settle_interval=3600,  # a settler of its own; the test runs its pass
                webhook_url=hook,
                webhook_secret=SECRET,
                webhook_poll_interval=0.02,
                webhook_max_attempts=1,  # a failed attempt is given up at once
            ),
            clock=clock,
            catalog=priced_catalog(default_qps=1),
            store=SqliteStore(db, clock=clock),
        )
        async with run_server(create_mock_upstream()) as upstream:
            app = create_gateway_app(GatewayConfig(upstream=upstream, timeout=10.0), runtime)
            async with run_server(app) as base, httpx.AsyncClient(timeout=10.0) as client:

                async def call(key: tuple[str, str]) -> tuple[int, str]:
                    headers = v3_at(key[0], key[1], BODY, clock.now())
                    answer = await client.post(base, content=BODY, headers=headers)
                    code = "" if answer.status_code == 200 else json.loads(answer.content)["Code"]
                    return answer.status_code, code

                assert await call(acme) == (200, "")
                assert await call(acme) == (429, "Throttling.User")  # 1 QPS, same instant
                assert await call(debtor) == (200, "")
                clock.advance(61)
                assert runtime.settler is not None
                assert await runtime.settler.settle_now() is not None  # debtor: -0.10, overdue
                guard = runtime.guard
                assert guard is not None
                await guard.view.join()
                clock.advance(1)  # past the standing refresh
                guard.view.start_if_due()
                await guard.view.join()
                assert await call(debtor) == (403, "Account.Arrearage")
                # The overdue notice (settlement's) is delivered; then a cap notice fails.
                await eventually(lambda: len(receiver.accepted) == 1)
                assert runtime.notices is not None and runtime.webhooks is not None
                runtime.notices.emit(Notice(NoticeKind.CAP_REACHED, "acme", "2026-03", START, {}))
                await runtime.notices.flush()
                webhooks = runtime.webhooks
                await eventually(lambda: webhooks.stats.given_up == 1)
                scraped = samples((await client.get(base + "/metrics")).text)

    runs = "metering_settlement_runs_total"
    assert value(scraped, runs, result="settled") == 1
    assert value(scraped, runs, result="busy") == 0
    assert value(scraped, runs, result="failed") == 0
    # The ManualClock does not move during a pass: one pass, in the first bucket, 0 s.
    duration = "metering_settlement_duration_seconds"
    assert value(scraped, duration + "_count") == 1
    assert value(scraped, duration + "_sum") == 0
    assert value(scraped, duration + "_bucket", le="0.05") == 1
    assert value(scraped, duration + "_bucket", le="+Inf") == 1
    # Settled at START+61 s with a 60 s lag (horizon START+1 s), scraped at START+62 s.
    assert value(scraped, "metering_settlement_lag_seconds") == 61
    assert value(scraped, "metering_journal_bytes") == 0  # the store took every batch
    assert value(scraped, "metering_journal_records") == 0
    decisions = "metering_limiter_decisions_total"
    assert value(scraped, decisions, result="admitted") == 2
    assert value(scraped, decisions, result="throttled") == 1
    for result in ("nonce_reused", "fail_open", "fail_closed", "local_admitted"):
        assert value(scraped, decisions, result=result) == 0
    # The standing check refuses before the limiter: the overdue call is not a decision.
    refusals = "metering_standing_refusals_total"
    assert value(scraped, refusals, reason="overdue") == 1
    for reason in ("suspended", "held", "spend_guard", "cap"):
        assert value(scraped, refusals, reason=reason) == 0
    assert value(scraped, "metering_notices_sent_total", kind="account.overdue") == 1
    assert value(scraped, "metering_notices_failed_total", kind="account.cap_reached") == 1
    assert value(scraped, "metering_notices_given_up_total", kind="account.cap_reached") == 1
    assert ("metering_notices_sent_total", (("kind", "account.cap_reached"),)) not in scraped
    # The same refused call in the per-call counter, by category/action (never account).
    calls = "metering_calls_total"
    assert value(
        scraped, calls, category="facebody", action="DetectFace", outcome="refused",
        reason="overdue",
    ) == 1  # fmt: skip
    assert all("account" not in dict(labels) for _, labels in scraped)
