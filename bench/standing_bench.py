"""The standing check and spend guard's cost per call, and the money view's reload cost.

    .venv/bin/python bench/standing_bench.py                    # ~2 min
    .venv/bin/python bench/standing_bench.py --rounds 9 --calls 20000 --accounts 1000

**Per call (A/B in one meter, one run).** One ``MeteringMiddleware`` (batched ledger, QPS
limiter on, a trivial VIAPI-like app inside) driven in-process with pre-signed DetectFace
calls, one after another, on a real SQLite ledger whose balance pays every call. Calls
alternate off, on, on, off... between enforcement off (``runtime.guard = None``: the
meter as the library ships it) and on (the guard ``enforce_balance`` builds), so both
sides share the same meter, ledger, writer, warm caches and machine load. Each call's
cost is the event loop thread's CPU time (``time.thread_time_ns``: the checks run on
that thread, the ledger's commits and the view's reloads in workers). Between calls the
bench yields to the event loop once, outside the timed call, as a server's loop runs its
other tasks between requests (without it no background task ever ran: the money view's
reload never started, so every enforced call asked for one). The figure: per block of
off-on-on-off runs (800 calls, ~0.15 s) the difference of its two sides' medians, and per
round the median of its blocks, median (min-max) over ``--rounds`` (the difference of a
whole round's two medians is shown beside it: the machine's drift within a round moves
it more). Nothing of the guard's runs for the calls outside them until a snapshot shows
them settled (a recorded call is a counter on its reservation: there is no filing); that
step, per call, is timed in the tight loop below.

**The checks alone.** ``guard.admit`` + the meter's record step (what a charged call adds)
in a tight loop, and dropping what it recorded at a snapshot that shows it settled,
against a dict lookup in the same run.

**Reload.** A ledger with ``--accounts`` accounts (balances, caps, standing rows, plans,
settled pay-as-you-go from a real settlement): a full read of the money view (one read
transaction, indexed and turned into the spend guard's state in the worker thread; what
still runs on the event loop is timed apart) and a reload that finds no mark moved, each
against ``SELECT 1`` through the same worker thread, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import platform
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from metering_middleware import MeteringConfig, MeteringMiddleware, MeteringRuntime
from metering_middleware.catalog import Catalog, default_catalog
from metering_middleware.clock import ManualClock, SystemClock
from metering_middleware.credentials import CredentialManager, SecretBox
from metering_middleware.ledger import CallRecord, SqliteStore
from metering_middleware.ledger.migrate import connect_existing
from metering_middleware.rating import (
    AccountSettings,
    BalanceEntry,
    EntryKind,
    SqliteRatingStore,
    buy_resource_plan,
    settle,
)
from metering_middleware.rating.money_reads import read_money
from metering_middleware.rating.months import Month
from metering_middleware.signing import sign_v3

#: Calls in a row on one side of the A/B: enough for the side's data to be as warm as
#: a gateway running it keeps it, few enough that both sides share the machine's moods.
RUN = 200
KEY, SECRET = "LTAIbenchstanding0001", "bench-standing-secret-000000000"
BODY = b"ImageURL=https%3A%2F%2Fx%2Fa.jpg"
ANSWER = b'{"RequestId":"BENCH-0000","Data":{"FaceCount":1}}'


def bench_catalog() -> Catalog:
    """The packaged catalog, DetectFace allowed far more QPS than the bench sends."""
    from dataclasses import replace

    catalog = default_catalog()
    items = tuple(
        replace(it, default_qps=1_000_000) if it.action == "DetectFace" else it
        for it in catalog.items
    )
    return replace(catalog, items=items)


async def trivial_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(ANSWER)).encode()),
                (b"x-acs-request-id", b"BENCH-0000"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": ANSWER})


def signed_scopes(n: int) -> list[dict[str, Any]]:
    """``n`` DetectFace calls, each with its own nonce, signed now (before any timing)."""
    base = {
        "host": "facebody.cn-shanghai.aliyuncs.com",
        "x-acs-action": "DetectFace",
        "x-acs-version": "2019-12-30",
        "content-type": "application/x-www-form-urlencoded",
    }
    now = datetime.now(UTC)
    scopes = []
    for _ in range(n):
        headers = dict(base)
        headers.update(
            sign_v3("POST", "/", [], headers, BODY, KEY, SECRET, now=now, nonce=uuid.uuid4().hex)
        )
        scopes.append(
            {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/",
                "raw_path": b"/",
                "query_string": b"",
                "root_path": "",
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
            }
        )
    return scopes


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    if message["type"] == "http.response.start" and message["status"] != 200:
        raise SystemExit(f"the bench got a {message['status']}: it measures admitted calls only")


async def per_call(tmp: Path, rounds: int, calls: int) -> dict[str, Any]:
    """Median CPU ns per call, enforcement on and off, interleaved call by call."""
    path = tmp / "ab.sqlite"
    store = SqliteStore(path)
    await store.open()
    await CredentialManager(store, SecretBox(None), SystemClock()).add(
        "acme", SECRET, access_key_id=KEY
    )
    await store.close()
    now = datetime.now(UTC)
    async with SqliteRatingStore(path) as rating:
        topup = BalanceEntry("topup:bench", "acme", EntryKind.TOPUP, Decimal(10**9), now, now)
        await rating.post_entries([topup], now)
    config = MeteringConfig(ledger_url=f"sqlite:///{path}", mode="batched", enforce_balance=True)
    runtime = MeteringRuntime(config, catalog=bench_catalog())
    meter = MeteringMiddleware(trivial_app, runtime=runtime)
    guard = runtime.guard
    assert guard is not None
    warm = 2000
    scopes = signed_scopes(warm + rounds * calls)
    clock = time.thread_time_ns
    rows: list[tuple[float, float, float]] = []
    async with runtime:
        for i, scope in enumerate(scopes[:warm]):  # both paths warm
            runtime.guard = guard if i % 2 else None
            await meter(scope, _receive, _send)
            await asyncio.sleep(0)
        at = warm
        for _ in range(rounds):
            off: list[int] = []
            on: list[int] = []
            blocks: list[float] = []
            block_off: list[int] = []
            block_on: list[int] = []
            for i, scope in enumerate(scopes[at : at + calls]):
                enforce = (i // RUN) % 4 in (1, 2)  # off on on off: no periodic bias
                runtime.guard = guard if enforce else None
                started = clock()
                await meter(scope, _receive, _send)
                spent = clock() - started
                # A server's loop runs its other tasks between calls (the reloads, the
                # writer's answers): so does the bench, outside the timed call.
                await asyncio.sleep(0)
                (on if enforce else off).append(spent)
                (block_on if enforce else block_off).append(spent)
                if (i + 1) % (4 * RUN) == 0:
                    # One off-on-on-off block: both sides within ~0.1 s of each other,
                    # so the machine's drift between blocks cancels out of its difference.
                    blocks.append(statistics.median(block_on) - statistics.median(block_off))
                    block_off, block_on = [], []
            at += calls
            rows.append(
                (
                    statistics.median(off) / 1000,
                    statistics.median(on) / 1000,
                    statistics.median(blocks) / 1000,
                )
            )
        runtime.guard = guard
    return {
        "off": [r[0] for r in rows],
        "on": [r[1] for r in rows],
        "diff": [r[1] - r[0] for r in rows],
        "blocks": [r[2] for r in rows],
        "recorded": guard.estimate("acme"),
    }


def checks_alone(n: int) -> dict[str, Any]:
    """µs per call of admit + recorded on a loaded snapshot, and of a dict lookup."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "alone.sqlite"
        asyncio.run(_one_account_ledger(path))
        catalog = default_catalog()
        from metering_middleware.errors import ACCOUNT_ARREARAGE, SPEND_CAP_EXCEEDED
        from metering_middleware.spend_guard import SpendGuard, _resolve

        guard = SpendGuard(
            str(path),
            catalog,
            SystemClock(),
            arrearage=ACCOUNT_ARREARAGE,
            spend_cap=SPEND_CAP_EXCEEDED,
            refresh_interval=3600,
        )

        async def load() -> None:
            await guard.view.refresh()
            await guard.view.close()

        asyncio.run(load())
        item = catalog.lookup("facebody", "DetectFace")
        assert item is not None
        table = {"acme": 1}

        def lookups() -> None:
            for _ in range(n):
                table.get("acme")

        def checks() -> None:
            admit = guard.admit
            for _ in range(n):
                res = admit("acme", item)
                assert res is not None
                res.recorded += 1  # the meter's record step (``guard.recorded``, inline)

        acct = guard._accounts["acme"]

        def resolving() -> None:
            # What a snapshot that shows all n settled does with them (on the event loop).
            acct.batches = [r for r in acct.batches if _resolve(acct, r, math.inf)]

        timed: dict[str, Any] = {"dict": _timed(lookups, n), "checks": _timed(checks, n)}
        timed["batches"] = len(acct.batches)
        timed["resolve"] = _timed(resolving, n)
        return timed


