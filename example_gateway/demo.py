"""One command, no setup: mock VIAPI + metered gateway + SQLite ledger + real SDK traffic.

Three tenants buy what VIAPI sells (acme: a DetectFace QPS subscription; globex: a
general-purpose resource plan; initech: nothing, pay-as-you-go), then send calls of
every outcome class through the official Alibaba Cloud SDKs
(``alibabacloud-facebody20191230``, signature V3; ``aliyun-python-sdk-core``,
signature V1). The gateway is shut down (which flushes the ledger), the ledger is
settled against the plans, and the demo prints every call by outcome, the chargeable
calls, and each tenant's bill for the month.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from metering_middleware import MeteringConfig, MeteringRuntime, SystemClock, default_catalog
from metering_middleware._output import render
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger.urls import open_store
from metering_middleware.rating import (
    BalanceEntry,
    EntryKind,
    SqliteRatingStore,
    billing_month,
    build_bill,
    buy_qps_subscription,
    buy_resource_plan,
    render_bill,
    settle,
)

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


# (who, SDK, image URL the mock reacts to, how many, sent at once?)
_TRAFFIC: tuple[tuple[str, str, str, int, bool], ...] = (
    ("acme", "v3", "https://example.com/people.jpg", 6, False),  # 200: charged
    ("acme", "v3", "https://example.com/noface.jpg", 2, False),  # 404 NotFoundFace: charged
    ("acme", "v3", "https://example.com/badurl.jpg", 2, False),  # 400 InvalidParameter: free
    ("acme", "v3", "https://example.com/servererror.jpg", 1, False),  # 500: free
    ("globex", "v3", "https://example.com/crowd.jpg", 3, False),  # 200: charged
    ("globex", "v1", "https://example.com/plate.jpg", 4, False),  # V1 licence plate: charged
    ("initech", "v3", "https://example.com/team.jpg", 2, False),  # 200: charged
    # Three at once against OCR's default 1 QPS: one admitted, two Throttling.User.
    ("initech", "v1", "https://example.com/plate.jpg", 3, True),
    ("intruder", "v3", "https://example.com/people.jpg", 2, False),  # wrong secret: refused
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
    for who, style, url, n, at_once in _TRAFFIC:
        call = _call_v3 if style == "v3" else _call_v1
        image = url.rsplit("/", 1)[-1]
        if at_once:
            with ThreadPoolExecutor(n) as pool:
                futures = [pool.submit(call, endpoint, keys[who], url) for _ in range(n)]
                answers = [f.result() for f in futures]
        else:
            answers = [call(endpoint, keys[who], url) for _ in range(n)]
        for answer in answers:
            seen[(who, style, image, answer)] += 1
    return [
        {"account": w, "signature": s, "image": i, "sdk saw": r, "calls": n}
        for (w, s, i, r), n in seen.items()
    ]


async def run_demo(db_path: Path | None = None, out: TextIO = sys.stdout) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="metering-demo-"))
    db = db_path or workdir / "ledger.sqlite"
    url = f"sqlite:///{db}"
    print(f"ledger: {db}", file=sys.stderr)

    clock = SystemClock()
    catalog = default_catalog()
    store = open_store(url)
    await store.open()
    manager = CredentialManager(store, SecretBox.from_env(), clock)
    keys: dict[str, _Key] = {}
    for account in ("acme", "globex", "initech"):
        row, secret = await manager.add(account)
        keys[account] = _Key(account, row.access_key_id, secret)
    # An AccessKey that exists, used with a wrong secret: refused, free.
    keys["intruder"] = _Key("intruder", keys["acme"].access_key_id, "not-the-secret-0000")
    await store.close()
    async with SqliteRatingStore(db) as rating:
        now = clock.now()
        # Every account pays in first: plans are bought from the balance, and the gateway
        # refuses pay-as-you-go calls a balance cannot pay (enforce_balance).
        await rating.post_entries(
            [
                BalanceEntry(f"topup:demo-{a}", a, EntryKind.TOPUP, Decimal(amount), now, now)
                for a, amount in (("acme", "500.00"), ("globex", "100.00"), ("initech", "20.00"))
            ],
            now,
        )
        # acme: 20 QPS of DetectFace for a month: those calls cost nothing more.
        await buy_qps_subscription(
            rating,
            catalog,
            account="acme",
            category="facebody",
            action="DetectFace",
            qps=20,
            ordered_at=now,
            price_paid="300.00",
        )
        # globex: a general-purpose plan, 5,000 points for CNY 50 (5 QPS per category).
        await buy_resource_plan(
            rating,
            catalog,
            account="globex",
            kind="general",
            points=5000,
            ordered_at=now,
            price_paid="50.00",
        )

    config = MeteringConfig(ledger_url=url, mode="strict", enforce_balance=True)
    runtime = MeteringRuntime(config, catalog=catalog)
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

    # Settle everything recorded so far (the gateway is down: nothing is in flight).
    async with SqliteRatingStore(db) as rating:
        await settle(rating, catalog, clock, lag=timedelta(0))
        month = billing_month(clock.now())
        for account in ("acme", "globex", "initech"):
            bill = await build_bill(rating, account, month)
            out.write("\n")
            out.write(render_bill(bill, "table", point_value=catalog.point_value))
        # What each account has left: top-up, minus its plans, minus its settled usage.
        balances = await rating.balances()
        out.write("\n== Balances (CNY; the month's rounding is posted when it closes)\n")
        render(
            [{"account": a, "balance": balances.get(a, Decimal(0))} for a in sorted(balances)],
            ["account", "balance"],
            "table",
            out,
        )
    return 0
