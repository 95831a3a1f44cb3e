"""One log line per refused call, store failure and recovery, settlement pass, notice.

Real calls through the real middleware (tests/middleware/harness.py), real
SQLite failures, real settlement; the lines are read as a handler wrote them.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from metering_middleware.catalog import default_catalog
from metering_middleware.clock import ManualClock
from metering_middleware.ledger import Journal, LedgerWriter, SqliteStore
from metering_middleware.logs import FIELDS, LOGGER
from metering_middleware.settler import BackgroundSettler
from tests.ledger.support import T0, make_records
from tests.middleware.harness import make_env
from tests.rating.helpers import calls_between, utc
from tests.rating.settle_support import Harness

from .conftest import JsonLines


async def test_a_refused_call_is_one_json_line_naming_who_what_and_why(
    json_lines: JsonLines,
) -> None:
    env = await make_env()
    try:
        wrong = await env.request(**env.v3(secret="x" * 30))
        unknown = await env.request(**env.v3(access_key_id="LTAInobodyhasthiskey"))
    finally:
        await env.runtime.stop()
    bad_sig, no_key = json_lines.events("call.refused")
    assert list(bad_sig)[: len(FIELDS)] == list(FIELDS)
    assert bad_sig["level"] == "INFO" and bad_sig["logger"] == "metering_middleware.calls"
    assert (bad_sig["account"], bad_sig["access_key_id"]) == ("acme", env.access_key_id)
    assert (bad_sig["category"], bad_sig["action"]) == ("facebody", "DetectFace")
    assert (bad_sig["outcome"], bad_sig["status"]) == ("refused", wrong.status)
    assert bad_sig["code"] == wrong.json()["Code"] == "SignatureDoesNotMatch"
    assert bad_sig["reason"] == "bad_signature"
    # The RequestId the client holds finds the line.
    assert bad_sig["request_id"] == wrong.json()["RequestId"]
    assert bad_sig["record_id"] is None  # refused: no record
    # An AccessKeyId nobody has: no account, the id as the caller sent it.
    assert (no_key["account"], no_key["access_key_id"]) == (None, "LTAInobodyhasthiskey")
    assert no_key["code"] == unknown.json()["Code"] == "InvalidAccessKeyId.NotFound"
    assert env.secret not in json_lines.text  # never a secret, nor a signature
    assert "Signature=" not in json_lines.text


async def test_a_refusal_before_the_caller_is_known_has_null_fields(
    json_lines: JsonLines,
) -> None:
    env = await make_env(max_body_bytes=16)
    try:
        answer = await env.request(**env.v3(body=b"x" * 64))
    finally:
        await env.runtime.stop()
    [line] = json_lines.events("call.refused")
    assert answer.status == 413 and line["status"] == 413
    assert (line["account"], line["access_key_id"], line["action"]) == (None, None, None)


async def test_a_caller_cannot_forge_a_line(json_lines: JsonLines) -> None:
    env = await make_env()
    line_ends = ["\n", "\r", "\u2028", "\x85"]  # the last two: what splitlines also splits on
    try:
        for end in line_ends:
            forged = f'LTAIx{end}{{"event":"call.refused","account":"victim"}}'
            await env.request(**env.v3(access_key_id=forged))
    finally:
        await env.runtime.stop()
    lines = json_lines.all()  # every line still parses: each line end stayed inside a string
    refused = [line for line in lines if line["event"] == "call.refused"]
    assert len(refused) == len(line_ends)
    assert all(line["account"] is None for line in refused)


async def test_text_lines_escape_the_callers_text(caplog: pytest.LogCaptureFixture) -> None:
    env = await make_env()
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            await env.request(**env.v3(access_key_id="LTAIx\nINFO forged line"))
    finally:
        await env.runtime.stop()
    [record] = [r for r in caplog.records if r.name == "metering_middleware.calls"]
    assert "\n" not in record.getMessage()
    assert record.metering["event"] == "call.refused"  # type: ignore[attr-defined]


async def test_an_ordinary_charged_call_logs_nothing(json_lines: JsonLines) -> None:
    env = await make_env()
    before = len(json_lines.all())
    try:
        for _ in range(3):
            answer = await env.request(**env.v3())
            assert answer.status == 200
        # Strict: each answer waited for its commit. At DEBUG: not one line for three calls.
        assert len(json_lines.all()) == before
    finally:
        await env.runtime.stop()


async def test_log_format_json_writes_json_on_stderr_while_the_runtime_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger(LOGGER)
    handlers, propagate = list(logger.handlers), logger.propagate
    env = await make_env(log_format="json")
    try:
        assert logger.propagate is False  # a root text handler does not print it again
        await env.request(**env.v3(secret="x" * 30))
    finally:
        await env.runtime.stop()
    assert (logger.handlers, logger.propagate) == (handlers, propagate)  # put back
    events = [line for line in _parsed(capsys.readouterr().err) if line["event"]]
    assert [e["event"] for e in events] == ["call.refused"]


def _parsed(text: str) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in text.splitlines()]


def test_log_format_is_checked() -> None:
    from metering_middleware import ConfigError, MeteringConfig

    with pytest.raises(
        ConfigError, match="argument log_format: must be one of text, json, not 'xml'"
    ):
        MeteringConfig(log_format="xml")  # type: ignore[arg-type]
    assert MeteringConfig().with_env({"METERING_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(
        ConfigError, match="METERING_LOG_FORMAT: must be one of text, json, not 'yaml'"
    ):
        MeteringConfig().with_env({"METERING_LOG_FORMAT": "yaml"})


def test_the_gateway_reads_log_format_from_its_file(tmp_path: Path) -> None:
    from example_gateway.config import load_config
    from metering_middleware import ConfigError

    path = tmp_path / "gateway.toml"
    path.write_text('[metering]\nlog_format = "json"\n', "utf-8")
    assert load_config(path, environ={})[1].log_format == "json"
    path.write_text("[metering]\nlog_format = 1\n", "utf-8")
    with pytest.raises(ConfigError, match="log_format"):
        load_config(path, environ={})


async def test_a_store_failure_and_its_recovery_are_lines(
    tmp_path: Path, json_lines: JsonLines
) -> None:
    clock = ManualClock(T0)
    async with SqliteStore(tmp_path / "l.db", busy_timeout_ms=20) as store:
        writer = LedgerWriter(store, journal=Journal(tmp_path / "j.jsonl"), clock=clock)
        async with writer:
            blocker = sqlite3.connect(store.path, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                await asyncio.gather(*{writer.submit(r) for r in make_records(3)})
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            assert await writer.retry_now()
    [failed] = json_lines.events("ledger.store_failed")
    assert failed["level"] == "WARNING" and failed["outcome"] == "journaling"
    assert "locked" in failed["reason"]
    [replayed] = json_lines.events("ledger.journal_replayed")
    assert replayed["records"] == 3
    [recovered] = json_lines.events("ledger.store_recovered")
    assert recovered["outcome"] == "up"
    order = [line["event"] for line in json_lines.all() if line["event"]]
    assert order.index("ledger.store_failed") < order.index("ledger.store_recovered")


async def test_a_settlement_pass_is_one_line(tmp_path: Path, json_lines: JsonLines) -> None:
    catalog = default_catalog()
    start = utc(2026, 3, 2, 6)
    h = Harness(tmp_path / "l.db", catalog, start)
    async with h:
        await h.arrive(calls_between(catalog, 4, start, timedelta(seconds=1)))
    h.clock.advance(3600)
    settler = BackgroundSettler(str(h.path), catalog, h.clock, interval=3600)
    report = await settler.settle_now()
    assert report is not None
    [line] = json_lines.events("settlement.run")
    assert line["level"] == "INFO" and line["outcome"] == "settled"
    assert (line["records"], line["accounts"]) == (report.records, report.accounts) == (4, 1)
    assert line["horizon"] == report.horizon.isoformat()  # type: ignore[union-attr]


async def test_a_failed_settlement_pass_is_an_error_line(
    tmp_path: Path, json_lines: JsonLines
) -> None:
    settler = BackgroundSettler(
        str(tmp_path / "missing.db"), default_catalog(), ManualClock(T0), interval=3600
    )
    assert await settler.settle_now() is None
    [line] = json_lines.events("settlement.run")
    assert (line["level"], line["outcome"]) == ("ERROR", "failed")
    assert "Traceback" in line["exception"]


async def test_a_recorded_notice_is_one_line(tmp_path: Path, json_lines: JsonLines) -> None:
    from metering_middleware.notices.model import Notice, NoticeKind
    from metering_middleware.notices.records import record_notice

    async with SqliteStore(tmp_path / "l.db"):  # a real ledger: its tables, migrated
        pass
    notice = Notice(NoticeKind.BALANCE_LOW, "acme", "2026-03", T0, {"balance": "1.00"})
    with sqlite3.connect(tmp_path / "l.db") as conn:
        assert record_notice(conn, notice, T0)
        assert not record_notice(conn, notice, T0)  # once: a second recording is no line
    [line] = json_lines.events("notice.recorded")
    assert (line["account"], line["kind"], line["notice_id"]) == ("acme", "balance.low", notice.id)
