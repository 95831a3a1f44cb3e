"""Webhooks in a running gateway: never in a call's way, never lost across restarts."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import ManualClock, MeteringConfig, MeteringRuntime
from metering_middleware.notices import Notice, NoticeKind
from tests.e2e.conftest import add_account
from tests.e2e.signed import v3_headers
from tests.support.servers import free_port, run_server

from .receiver import Receiver
from .test_webhooks import SECRET, START, ledger_with_notice, outbox


async def eventually(check: Callable[[], bool], limit: float = 20.0) -> None:
    """Until ``check()`` holds (bounded: a test never hangs)."""

    async def until() -> None:
        while not check():  # noqa: ASYNC110 - the state is in the ledger file: poll it
            await asyncio.sleep(0.02)

    await asyncio.wait_for(until(), limit)


def delivered(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT notice_id FROM notice_outbox WHERE delivered_at IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


async def calls_through(base: str, key: str, secret: str, n: int) -> list[int]:
    body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
    async with httpx.AsyncClient(timeout=30.0) as client:
        answers = await asyncio.gather(
            *(
                client.post(base, content=body, headers=v3_headers(key, secret, body))
                for _ in range(n)
            )
        )
    return [a.status_code for a in answers]


def webhook_config(db: Path, url: str, **more: object) -> MeteringConfig:
    return MeteringConfig(
        ledger_url=f"sqlite:///{db}",
        enforce_qps=False,  # calls in a burst: QPS limits are not what is tested here
        webhook_url=url,
        webhook_secret=SECRET,
        webhook_poll_interval=0.02,
        **more,  # type: ignore[arg-type]
    )


async def test_calls_complete_while_the_receiver_holds_a_delivery(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    key, secret = await add_account(f"sqlite:///{db}", "acme")
    notice = ledger_with_notice(db)
    receiver = Receiver(SECRET, then="block")  # answers nothing until released
    async with run_server(receiver, graceful_shutdown=1) as hook:
        runtime = MeteringRuntime(webhook_config(db, hook, webhook_timeout=60.0))
        async with run_server(create_mock_upstream()) as upstream:
            app = create_gateway_app(GatewayConfig(upstream=upstream), runtime)
            async with run_server(app) as base:
                await receiver.wait_for(1)  # the delivery is under way, and held
                assert await calls_through(base, key, secret, 8) == [200] * 8
                # The request path's notices are recorded meanwhile too.
                assert runtime.notices is not None
                cap = Notice(NoticeKind.CAP_REACHED, "acme", "2026-12", START, {})
                assert runtime.notices.emit(cap)
                await runtime.notices.flush()
                assert runtime.notices.recorded == 1
                assert receiver.accepted == [] and not receiver.release.is_set()
                receiver.release.set()
                await eventually(lambda: len(delivered(db)) == 2)
    assert sorted(receiver.accepted) == sorted([notice.id, cap.id])


async def test_calls_complete_while_the_receiver_is_down(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    key, secret = await add_account(f"sqlite:///{db}", "acme")
    ledger_with_notice(db)
    down = f"http://127.0.0.1:{free_port()}/hook"
    runtime = MeteringRuntime(webhook_config(db, down))
    async with run_server(create_mock_upstream()) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream), runtime)
        async with run_server(app) as base:
            await eventually(lambda: outbox(db)["attempts"] == 1)
            assert await calls_through(base, key, secret, 8) == [200] * 8
    row = outbox(db)
    assert row["delivered_at"] is None and row["last_error"] == "no answer (ConnectError)"


async def test_the_outbox_survives_restarts_mid_retry(tmp_path: Path) -> None:
    """Killed after a 500, then killed mid-attempt: the third runtime delivers, once."""
    db = tmp_path / "ledger.sqlite"
    await add_account(f"sqlite:///{db}", "acme")
    notice = ledger_with_notice(db)
    clock = ManualClock(START)
    receiver = Receiver(SECRET, script=[500, "block"], now=clock.time)
    async with run_server(receiver, graceful_shutdown=1) as hook:
        config = webhook_config(db, hook)
        first = MeteringRuntime(config, clock=clock)
        await first.start()
        await eventually(lambda: outbox(db)["attempts"] == 1)
        await first.stop()
        clock.advance(5)  # the first backoff is at most 5 s
        second = MeteringRuntime(config, clock=clock)
        await second.start()
        await receiver.wait_for(2)  # the retry is under way, the receiver holds it
        await second.stop()  # killed mid-attempt: its claim stays until the lease ends
        assert outbox(db)["claimed_by"] is not None and outbox(db)["attempts"] == 1
        third = MeteringRuntime(config, clock=clock)
        assert third.webhooks is not None
        await third.start()
        try:
            await asyncio.sleep(0.1)  # a few polls: the lease still holds
            assert len(receiver.seen) == 2
            clock.advance(third.webhooks.lease.total_seconds())
            await eventually(lambda: delivered(db) == [notice.id])
        finally:
            await third.stop()
        # The abandoned attempt's request is never answered (the server shuts it down).
    assert receiver.accepted == [notice.id] and len(receiver.seen) == 3
    assert outbox(db)["attempts"] == 2  # the abandoned attempt left no record
