"""The fast path (the common call admitted without awaits) against the layered path.

Both decide by the same rule functions; these tests hold them to the same answers,
records, counters and metrics for any mix of calls, and show that no call that must be
refused is admitted by the fast path.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Message

from metering_middleware import ManualClock, MeteringConfig
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger import SqliteStore
from metering_middleware.ledger.memory import MemoryStore
from metering_middleware.middleware import MeteringMiddleware
from metering_middleware.rating import SqliteRatingStore
from metering_middleware.runtime import MeteringRuntime
from metering_middleware.signing import sign_v1_params, sign_v3

from .harness import HOST, FakeUpstream, Reply, error_reply

KEY, SECRET = "LTAIfastpath000000001", "fast-path-secret-0000000000000"
BODY = b"ImageURL=http%3A%2F%2Fx%2Fa.jpg"
KINDS = (
    "v3",
    "v1",
    "burst",
    "bad_signature",
    "unknown_key",
    "replay",
    "stale",
    "chargeable_error",
    "free_error",
    "disable",
    "enable",
    "unsupported_action",
)


class Side:
    """One meter (fast path on or off) over its own store, clock and upstream."""

    def __init__(self, fast: bool) -> None:
        self.fast = fast
        self.clock = ManualClock()
        self.store = MemoryStore()
        self.upstream = FakeUpstream()
        self.runtime = MeteringRuntime(
            MeteringConfig(ledger_url="memory://"), clock=self.clock, store=self.store
        )
        self.app = MeteringMiddleware(self.upstream, runtime=self.runtime, fast_path=fast)

    async def start(self) -> None:
        await self.store.open()
        await CredentialManager(self.store, SecretBox(None), self.clock).add(
            "acme", SECRET, access_key_id=KEY
        )
        await self.runtime.start()

    async def request(self, call: dict[str, Any]) -> tuple[int, dict[bytes, bytes], bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": call["method"],
            "scheme": "http",
            "path": "/",
            "raw_path": b"/",
            "query_string": call.get("query", b""),
            "headers": list(call["headers"]),
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 80),
        }
        sent = False
        messages: list[Message] = []

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": call.get("body", b""), "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            messages.append(message)

        await self.app(scope, receive, send)
        # Both sides share one event loop: what this call started behind it (a reload)
        # finishes now, before the other side's call, which would otherwise let it run.
        for _ in range(5):
            await asyncio.sleep(0)
        headers = dict(messages[0].get("headers", []))
        headers.pop(b"x-acs-request-id", None)  # a fresh id per answer
        body = b"".join(m.get("body", b"") for m in messages[1:])
        # The meter's own RequestId in a refusal's body is fresh too.
        body = re.sub(rb'"RequestId": ?"[0-9A-Z]{26}"', b'"RequestId":"-"', body)
        body = re.sub(rb"<RequestId>[0-9A-Z]{26}</RequestId>", b"<RequestId>-</RequestId>", body)
        return messages[0]["status"], headers, body

    async def set_enabled(self, enabled: bool) -> None:
        manager = CredentialManager(self.store, SecretBox(None), self.clock)
        await (manager.enable(KEY) if enabled else manager.disable(KEY))
        # Past the refresh interval: the next call answers from the old snapshot and
        # starts the reload; the calls after it see the change.
        self.clock.advance(1.5)

    async def state(self) -> tuple[Any, ...]:
        await self.runtime.credentials.join()
        await self.runtime.writer.flush_now()
        records = [
            (r.request_id, r.account, r.access_key_id, r.category, r.action, r.version,
             r.item, r.occurred_at, r.status, r.error_code)
            for r in self.store._calls.values()
        ]  # fmt: skip
        return (
            records,
            dict(self.store._counts),
            dict(self.runtime.metrics._calls),
            len(self.upstream.seen),
            sorted(self.store._nonces),
        )


def _v3(clock: ManualClock, nonce: str, *, secret: str = SECRET, key: str = KEY,
        action: str = "DetectFace", skew: float = 0.0) -> dict[str, Any]:  # fmt: skip
    headers = {
        "host": HOST,
        "x-acs-action": action,
        "x-acs-version": "2019-12-30",
        "content-type": "application/x-www-form-urlencoded",
        "accept": "application/json",
    }
    when = clock.now() + timedelta(seconds=skew)
    headers.update(sign_v3("POST", "/", [], headers, BODY, key, secret, now=when, nonce=nonce))
    return {
        "method": "POST",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "body": BODY,
    }


def _v1(clock: ManualClock, nonce: str) -> dict[str, Any]:
    params = [("Action", "DetectFace"), ("Version", "2019-12-30"),
              ("ImageURL", "http://x/a.jpg"), ("Format", "JSON")]  # fmt: skip
    signed = sign_v1_params("GET", params, KEY, SECRET, now=clock.now(), nonce=nonce)
    return {
        "method": "GET",
        "query": urlencode(signed).encode(),
        "headers": [(b"host", HOST.encode())],
    }


async def _play(kinds: list[str]) -> tuple[Side, Side]:
    fast, layered = Side(True), Side(False)
    sides = (fast, layered)
    for side in sides:
        await side.start()
    previous: dict[str, Any] | None = None
    try:
        for n, kind in enumerate(kinds):
            if kind == "disable" or kind == "enable":
                for side in sides:
                    await side.set_enabled(kind == "enable")
                continue
            if kind != "burst":
                for side in sides:
                    side.clock.advance(1.0)
            clock = fast.clock  # both clocks read the same
            nonce = f"n-{n:04d}"
            reply = Reply()
            if kind == "v1":
                call = _v1(clock, nonce)
            elif kind == "bad_signature":
                call = _v3(clock, nonce, secret="not-the-secret")
            elif kind == "unknown_key":
                call = _v3(clock, nonce, key="LTAInobodyknowsthis01")
            elif kind == "replay" and previous is not None:
                call = previous
            elif kind == "stale":
                call = _v3(clock, nonce, skew=-3600)
            elif kind == "unsupported_action":
                call = _v3(clock, nonce, action="NoSuchAction")
            else:
                call = _v3(clock, nonce)
            if kind == "chargeable_error":
                reply = error_reply("InvalidImage.Download", 400)
            elif kind == "free_error":
                reply = error_reply("InvalidParameter", 400)
            answers = []
            for side in sides:
                side.upstream.reply = reply
                answers.append(await side.request(call))
            assert answers[0] == answers[1], (kind, answers)
            previous = call
        assert await fast.state() == await layered.state()
        return fast, layered
    finally:
        for side in sides:
            await side.runtime.stop()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(KINDS), min_size=1, max_size=25))
def test_fast_and_layered_paths_give_the_same_answers_records_and_counters(
    kinds: list[str],
) -> None:
    _, layered = asyncio.run(_play(kinds))
    assert layered.app.fast_admitted == 0


def test_a_mixed_stream_takes_the_fast_path_only_for_calls_that_are_admitted() -> None:
    kinds = ["v3", "v1", "bad_signature", "unknown_key", "replay", "stale", "burst",
             "burst", "burst", "disable", "v3", "v3", "enable", "v3", "v3",
             "unsupported_action"]  # fmt: skip
    fast, layered = asyncio.run(_play(kinds))
    records = len(fast.store._calls)
    # Admitted: v3, v1, the burst's first call (DetectFace allows 2 QPS), the disabled
    # key's first call (answered from the snapshot that still had it enabled, as the
    # layered path answers it: it starts the reload) and the calls after re-enabling.
    # Each of them, and no other, went through the fast path.
    assert fast.app.fast_admitted == records == len(layered.store._calls)
    assert records >= 4 and layered.app.fast_admitted == 0


async def _guarded(tmp_path: Path, balance: str, hold: bool = False) -> MeteringRuntime:
    tmp_path.mkdir()
    db = tmp_path / "ledger.sqlite"
    clock = ManualClock()
    store = SqliteStore(db, clock=clock)
    await store.open()
    await CredentialManager(store, SecretBox(None), clock).add("acme", SECRET, access_key_id=KEY)
    from metering_middleware.rating import BalanceEntry, EntryKind

    async with SqliteRatingStore(db) as rating:
        now = clock.now()
        entry = BalanceEntry("topup:t", "acme", EntryKind.TOPUP, Decimal(balance), now, now)
        await rating.post_entries([entry], now)
        if hold:
            await rating.set_hold("acme", now, "test", hold=True)
    config = MeteringConfig(ledger_url=f"sqlite:///{db}", enforce_balance=True)
    runtime = MeteringRuntime(config, clock=clock, store=store)
    await runtime.start()
    return runtime


async def test_standing_and_spend_guard_refuse_on_both_paths(tmp_path: Path) -> None:
    for name, balance, hold, code in (
        ("broke", "0.00", False, "Account.SpendCapExceeded"),
        ("held", "100.00", True, "Account.Arrearage"),
    ):
        runtime = await _guarded(tmp_path / name, balance, hold)
        upstream = FakeUpstream()
        fast = MeteringMiddleware(upstream, runtime=runtime)
        layered = MeteringMiddleware(upstream, runtime=runtime, fast_path=False)
        side = Side(True)  # for its request(): the app is swapped in below
        try:
            answers = []
            for n, app in enumerate((fast, layered)):
                runtime.clock.advance(1.0)  # type: ignore[attr-defined]
                side.app = app
                answers.append(await side.request(_v3(runtime.clock, f"{name}-{n}")))  # type: ignore[arg-type]
            assert answers[0] == answers[1]
            status, _, body = answers[0]
            assert status == 403 and code.encode() in body
            assert fast.fast_admitted == 0 and upstream.seen == []
            assert runtime.guard is not None and runtime.guard.estimate("acme") == 0
        finally:
            await runtime.stop()


async def test_a_trusted_hop_header_is_decided_step_by_step() -> None:
    side = Side(True)
    await side.start()
    try:
        side.clock.advance(1.0)
        call = _v3(side.clock, "hop-1")
        call["headers"].append((b"x-metering-trusted-hop", b"wrong"))
        status, _, _ = await side.request(call)
        assert status == 200 and side.app.fast_admitted == 0  # verified the layered way
        side.clock.advance(1.0)
        assert (await side.request(_v3(side.clock, "plain-1")))[0] == 200
        assert side.app.fast_admitted == 1
    finally:
        await side.runtime.stop()
