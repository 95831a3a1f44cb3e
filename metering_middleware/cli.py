"""``metering``: accounts, the ledger, plans, settlement and bills from the command line.

Results go to stdout (``--format table|json|csv``), messages to stderr. Exit
codes: 0 success, 1 failure, 2 bad usage. Secrets are never taken as
arguments (stdin or a file) and are printed once, at creation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

from ._budget_commands import (
    LIMITS_COLUMNS,
    add_budget_options,
    add_limits_command,
    budgets_for,
    warn_oversold,
)
from ._cli_args import (
    Parser,
    add_command,
    add_commands,
    package_version,
    positive_int,
    spread_global_options,
)
from ._ops_cli import add_ops_commands, run_ops
from ._output import STREAMED_FORMATS, render
from .clock import BEIJING, SystemClock
from .credentials import SECRET_KEY_ENV, CredentialManager, SecretBox
from .ledger import CallRecord, LedgerStore, StoreError
from .ledger.migrate import LedgerMissing
from .ledger.urls import open_store
from .notices._commands import add_notice_commands
from .rating import LockLost, SettleBusy
from .rating._commands import CATALOG_ENV, RATING_COLUMNS, add_rating_commands
from .rating._money_commands import MONEY_COLUMNS, add_money_commands
from .reconcile._commands import add_reconcile_command
from .reports._commands import add_report_commands
from .reports.export import ProgressUnavailable, progress_bar, stream_export

__all__ = ["main"]

DB_ENV = "METERING_LEDGER_URL"
DEFAULT_DB = "sqlite:///metering-ledger.sqlite"


class CliError(Exception):
    """A failure to report in one line (exit 1)."""


def _zone(text: str) -> tzinfo:
    if text.upper() in ("UTC", "Z", "+00:00"):
        return UTC
    sign = -1 if text.startswith("-") else 1
    try:
        hours, _, minutes = text.lstrip("+-").partition(":")
        return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes or 0)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UTC offset such as +08:00") from None


def _instant(zone: tzinfo) -> Callable[[str], datetime]:
    def parse(text: str) -> datetime:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an ISO date or time (2026-11-01 or 2026-11-01T08:00:00+08:00)"
            ) from None
        if value.tzinfo is None:
            value = value.replace(tzinfo=zone)
        return value.astimezone(UTC)

    return parse


def _read_secret(args: argparse.Namespace) -> str | None:
    if args.secret_file:
        try:
            with open(args.secret_file, encoding="utf-8") as fh:
                text = fh.read().strip()
        except OSError as exc:
            raise CliError(f"cannot read secret file: {exc.strerror}") from None
    elif args.secret_stdin:
        text = sys.stdin.readline().strip()
    else:
        return None
    if len(text) < 16:
        raise CliError("a secret needs at least 16 characters")
    return text


async def _accounts_add(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    manager = CredentialManager(store, SecretBox.from_env(), SystemClock())
    row, secret = await manager.add(args.name, _read_secret(args))
    print(
        f"created AccessKey {row.access_key_id} for {row.account}; "
        "the secret is shown once, store it now",
        file=sys.stderr,
    )
    return [
        {"account": row.account, "access_key_id": row.access_key_id, "access_key_secret": secret}
    ]


async def _accounts_list(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    manager = CredentialManager(store, SecretBox.from_env(), SystemClock())
    rows = await manager.list(args.account)
    return [
        {
            "account": r.account,
            "access_key_id": r.access_key_id,
            "enabled": r.enabled,
            "created_at": r.created_at.astimezone(args.tz),
            "disabled_at": r.disabled_at.astimezone(args.tz) if r.disabled_at else None,
        }
        for r in rows
    ]


async def _accounts_disable(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    manager = CredentialManager(store, SecretBox.from_env(), SystemClock())
    n = await manager.disable(args.key)
    if n == 0:
        raise CliError(f"no enabled AccessKey or account named {args.key!r}")
    print(f"disabled {n} AccessKey(s)", file=sys.stderr)
    return [{"disabled": n}]


def _call_row(r: CallRecord, zone: tzinfo) -> dict[str, Any]:
    return {
        "id": r.id,
        "occurred_at": r.occurred_at.astimezone(zone),
        "account": r.account,
        "access_key_id": r.access_key_id,
        "category": r.category,
        "action": r.action,
        "item": r.item,
        "status": r.status,
        "error_code": r.error_code,
        "request_id": r.request_id,
        "latency_ms": r.latency_ms,
    }


async def _ledger_calls(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]] | str:
    filters = {"account": args.account, "since": args.since, "until": args.until}
    if args.format not in STREAMED_FORMATS:  # a table needs every row for its widths
        records = await store.calls(**filters, limit=args.limit)
        return [_call_row(r, args.tz) for r in records]
    # JSON and CSV stream: keyset pages written as they come, in constant memory.
    bar = None
    if args.progress or sys.stderr.isatty():
        total = await store.count_calls(**filters)
        if args.limit is not None:
            total = min(total, args.limit)
        try:
            bar = progress_bar(total, sys.stderr, required=args.progress)
        except ProgressUnavailable as exc:
            raise CliError(str(exc)) from None

    async def pages() -> AsyncIterator[list[dict[str, Any]]]:
        async for page in store.iter_calls(**filters, limit=args.limit):
            yield [_call_row(r, args.tz) for r in page]

    try:
        await stream_export(pages(), COLUMNS[_ledger_calls], args.format, sys.stdout, bar=bar)
    except BrokenPipeError:
        # The reader stopped (`| head`): not an error. What is still buffered goes nowhere,
        # so the interpreter's flush at exit does not fail on the closed pipe.
        _discard_stdout()
    return ""


def _discard_stdout() -> None:
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # not a real file (tests capture it): nothing to redirect
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


async def _ledger_summary(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = await store.summary(account=args.account, since=args.since, until=args.until)
    return [
        {
            "account": r.account,
            "category": r.category,
            "action": r.action,
            "item": r.item,
            "calls": r.calls,
            "first": r.first.astimezone(args.tz),
            "last": r.last.astimezone(args.tz),
        }
        for r in rows
    ]


async def _ledger_outcomes(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    totals: dict[tuple[str, str, str, str, str], int] = {}
    for c in await store.outcome_counts(account=args.account, since=args.since, until=args.until):
        key = (c.account, c.category, c.action, c.outcome.value, c.detail)
        totals[key] = totals.get(key, 0) + c.count
    return [
        {
            "account": k[0],
            "category": k[1],
            "action": k[2],
            "outcome": k[3],
            "detail": k[4],
            "calls": n,
        }
        for k, n in sorted(totals.items())
    ]


COLUMNS = {
    _accounts_add: ["account", "access_key_id", "access_key_secret"],
    _accounts_list: ["account", "access_key_id", "enabled", "created_at", "disabled_at"],
    _accounts_disable: ["disabled"],
    _ledger_calls: [
        "id",
        "occurred_at",
        "account",
        "access_key_id",
        "category",
        "action",
        "item",
        "status",
        "error_code",
        "request_id",
        "latency_ms",
    ],
    _ledger_summary: ["account", "category", "action", "item", "calls", "first", "last"],
    _ledger_outcomes: ["account", "category", "action", "outcome", "detail", "calls"],
    **RATING_COLUMNS,
    **MONEY_COLUMNS,
    **LIMITS_COLUMNS,
}

#: A handler returns rows to render, or (the bill) text already rendered.
Handler = Callable[[LedgerStore, argparse.Namespace], Awaitable[list[dict[str, Any]] | str]]


DESCRIPTION = "Accounts, the ledger, plans, settlement and bills of a metering gateway."
EPILOG = f"""\
Results go to stdout, messages to stderr. Exit status: 0 success, 1 failure,
2 bad usage. Secrets are never taken as arguments (--secret-stdin or
--secret-file) and are printed once, when created.

