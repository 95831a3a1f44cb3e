"""Bills: an account's bill for a billing month (UTC+8 calendar months), as settled so far:
:func:`rating.bills.build_bill` serialised by :func:`rating.export.bill_document`."""

from __future__ import annotations

from datetime import UTC
from enum import Enum
from typing import Annotated, Any

from fastapi import FastAPI, Path

from ...rating.bills import build_bill
from ...rating.export import bill_document
from ...rating.months import Month, parse_month
from ..context import AdminContext
from ..errors import AdminError
from ..models import BillOut
from ._common import account_state
from .accounts import AccountPath

__all__ = ["parse_month_param", "register"]

_TAGS: list[str | Enum] = ["bills"]

MonthPath = Annotated[
    str, Path(min_length=7, max_length=7, description="YYYY-MM (a UTC+8 billing month)")
]


def parse_month_param(text: str, where: str = "path.month") -> Month:
    try:
        return parse_month(text)
    except ValueError as exc:
        raise AdminError(400, "InvalidParameter", f"{where}: {exc}") from None


def _z(text: Any) -> Any:
    # bill_document prints times in the zone it is given; the API's are UTC with Z.
    return text.replace("+00:00", "Z") if isinstance(text, str) else text


def register(app: FastAPI, ctx: AdminContext) -> None:
    """Add this resource's routes to ``app`` (under its app-wide bearer guard)."""

    @app.get(
        "/accounts/{account}/bills/{month}",
        tags=_TAGS,
        response_model=BillOut,
        summary="An account's bill for a billing month, as settled so far",
    )
    async def get_bill(account: AccountPath, month: MonthPath) -> BillOut:
        chosen = parse_month_param(month)
        await account_state(ctx, account)
        doc = bill_document(await build_bill(await ctx.ratings(), account, chosen), tz=UTC)
        doc["settled_until"] = _z(doc["settled_until"])
        for plan in doc["plans"]:
            plan["start"], plan["end"] = _z(plan["start"]), _z(plan["end"])
        return BillOut.model_validate(doc)
