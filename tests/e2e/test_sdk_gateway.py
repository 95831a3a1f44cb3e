"""The official SDKs through the real gateway over real HTTP: every outcome class.

Exactly the chargeable outcomes land in the ledger, once each; the rest are
counted by outcome.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from example_gateway.app import create_gateway_app
from example_gateway.config import GatewayConfig
from example_gateway.mock_upstream import create_mock_upstream
from metering_middleware import MeteringConfig, MeteringRuntime
from tests.support.servers import run_server

from .conftest import Gateway, add_account
from .sdk import call_v1, detect_face_v3

# image URL word -> (SDK sees ok?, code, charged?)
OUTCOMES = [
    ("people", True, None, True),
    ("noface", False, "InvalidImage.NotFoundFace", True),
    ("noface400", False, "InvalidImage.NotFoundFace", True),
    ("badurl", False, "InvalidParameter", False),
    ("servererror", False, "InternalError", False),
    ("throttle", False, "Throttling.User", False),
]


@pytest.mark.parametrize(("word", "ok", "code", "charged"), OUTCOMES)
async def test_v3_sdk_every_outcome(
    gateway: Gateway, word: str, ok: bool, code: str | None, charged: bool
) -> None:
    result = await asyncio.to_thread(
        detect_face_v3,
        gateway.endpoint,
        gateway.access_key_id,
        gateway.secret,
        f"https://img.example.com/{word}.jpg",
    )
    assert (result.ok, result.code) == (ok, code)
    rows = gateway.rows()  # strict mode: committed before the SDK had the whole answer
    assert len(rows) == (1 if charged else 0)
    if charged:
        assert rows[0]["account"] == "acme"
        assert rows[0]["item"] == "facebody.DetectFace"
        assert rows[0]["error_code"] == code
        assert rows[0]["request_id"] == result.request_id


@pytest.mark.parametrize(("word", "ok", "code", "charged"), OUTCOMES)
@pytest.mark.parametrize("fmt", ["JSON", "XML"])
async def test_v1_sdk_every_outcome_json_and_xml(
    gateway: Gateway, word: str, ok: bool, code: str | None, charged: bool, fmt: str
) -> None:
    result = await asyncio.to_thread(
        call_v1,
        gateway.endpoint,
        gateway.access_key_id,
        gateway.secret,
        f"https://img.example.com/{word}.jpg",
        fmt=fmt,
    )
    assert (result.ok, result.code) == (ok, code)
    rows = gateway.rows()
    assert len(rows) == (1 if charged else 0)
    if charged:
        assert rows[0]["error_code"] == code


async def test_v1_post_with_form_body(gateway: Gateway) -> None:
    result = await asyncio.to_thread(
        call_v1,
        gateway.endpoint,
        gateway.access_key_id,
        gateway.secret,
        "https://img.example.com/plate.jpg",
        action="RecognizeLicensePlate",
        method="POST",
        form=True,
    )
    assert result.ok
    [row] = gateway.rows()
    assert (row["category"], row["item"]) == ("ocr", "ocr.RecognizeLicensePlate")


async def test_sdk_sees_refusals_with_precise_codes(gateway: Gateway) -> None:
    wrong = await asyncio.to_thread(
        detect_face_v3,
        gateway.endpoint,
        gateway.access_key_id,
        "wrong-secret-0123456789",
        "https://img.example.com/people.jpg",
    )
    unknown = await asyncio.to_thread(
        call_v1,
        gateway.endpoint,
        "LTAIunknown000",
        "secret-0123456789abc",
        "https://img.example.com/people.jpg",
    )
    assert (wrong.code, wrong.status) == ("SignatureDoesNotMatch", 400)
    assert (unknown.code, unknown.status) == ("InvalidAccessKeyId.NotFound", 404)
    assert gateway.rows() == []
    assert gateway.mock.stats.requests == 0


async def test_every_call_is_counted_by_outcome(gateway: Gateway) -> None:
    for word in ("people", "people", "noface", "badurl"):
        await asyncio.to_thread(
            detect_face_v3,
            gateway.endpoint,
            gateway.access_key_id,
            gateway.secret,
            f"https://img.example.com/{word}.jpg",
        )
    await asyncio.to_thread(
        detect_face_v3,
        gateway.endpoint,
        gateway.access_key_id,
        "wrong-secret-0123456789",
        "https://img.example.com/people.jpg",
    )
    await gateway.runtime.writer.flush_now()
    counted = {
        (r["outcome"], r["detail"]): r["n"]
        for r in gateway.rows(
            "SELECT outcome, detail, SUM(count) AS n FROM outcome_counts GROUP BY 1, 2"
        )
    }
    assert counted == {
        ("charged", ""): 2,
        ("charged", "InvalidImage.NotFoundFace"): 1,
        ("free", "InvalidParameter"): 1,
        ("refused", "bad_signature"): 1,
    }
    assert len(gateway.rows()) == 3


async def test_official_sdks_see_throttling_user(tmp_path: Path) -> None:
    """With the packaged catalog's real defaults (OCR 1 QPS, facebody 2 QPS)."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    key, secret = await add_account(url, "acme")
    runtime = MeteringRuntime(MeteringConfig(ledger_url=url, throttle_status=400))
    async with run_server(create_mock_upstream()) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream), runtime)
        async with run_server(app) as base:
            endpoint = base.removeprefix("http://")
            # Concurrent calls: together well inside one second on any machine.
            v1 = await asyncio.gather(
                *(
                    asyncio.to_thread(
                        call_v1,
                        endpoint,
                        key,
                        secret,
                        "https://x/plate.jpg",
                        action="RecognizeLicensePlate",
                    )
                    for _ in range(2)
                )
            )
            v3 = await asyncio.gather(
                *(
                    asyncio.to_thread(detect_face_v3, endpoint, key, secret, "https://x/a.jpg")
                    for _ in range(3)
                )
            )
    # The second OCR and the third face call were above the entitlement: refused as
    # VIAPI refuses, and not charged.
    assert sorted(str(r.code) for r in v1) == ["None", "Throttling.User"]
    assert {r.status for r in v1 if not r.ok} == {400}
    assert sorted(str(r.code) for r in v3) == ["None", "None", "Throttling.User"]
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM calls").fetchone() == (3,)