environment:
  {DB_ENV:23}ledger URL when --db is not given
  {SECRET_KEY_ENV:23}Fernet key(s) encrypting AccessKey secrets at rest
  {CATALOG_ENV:23}catalog file when --catalog is not given

Run 'metering COMMAND --help' for a command's options.
"""


def _global_options(target: argparse._ActionsContainer, default: Callable[[Any], Any]) -> None:
    # The one declaration: spread_global_options adds these to every parser of the tree.
    target.add_argument(
        "--db",
        metavar="URL",
        default=default(None),
        help=f"ledger URL: sqlite:///PATH, postgresql://..., memory:// "
        f"(default: ${DB_ENV} or {DEFAULT_DB})",
    )
    target.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default=default("table"),
        help="how results are printed on stdout (default: table)",
    )
    target.add_argument(
        "--tz",
        metavar="OFFSET",
        type=_zone,
        default=default(BEIJING),
        help="UTC offset such as +08:00 or UTC, for displayed times and for input times "
        "written without one (default: +08:00)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="metering",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"metering {package_version('metering_middleware')}",
        help="print the version and exit",
    )
    groups = add_commands(parser, "group")

    accounts = add_command(groups, "accounts", "AccessKeys of the accounts served")
    acts = add_commands(accounts, "command")
    add = add_command(acts, "add", "create an AccessKey for an account; prints its secret once")
    add.add_argument("name", help="account name")
    src = add.add_mutually_exclusive_group()
    src.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the AccessKey secret from stdin instead of generating one",
    )
    src.add_argument(
        "--secret-file", metavar="FILE", help="read the AccessKey secret from this file"
    )
    add.set_defaults(handler=_accounts_add)
    lst = add_command(acts, "list", "list AccessKeys (never their secrets)")
    lst.add_argument("--account", help="this account's keys only")
    lst.set_defaults(handler=_accounts_list)
    dis = add_command(acts, "disable", "disable an AccessKey, or every key of an account")
    dis.add_argument("key", help="an AccessKeyId, or an account name to disable all its keys")
    dis.set_defaults(handler=_accounts_disable)

    ledger = add_command(groups, "ledger", "chargeable calls and outcome counts")
    lacts = add_commands(ledger, "command")
    for name, handler, text in (
        ("calls", _ledger_calls, "chargeable calls, oldest first"),
        ("summary", _ledger_summary, "chargeable calls by account and action"),
        ("outcomes", _ledger_outcomes, "every call by outcome: charged, free, refused"),
    ):
        p = add_command(lacts, name, text)
        p.add_argument("--account", help="this account's calls only")
        p.add_argument(
            "--since", metavar="TIME", help="from this time, inclusive (ISO 8601, e.g. 2026-11-01)"
        )
        p.add_argument("--until", metavar="TIME", help="to this time, exclusive (ISO 8601)")
        if name == "calls":
            p.add_argument(
                "--limit", metavar="N", type=positive_int, help="at most N calls (default: all)"
            )
            p.add_argument(
                "--progress",
                action="store_true",
                help="a progress bar on stderr for json/csv exports (default: only when "
                "stderr is a terminal)",
            )
        p.set_defaults(handler=handler)
    plans = add_rating_commands(groups)
    add_money_commands(groups, acts, plans)
    add_notice_commands(groups)
    add_reconcile_command(groups)
    add_report_commands(groups)
    add_ops_commands(groups)
    add_limits_command(groups)
    add_budget_options(parser)  # --config on the commands that warn about the budget
    spread_global_options(parser, _global_options)
    return parser


#: The only command that starts a new ledger; every other one needs the file to be there,
#: so a mistyped --db is an error instead of a new, empty, migrated database.
_CREATING = frozenset({_accounts_add})


async def _run(args: argparse.Namespace) -> list[dict[str, Any]] | str:
    url = args.db or os.environ.get(DB_ENV) or DEFAULT_DB
    try:
        store = open_store(url, create=args.handler in _CREATING)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        await store.open()
    except LedgerMissing as exc:
        raise CliError(f"{exc} (check --db; `metering accounts add` starts a ledger)") from None
    except (StoreError, OSError) as exc:
        raise CliError(f"cannot open ledger {url}: {exc}") from None
    try:
        handler: Handler = args.handler
        # A QPS purchase or renewal warns when it oversells the upstream budget.
        budgets = budgets_for(args) if getattr(args, "warn_budget", False) else None
        result = await handler(store, args)
        if budgets is not None:
            await warn_oversold(store, args, result, budgets)
        return result
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "ops", None) is not None:  # migrate, backup, prune: never open a store
        return run_ops(args, args.db or os.environ.get(DB_ENV) or DEFAULT_DB)
    if getattr(args, "handler", None) is None:  # a command group without its command
        args.help_of.print_help(sys.stderr)
        return 2
    for name in ("since", "until", "ordered_at"):
        if getattr(args, name, None) is not None:
            try:
                setattr(args, name, _instant(args.tz)(getattr(args, name)))
            except argparse.ArgumentTypeError as exc:
                parser.error(f"--{name.replace('_', '-')}: {exc}")
    try:
        rows = asyncio.run(_run(args))
    except (CliError, StoreError, ValueError, SettleBusy, LockLost) as exc:
        print(f"metering: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1
    if isinstance(rows, str):
        sys.stdout.write(rows)
    else:
        render(rows, COLUMNS[args.handler], args.format, sys.stdout)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
