"""``metering-gateway serve`` logs as configured: uvicorn's lines and the meter's, text or JSON.

A real gateway process, a real refused call over HTTP, its real stderr and stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from example_gateway.serving import free_port
from metering_middleware.logs import FIELDS
from tests.e2e.conftest import add_account
from tests.e2e.signed import v3_headers
from tests.support.processes import ROOT, wait_listening


async def _refused_call_through_the_gateway(
    tmp_path: Path, log_format: str
) -> tuple[str, str, httpx.Response, str]:
    """Start the gateway, make one call with a wrong secret, stop it; its stderr, stdout."""
    db = tmp_path / "ledger.sqlite"
    url = f"sqlite:///{db}"
    key, _ = await add_account(url, "acme")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": ROOT,
        "GATEWAY_PORT": str(port),
        "GATEWAY_UPSTREAM": f"http://127.0.0.1:{free_port()}",  # never reached
        "GATEWAY_WARM_CONNECTIONS": "0",
        "METERING_LEDGER_URL": url,
        "METERING_LOG_FORMAT": log_format,
    }
    err, out = tmp_path / "stderr", tmp_path / "stdout"
    with err.open("wb") as err_file, out.open("wb") as out_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "example_gateway", "serve",
            env=env, stdout=out_file, stderr=err_file,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_listening(base, proc, path="/readyz")
            body = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
            headers = v3_headers(key, "not-the-secret-of-this-key", body)
            async with httpx.AsyncClient() as client:
                answer = await client.post(base + "/", content=body, headers=headers)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await proc.wait()
    return err.read_text("utf-8"), out.read_text("utf-8"), answer, key


def _json(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_json_lines_from_the_meter_and_from_uvicorn(tmp_path: Path) -> None:
    stderr, stdout, answer, key = await _refused_call_through_the_gateway(tmp_path, "json")
    assert answer.status_code == 400
    lines = _json(stderr)  # every line parses: nothing is left in text
    [refused] = [line for line in lines if line["event"] == "call.refused"]
    assert list(refused)[: len(FIELDS)] == list(FIELDS)
    assert refused["level"] == "INFO" and refused["logger"] == "metering_middleware.calls"
    assert (refused["account"], refused["access_key_id"]) == ("acme", key)
    assert (refused["category"], refused["action"]) == ("facebody", "DetectFace")
    assert refused["request_id"] == answer.headers["x-acs-request-id"]
    assert refused["code"] == answer.json()["Code"]
    assert (refused["outcome"], refused["status"], refused["record_id"]) == ("refused", 400, None)
    assert refused["timestamp"].endswith("Z")
    # uvicorn's own logging works, in the same format: its start on stderr, access on stdout.
    uvicorn_lines = [line["message"] for line in lines if line["logger"].startswith("uvicorn")]
    assert any("Uvicorn running on" in m for m in uvicorn_lines)
    assert any("Application startup complete" in m for m in uvicorn_lines)
    access = [line["message"] for line in _json(stdout) if line["logger"] == "uvicorn.access"]
    assert next(m for m in access if "POST" in m).endswith('"POST / HTTP/1.1" 400')
    assert "not-the-secret-of-this-key" not in stderr + stdout


async def test_text_is_the_default_and_carries_the_same_values(tmp_path: Path) -> None:
    stderr, stdout, answer, key = await _refused_call_through_the_gateway(tmp_path, "text")
    assert answer.status_code == 400
    [line] = [line for line in stderr.splitlines() if "call refused:" in line]
    assert line.startswith("INFO metering_middleware.calls: call refused: status=400 ")
    assert f"access_key_id='{key}'" in line and "account=acme" in line
    assert f"request_id={answer.headers['x-acs-request-id']}" in line
    assert "Uvicorn running on" in stderr  # uvicorn's own format, untouched
    assert '"POST / HTTP/1.1" 400' in stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
