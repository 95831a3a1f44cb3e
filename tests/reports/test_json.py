"""Every result's to_json() is plain JSON: money as strings, instants UTC with Z, days and
months as text; nothing a JSON encoder would need help with."""

from __future__ import annotations

import json
import re
from typing import Any

from metering_middleware import reports
from tests.reports.conftest import LedgerAt
from tests.reports.readme_ledger import build
from tests.reports.support import source, utc

NOW = utc(2026, 11, 20)
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")
MONEY_KEYS = {"balance", "amount", "price_paid", "exact", "amount_due", "to_date", "settled"}


def _walk(doc: Any, key: str = "") -> None:
    if isinstance(doc, dict):
        for k, v in doc.items():
            assert isinstance(k, str)
            _walk(v, k)
    elif isinstance(doc, list):
        for v in doc:
            _walk(v, key)
    else:
        assert doc is None or isinstance(doc, str | int | bool), (key, doc)
        assert not isinstance(doc, float), key
        if key in MONEY_KEYS and doc is not None:
            assert isinstance(doc, str) and re.fullmatch(r"-?\d+(\.\d+)?", doc), (key, doc)
        if key.endswith(("_at", "_until", "_since")) or key in {"since", "until", "now"}:
            assert doc is None or TIME.fullmatch(str(doc)), (key, doc)


async def test_every_result_is_plain_json(ledger: LedgerAt) -> None:
    at = ledger("ledger")
    await build(at)
    path = source(at)
    results = [
        await reports.usage(path, "acme", utc(2026, 10, 31, 16), utc(2026, 11, 3)),
        await reports.account_overview(path, "acme", NOW),
        await reports.accounts(path, search="ac"),
        await reports.month_deduction(path, "acme", "2026-11"),
        await reports.bill(path, "acme", "2026-11"),
        await reports.month_preview(path, "acme", "2026-11", NOW),
        *await reports.plan_balances(path, "acme", NOW),
    ]
    for result in results:
        doc = result.to_json()
        assert json.loads(json.dumps(doc)) == doc  # no default= needed, round-trips
        _walk(doc)
    assert results[1].to_json()["balance"] == "17.80"
    assert results[0].to_json()["rows"][0]["day"] == "2026-11-01"


def test_money_is_fixed_point_never_an_exponent() -> None:
    from decimal import Decimal

    from metering_middleware.reports._json import money, money_or_none

    assert money(Decimal("0E-8")) == "0.00000000"
    assert money(Decimal("1E+2")) == "100"
    assert money_or_none(Decimal("-0.0032")) == "-0.0032" and money_or_none(None) is None