def _timed(fn: Callable[[], None], n: int) -> float:
    gc.collect()
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1e6 / n


async def _one_account_ledger(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    await store.close()
    now = datetime.now(UTC)
    async with SqliteRatingStore(path) as rating:
        topup = BalanceEntry("topup:bench", "acme", EntryKind.TOPUP, Decimal(10**9), now, now)
        await rating.post_entries([topup], now)


def _detect(rid: str, account: str, when: datetime) -> CallRecord:
    return CallRecord(
        id=rid,
        request_id=None,
        account=account,
        access_key_id="AK",
        category="facebody",
        action="DetectFace",
        version="2019-12-30",
        item="facebody.DetectFace",
        occurred_at=when,
        status=200,
        error_code=None,
        latency_ms=1.0,
    )


async def reload_cost(tmp: Path, accounts: int, rounds: int) -> dict[str, Any]:
    """A ledger with ``accounts`` accounts, settled; full and no-change reloads timed."""
    path = tmp / "reload.sqlite"
    start = datetime(2026, 3, 2, 6, tzinfo=UTC)
    clock = ManualClock(start)
    catalog = default_catalog()
    store = SqliteStore(path, clock=clock, synchronous="NORMAL")
    await store.open()
    detect = catalog.lookup("facebody", "DetectFace")
    assert detect is not None
    names = [f"acct{i:05d}" for i in range(accounts)]
    records = [
        _detect(f"r{i:05d}{j:03d}", name, start + timedelta(seconds=j))
        for i, name in enumerate(names)
        for j in range(20)
    ]
    clock.advance(30)
    for i in range(0, len(records), 5000):
        await store.write(records[i : i + 5000], [])
    await store.close()
    async with SqliteRatingStore(path) as rating:
        entries = [
            BalanceEntry(f"topup:{n}", n, EntryKind.TOPUP, Decimal("100"), start, start)
            for n in names
        ]
        await rating.post_entries(entries, start)
        for i, name in enumerate(names):
            if i % 3 == 0:
                await buy_resource_plan(
                    rating, catalog, account=name, kind="general", points=5000,
                    ordered_at=start, price_paid="0",
                )  # fmt: skip
            if i % 5 == 0:
                cap = AccountSettings(name, monthly_cap=Decimal("50"))
                await rating.set_account_settings(cap, start)
            if i % 10 == 0:
                await rating.set_hold(name, start, "bench", hold=True)
        clock.advance(120)
        await settle(rating, catalog, clock)
    from metering_middleware.errors import ACCOUNT_ARREARAGE, SPEND_CAP_EXCEEDED
    from metering_middleware.spend_guard import SpendGuard

    guard = SpendGuard(
        str(path), catalog, clock, arrearage=ACCOUNT_ARREARAGE, spend_cap=SPEND_CAP_EXCEEDED
    )
    view = guard.view
    on_loop: list[float] = []
    settled = guard._settled

    def timed_settled(snapshot: Any, prepared: Any) -> None:
        started = time.perf_counter()
        settled(snapshot, prepared)
        on_loop.append((time.perf_counter() - started) * 1000)

    view._on_snapshot = timed_settled  # what runs on the event loop after a full read
    conn = connect_existing(path)
    month = Month.of(clock.now())

    def select_one() -> None:
        conn.execute("SELECT 1").fetchone()

    def marks_only(known: Any) -> None:
        assert read_money(conn, month, known) is None

    await view.refresh()
    known = view._marks  # what the view keeps: the marks of its last full read
    base, full, cheap = [], [], []
    for _ in range(rounds):
        base.append(await _thread_ms(select_one))
        cheap.append(await _thread_ms(lambda: marks_only(known)))
        view._marks = None  # force a full read, as a moved mark would
        started = time.perf_counter()
        await view.refresh()
        full.append((time.perf_counter() - started) * 1000)
    conn.close()
    await view.close()
    rows = {
        t: sqlite3.connect(path).execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
        for t in ("balance_entries", "account_standing", "account_settings", "rating_lines")
    }
    return {
        "base": base,
        "full": full,
        "cheap": cheap,
        "loop": on_loop[1:],
        "accounts": accounts,
        "rows": rows,
    }


async def _thread_ms(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    await asyncio.to_thread(fn)
    return (time.perf_counter() - started) * 1000


def _spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-" + (
        f"{fmt.format(max(values))})"
    )


def report(ab: dict[str, Any], alone: dict[str, float], rl: dict[str, Any], args: Any) -> str:
    off, on, diff = ab["off"], ab["on"], ab["diff"]
    ratio = statistics.median(on) / statistics.median(off)
    lines = [
        "## Standing check and spend guard",
        "",
        f"`bench/standing_bench.py --rounds {args.rounds} --calls {args.calls} "
        f"--accounts {args.accounts}` on {platform.machine()} (CPython "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}), one run.",
        "",
        "| measure | µs per call: median (min-max) | vs baseline (same run) |",
        "| --- | --- | --- |",
        f"| baseline: the meter, enforcement off (median call of each round) "
        f"| {_spread(off)} | 1 |",
        f"| the meter, enforcement on (the calls in between) | {_spread(on)} | {ratio:.3f}x |",
        f"| difference of the round medians (on - off) | {_spread(diff)} | target <= 2 µs |",
        f"| **difference per block of {4 * RUN} calls (median of a round's blocks)** "
        f"| **{_spread(ab['blocks'])}** | target <= 2 µs |",
        "| filing recorded calls between calls (none: a recorded call is a counter on "
        "its lane's reservation) | 0 | |",
        f"| **all the guard adds to a call: the block difference plus dropping it at "
        f"settlement (the tight loop's figure, below)** "
        f"| **{statistics.median(ab['blocks']) + alone['resolve']:.2f}** | target <= 2 µs |",
        f"| baseline: a dict lookup | {alone['dict']:.3f} | 1 |",
        f"| the checks alone: `admit` + the record step | {alone['checks']:.3f} "
        f"| {alone['checks'] / alone['dict']:.1f}x |",
        f"| dropping them at the snapshot that shows them settled, per call "
        f"({alone['batches']} reservation(s) for {args.checks:,} calls) "
        f"| {alone['resolve']:.4f} | {alone['resolve'] / alone['dict']:.2f}x |",
        "",
        f"Reload of the money view, {rl['accounts']:,} accounts ("
        + ", ".join(f"{n:,} {t}" for t, n in rl["rows"].items())
        + f"), "
        f"{len(rl['full'])} rounds:",
        "",
        "| measure | ms: median (min-max) | vs baseline (same run) |",
        "| --- | --- | --- |",
        f"| baseline: `SELECT 1` through the worker thread | {_spread(rl['base'], '{:.3f}')} | 1 |",
        f"| reload, no mark moved (marks only) | {_spread(rl['cheap'], '{:.3f}')} "
        f"| {statistics.median(rl['cheap']) / statistics.median(rl['base']):.1f}x |",
        f"| full reload (one read transaction, index, guard state; worker thread) "
        f"| {_spread(rl['full'], '{:.1f}')} "
        f"| {statistics.median(rl['full']) / statistics.median(rl['base']):.0f}x |",
        f"| of which on the event loop (install, carry estimates over) "
        f"| {_spread(rl['loop'], '{:.2f}')} "
        f"| {statistics.median(rl['loop']) / statistics.median(rl['base']):.1f}x |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--checks", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    logging.getLogger("metering_middleware").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ab = asyncio.run(per_call(tmp, args.rounds, args.calls))
        alone = checks_alone(args.checks)
        rl = asyncio.run(reload_cost(tmp, args.accounts, args.rounds))
    print(report(ab, alone, rl, args))


if __name__ == "__main__":
    main()
