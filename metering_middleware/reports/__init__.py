"""Billing details: the one query layer under every billing view.

The CLI (``metering usage``, ``metering report ...``), the admin HTTP API, the tenant
view and the billing web page all call these functions and serialise their results with
``to_json()``, so a number reads the same on every face. Every function takes the path of
an SQLite ledger file or an SQLite or PostgreSQL ledger store (plans, balances and bills
live beside the ledger), reads only (never writes), runs its SQLite work off the event
loop, and filters by account in every query: another tenant's rows cannot appear.
Refusals are ``ReportError``s (``ValueError``) with a ``code`` and an HTTP ``status``;
``StoreError`` when the ledger cannot be read.

See docs/reports.md for what each view shows and where its numbers come from.
"""

from ._db import LedgerPath, LedgerSource
from .accounts import MAX_PAGE, account_overview, accounts, plan_balances
from .errors import BadRange, ReportError, UnknownAccount, UnknownMonth
from .monthly import bill, month_deduction, month_of
from .preview import month_preview
from .results import (
    AccountOverview,
    AccountPage,
    AccountSummary,
    BillLineView,
    BillPlanView,
    BillReport,
    DeductionLine,
    DeductionSource,
    ItemPreview,
    MonthDeduction,
    MonthPreview,
    PlanStatus,
    UsageReport,
    UsageRow,
    offset_text,
)
from .usage import GROUPS, parse_group, usage

__all__ = [
    "GROUPS",
    "MAX_PAGE",
    "AccountOverview",
    "AccountPage",
    "AccountSummary",
    "BadRange",
    "BillLineView",
    "BillPlanView",
    "BillReport",
    "DeductionLine",
    "DeductionSource",
    "ItemPreview",
    "LedgerPath",
    "LedgerSource",
    "MonthDeduction",
    "MonthPreview",
    "PlanStatus",
    "ReportError",
    "UnknownAccount",
    "UnknownMonth",
    "UsageReport",
    "UsageRow",
    "account_overview",
    "accounts",
    "bill",
    "month_deduction",
    "month_of",
    "month_preview",
    "offset_text",
    "parse_group",
    "plan_balances",
    "usage",
]
