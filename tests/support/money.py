"""Money in tests: a catalog with round prices and short tiers, top-ups, signing at a clock."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from metering_middleware.catalog import Catalog, parse_catalog
from metering_middleware.rating import BalanceEntry, EntryKind, SqliteRatingStore
from tests.e2e.signed import v3_headers
from tests.support.catalogs import roomy_document

__all__ = ["DETECT", "OCR_PLATE", "priced_catalog", "topup", "v3_at"]

DETECT = "facebody.DetectFace"
OCR_PLATE = "ocr.RecognizeLicensePlate"


def priced_catalog(default_qps: int = 1000) -> Catalog:
    """The packaged catalog with DetectFace at CNY 0.50 for the first 3 calls of a month,
    then 0.25; CompareFace at 0.40; every default QPS at ``default_qps``."""
    doc = roomy_document(default_qps)
    for item in doc["items"]:
        if (item["category"], item["action"]) == ("facebody", "DetectFace"):
            item["prices"][0]["tiers"] = [{"up_to": 3, "price": "0.50"}, {"price": "0.25"}]
        elif (item["category"], item["action"]) == ("facebody", "CompareFace"):
            item["prices"][0]["tiers"] = [{"price": "0.40"}]
    return parse_catalog(doc)


async def topup(
    rating: SqliteRatingStore, account: str, amount: str, at: datetime, key: str | None = None
) -> None:
    """Credit ``account`` (the way ``metering balance topup`` posts it)."""
    entry = BalanceEntry(
        f"topup:{key or uuid.uuid4().hex}", account, EntryKind.TOPUP, Decimal(amount), at, at
    )
    await rating.post_entries([entry], at)


def v3_at(
    key: str, secret: str, body: bytes, now: datetime, *, action: str = "DetectFace"
) -> dict[str, str]:
    """A signed V3 facebody request's headers, signed at ``now`` (the gateway's clock)."""
    return v3_headers(key, secret, body, action=action, now=now)
