"""Bills as JSON, a table, or CSV in the shape of Alibaba's bill export.

The CSV starts with Alibaba's columns (billing rules section 7) and adds the project's own
after them. One row per bill line, with exact amounts, then one ``Rounding`` row, so that
``PaymentAmount`` adds up to the amount charged. How lines map (**assumptions**, the
cash side arrives with the accounts issue):

- pay-as-you-go: ``PayAsYouGo``; gross = pretax = payment = the exact amount.
- resource plan: ``PayAsYouGo``; gross = points x point value, all of it
  ``DeductedByResourcePackage``; pretax = payment = 0.
- QPS subscription: ``Subscription``; the calls are prepaid, every amount 0.
- ``Item`` is ``PayAsYouGoBill``, or ``Adjustment`` for records that arrived after their
  month closed; their ``UsageStartTime``/``UsageEndTime`` are the month they occurred in.
- ``UsageEndTime`` is exclusive (the next month's first instant); ``OutstandingAmount`` 0.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import tzinfo
from decimal import Decimal
from typing import Any

from .._output import render
from ..clock import BEIJING
from .bills import Bill
from .money import exact_mul
from .plans import ResourcePlan
from .results import SourceKind
from .store import BillLine

__all__ = ["BILL_COLUMNS", "EXTRA_COLUMNS", "bill_document", "export_rows", "render_bill"]

BILL_COLUMNS = (
    "BillingCycle",
    "ProductCode",
    "SubscriptionType",
    "Item",
    "UsageStartTime",
    "UsageEndTime",
    "PretaxGrossAmount",
    "DeductedByResourcePackage",
    "PretaxAmount",
    "PaymentAmount",
    "OutstandingAmount",
)
EXTRA_COLUMNS = (
    "Account",
    "BillingItem",
    "Source",
    "PlanId",
    "Tier",
    "UnitPrice",
    "Calls",
    "PointsDeducted",
)
_ZERO = Decimal(0)


def _text(value: Decimal) -> str:
    return format(value, "f")


def source_label(line: BillLine) -> str:
    """``payg tier 2 @ 0.10``, ``single rp-...``, ``qps qps-...``, ``free``."""
    s = line.source
    if s.kind is SourceKind.PAYG:
        return f"payg tier {(s.tier or 0) + 1} @ {s.unit_price}"
    return s.kind.value if s.plan_id is None else f"{s.kind.value} {s.plan_id}"


def export_rows(bill: Bill, *, point_value: Decimal, tz: tzinfo = BEIJING) -> list[dict[str, str]]:
    """The CSV rows: one per line, then the rounding row."""
    rows: list[dict[str, str]] = []
    for line in bill.lines:
        gross = deducted = pretax = _ZERO
        if line.kind is SourceKind.PAYG:
            gross = pretax = line.amount
        elif line.kind in (SourceKind.SINGLE, SourceKind.GENERAL):
            gross = deducted = exact_mul(line.points, point_value)
        s = line.source
        rows.append(
            {
                "BillingCycle": str(bill.month),
                "ProductCode": line.category,
                "SubscriptionType": "Subscription" if s.kind is SourceKind.QPS else "PayAsYouGo",
                "Item": "Adjustment" if line.adjustment else "PayAsYouGoBill",
                "UsageStartTime": line.origin.start.astimezone(tz).isoformat(),
                "UsageEndTime": line.origin.end.astimezone(tz).isoformat(),
                "PretaxGrossAmount": _text(gross),
                "DeductedByResourcePackage": _text(deducted),
                "PretaxAmount": _text(pretax),
                "PaymentAmount": _text(pretax),
                "OutstandingAmount": "0",
                "Account": bill.account,
                "BillingItem": line.item,
                "Source": s.kind.value,
                "PlanId": s.plan_id or "",
                "Tier": "" if s.tier is None else str(s.tier + 1),
                "UnitPrice": "" if s.unit_price is None else _text(s.unit_price),
                "Calls": str(line.calls),
                "PointsDeducted": _text(line.points),
            }
        )
    rounding = _text(bill.rounding)
    rows.append(
        {
            **dict.fromkeys((*BILL_COLUMNS, *EXTRA_COLUMNS), ""),
            "BillingCycle": str(bill.month),
            "SubscriptionType": "PayAsYouGo",
            "Item": "Rounding",
            "UsageStartTime": bill.month.start.astimezone(tz).isoformat(),
            "UsageEndTime": bill.month.end.astimezone(tz).isoformat(),
            "PretaxGrossAmount": rounding,
            "DeductedByResourcePackage": "0",
            "PretaxAmount": rounding,
            "PaymentAmount": rounding,
            "OutstandingAmount": "0",
            "Account": bill.account,
        }
    )
    return rows


def bill_document(bill: Bill, *, tz: tzinfo = BEIJING) -> dict[str, Any]:
    """The bill as JSON-ready data; amounts are exact decimal strings."""
    return {
        "account": bill.account,
        "month": str(bill.month),
        "final": bill.final,
        "settled_until": None
        if bill.settled_until is None
        else bill.settled_until.astimezone(tz).isoformat(),
        "lines": [
            {
                "category": ln.category,
                "item": ln.item,
                "source": ln.kind.value,
                "plan_id": ln.source.plan_id,
                "tier": None if ln.source.tier is None else ln.source.tier + 1,
                "unit_price": None if ln.source.unit_price is None else _text(ln.source.unit_price),
                "calls": ln.calls,
                "points": _text(ln.points),
                "amount": _text(ln.amount),
                "adjustment": ln.adjustment,
                "usage_month": str(ln.origin),
            }
            for ln in bill.lines
        ],
        "payg_exact": _text(bill.total.exact),
        "payg_recorded": _text(bill.total.recorded),
        "rounding": _text(bill.rounding),
        "amount_due": _text(bill.amount_due),
        "plans": [
            {
                "id": b.plan.id,
                "kind": b.plan.kind.value if isinstance(b.plan, ResourcePlan) else "qps",
                "start": b.plan.start.astimezone(tz).isoformat(),
                "end": b.plan.effective_end.astimezone(tz).isoformat(),
                "remaining": None if b.remaining is None else _text(b.remaining),
            }
            for b in bill.plans
        ],
    }


def render_bill(bill: Bill, fmt: str, *, point_value: Decimal, tz: tzinfo = BEIJING) -> str:
    """``fmt`` is ``json``, ``csv`` or ``table``."""
    if fmt == "json":
        return json.dumps(bill_document(bill, tz=tz), ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, (*BILL_COLUMNS, *EXTRA_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(export_rows(bill, point_value=point_value, tz=tz))
        return buf.getvalue()
    return _table(bill, tz)


def _table(bill: Bill, tz: tzinfo) -> str:
    out = io.StringIO()
    status = "final" if bill.final else "open"
    until = "-" if bill.settled_until is None else bill.settled_until.astimezone(tz).isoformat()
    out.write(f"Bill {bill.month} for {bill.account} ({status}; settled until {until})\n\n")
    lines = [
        {
            "category": ln.category,
            "item": ln.item,
            "source": source_label(ln),
            "calls": ln.calls,
            "points": _text(ln.points),
            "amount": _text(ln.amount),
            "note": f"adjustment for {ln.origin}" if ln.adjustment else "",
        }
        for ln in bill.lines
    ]
    columns = ["category", "item", "source", "calls", "points", "amount", "note"]
    render(lines, columns, "table", out)
    out.write(f"\npay-as-you-go exact   {_text(bill.total.exact)}\n")
    out.write(f"recorded (3 places)   {_text(bill.total.recorded)}\n")
    out.write(f"rounding              {_text(bill.rounding)}\n")
    out.write(f"amount due (CNY)      {_text(bill.amount_due)}\n")
    if bill.plans:
        out.write("\n")
        plans = [
            {
                "plan": b.plan.id,
                "valid from": b.plan.start.astimezone(tz).isoformat(),
                "until": b.plan.effective_end.astimezone(tz).isoformat(),
                "points left": "-" if b.remaining is None else _text(b.remaining),
            }
            for b in bill.plans
        ]
        render(plans, ["plan", "valid from", "until", "points left"], "table", out)
    return out.getvalue()
