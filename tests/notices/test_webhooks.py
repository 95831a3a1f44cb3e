"""Webhook delivery from the outbox to a real receiver: signed, retried with jittered
backoff, claimed under a lease, kept across restarts, given up visibly."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from metering_middleware import ManualClock
from metering_middleware.cli import main
from metering_middleware.ledger.migrate import connect_existing, migrate_file
from metering_middleware.notices import (
    Notice,
    NoticeKind,
    WebhookVerificationError,
    record_notice,
    sign,
    verify,
)
from metering_middleware.notices.delivery import Backoff, WebhookSender, notice_payload
from tests.rating.helpers import utc
from tests.support.servers import free_port, run_server

from .receiver import Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
START = utc(2026, 3, 2, 6)


class Scripted:
    """A random source that answers what it is told (then its last answer)."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


def ledger_with_notice(path: Path, at: datetime = START) -> Notice:
    migrate_file(path)
    notice = Notice(
        NoticeKind.BALANCE_LOW, "acct", "2026-03-02", at, {"balance": "9.5", "threshold": "10"}
    )
    conn = connect_existing(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        assert record_notice(conn, notice, at)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return notice


def outbox(path: Path) -> dict[str, object]:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT attempts, next_at, last_error, delivered_at, failed_at, claimed_by"
            " FROM notice_outbox"
        ).fetchone()
    finally:
        conn.close()
    keys = ("attempts", "next_at", "last_error", "delivered_at", "failed_at", "claimed_by")
    return dict(zip(keys, row, strict=True))


def test_signatures_match_the_standard_webhooks_test_vector() -> None:
    # The specification's published vector: any Standard Webhooks library verifies ours.
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    headers = {
        "Webhook-Id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "Webhook-Timestamp": "1614265330",
        "Webhook-Signature": f"v1,bm9wZQ== {expected}",  # any one of several matches
    }
    assert verify(SECRET, headers, body, now=1614265330 + 10) == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    for bad_body, secret, now, why in (
        (b'{"test": 2432232315}', SECRET, 1614265330, "no matching"),
        (body, "another-secret-of-16+", 1614265330, "no matching"),
        (body, SECRET, 1614265330 + 301, "tolerance"),  # a replay, five minutes later
    ):
        with pytest.raises(WebhookVerificationError, match=why):
            verify(secret, headers, bad_body, now=now)
    with pytest.raises(WebhookVerificationError, match="missing header webhook-signature"):
        verify(SECRET, {"webhook-id": "x", "webhook-timestamp": "1"}, body, now=1)


