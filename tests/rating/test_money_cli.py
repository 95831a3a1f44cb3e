"""``metering balance|accounts suspend|restore|plans renew|refund``: results on stdout,
one-line errors, exit codes, nothing written on a refusal."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import asyncpg
import pytest

from metering_middleware.cli import main

from .conftest import LedgerAt


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # usage errors: argparse exits 2
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def db(ledger: LedgerAt, capsys: pytest.CaptureFixture[str]) -> str:
    """An SQLite or a PostgreSQL ledger with one account (the same commands on both)."""
    where = ledger("ledger.sqlite")
    url = where if isinstance(where, str) else f"sqlite:///{where}"
    assert main(["--db", url, "accounts", "add", "acme"]) == 0
    capsys.readouterr()
    return url


def entries(db: str) -> list[tuple[str, str]]:
    sql = "SELECT kind, amount FROM balance_entries ORDER BY seq"
    if db.startswith("postgresql://"):

        async def read() -> list[tuple[str, str]]:
            conn = await asyncpg.connect(db)
            try:
                return [(r[0], format(r[1], "f")) for r in await conn.fetch(sql)]
            finally:
                await conn.close()

        return asyncio.run(read())
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        return conn.execute(sql).fetchall()


def test_a_lifecycle_through_the_cli(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--db", db, "balance", "topup", "acme", "100", "--format", "json")
    assert code == 0 and json.loads(out)[0]["balance"] == "100" and "topped up" in err
    code, out, err = run(capsys, "--db", db, "balance", "topup", "acme", "5", "--id", "w1")
    code2, _, err2 = run(capsys, "--db", db, "balance", "topup", "acme", "5", "--id", "w1")
    assert (code, code2) == (0, 0) and "already posted" in err2
    buy = ["plans", "buy", "single", "acme", "--category", "ocr", "--points", "1500"]
    code, _, _ = run(capsys, "--db", db, *buy, "--price", "50", "--id", "S1")
    assert code == 0
    code, out, err = run(capsys, "--db", db, "plans", "refund", "S1", "--format", "json")
    [quote] = json.loads(out)
    assert code == 0 and quote["amount"] == "50" and quote["refunded"] is False
    assert "add --yes" in err
    code, out, _ = run(capsys, "--db", db, "plans", "refund", "S1", "--yes", "--format", "json")
    assert code == 0 and json.loads(out)[0]["refunded"] is True
    code, _, err = run(capsys, "--db", db, "plans", "refund", "S1", "--yes")
    assert code == 1 and "already refunded" in err and err.count("\n") == 1
    code, _, err = run(capsys, "--db", db, "plans", "renew", "S1")
    assert code == 1 and "refunded" in err
    code, out, _ = run(capsys, "--db", db, "balance", "adjust", "acme", "-2.5", "--reason", "fee")
    assert code == 0
    code, out, _ = run(capsys, "--db", db, "balance", "cap", "acme", "30", "--format", "json")
    assert code == 0 and json.loads(out)[0]["monthly_cap"] == "30"
    code, out, _ = run(
        capsys, "--db", db, "balance", "threshold", "acme", "none", "--format", "csv"
    )
    assert code == 0 and out.splitlines()[1].endswith(",30,")
    code, out, _ = run(capsys, "--db", db, "accounts", "suspend", "acme", "--reason", "fraud")
    assert code == 0 and "held" in out
    code, out, err = run(capsys, "--db", db, "accounts", "restore", "acme", "--format", "json")
    assert code == 0 and json.loads(out)[0]["standing"] == "good"
    code, out, _ = run(capsys, "--db", db, "balance", "entries", "acme", "--format", "json")
    rows = json.loads(out)
    assert [(r["kind"], r["amount"]) for r in rows] == [
        ("topup", "100"),
        ("topup", "5"),
        ("purchase", "-50"),
        ("refund", "50"),
        ("correction", "-2.5"),
    ]
    code, out, _ = run(capsys, "--db", db, "balance", "show", "acme", "--format", "json")
    assert json.loads(out)[0]["balance"] == "102.5"


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["balance", "topup", "acme", "1.005"], 2, "at most 2 decimals"),
        (["balance", "topup", "acme", "-3"], 2, "positive"),
        (["balance", "topup", "acme", "lots"], 2, "decimal number"),
        (["balance", "topup", "ghost", "3"], 1, "no account 'ghost'"),
        (["balance", "show", "ghost"], 1, "no account 'ghost'"),
        (["balance", "adjust", "acme", "0", "--reason", "x"], 2, "must not be zero"),
        (["balance", "cap", "acme", "-1"], 2, "positive"),
        (["accounts", "restore", "acme"], 1, "not suspended"),
        (["plans", "refund", "nope"], 1, "no plan 'nope'"),
        (["plans", "renew", "nope"], 1, "no plan 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    db: str, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, says: str
) -> None:
    got, out, err = run(capsys, "--db", db, *argv)
    assert (got, out) == (code, "") and says in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert entries(db) == []


def test_a_top_up_for_a_disabled_account_is_refused(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", db, "accounts", "disable", "acme"]) == 0
    capsys.readouterr()
    code, out, err = run(capsys, "--db", db, "balance", "topup", "acme", "10")
    assert (code, out) == (1, "") and "disabled" in err
    assert entries(db) == []
