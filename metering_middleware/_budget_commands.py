"""QPS sold against the operator's upstream budget, for ``metering`` (private).

``metering limits check`` lists, per API, the budget (``upstream_qps``), the QPS sold now
and the peak sold from now on, and warns on stderr for each API sold above its budget;
``metering plans buy qps`` and ``plans renew`` warn the same way for the subscription's
own period. A warning never changes the exit status: selling above the budget is the
operator's call (tenants rarely all use their level at once), and the gateway refuses
what does not fit (``Throttling.Api``).

QPS sold for an API at an instant: over the accounts, the sum of each account's active
subscription level (several at once: the highest, capped at the catalog's ``max_qps``),
as the entitlement rule counts it. Default and resource-plan QPS are not sold and not
counted: many accounts on their free 2 QPS can still meet the budget.

The budget comes from ``--config FILE`` (the gateway's TOML, ``[metering]
upstream_qps``) and ``METERING_UPSTREAM_QPS``, read as the gateway reads them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from ._cli_args import add_command, add_commands, subparsers
from .catalog import Catalog, default_catalog, load_catalog
from .clock import SystemClock
from .config import ConfigError, MeteringConfig
from .ledger import LedgerStore
from .limiter.budget import UpstreamBudgets
from .rating.open import rating_store_for
from .rating.plans import QpsSubscription

__all__ = [
    "LIMITS_COLUMNS",
    "add_budget_option",
    "add_budget_options",
    "add_limits_command",
    "budgets_for",
    "peak_sold",
    "sold_at",
    "warn_oversold",
]

_CATALOG_ENV = "METERING_CATALOG_PATH"


def _level(sub: QpsSubscription, catalog: Catalog) -> int:
    item = catalog.lookup(sub.category, sub.action)
    return sub.qps if item is None or item.max_qps is None else min(sub.qps, item.max_qps)


def sold_at(
    subs: Iterable[QpsSubscription], catalog: Catalog, api: tuple[str, str], when: datetime
) -> int:
    """QPS sold for ``api`` at ``when``: per account the highest active level, summed."""
    best: dict[str, int] = {}
    for s in subs:
        if s.api == api and s.active_at(when):
            best[s.account] = max(best.get(s.account, 0), _level(s, catalog))
    return sum(best.values())


def peak_sold(
    subs: Sequence[QpsSubscription],
    catalog: Catalog,
    api: tuple[str, str],
    start: datetime,
    end: datetime | None = None,
) -> tuple[int, datetime]:
    """The most QPS sold for ``api`` at any instant of ``[start, end)`` and the first
    instant it is reached. The sum only rises where a subscription starts, so those
    instants (and ``start``) are the only ones to look at."""
    instants = sorted(
        {start}
        | {
            s.start
            for s in subs
            if s.api == api and s.start > start and (end is None or s.start < end)
        }
    )
    peak, at = 0, start
    for when in instants:
        n = sold_at(subs, catalog, api, when)
        if n > peak:
            peak, at = n, when
    return peak, at


def add_budget_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the gateway's TOML file, for [metering] upstream_qps (the operator's QPS "
        "budget per API; also METERING_UPSTREAM_QPS)",
    )


def add_budget_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` on every command below ``parser`` that warns (``warn_budget``)."""
    for sub in subparsers(parser):
        if sub.get_default("warn_budget"):
            add_budget_option(sub)
        add_budget_options(sub)


def _budgets(args: argparse.Namespace) -> UpstreamBudgets:
    path = getattr(args, "config", None)
    table: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                table = dict(tomllib.load(fh).get("metering", {}))
        except OSError as exc:
            raise ConfigError(f"--config: {exc.strerror}: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config {path}: {exc}") from None
    # Only the budget is needed; the rest of the table is the gateway's business.
    spec = {"upstream_qps": table["upstream_qps"]} if "upstream_qps" in table else {}
    # The budget's own variable only: another METERING_ variable is the gateway's.
    env = {k: v for k, v in os.environ.items() if k == "METERING_UPSTREAM_QPS"}
    config = MeteringConfig.load(table=spec, file=path or "", environ=env)
    return UpstreamBudgets(config.upstream_qps)