def test_backoff_is_exponential_with_full_jitter() -> None:
    backoff = Backoff(base=5.0, cap=60.0)
    assert [backoff.ceiling(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    rng = Scripted(0.0, 0.5, 0.999, 0.25)
    assert [backoff.delay(n, rng) for n in (1, 2, 3, 4)] == [0.0, 5.0, 0.999 * 20, 10.0]


async def test_a_receiver_failing_twice_gets_the_notice_once_signed(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    notice = ledger_with_notice(path)
    clock = ManualClock(START)
    receiver = Receiver(SECRET, script=[500, 500], now=clock.time)
    async with run_server(receiver) as base:
        sender = WebhookSender(
            path, base + "/hook?token=t0ps3cr3t", SECRET, clock, rng=Scripted(0.5),
            backoff=Backoff(base=4.0, cap=100.0),
        )  # fmt: skip
        await sender.start(background=False)
        try:
            assert await sender.deliver_due() == 0  # 500
            row = outbox(path)
            assert row["attempts"] == 1 and row["last_error"] == "HTTP 500"
            assert row["claimed_by"] is None and row["delivered_at"] is None
            assert row["next_at"] == "2026-03-02T06:00:02.000000Z"  # 0.5 * 4 s later
            assert await sender.deliver_due() == 0 and len(receiver.seen) == 1  # not due
            clock.advance(2)
            assert await sender.deliver_due() == 0  # 500 again; next in 0.5 * 8 s
            assert outbox(path)["next_at"] == "2026-03-02T06:00:06.000000Z"
            clock.advance(3.9)
            assert await sender.deliver_due() == 0 and len(receiver.seen) == 2
            clock.advance(0.1)
            assert await sender.deliver_due() == 1
            clock.advance(3600)
            assert await sender.deliver_due() == 0  # delivered: never posted again
        finally:
            await sender.stop()
    assert len(receiver.seen) == 3 and receiver.accepted == [notice.id]
    row = outbox(path)
    assert row["attempts"] == 3 and row["delivered_at"] == "2026-03-02T06:00:06.000000Z"
    for seen in receiver.seen:  # every attempt: same event id, same body, a valid signature
        assert seen.headers["webhook-id"] == notice.id
        assert seen.headers["content-type"] == "application/json"
        assert seen.body == notice_payload(notice)
        stamp = int(seen.headers["webhook-timestamp"])
        assert verify(SECRET, seen.headers, seen.body, now=stamp) == notice.id
    assert json.loads(receiver.seen[0].body) == {
        "id": "balance.low:acct:2026-03-02",
        "type": "balance.low",
        "account": "acct",
        "subject": "2026-03-02",
        "at": "2026-03-02T06:00:00+00:00",
        "data": {"balance": "9.5", "threshold": "10"},
    }


async def test_after_max_attempts_it_stays_failed_and_visible(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "l.db"
    notice = ledger_with_notice(path)
    clock = ManualClock(START)
    receiver = Receiver(SECRET, then=503, now=clock.time)
    async with run_server(receiver) as base:
        sender = WebhookSender(path, base, SECRET, clock, max_attempts=3, rng=Scripted(0.99))
        await sender.start(background=False)
        try:
            for _ in range(5):
                await sender.deliver_due()
                clock.advance(7200)
        finally:
            await sender.stop()
    assert len(receiver.seen) == 3 and receiver.accepted == []
    row = outbox(path)
    assert row["attempts"] == 3 and row["failed_at"] is not None and row["delivered_at"] is None
    db = f"sqlite:///{path}"
    assert await asyncio.to_thread(main, ["--db", db, "--format", "json", "notices"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["delivery"], listed["attempts"]) == (notice.id, "failed", 3)
    assert listed["last_error"] == "HTTP 503" and listed["next_attempt"] is None
    args = ["--db", db, "--format", "json", "notices", "--pending"]
    assert await asyncio.to_thread(main, args) == 0
    assert json.loads(capsys.readouterr().out) == []


async def test_refused_and_timed_out_attempts_are_retried(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger_with_notice(path)
    clock = ManualClock(START)
    down = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens
    sender = WebhookSender(path, down, SECRET, clock, rng=Scripted(0.5))
    await sender.start(background=False)
    try:
        assert await sender.deliver_due() == 0
    finally:
        await sender.stop()
    row = outbox(path)
    assert row["attempts"] == 1 and row["last_error"] == "no answer (ConnectError)"
    receiver = Receiver(SECRET, script=["block"], now=clock.time)
    async with run_server(receiver, graceful_shutdown=1) as base:
        slow = WebhookSender(path, base, SECRET, clock, timeout=0.3, rng=Scripted(0.5))
        await slow.start(background=False)
        try:
            clock.advance(60)
            assert await slow.deliver_due() == 0
            assert outbox(path)["last_error"] == "timeout (ReadTimeout)"
            clock.advance(60)
            assert await slow.deliver_due() == 1  # the receiver answers now
        finally:
            await slow.stop()
            receiver.release.set()
    assert outbox(path)["attempts"] == 3 and outbox(path)["delivered_at"] is not None


async def test_a_claimed_notice_is_not_posted_by_another_sender(tmp_path: Path) -> None:
    """Two gateway processes on one ledger: the lease gives each due notice to one."""
    path = tmp_path / "l.db"
    notice = ledger_with_notice(path)
    clock = ManualClock(START)
    receiver = Receiver(SECRET, script=["block"], now=clock.time)
    async with run_server(receiver, graceful_shutdown=1) as base:
        first = WebhookSender(path, base, SECRET, clock, owner="gw-1")
        second = WebhookSender(path, base, SECRET, clock, owner="gw-2")
        await first.start(background=False)
        await second.start(background=False)
        try:
            under_way = asyncio.create_task(first.deliver_due())
            await receiver.wait_for(1)  # gw-1 holds the claim, the receiver holds the answer
            assert outbox(path)["claimed_by"] == "gw-1"
            assert await second.deliver_due() == 0
            clock.advance(first.lease.total_seconds() - 1)
            assert await second.deliver_due() == 0  # the lease still runs
            receiver.release.set()
            assert await under_way == 1
            clock.advance(3600)
            assert await second.deliver_due() == 0
        finally:
            await first.stop()
            await second.stop()
    assert len(receiver.seen) == 1 and receiver.accepted == [notice.id]


async def test_a_sender_killed_mid_attempt_is_taken_over_after_its_lease(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    notice = ledger_with_notice(path)
    clock = ManualClock(START)
    receiver = Receiver(SECRET, script=["block"], now=clock.time)
    async with run_server(receiver, graceful_shutdown=1) as base:
        dying = WebhookSender(path, base, SECRET, clock, owner="gw-1")
        await dying.start(background=False)
        task = asyncio.create_task(dying.deliver_due())
        await receiver.wait_for(1)
        task.cancel()  # killed while the receiver holds its answer
        await asyncio.gather(task, return_exceptions=True)
        await dying.stop()
        assert outbox(path)["claimed_by"] == "gw-1" and outbox(path)["attempts"] == 0
        after = WebhookSender(path, base, SECRET, clock, owner="gw-2")
        await after.start(background=False)
        try:
            assert await after.deliver_due() == 0  # still gw-1's
            clock.advance(dying.lease.total_seconds())
            assert await after.deliver_due() == 1
        finally:
            await after.stop()
        # The killed attempt's request is never answered (the server shuts it down).
    assert receiver.accepted == [notice.id] and len(receiver.seen) == 2


async def test_the_secret_is_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "l.db"
    ledger_with_notice(path)
    clock = ManualClock(START)
    caplog.set_level(logging.DEBUG)
    receiver = Receiver(SECRET, script=[500], then=500, now=clock.time)
    async with run_server(receiver) as base:
        url = base + "/hook/p4th-s3cr3t?token=t0k3n-s3cr3t"
        sender = WebhookSender(path, url, SECRET, clock, max_attempts=2)
        await sender.start(background=False)
        try:
            await sender.deliver_due()
            clock.advance(3600)
            await sender.deliver_due()
        finally:
            await sender.stop()
    text = caplog.text + repr(sender)
    assert "webhook attempt 1 failed" in text and "gave up" in text
    for secret in (SECRET, SECRET[6:], "t0k3n-s3cr3t", "p4th-s3cr3t"):
        assert secret not in text
