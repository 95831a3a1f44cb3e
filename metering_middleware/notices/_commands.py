"""``metering notices``: the notices recorded, with their webhook delivery's state (private).

Thin: argument parsing and rows; the rows come from :mod:`.outbox`. The handler renders
its own output (``--format table|json|csv``), so the CLI adds it with one call.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from typing import Any

from .._cli_args import add_command
from .._output import render
from ..ledger import LedgerStore
from ..ledger.migrate import connect_existing
from ..stores.sqlite.ledger import SqliteStore
from .model import NoticeKind
from .outbox import OutboxRow, list_notices

__all__ = ["NOTICE_COLUMNS", "add_notice_commands"]

NOTICE_COLUMNS = [
    "id",
    "kind",
    "account",
    "subject",
    "at",
    "data",
    "delivery",
    "attempts",
    "next_attempt",
    "last_error",
    "delivered_at",
]


def _row(r: OutboxRow, args: argparse.Namespace) -> dict[str, Any]:
    n = r.notice
    data: Any = dict(n.data)
    if args.format != "json":  # one cell: compact JSON text
        data = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {
        "id": n.id,
        "kind": n.kind.value,
        "account": n.account,
        "subject": n.subject,
        "at": n.at.astimezone(args.tz),
        "data": data,
        "delivery": r.state,
        "attempts": r.attempts,
        "next_attempt": None if r.next_at is None else r.next_at.astimezone(args.tz),
        "last_error": r.last_error,
        "delivered_at": None if r.delivered_at is None else r.delivered_at.astimezone(args.tz),
    }


def _read(path: str, args: argparse.Namespace) -> list[OutboxRow]:
    conn = connect_existing(path)
    try:
        return list_notices(
            conn, account=args.account, kind=args.kind, pending=args.pending, since=args.since
        )
    finally:
        conn.close()


async def _notices(store: LedgerStore, args: argparse.Namespace) -> str:
    if not isinstance(store, SqliteStore):
        raise ValueError("notices live in an SQLite ledger (sqlite:///path)")
    rows = await asyncio.to_thread(_read, str(store.path), args)
    out = io.StringIO()
    render([_row(r, args) for r in rows], NOTICE_COLUMNS, args.format, out)
    return out.getvalue()


def add_notice_commands(groups: Any) -> None:
    """Add ``notices`` to the CLI's subcommands."""
    p = add_command(groups, "notices", "notices recorded, with their webhook delivery state")
    p.add_argument("--account", help="this account's notices only")
    p.add_argument(
        "--kind", choices=[k.value for k in NoticeKind], help="notices of this kind only"
    )
    p.add_argument(
        "--pending", action="store_true", help="only those whose webhook delivery is still owed"
    )
    p.add_argument(
        "--since", metavar="TIME", help="those that happened from this time on (ISO 8601)"
    )
    p.set_defaults(handler=_notices)
