"""What the gateway forwarded and charged, per item and hour, from the SQLite ledger (private).

Read-only, in one read transaction on a connection of its own (callers run it in a
worker thread). Aggregated by SQL (``GROUP BY`` item and hour, or minute for zones whose
offset is not whole hours), so a month of a million records is a few thousand rows here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from ..catalog import Catalog
from ..ledger.codec import format_time, parse_time
from ..rating import exact_sum, month_total

__all__ = ["GatewayCounts", "TenantCharges", "read_gateway_counts", "read_tenant_charges"]

#: Free details the gateway itself produced without an answer from the upstream (the
#: example gateway's 504/502, the wrapped app raising or answering nothing): the call
#: may have reached the upstream, but nothing says whether it was answered.
UNANSWERED = frozenset({"GatewayTimeout", "BadGateway", "app_error", "no_response"})


@dataclass(slots=True)
class GatewayCounts:
    """Per (item, bucket start UTC): charged records, free answers by code, unanswered."""

    charged: dict[tuple[str, datetime], int] = field(default_factory=dict)
    free: dict[tuple[str, datetime], dict[str, int]] = field(default_factory=dict)
    unanswered: dict[tuple[str, datetime], dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TenantCharges:
    """What tenants were billed in one month, per item and in total."""

    #: item -> exact pay-as-you-go amount billed in the month (bill lines).
    payg: Mapping[str, Decimal]
    #: item -> points deducted from resource plans in the month.
    points: Mapping[str, Decimal]
    #: The month's pay-as-you-go charged (each account's total rounded down to fen).
    charged: Decimal
    accounts: int
    #: Records effective before it are settled (None: nothing is).
    settled_until: datetime | None


def _connect(path: Path) -> sqlite3.Connection:
    # mode=ro: a reconciliation never writes, and never creates a missing ledger.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _bucket(text: str) -> datetime:
    # 'YYYY-MM-DDTHH' or 'YYYY-MM-DDTHH:MM' (UTC)
    if len(text) == 13:
        return datetime.strptime(text, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    return datetime.strptime(text, "%Y-%m-%dT%H:%M").replace(tzinfo=UTC)


def read_gateway_counts(
    path: Path, catalog: Catalog, since: datetime, until: datetime, *, by_minute: bool
) -> GatewayCounts:
    width = 16 if by_minute else 13
    lo, hi = format_time(since), format_time(until)
    counts = GatewayCounts()
    conn = _connect(path)
    try:
        conn.execute("BEGIN")
        for item, bucket, n in conn.execute(
            f"SELECT item, substr(occurred_at, 1, {width}) AS b, COUNT(*) FROM calls "
            "WHERE occurred_at >= ? AND occurred_at < ? GROUP BY item, b",
            (lo, hi),
        ):
            counts.charged[(item, _bucket(bucket))] = int(n)
        for category, action, detail, bucket, n in conn.execute(
            f"SELECT category, action, detail, substr(minute, 1, {width}) AS b, SUM(count) "
            "FROM outcome_counts WHERE minute >= ? AND minute < ? AND outcome = 'free' "
            "GROUP BY category, action, detail, b",
            (lo, hi),
        ):
            it = catalog.lookup(category, action)
            if it is None:
                continue
            target = counts.unanswered if detail in UNANSWERED else counts.free
            codes = target.setdefault((it.item, _bucket(bucket)), {})
            codes[detail] = codes.get(detail, 0) + int(n)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return counts


def read_tenant_charges(path: Path, month: str) -> TenantCharges:
    """Bill lines billed in ``month`` (YYYY-MM, UTC+8) and the settled horizon."""
    payg: dict[str, list[Decimal]] = {}
    points: dict[str, list[Decimal]] = {}
    per_account: dict[str, list[Decimal]] = {}
    conn = _connect(path)
    try:
        conn.execute("BEGIN")
        for account, item, kind, pts, amount in conn.execute(
            "SELECT account, item, kind, points, amount FROM rating_lines WHERE billed_month = ?",
            (month,),
        ):
            if kind == "payg":
                payg.setdefault(item, []).append(Decimal(amount))
                per_account.setdefault(account, []).append(Decimal(amount))
            elif kind in ("single", "general"):
                points.setdefault(item, []).append(Decimal(pts))
        # 'settle': the global marks (per-account marks may be newer; this is a floor).
        row = conn.execute("SELECT horizon FROM rating_progress WHERE name = 'settle'").fetchone()
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise ValueError("the ledger has no rating tables: run `metering settle`") from None
        raise
    finally:
        conn.close()
    settled = None
    if row is not None and row[0]:
        settled = parse_time(row[0])
    charged = exact_sum(month_total(v).charged for v in per_account.values())
    return TenantCharges(
        {k: exact_sum(v) for k, v in payg.items()},
        {k: exact_sum(v) for k, v in points.items()},
        charged,
        len(per_account),
        settled,
    )
