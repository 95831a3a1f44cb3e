"""``metering plans|settle|rerate|bill``: formats, exit codes, the CSV adding up."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
from datetime import timedelta
from decimal import Decimal

import pytest

from metering_middleware.catalog import default_catalog
from metering_middleware.cli import main
from metering_middleware.clock import ManualClock
from metering_middleware.ledger import LedgerStore, SqliteStore
from metering_middleware.rating import BILL_COLUMNS, SqliteRatingStore
from metering_middleware.stores.postgresql import PostgresStore
from metering_middleware.stores.postgresql.rating import PostgresRatingStore

from .conftest import LedgerAt
from .helpers import calls_between, utc

CATALOG = default_catalog()


@pytest.fixture
def db(ledger: LedgerAt) -> str:
    """A ledger with Alibaba's worked example in March 2026 (recorded as it happened), on
    SQLite or PostgreSQL (the same commands on both)."""
    path = ledger("ledger.sqlite")

    async def fill() -> None:
        clock = ManualClock(utc(2026, 3, 2, 6))
        store: LedgerStore = (
            PostgresStore.from_url(path, clock=clock)
            if isinstance(path, str)
            else SqliteStore(path, clock=clock)
        )
        async with store as ledger:
            await ledger.write(calls_between(CATALOG, 15_000, utc(2026, 3, 2), timedelta(0)), [])
            clock.set(utc(2026, 3, 3, 6))
            later = calls_between(
                CATALOG, 3, utc(2026, 3, 3), timedelta(seconds=1), account="globex", prefix="x"
            )
            await ledger.write(later, [])

    asyncio.run(fill())
    return path if isinstance(path, str) else f"sqlite:///{path}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_buy_list_and_show_plans(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "--db",
        db,
        "plans",
        "buy",
        "general",
        "globex",
        "--points",
        "30",
        "--price",
        "50",
        "--ordered-at",
        "2026-03-01",
        "--id",
        "g1",
        "--allow-debt",  # globex has no balance: the price is charged anyway
        "--format",
        "json",
    )
    assert code == 0 and "bought g1" in err
    [bought] = json.loads(out)
    assert bought["kind"] == "general" and bought["points"] == "30"
    assert bought["start"] == "2026-03-01T00:00:00+08:00"  # naive input: --tz (UTC+8)
    assert "videoenhan" not in bought["covers"] and "ocr" in bought["covers"]
    code, out, _ = run(
        capsys,
        "--db",
        db,
        "plans",
        "buy",
        "qps",
        "acme",
        "--category",
        "facebody",
        "--action",
        "DetectFace",
        "--qps",
        "20",
        "--price",
        "99.5",
        "--allow-debt",
        "--format",
        "csv",
    )
    assert code == 0
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert (row["kind"], row["covers"], row["qps"], row["price_paid"]) == (
        "qps",
        "facebody/DetectFace",
        "20",
        "99.5",
    )
    code, out, _ = run(capsys, "--db", db, "plans", "list", "--format", "json")
    assert code == 0 and [p["account"] for p in json.loads(out)] == ["acme", "globex"]
    code, out, _ = run(capsys, "--db", db, "plans", "show", "g1")
    assert code == 0 and "g1" in out and "general" in out


def test_a_purchase_the_balance_cannot_cover_is_refused(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--db", db, "plans", "buy", "single", "acme", "--category", "ocr"]
    code, out, err = run(capsys, *argv, "--points", "15", "--price", "5", "--id", "s1")
    assert (code, out) == (1, "") and "top up first" in err and err.count("\n") == 1
    code, out, _ = run(capsys, "--db", db, "plans", "list", "--format", "json")
    assert json.loads(out) == []  # nothing bought


def test_plan_errors_exit_1_in_one_line(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["plans", "show", "nope"],
        [
            "plans",
            "buy",
            "qps",
            "a",
            "--category",
            "facebody",
            "--action",
            "DetectFace",
            "--qps",
            "51",
            "--price",
            "1",
        ],
        ["plans", "buy", "single", "a", "--category", "nope", "--points", "1", "--price", "1"],
    ):
        code, _, err = run(capsys, "--db", db, *argv)
        assert code == 1 and err.count("\n") == 1 and err.startswith("metering: ")


def test_bad_usage_exits_2(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["bill", "acct", "--month", "2026-13"],
        ["bill", "acct"],
        ["rerate"],
        ["plans", "buy", "single", "a", "--category", "ocr", "--points", "x", "--price", "1"],
        ["plans", "buy", "general", "a", "--points", "1", "--price", "1", "--ordered-at", "?"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(["--db", db, *argv])
        assert exc.value.code == 2
        capsys.readouterr()


def test_settle_then_bill_in_every_format(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--db", db, "settle", "--format", "json")
    assert code == 0 and "settled 2026-03: 15,003 records" in err
    [report] = json.loads(out)
    assert (report["accounts"], report["records"], report["adjustments"]) == (2, 15_003, 0)

    code, out, _ = run(capsys, "--db", db, "bill", "acct", "--month", "2026-03", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0])[: len(BILL_COLUMNS)] == list(BILL_COLUMNS)
    assert [r["Item"] for r in rows] == ["PayAsYouGoBill", "PayAsYouGoBill", "Rounding"]
    charged = sum((Decimal(r["PaymentAmount"]) for r in rows), Decimal(0))
    assert charged == Decimal("2000.00")

    code, out, _ = run(capsys, "--db", db, "bill", "acct", "--month", "2026-03", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["amount_due"] == "2000.00" and doc["final"] is True
    code, table, _ = run(capsys, "--db", db, "bill", "acct", "--month", "2026-03")
    assert code == 0 and "amount due (CNY)      2000.00" in table and "payg tier 2 @ 0.10" in table
    code, out, _ = run(capsys, "--db", db, "bill", "globex", "--month", "2026-03", "--tz", "UTC")
    assert code == 0 and "0.45" in out

    # Settling again changes nothing; re-rating reproduces the bill.
    code, out, _ = run(capsys, "--db", db, "settle", "--format", "json")
    assert code == 0 and json.loads(out)[0]["records"] == 0
    code, out, err = run(capsys, "--db", db, "rerate", "--month", "2026-03", "--format", "json")
    assert code == 0 and json.loads(out)[0]["rerated"] == "acct,globex"
    code, again, _ = run(capsys, "--db", db, "bill", "acct", "--month", "2026-03")

    def lines(text: str) -> list[str]:  # how far settlement went moved on, the rest did not
        return [ln for ln in text.splitlines() if "settled" not in ln]

    assert lines(again) == lines(table) and again != table


def test_settle_one_account_and_a_busy_lock(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--db", db, "settle", "--account", "globex", "--format", "json")
    assert code == 0 and json.loads(out)[0]["records"] == 3

    # Another settler holds the lock (on PostgreSQL for as long as its session lives: a
    # thread of its own keeps it open while the command runs).
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        async def run_holder() -> None:
            store = (
                PostgresRatingStore.from_url(db)
                if db.startswith("postgresql://")
                else SqliteRatingStore(db.removeprefix("sqlite:///"))
            )
            async with store:
                clock = ManualClock(utc(2030, 1, 1))
                assert await store.acquire_lock("someone", clock.now(), timedelta(days=1))
                held.set()
                await asyncio.to_thread(done.wait, 60)

        asyncio.run(run_holder())

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(60)
        code, _, err = run(capsys, "--db", db, "settle")
    finally:
        done.set()
        holder.join()
    assert code == 1 and "another settler" in err and err.count("\n") == 1


def test_rating_needs_an_sqlite_or_postgresql_ledger(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--db", "memory://", "plans", "list")
    assert code == 1 and "SQLite" in err


def test_durations_spelled_with_their_units_and_the_old_way(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--db", db, "settle", "--account", "globex", "--lag", "0")
    assert code == 0, out
    code, out, err = run(
        capsys, "--format", "json", "--db", db, "settle", "--lag-seconds", "0", "--grace-days", "2"
    )
    assert code == 0, err
    assert json.loads(out)[0]["records"] == 15_000  # globex's 3 were settled the old way
    old = run(capsys, "--db", db, "bill", "acct", "--month", "2026-03", "--grace", "2")
    new = run(capsys, "--db", db, "bill", "acct", "--month", "2026-03", "--grace-days", "2")
    assert old == new and old[0] == 0 and "2000.00" in old[1]
