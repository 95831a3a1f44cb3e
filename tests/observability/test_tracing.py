"""OpenTelemetry: the meter's attributes on the server span, the commit wait as a child span.

Spans are read from opentelemetry-sdk's ``InMemorySpanExporter`` behind a real
``TracerProvider``: FastAPI's own server span (its native telemetry) around the
meter added with ``add_middleware``, or a server span the test opens itself.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.test.globals_test import reset_trace_globals
from opentelemetry.trace import SpanKind

from metering_middleware import MeteringConfig, MeteringMiddleware, MeteringRuntime, tracing
from tests.e2e.conftest import add_account
from tests.e2e.signed import v3_headers
from tests.middleware.harness import error_reply, make_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """A configured global tracer provider for this test alone (set once per process
    otherwise: opentelemetry-test-utils' reset puts the API's default back)."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    reset_trace_globals()
    trace.set_tracer_provider(provider)
    try:
        yield spans
    finally:
        provider.shutdown()
        reset_trace_globals()


def _server_span(spans: tuple[ReadableSpan, ...]) -> ReadableSpan:
    [server] = [s for s in spans if s.kind is SpanKind.SERVER]
    return server


async def test_fastapi_server_span_carries_the_call(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    key, secret = await add_account(url, "acme")
    app = FastAPI(telemetry={"metrics": False, "logs": False, "operation_spans": False})

    @app.post("/")
    async def detect() -> dict[str, Any]:
        return {"RequestId": "from-app", "Data": {}}

    runtime = MeteringRuntime(MeteringConfig(ledger_url=url, mode="strict"))
    app.add_middleware(MeteringMiddleware, runtime=runtime)
    body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
    async with runtime:
        assert runtime.tracing is not None  # a provider was configured before the start
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            ok = await client.post("/", content=body, headers=v3_headers(key, secret, body))
            assert ok.status_code == 200
            charged = _server_span(exporter.get_finished_spans())
            exporter.clear()
            bad = await client.post("/", content=body, headers=v3_headers(key, "x" * 30, body))
            assert bad.status_code == 400
            refused = _server_span(exporter.get_finished_spans())
    attrs = dict(charged.attributes or {})
    assert attrs[tracing.ACCOUNT] == "acme" and attrs[tracing.ACCESS_KEY_ID] == key
    assert (attrs[tracing.CATEGORY], attrs[tracing.ACTION]) == ("facebody", "DetectFace")
    assert (attrs[tracing.OUTCOME], attrs[tracing.REASON]) == ("charged", "")
    record_id = attrs[tracing.RECORD_ID]
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
        assert conn.execute("SELECT id FROM calls").fetchall() == [(record_id,)]
    attrs = dict(refused.attributes or {})
    assert (attrs[tracing.OUTCOME], attrs[tracing.REASON]) == ("refused", "bad_signature")
    assert tracing.RECORD_ID not in attrs  # a refused call has no record


async def test_strict_commit_wait_is_a_child_span(exporter: InMemorySpanExporter) -> None:
    env = await make_env(mode="strict")
    tracer = trace.get_tracer("test-server")
    try:
        with tracer.start_as_current_span("POST /", kind=SpanKind.SERVER):
            answer = await env.request(**env.v3())
    finally:
        await env.runtime.stop()
    assert answer.status == 200
    spans = exporter.get_finished_spans()
    server = _server_span(spans)
    [commit] = [s for s in spans if s.name == tracing.COMMIT_SPAN]
    assert commit.parent is not None and commit.parent.span_id == server.context.span_id
    record_id = dict(server.attributes or {})[tracing.RECORD_ID]
    assert dict(commit.attributes or {})[tracing.RECORD_ID] == record_id
    [row] = await env.store.calls()
    assert (row.id, row.account) == (record_id, "acme")


async def test_a_free_call_has_its_reason_and_no_record(exporter: InMemorySpanExporter) -> None:
    env = await make_env(mode="strict")
    env.upstream.reply = error_reply("InvalidParameter", 400)
    tracer = trace.get_tracer("test-server")
    try:
        with tracer.start_as_current_span("POST /", kind=SpanKind.SERVER):
            answer = await env.request(**env.v3())
    finally:
        await env.runtime.stop()
    assert answer.status == 400
    spans = exporter.get_finished_spans()
    attrs = dict(_server_span(spans).attributes or {})
    assert (attrs[tracing.OUTCOME], attrs[tracing.REASON]) == ("free", "InvalidParameter")
    assert attrs[tracing.ACCOUNT] == "acme" and tracing.RECORD_ID not in attrs
    assert [s.name for s in spans] == ["POST /"]  # nothing charged: no commit to wait for
    assert await env.store.calls() == []


async def test_batched_mode_waits_for_no_commit(exporter: InMemorySpanExporter) -> None:
    env = await make_env(mode="batched", flush_interval=3600.0)
    tracer = trace.get_tracer("test-server")
    try:
        with tracer.start_as_current_span("POST /", kind=SpanKind.SERVER):
            answer = await env.request(**env.v3())
    finally:
        await env.runtime.stop()
    assert answer.status == 200
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["POST /"]
    assert dict(_server_span(spans).attributes or {})[tracing.OUTCOME] == "charged"


async def test_without_a_configured_provider_nothing_is_traced() -> None:
    reset_trace_globals()  # the API's default proxy provider: nobody configured one
    env = await make_env()
    try:
        assert env.runtime.tracing is None
        assert (await env.request(**env.v3())).status == 200
    finally:
        await env.runtime.stop()


def test_the_meter_never_imports_opentelemetry() -> None:
    """Installed here (FastAPI depends on it), yet a metered call does not import it."""
    script = """
import asyncio, json, sys
from tests.middleware.harness import error_reply, make_env

async def main():
    env = await make_env()
    status = (await env.request(**env.v3())).status
    await env.runtime.stop()
    return status, env.runtime.tracing

status, tracing = asyncio.run(main())
otel = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
print(json.dumps([status, tracing is None, otel]))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [200, True, []]
