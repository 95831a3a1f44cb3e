"""Which calls end up in the ledger, and how every call is counted."""

from __future__ import annotations

from collections import Counter

import pytest

from metering_middleware.ledger import Outcome

from .harness import Env, Reply, error_reply


async def counts(env: Env) -> Counter[tuple[str, str, str]]:
    await env.runtime.writer.flush_now()
    out: Counter[tuple[str, str, str]] = Counter()
    for c in await env.store.outcome_counts():
        out[(c.account, c.outcome.value, c.detail)] += c.count
    return out


async def test_a_200_is_charged_once_with_its_identity(env: Env) -> None:
    env.upstream.reply.headers.append((b"x-acs-request-id", b"hdr-id"))
    response = await env.request(**env.v3())
    assert response.status == 200
    assert response.json()["Data"] == {"FaceCount": 1}
    [record] = await env.store.calls()
    assert (record.account, record.access_key_id) == ("acme", env.access_key_id)
    assert (record.category, record.action, record.version) == (
        "facebody",
        "DetectFace",
        "2019-12-30",
    )
    assert record.item == "facebody.DetectFace"
    assert record.status == 200 and record.error_code is None
    assert record.request_id == "hdr-id"
    assert record.occurred_at == env.clock.now()
    assert (await counts(env))[("acme", "charged", "")] == 1


async def test_request_id_is_sniffed_from_the_body_without_header(env: Env) -> None:
    await env.request(**env.v1())
    [record] = await env.store.calls()
    assert record.request_id == "up-1"


@pytest.mark.parametrize(
    "reply",
    [
        error_reply("InvalidImage.NotFoundFace", 404),
        error_reply("InvalidImage.NotFoundFace", 400),
        error_reply("InvalidImage.NotFoundFace", 404, xml=True),
        error_reply("InvalidImage.NotFoundFace", 404, gz=True),
        error_reply("InvalidImage.NotFoundFace", 404, xml=True, gz=True),
    ],
)
async def test_not_found_face_is_charged_whatever_the_status(env: Env, reply: Reply) -> None:
    env.upstream.reply = reply
    response = await env.request(**env.v3())
    assert response.status == reply.status
    assert response.body == b"".join(reply.body)  # forwarded untouched, still encoded
    [record] = await env.store.calls()
    assert record.error_code == "InvalidImage.NotFoundFace"
    assert record.status == reply.status
    assert record.request_id == "up-err"


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (error_reply("InvalidParameter", 400), "InvalidParameter"),
        (error_reply("Throttling.User", 400, xml=True), "Throttling.User"),
        (error_reply("InternalError", 500, gz=True), "InternalError"),
        (Reply(status=502, body=(b"\x00\xffnot json",)), "unreadable"),
        (Reply(status=201, body=(b'{"RequestId":"x"}',)), "unreadable"),
    ],
)
async def test_other_outcomes_are_free_and_counted(env: Env, reply: Reply, detail: str) -> None:
    env.upstream.reply = reply
    response = await env.request(**env.v3())
    assert response.status == reply.status
    assert await env.store.calls() == []
    assert (await counts(env))[("acme", "free", detail)] == 1


async def test_chargeable_codes_are_configuration() -> None:
    from .harness import make_env

    env = await make_env(chargeable_codes=frozenset({"Custom.Charged"}))
    try:
        env.upstream.reply = error_reply("InvalidImage.NotFoundFace", 404)
        await env.request(**env.v3())
        env.upstream.reply = error_reply("Custom.Charged", 400)
        await env.request(**env.v3())
        [record] = await env.store.calls()
        assert record.error_code == "Custom.Charged"
    finally:
        await env.runtime.stop()


async def test_free_actions_pass_without_a_record(env: Env) -> None:
    response = await env.request(**env.v3("GetAsyncJobResult", host="ocr.cn-shanghai.aliyuncs.com"))
    assert response.status == 200
    assert await env.store.calls() == []
    assert (await counts(env))[("acme", "free", "free_action")] == 1


async def test_exception_before_start_is_free_and_propagates(env: Env) -> None:
    env.upstream.reply = Reply(raise_before_start=True)
    with pytest.raises(RuntimeError, match="upstream exploded"):
        await env.request(**env.v3())
    assert await env.store.calls() == []
    assert (await counts(env))[("acme", "free", "app_error")] == 1


async def test_body_breaking_off_after_200_is_still_charged(env: Env) -> None:
    env.upstream.reply = Reply(body=(b'{"RequestId":"broke",', b'"Data":{}}'), raise_after=1)
    with pytest.raises(RuntimeError, match="body broke off"):
        await env.request(**env.v3())
    await env.runtime.writer.flush_now()
    [record] = await env.store.calls()
    assert record.request_id == "broke"


async def test_client_leaving_mid_body_does_not_undo_the_charge(env: Env) -> None:
    env.upstream.reply = Reply(body=(b'{"RequestId":"gone",', b'"Data":{}', b"}"))

    async def client_leaves(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            raise OSError("client went away")

    with pytest.raises(OSError, match="went away"):
        await env.request(**env.v3(), on_message=client_leaves)
    await env.runtime.writer.flush_now()
    [record] = await env.store.calls()
    assert record.status == 200


async def test_outcome_enum_values_are_stable() -> None:
    assert [o.value for o in Outcome] == ["charged", "free", "refused"]


@pytest.mark.pure_python
async def test_a_parser_failure_is_free_but_counted_and_logged_apart(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a parser (not garbage input) must show up as ``parse_error``, not vanish."""
    from metering_middleware import outcome

    def broken(data: bytes) -> str | None:
        raise IndexError("a parser bug")

    monkeypatch.setattr(outcome, "_json_code", broken)
    env.upstream.reply = error_reply("InvalidImage.NotFoundFace", 404)
    with caplog.at_level("WARNING", logger="metering_middleware"):
        response = await env.request(**env.v3())
    assert response.status == 404  # the answer itself still reaches the caller whole
    assert response.json()["Code"] == "InvalidImage.NotFoundFace"
    assert await env.store.calls() == []
    assert (await counts(env))[("acme", "free", "parse_error")] == 1
    snapshot = env.runtime.metrics.snapshot()
    assert snapshot[("facebody", "DetectFace", "free", "parse_error")] == 1
    assert ("facebody", "DetectFace", "free", "unreadable") not in snapshot
    logged = [r.getMessage() for r in caplog.records]
    assert any("parse_error" in line and "IndexError" in line for line in logged)


async def test_garbage_is_still_unreadable_not_a_parse_error(env: Env) -> None:
    env.upstream.reply = Reply(status=502, body=(b"\x00\xffnot a body",))
    await env.request(**env.v3())
    assert (await counts(env))[("acme", "free", "unreadable")] == 1
