"""The meter's hot-path shortcuts keep their behaviour: one parse reused, one send in strict
mode for a single-message answer, strict group commits that take the whole event-loop pass."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from metering_middleware.catalog import default_catalog
from metering_middleware.clock import ManualClock
from metering_middleware.errors import ApiError
from metering_middleware.identity import IdentityResolver
from metering_middleware.ledger import CallRecord, LedgerWriter, MemoryStore, new_record_id
from metering_middleware.nonces import MemoryNonceStore
from metering_middleware.signing import (
    SignatureVerifier,
    extract_signed_at,
    extract_timestamp,
    parse_v3_authorization,
)

from .harness import Env, Reply

BODY = (b'{"RequestId":"r-1",', b'"Data":{"Faces":', b"[1,2,3]}", b"}")


def _body_messages(messages: list[dict[str, object]]) -> list[tuple[bytes, bool]]:
    out = []
    for m in messages:
        if m["type"] == "http.response.body":
            body, more = m.get("body", b""), m.get("more_body", False)
            assert isinstance(body, bytes) and isinstance(more, bool)
            out.append((body, more))
    return out


async def test_strict_single_final_message_is_sent_once_after_the_commit(env: Env) -> None:
    whole = b"".join(BODY)
    env.upstream.reply = Reply(body=(whole,))
    committed: list[bool] = []

    async def watch(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            committed.append(bool(await env.store.calls()))

    response = await env.request(**env.v3(), on_message=watch)
    assert _body_messages(response.messages) == [(whole, False)]
    assert committed == [True]


async def test_strict_length_completed_before_a_final_empty_message_holds_the_last_byte(
    env: Env,
) -> None:
    whole = b"".join(BODY)
    env.upstream.reply = Reply(body=(whole,), final_empty=True)
    response = await env.request(**env.v3())
    assert _body_messages(response.messages) == [
        (whole[:-1], True),
        (whole[-1:], True),
        (b"", False),
    ]


async def test_strict_writer_commits_the_submissions_of_one_loop_pass_together() -> None:
    store = MemoryStore()
    async with LedgerWriter(store, journal=None) as writer:
        records = [
            CallRecord(
                id=new_record_id(),
                request_id="req-1",
                account="acct-a",
                access_key_id="LTAI-a",
                category="facebody",
                action="DetectFace",
                version="2019-12-30",
                item="DetectFace",
                occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
                status=200,
                error_code=None,
                latency_ms=1.0,
            )
            for _ in range(6)
        ]

        async def later(record_index: int) -> None:
            await writer.submit(records[record_index])

        first = writer.submit(records[0])  # wakes the writer at once...
        # ...but these calls, already runnable in the same pass, join its batch.
        others = [asyncio.create_task(later(i)) for i in range(1, 6)]
        await first
        await asyncio.gather(*others)
        assert store.writes == 1
        assert len(await store.calls()) == 6


def _v3_headers(auth: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"host", b"facebody.cn-shanghai.aliyuncs.com"),
        (b"x-acs-action", b"DetectFace"),
        (b"x-acs-version", b"2019-12-30"),
        (b"authorization", auth.encode()),
    ]


def test_resolver_hands_its_authorization_parse_to_the_verifier() -> None:
    resolver = IdentityResolver(default_catalog())
    auth = "ACS3-HMAC-SHA256 Credential=AK1,SignedHeaders=host;x-acs-date,Signature=abc"
    identity = resolver.resolve("POST", "/", b"", _v3_headers(auth), b"")
    assert identity.access_key_id == "AK1"
    assert identity.signed.authorization == parse_v3_authorization(auth)


@pytest.mark.parametrize(
    "auth",
    [
        # Blanks the lenient reading strips: identified as AK1, left to the verifier.
        "ACS3-HMAC-SHA256 Credential= AK1,SignedHeaders=host,Signature=abc",
        # Not the strict grammar at all (an unknown part).
        "ACS3-HMAC-SHA256 Credential=AK1,Foo=1,SignedHeaders=host,Signature=abc",
    ],
)
async def test_headers_only_the_lenient_reading_accepts_still_fail_verification(
    auth: str,
) -> None:
    resolver = IdentityResolver(default_catalog())
    headers = [
        *_v3_headers(auth),
        (b"x-acs-date", b"2026-01-01T00:00:00Z"),
        (b"x-acs-signature-nonce", b"n-1"),
    ]
    identity = resolver.resolve("POST", "/", b"", headers, b"")
    assert identity.access_key_id == "AK1"
    assert identity.signed.authorization is None
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    verifier = SignatureVerifier(MemoryNonceStore(clock), clock)
    with pytest.raises(ApiError) as caught:
        await verifier.verify(identity.signed, "secret")
    assert caught.value.code == "SignatureDoesNotMatch"


def test_signed_at_agrees_with_extract_timestamp_and_bad_text_fails_every_time() -> None:
    resolver = IdentityResolver(default_catalog())
    auth = "ACS3-HMAC-SHA256 Credential=AK1,SignedHeaders=host,Signature=abc"
    good = [*_v3_headers(auth), (b"x-acs-date", b"2026-01-01T00:00:05Z")]
    call = resolver.resolve("POST", "/", b"", good, b"").signed
    for _ in range(2):  # the second reading comes from the cache
        assert extract_signed_at(call) == extract_timestamp(call).timestamp()
    bad = [*_v3_headers(auth), (b"x-acs-date", b"2026-01-01 00:00:05")]
    bad_call = resolver.resolve("POST", "/", b"", bad, b"").signed
    for _ in range(2):
        with pytest.raises(ApiError):
            extract_signed_at(bad_call)
