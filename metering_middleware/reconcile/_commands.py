"""``metering reconcile``: the upstream's usage export against the ledger (private).

Thin: arguments, output, the summary line. Differences are results (exit 0); an
unreadable export is one line naming the line and column (``ExportError``, a
``ValueError``: exit 1). Bad arguments exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, NoReturn

from .._cli_args import add_command
from .._output import render
from ..catalog import Catalog, default_catalog, load_catalog
from ..clock import BEIJING
from ..ledger import LedgerStore
from ..rating import Month, parse_month
from ..stores.sqlite.ledger import SqliteStore
from ._compare import Difference
from ._export import Granularity
from ._items import read_item_map
from ._margin import Margin
from ._run import Reconciliation, reconcile

__all__ = ["DIFFERENCE_COLUMNS", "MARGIN_COLUMNS", "add_reconcile_command"]

#: The same variable the rating commands read (their module is private to rating).
_CATALOG_ENV = "METERING_CATALOG_PATH"

DIFFERENCE_COLUMNS = [
    "period_start",
    "period_end",
    "item",
    "upstream",
    "charged",
    "forwarded",
    "difference",
    "reason",
    "detail",
]
MARGIN_COLUMNS = [
    "item",
    "upstream_calls",
    "upstream_cost",
    "tenant_payg",
    "plan_usage",
    "revenue",
    "margin",
]


def _month(text: str) -> Month:
    try:
        return parse_month(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _offset(text: str) -> tzinfo:
    if text.upper() in ("UTC", "Z"):
        return UTC
    sign = -1 if text.startswith("-") else 1
    hours, _, minutes = text.lstrip("+-").partition(":")
    try:
        return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes or 0)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UTC offset such as +08:00") from None


def _usage(message: str) -> NoReturn:
    """Options that do not go together: bad usage, exit 2 (as argparse would)."""
    print(f"metering reconcile: error: {message} (see: metering reconcile --help)", file=sys.stderr)
    raise SystemExit(2)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None


def _catalog(args: argparse.Namespace) -> Catalog:
    path = args.catalog or os.environ.get(_CATALOG_ENV)
    return load_catalog(path) if path else default_catalog()


def _difference_row(d: Difference, zone: tzinfo) -> dict[str, Any]:
    return {
        "period_start": d.start.astimezone(zone),
        "period_end": d.end.astimezone(zone),
        "item": d.item,
        "upstream": d.upstream,
        "charged": d.charged,
        "forwarded": d.forwarded,
        "difference": d.difference,
        "reason": d.reason.value,
        "detail": d.detail,
    }


def _margin_rows(m: Margin) -> list[dict[str, Any]]:
    return [
        {
            "item": ln.item,
            "upstream_calls": ln.upstream_calls,
            "upstream_cost": ln.upstream_cost,
            "tenant_payg": ln.tenant_payg,
            "plan_usage": ln.plan_usage,
            "revenue": ln.revenue,
            "margin": ln.margin,
        }
        for ln in m.lines
    ]


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)  # Decimal: exact text, never a float


def _summary(result: Reconciliation, zone: tzinfo, file_name: str) -> str:
    diffs = result.comparison.differences
    by_reason: dict[str, int] = {}
    for d in diffs:
        by_reason[d.reason.value] = by_reason.get(d.reason.value, 0) + 1
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(by_reason.items()))
    text = (
        f"reconciled {file_name} ({len(result.export.rows)} rows) by {result.step.value} "
        f"from {result.since.astimezone(zone).isoformat()} to "
        f"{result.until.astimezone(zone).isoformat()}: {len(diffs)} difference(s)"
        + (f" ({reasons})" if reasons else "")
    )
    if result.export.skipped:
        text += f"; {result.export.skipped} row(s) of other products skipped"
    if result.comparison.ignored_rows:
        text += f"; {result.comparison.ignored_rows} row(s) outside the range ignored"
    m = result.margin
    if m is not None:
        total = m.total
        shown = "unknown" if total.margin is None else f"CNY {total.margin}"
        text += f"; margin of {m.month}: {shown} (operator's cost from {m.cost_source})"
        if m.unpriced:
            text += f"; no cost known for {', '.join(m.unpriced)} (not in the total)"
        if m.settled_until is None or m.settled_until < result.until:
            until = "nothing" if m.settled_until is None else m.settled_until.astimezone(zone)
            text += f"; settlement has not passed the month's end (settled until {until})"
    return text


async def _reconcile(store: LedgerStore, args: argparse.Namespace) -> str:
    if not isinstance(store, SqliteStore):
        raise ValueError("reconcile needs an SQLite ledger (sqlite:///path)")
    if args.month is not None and (args.since is not None or args.until is not None):
        _usage("give --month or --since/--until, not both")
    if args.format == "csv" and args.show == "both":
        _usage("--format csv prints one table: --show differences or --show margin")
    catalog = _catalog(args)
    data = await asyncio.to_thread(_read, args.upstream)
    item_map = None
    if args.item_map:
        raw = await asyncio.to_thread(_read, args.item_map)
        item_map = read_item_map(raw, name=args.item_map, catalog=catalog)
    result = await reconcile(
        store.path,
        data,
        file_name=args.upstream,
        catalog=catalog,
        zone=args.upstream_tz,
        step=Granularity(args.period) if args.period else None,
        month=args.month,
        since=args.since,
        until=args.until,
        item_map=item_map,
        products=tuple(args.product or ()),
    )
    zone = args.tz
    shown = result.comparison.rows if args.all else result.comparison.differences
    rows = [_difference_row(d, zone) for d in shown]
    margin_rows = _margin_rows(result.margin) if result.margin is not None else []
    show = args.show or ("differences" if args.format == "csv" else "both")
    print(_summary(result, zone, args.upstream), file=sys.stderr)
    out = io.StringIO()
    if args.format == "json":
        doc: dict[str, Any] = {
            "since": result.since.astimezone(zone),
            "until": result.until.astimezone(zone),
            "period": result.step.value,
        }
        if show in ("differences", "both"):
            doc["differences"] = rows
        if show in ("margin", "both"):
            m = result.margin
            doc["margin"] = (
                None
                if m is None
                else {
                    "month": m.month,
                    "cost_source": m.cost_source,
                    "settled_until": m.settled_until.astimezone(zone) if m.settled_until else None,
                    "accounts": m.accounts,
                    "lines": margin_rows,
                }
            )
        json.dump(_json(doc), out, ensure_ascii=False, indent=2)
        out.write("\n")
        return out.getvalue()
    if show in ("differences", "both"):
        render(rows, DIFFERENCE_COLUMNS, args.format, out)
    if show in ("margin", "both"):
        if show == "both":
            out.write("\n")
        if result.margin is None:
            if args.format == "table":
                out.write("no margin: the range is not one billing month (use --month)\n")
        else:
            if args.format == "table":
                out.write(
                    f"== Margin {result.margin.month} (CNY; operator's cost from "
                    f"{result.margin.cost_source})\n"
                )
            render(margin_rows, MARGIN_COLUMNS, args.format, out)
    return out.getvalue()


def add_reconcile_command(groups: Any) -> None:
    p = add_command(
        groups,
        "reconcile",
        "compare the upstream's usage export with what the gateway forwarded and charged, "
        "and show the month's margin",
    )
    p.add_argument(
        "--upstream",
        metavar="FILE",
        required=True,
        help="the operator's usage export from Alibaba Cloud (CSV, UTF-8; docs/reconcile.md)",
    )
    p.add_argument("--month", type=_month, help="billing month YYYY-MM (UTC+8)")
    p.add_argument("--since", metavar="TIME", help="from this time, inclusive (ISO 8601)")
    p.add_argument("--until", metavar="TIME", help="to this time, exclusive (ISO 8601)")
    p.add_argument(
        "--period",
        choices=[g.value for g in Granularity],
        help="compare by hour or by day (default: the export's own: hour if it has hours)",
    )
    p.add_argument(
        "--upstream-tz",
        metavar="OFFSET",
        type=_offset,
        default=BEIJING,
        help="zone of the export's times written without an offset, and of its days "
        "(default: +08:00, Alibaba's console)",
    )
    p.add_argument(
        "--item-map",
        metavar="FILE",
        help="CSV upstream_item,item naming the catalog item of each export name",
    )
    p.add_argument(
        "--product",
        metavar="TEXT",
        action="append",
        help="read only rows whose product column contains TEXT (a whole bill export); repeatable",
    )
    p.add_argument("--catalog", metavar="FILE", help=f"catalog file (default: ${_CATALOG_ENV})")
    p.add_argument("--all", action="store_true", help="list matching periods too (reason: match)")
    p.add_argument(
        "--show",
        choices=("differences", "margin", "both"),
        help="what to print (default: both; csv: differences)",
    )
    p.set_defaults(handler=_reconcile)
