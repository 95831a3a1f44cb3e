"""One command, no setup: mock VIAPI + metered gateway + SQLite ledger + real SDK traffic.

Sends calls of every outcome class through the official Alibaba Cloud SDKs
(``alibabacloud-facebody20191230``, signature V3; ``aliyun-python-sdk-core``,
signature V1), shuts the gateway down (which flushes the ledger) and prints
what the ledger holds: every call by outcome, and the chargeable calls.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from metering_middleware import MeteringConfig, MeteringRuntime, SystemClock
from metering_middleware._output import render
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger.urls import open_store

from .app import create_gateway_app
from .config import GatewayConfig
from .mock_upstream import create_mock_upstream
from .serving import run_server

__all__ = ["run_demo"]


@dataclass(frozen=True, slots=True)
class _Key:
    account: str
    access_key_id: str
    secret: str


# (who, SDK, image URL the mock reacts to, how many) -> what the ledger should say.
_TRAFFIC: tuple[tuple[str, str, str, int], ...] = (
    ("acme", "v3", "https://example.com/people.jpg", 6),  # 200: charged
    ("acme", "v3", "https://example.com/noface.jpg", 2),  # 404 NotFoundFace: charged
    ("acme", "v3", "https://example.com/badurl.jpg", 2),  # 400 InvalidParameter: free
    ("acme", "v3", "https://example.com/servererror.jpg", 1),  # 500: free
    ("globex", "v3", "https://example.com/crowd.jpg", 3),  # 200: charged
    ("globex", "v1", "https://example.com/plate.jpg", 4),  # V1 licence plate, 200: charged
    ("intruder", "v3", "https://example.com/people.jpg", 2),  # wrong secret: refused
)


def _call_v3(endpoint: str, key: _Key, url: str) -> str:
    from alibabacloud_facebody20191230 import models
    from alibabacloud_facebody20191230.client import Client
    from alibabacloud_tea_openapi import models as open_api
    from alibabacloud_tea_util import models as util

    client = Client(
        open_api.Config(
            access_key_id=key.access_key_id,
            access_key_secret=key.secret,
            endpoint=endpoint,
            protocol="http",
            region_id="cn-shanghai",
        )
    )
    try:
        client.detect_face_with_options(
            models.DetectFaceRequest(image_url=url), util.RuntimeOptions()
        )
    except Exception as exc:  # the SDK raises TeaException carrying the Alibaba code
        return str(getattr(exc, "code", type(exc).__name__))
    return "200 OK"


def _call_v1(endpoint: str, key: _Key, url: str) -> str:
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.request import CommonRequest

    client = AcsClient(key.access_key_id, key.secret, "cn-shanghai")
    request = CommonRequest(
        domain=endpoint, version="2019-12-30", action_name="RecognizeLicensePlate"
    )
    request.set_protocol_type("http")
    request.set_method("POST")
    request.add_query_param("ImageURL", url)
    try:
        client.do_action_with_exception(request)
    except ServerException as exc:
        return str(exc.get_error_code())
    return "200 OK"


def _traffic(base_url: str, keys: dict[str, _Key]) -> list[dict[str, Any]]:
    endpoint = base_url.removeprefix("http://")
    seen: Counter[tuple[str, str, str, str]] = Counter()
    for who, style, url, n in _TRAFFIC:
        call = _call_v3 if style == "v3" else _call_v1
        for _ in range(n):
            seen[(who, style, url.rsplit("/", 1)[-1], call(endpoint, keys[who], url))] += 1
    return [
        {"account": w, "signature": s, "image": i, "sdk saw": r, "calls": n}
        for (w, s, i, r), n in seen.items()
    ]


async def run_demo(db_path: Path | None = None, out: TextIO = sys.stdout) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="metering-demo-"))
    db = db_path or workdir / "ledger.sqlite"
    url = f"sqlite:///{db}"
    print(f"ledger: {db}", file=sys.stderr)

    store = open_store(url)
    await store.open()
    manager = CredentialManager(store, SecretBox.from_env(), SystemClock())
    keys: dict[str, _Key] = {}
    for account in ("acme", "globex"):
        row, secret = await manager.add(account)
        keys[account] = _Key(account, row.access_key_id, secret)
    # An AccessKey that exists, used with a wrong secret: refused, free.
    keys["intruder"] = _Key("intruder", keys["acme"].access_key_id, "not-the-secret-0000")
    await store.close()

    runtime = MeteringRuntime(MeteringConfig(ledger_url=url, mode="strict"))
    async with run_server(create_mock_upstream()) as upstream:
        app = create_gateway_app(GatewayConfig(upstream=upstream, port=0), runtime)
        async with run_server(app) as gateway:
            print(f"mock VIAPI at {upstream}, gateway at {gateway}", file=sys.stderr)
            sent = await asyncio.to_thread(_traffic, gateway, keys)
    # The gateway has shut down: its lifespan flushed the ledger. Read it back.
    store = open_store(url)
    await store.open()
    try:
        outcomes: Counter[tuple[str, str, str, str]] = Counter()
        for c in await store.outcome_counts():
            outcomes[(c.account or "(unknown)", c.action or "-", c.outcome.value, c.detail)] += (
                c.count
            )
        summary = await store.summary()
    finally:
        await store.close()

    out.write("\n== Demo traffic (official SDKs -> gateway -> mock VIAPI)\n")
    render(sent, ["account", "signature", "image", "sdk saw", "calls"], "table", out)
    out.write("\n== Every call by outcome (ledger's per-minute counters)\n")
    render(
        [
            {"account": a, "action": act, "outcome": o, "detail": d, "calls": n}
            for (a, act, o, d), n in sorted(outcomes.items())
        ],
        ["account", "action", "outcome", "detail", "calls"],
        "table",
        out,
    )
    out.write("\n== Charged calls in the ledger\n")
    render(
        [{"account": s.account, "item": s.item, "calls": s.calls} for s in summary],
        ["account", "item", "calls"],
        "table",
        out,
    )
    total = sum(s.calls for s in summary)
    out.write(f"\n{total} chargeable calls recorded in {db}\n")
    return 0