def _catalog(args: argparse.Namespace) -> Catalog:
    path = getattr(args, "catalog", None) or os.environ.get(_CATALOG_ENV)
    return load_catalog(path) if path else default_catalog()


def _warn(api: tuple[str, str], sold: int, at: datetime, budget: int, zone: Any) -> None:
    print(
        f"metering: warning: {api[0]}.{api[1]}: {sold} QPS sold from "
        f"{at.astimezone(zone).isoformat()}, above the upstream budget of {budget} "
        "(upstream_qps): calls over it are refused with Throttling.Api",
        file=sys.stderr,
    )


def budgets_for(args: argparse.Namespace) -> UpstreamBudgets:
    """The budget a command checks against; read before a purchase, so a bad
    ``--config`` fails (exit 1) before anything is bought."""
    return _budgets(args)


async def warn_oversold(
    store: LedgerStore,
    args: argparse.Namespace,
    rows: list[dict[str, Any]] | str,
    budgets: UpstreamBudgets,
) -> None:
    """After a purchase or renewal: one warning line per QPS subscription in ``rows``
    whose API is sold above its budget somewhere in the subscription's period."""
    if isinstance(rows, str) or not budgets:
        return
    subs_bought = [r["id"] for r in rows if r.get("kind") == "qps"]
    if not subs_bought:
        return
    catalog = _catalog(args)
    async with rating_store_for(store) as ratings:
        subs = (await ratings.plan_book()).subscriptions
    for sub in (s for s in subs if s.id in subs_bought):
        budget = budgets.budget(sub.category, sub.action)
        if budget is None:
            continue
        sold, at = peak_sold(subs, catalog, sub.api, sub.start, sub.effective_end)
        if sold > budget:
            _warn(sub.api, sold, at, budget, args.tz)


async def _limits_check(store: LedgerStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    budgets = _budgets(args)
    catalog = _catalog(args)
    now = args.ordered_at or SystemClock().now()
    async with rating_store_for(store) as ratings:
        subs = (await ratings.plan_book()).subscriptions
    apis = {s.api for s in subs if s.effective_end > now}
    apis |= {
        (c, a) for c, _, a in (k.partition(".") for k in budgets.spec()) if a
    }  # named APIs, sold or not
    rows = []
    for api in sorted(apis):
        budget = budgets.budget(*api)
        sold_now = sold_at(subs, catalog, api, now)
        peak, at = peak_sold(subs, catalog, api, now)
        over = budget is not None and peak > budget
        if over:
            assert budget is not None
            _warn(api, peak, at, budget, args.tz)
        rows.append(
            {
                "category": api[0],
                "action": api[1],
                "upstream_qps": budget,
                "sold_now": sold_now,
                "sold_peak": peak,
                "peak_from": at.astimezone(args.tz),
                "status": "no budget" if budget is None else "over" if over else "ok",
            }
        )
    if not budgets:
        print(
            "metering: no upstream_qps configured (--config FILE or METERING_UPSTREAM_QPS): "
            "nothing to check against",
            file=sys.stderr,
        )
    return rows


#: Output columns of the handler (``metering``'s renderer looks them up by handler).
LIMITS_COLUMNS: dict[Callable[..., Any], list[str]] = {
    _limits_check: [
        "category",
        "action",
        "upstream_qps",
        "sold_now",
        "sold_peak",
        "peak_from",
        "status",
    ]
}


def add_limits_command(groups: Any) -> None:
    limits = add_command(groups, "limits", "QPS sold against the operator's upstream budget")
    acts = add_commands(limits, "command")
    check = add_command(
        acts,
        "check",
        "per API: the upstream budget, QPS sold now and at its peak; warns when sold above it",
    )
    add_budget_option(check)
    check.add_argument("--catalog", metavar="FILE", help="catalog file (default: the packaged one)")
    check.add_argument(
        "--at", dest="ordered_at", metavar="TIME", help="check from this time (default: now)"
    )
    check.set_defaults(handler=_limits_check)
