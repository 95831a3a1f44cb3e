"""``metering migrate``, ``backup`` and ``prune``: operations on a ledger (private).

Thin: parsing, exit codes and presentation; the work is in :mod:`.ops`, run in a
worker thread. These commands never open the ledger as a store (an open migrates):
each decides itself what it may touch. Exit status: 0 done, 1 failed (or, for
``migrate --check``, a migration is pending), 2 bad usage (a bad ledger URL, an
existing backup file without ``--force``, a bad retention value).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from datetime import tzinfo
from typing import Any

from ._cli_args import add_command, positive_int
from ._output import render
from .clock import SystemClock
from .ledger.migrate import LedgerMissing
from .ledger.store import StoreError
from .ops import (
    BackupRefused,
    BadLedgerUrl,
    RetentionPolicy,
    backup,
    migrate,
    prune_ledger_file,
    prune_postgres,
    resolve,
    safe_url,
    status,
    verify,
)
from .ops.targets import PostgresTarget

__all__ = ["COUNTER_DAYS_ENV", "add_ops_commands", "run_ops"]

#: The gateway's own setting (``counter_retention_days``), read by ``metering prune`` too.
COUNTER_DAYS_ENV = "METERING_COUNTER_RETENTION_DAYS"

MIGRATE_COLUMNS = ["ledger", "from", "to", "applied"]
CHECK_COLUMNS = ["ledger", "current", "target", "pending"]
BACKUP_COLUMNS = ["table", "rows"]
PRUNE_COLUMNS = ["kind", "rows", "before", "action"]


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 (keep forever) or more days")
    return value


def add_ops_commands(groups: Any) -> None:
    m = add_command(groups, "migrate", "bring the ledger's schema to this version's")
    m.add_argument(
        "--check",
        action="store_true",
        help="apply nothing; exit 1 if a migration is pending (for deploy scripts)",
    )
    m.add_argument(
        "--create",
        action="store_true",
        help="start a new ledger if there is no file (default: a missing file is an error)",
    )
    m.set_defaults(ops=_migrate)

    b = add_command(groups, "backup", "a consistent copy of the whole ledger, while it runs")
    b.add_argument("dest", nargs="?", metavar="DEST", help="the backup file to write")
    b.add_argument("--force", action="store_true", help="replace DEST if it exists")
    b.add_argument(
        "--verify",
        metavar="FILE",
        help="check a backup instead: integrity, schema version, rows per table",
    )
    b.set_defaults(ops=_backup)

    p = add_command(groups, "prune", "one retention pass: expired nonces, old counters")
    p.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted; delete nothing"
    )
    p.add_argument(
        "--counter-days",
        metavar="N",
        type=_days,
        default=None,
        help=f"keep N days of per-minute counters, 0: forever (default: ${COUNTER_DAYS_ENV} "
        "or 0); the current and previous billing month are always kept",
    )
    p.add_argument(
        "--batch",
        metavar="N",
        type=positive_int,
        default=RetentionPolicy().batch,
        help="rows per delete transaction (default: %(default)s)",
    )
    p.set_defaults(ops=_prune)


def run_ops(args: argparse.Namespace, url: str) -> int:
    """Run an operations command; its exit status. Results on stdout, messages on stderr."""
    handler: Callable[[argparse.Namespace, str], list[dict[str, Any]] | None] = args.ops
    try:
        rows = asyncio.run(asyncio.to_thread(handler, args, url))
    except _Exit as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return exc.code
    except BadLedgerUrl as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return 2
    except LedgerMissing as exc:
        print(f"metering: {exc} (check --db)", file=sys.stderr)
        return 1
    except (StoreError, OSError, ValueError) as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    if rows is not None:
        render(rows, args.ops_columns, args.format, sys.stdout)
    return 0


def _migrate(args: argparse.Namespace, url: str) -> list[dict[str, Any]]:
    target = resolve(url)
    shown = safe_url(url)
    if args.check:
        if args.create:
            raise _Exit(2, "--check applies nothing: it does not go with --create")
        found = status(target)
        args.ops_columns = CHECK_COLUMNS
        if found.unknown:
            raise _Exit(
                1,
                f"ledger {shown}: schema version {found.current} is newer than this code "
                f"knows ({found.target}): upgrade metering_middleware before it runs here",
            )
        if found.pending:
            raise _Exit(
                1,
                f"ledger {shown}: schema version {found.current}, this code needs "
                f"{found.target}: {len(found.pending)} migration(s) pending "
                f"({', '.join(map(str, found.pending))}); run `metering migrate`",
            )
        print(f"ledger {shown}: schema version {found.current}, up to date", file=sys.stderr)
        return [{"ledger": shown, "current": found.current, "target": found.target, "pending": ""}]
    start, to, applied = migrate(target, create=args.create)
    args.ops_columns = MIGRATE_COLUMNS
    if applied:
        print(f"ledger {shown}: schema version {start} -> {to}", file=sys.stderr)
    else:
        print(f"ledger {shown}: schema version {to}, nothing to apply", file=sys.stderr)
    return [{"ledger": shown, "from": start, "to": to, "applied": ",".join(map(str, applied))}]


def _backup(args: argparse.Namespace, url: str) -> list[dict[str, Any]]:
    args.ops_columns = BACKUP_COLUMNS
    if args.verify is not None:
        if args.dest is not None or args.force:
            raise _Exit(2, "backup --verify FILE takes no DEST nor --force")
        report = verify(args.verify)
        what = f"backup {args.verify}: sound"
    else:
        if args.dest is None:
            raise _Exit(2, "backup needs DEST (the file to write) or --verify FILE")
        target = resolve(url)
        try:
            report = backup(target, args.dest, force=args.force)
        except BackupRefused as exc:
            raise _Exit(2, str(exc)) from None
        what = f"backed up ledger {safe_url(url)} to {args.dest}"
        if isinstance(target, PostgresTarget):
            what += " (pg_dump custom format; restore with pg_restore)"
    schema = report.schema
    version = "" if schema is None else f", schema version {schema.current}"
    if schema is not None and schema.pending:
        version += f" (this code would migrate it to {schema.target})"
    checked = "archive readable" if schema is None else "integrity ok"
    print(f"{what}: {report.bytes} bytes{version}, {checked}", file=sys.stderr)
    return [{"table": t, "rows": n} for t, n in report.tables]


def _prune(args: argparse.Namespace, url: str) -> list[dict[str, Any]]:
    args.ops_columns = PRUNE_COLUMNS
    days = args.counter_days
    if days is None:
        raw = os.environ.get(COUNTER_DAYS_ENV, "0")
        try:
            days = _days(raw)
        except argparse.ArgumentTypeError as exc:
            raise _Exit(2, f"{COUNTER_DAYS_ENV}: {exc}") from None
    target = resolve(url)
    policy = RetentionPolicy(counter_days=days, batch=args.batch)
    now = SystemClock().now()
    if isinstance(target, PostgresTarget):
        report = asyncio.run(prune_postgres(target, now, policy, dry_run=args.dry_run))
    else:
        report = prune_ledger_file(target.path, now, policy, dry_run=args.dry_run)
    action = "would delete" if report.dry_run else "deleted"
    zone: tzinfo = args.tz
    cutoff = report.counter_cutoff
    print(
        f"{action} {report.nonces} expired nonce(s) and {report.counters} counter row(s)"
        + ("" if cutoff is None else f" before {cutoff.astimezone(zone).isoformat()}")
        + ("" if cutoff is not None else " (counters kept: --counter-days 0)"),
        file=sys.stderr,
    )
    return [
        {"kind": "nonces", "rows": report.nonces, "before": None, "action": action},
        {
            "kind": "counters",
            "rows": report.counters,
            "before": None if cutoff is None else cutoff.astimezone(zone),
            "action": action if cutoff is not None else "kept",
        },
    ]
