"""The README's FastAPI example runs as written, and its JSON log line is a real one's shape."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from metering_middleware.logs import LOGGER, JsonFormatter
from tests.e2e.conftest import add_account
from tests.e2e.sdk import detect_face_v3
from tests.e2e.signed import v3_headers
from tests.support.servers import run_server

README = Path(__file__).resolve().parent.parent / "README.md"
FASTAPI = "<!-- fastapi-example: tests/test_readme_fastapi.py runs this block -->"
LOG = "<!-- log-example: tests/test_readme_fastapi.py checks these keys against a real line -->"


def block(marker: str, lang: str) -> str:
    text = README.read_text("utf-8")
    after = text[text.index(marker) + len(marker) :]
    match = re.match(rf"\s*```{lang}\n(.*?)```", after, re.S)
    assert match, f"the marker must precede a {lang} block"
    return match.group(1)


async def test_the_fastapi_example_reads_the_verified_caller(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    source = block(FASTAPI, "python").replace("/var/lib/gateway/ledger.sqlite", str(db))
    key, secret = await add_account(f"sqlite:///{db}", "acme")
    namespace: dict[str, Any] = {}
    exec(compile(source, "README.md", "exec"), namespace)
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(LOGGER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # refusals are INFO lines
    try:
        async with run_server(namespace["app"], lifespan="on") as base:
            # The official SDK (V3, ACS3-HMAC-SHA256), the gateway as its endpoint.
            sdk = await asyncio.to_thread(
                detect_face_v3, base.removeprefix("http://"), key, secret, "https://x/a.jpg"
            )
            body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
            async with httpx.AsyncClient(base_url=base) as client:
                answer = await client.post("/", content=body, headers=v3_headers(key, secret, body))
                wrong = await client.post(
                    "/", content=body, headers=v3_headers(key, "not-the-secret-at-all", body)
                )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert sdk.ok and sdk.status == 200
    assert answer.status_code == 200
    data = answer.json()["Data"]
    assert data == {
        "account": "acme",
        "access_key_id": key,
        "api": "facebody.DetectFace",
        "ledger_ready": True,
    }
    with sqlite3.connect(db) as conn:  # RequestId is the record id the meter wrote
        ids = {row[0] for row in conn.execute("SELECT id FROM calls")}
    assert ids == {sdk.request_id, answer.json()["RequestId"]}
    assert wrong.status_code == 400
    # The README's log line has exactly the keys, in the order, of a real refusal's line.
    sample = json.loads(block(LOG, "json"))
    [real] = [
        json.loads(line)
        for line in lines.getvalue().splitlines()
        if json.loads(line)["event"] == "call.refused"
    ]
    assert list(sample) == list(real)
    assert (sample["event"], sample["outcome"]) == (real["event"], real["outcome"])
    assert real["request_id"] == wrong.json()["RequestId"]
