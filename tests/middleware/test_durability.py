"""Strict mode: no client holds a complete chargeable response not in the ledger."""

from __future__ import annotations

from typing import Any

import pytest

from metering_middleware.ledger import StoreError
from metering_middleware.ledger.writer import LedgerUnavailable

from .harness import Env, Reply, error_reply

BODY = (b'{"RequestId":"r-1",', b'"Data":{"Faces":', b"[1,2,3]}", b"}")


class LedgerWatch:
    """The client's view: at each body message, is the record already committed?"""

    def __init__(self, env: Env, total: int | None) -> None:
        self.env = env
        self.total = total
        self.received = 0
        self.at_completion: list[bool] = []

    async def __call__(self, message: dict[str, object]) -> None:
        if message["type"] != "http.response.body":
            return
        body = message.get("body", b"")
        assert isinstance(body, bytes)
        self.received += len(body)
        complete = (self.total is not None and self.received == self.total and body) or not (
            message.get("more_body", False)
        )
        if complete:
            self.at_completion.append(bool(await self.env.store.calls()))


@pytest.mark.parametrize("final_empty", [False, True])
async def test_strict_content_length_response(env: Env, final_empty: bool) -> None:
    env.upstream.reply = Reply(body=BODY, final_empty=final_empty)
    watch = LedgerWatch(env, sum(map(len, BODY)))
    response = await env.request(**env.v3(), on_message=watch)
    assert response.body == b"".join(BODY)
    assert watch.at_completion and all(watch.at_completion)
    assert len(await env.store.calls()) == 1


async def test_strict_chunked_response_ending_with_an_empty_message(env: Env) -> None:
    env.upstream.reply = Reply(body=BODY, content_length=False, final_empty=True)
    watch = LedgerWatch(env, None)
    response = await env.request(**env.v3(), on_message=watch)
    assert response.body == b"".join(BODY)
    assert watch.at_completion == [True]


async def test_strict_chargeable_error_is_committed_before_its_last_byte(env: Env) -> None:
    env.upstream.reply = error_reply("InvalidImage.NotFoundFace", 404)
    total = sum(map(len, env.upstream.reply.body))
    watch = LedgerWatch(env, total)
    await env.request(**env.v3(), on_message=watch)
    assert watch.at_completion and all(watch.at_completion)


async def test_batched_mode_releases_at_once_and_commits_on_flush(batched_env: Env) -> None:
    env = batched_env
    env.upstream.reply = Reply(body=BODY)
    watch = LedgerWatch(env, sum(map(len, BODY)))
    await env.request(**env.v3(), on_message=watch)
    # The control for the strict tests above: here the watch does see a missing record.
    assert watch.at_completion and not any(watch.at_completion)
    await env.runtime.writer.flush_now()
    assert len(await env.store.calls()) == 1


async def test_batched_mode_flushes_everything_on_shutdown(batched_env: Env) -> None:
    env = batched_env
    for _ in range(5):
        await env.request(**env.v3())
    assert await env.store.calls() == []
    await env.runtime.stop()
    assert len(await env.store.calls()) == 5


async def test_no_store_and_no_journal_aborts_and_refuses_then_recovers(env: Env) -> None:
    # memory:// has no journal: a failing store leaves only memory.
    env.store.fail_with = StoreError("disk full")
    env.upstream.reply = Reply(body=BODY)
    received: list[bytes] = []

    async def client(message: dict[str, object]) -> None:
        body = message.get("body", b"")
        assert isinstance(body, bytes)
        received.append(body)

    with pytest.raises(LedgerUnavailable):
        await env.request(**env.v3(), on_message=client)
    # The client never got the last byte of the response it was not charged durably for.
    assert b"".join(received) == b"".join(BODY)[:-1]
    assert not env.runtime.writer.accepting
    refused = await env.request(**env.v3())
    assert refused.status == 503 and refused.json()["Code"] == "ServiceUnavailable"

    env.store.fail_with = None
    assert await env.runtime.writer.retry_now()
    assert env.runtime.writer.accepting
    [record] = await env.store.calls()  # kept in memory, committed once, not lost
    assert record.request_id == "r-1"
    assert (await env.request(**env.v3())).status == 200


class HeadWatch:
    """The client's view of an answer with no body: is the record committed at the head?"""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.at_head: list[bool] = []
        self.body_before_head = False

    async def __call__(self, message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            self.at_head.append(bool(await self.env.store.calls()))
        elif message["type"] == "http.response.body" and not self.at_head:
            self.body_before_head = True


@pytest.mark.parametrize("request_id_header", [True, False])
@pytest.mark.parametrize("final_empty", [False, True])
async def test_strict_empty_200_is_committed_before_its_head(
    env: Env, request_id_header: bool, final_empty: bool
) -> None:
    headers = [(b"content-type", b"application/json")]
    if request_id_header:
        headers.append((b"x-acs-request-id", b"up-empty"))
    env.upstream.reply = Reply(body=(b"",), headers=headers, final_empty=final_empty)
    watch = HeadWatch(env)
    response = await env.request(**env.v3(), on_message=watch)
    assert response.status == 200 and response.headers[b"content-length"] == b"0"
    assert watch.at_head == [True] and not watch.body_before_head
    assert len(await env.store.calls()) == 1


async def test_strict_head_answer_is_committed_before_its_head(env: Env) -> None:
    env.upstream.reply = Reply(body=BODY, headers=[(b"x-acs-request-id", b"up-head")])
    watch = HeadWatch(env)
    response = await env.request(**env.v3(method="HEAD"), on_message=watch)
    assert response.status == 200
    assert watch.at_head == [True] and not watch.body_before_head
    [record] = await env.store.calls()
    assert record.request_id == "up-head"


async def test_strict_head_only_answer_from_an_app_that_sends_no_body(env: Env) -> None:
    """An app that ends after ``http.response.start``: the head is released after the commit."""

    async def head_only(scope: object, receive: object, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"0"), (b"x-acs-request-id", b"up-0")],
            }
        )

    env.app.app = head_only
    watch = HeadWatch(env)
    response = await env.request(**env.v3(), on_message=watch)
    assert response.status == 200
    assert watch.at_head == [True]
    assert response.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_batched_empty_200_is_not_held(batched_env: Env) -> None:
    """The control: batched mode releases the head at once, before any commit."""
    env = batched_env
    env.upstream.reply = Reply(body=(b"",), headers=[(b"x-acs-request-id", b"up-empty")])
    watch = HeadWatch(env)
    await env.request(**env.v3(), on_message=watch)
    assert watch.at_head == [False]
