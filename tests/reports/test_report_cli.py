"""``metering usage`` and ``metering report ...``: tables, JSON (the to_json documents the
HTTP faces return), CSV, one-line errors with exit 1, usage errors with exit 2."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from metering_middleware.cli import main
from metering_middleware.ledger import CallRecord, MemoryStore
from tests.reports.conftest import LedgerAt
from tests.reports.readme_ledger import START, build
from tests.reports.support import Ledger, cli_url


@pytest.fixture(scope="module")
def db(module_ledger: LedgerAt) -> str:
    """The README's example ledger, built once per module and backend (reports only read)."""
    path = module_ledger("ledger")
    asyncio.run(build(path))
    return cli_url(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(run, capsys, *argv)


RANGE = ["--since", "2026-11-01", "--until", "2026-11-03"]


async def test_usage_table_has_days_of_beijing_and_a_total(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await cli(capsys, "--db", db, "usage", "acme", *RANGE)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["day", "category", "action", "charged", "free", "refused", "total"]
    assert lines[2].split() == ["2026-11-01", "facebody", "DetectFace", "1", "1"]
    assert lines[3].split() == ["2026-11-02", "facebody", "CompareFace", "3", "3"]
    assert lines[4].split() == [
        "2026-11-02", "facebody", "DetectFace", "1", "Throttling.User=2", "3"
    ]  # fmt: skip
    assert lines[5].split() == ["total", "5", "0", "Throttling.User=2", "7"]


async def test_usage_json_is_the_api_document_and_tz_moves_days(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await cli(
        capsys,
        "--db",
        db,
        "usage",
        "acme",
        *RANGE,
        "--by",
        "day",
        "--tz",
        "UTC",
        "--format",
        "json",
    )
    doc = json.loads(out)
    assert code == 0 and doc["tz"] == "+00:00" and doc["group"] == ["day"]
    # In UTC the range starts 8 hours later: 2026-11-01T00:00Z .. 2026-11-03T00:00Z.
    assert [(r["day"], r["total"]) for r in doc["rows"]] == [("2026-11-01", 4), ("2026-11-02", 3)]
    assert doc["since"] == "2026-11-01T00:00:00Z"


async def test_usage_csv_by_action(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await cli(
        capsys, "--db", db, "usage", "acme", *RANGE, "--by", "action", "--format", "csv"
    )
    assert code == 0
    assert list(csv.reader(io.StringIO(out))) == [
        ["category", "action", "charged", "free", "refused", "total"],
        ["facebody", "CompareFace", "3", "", "", "3"],
        ["facebody", "DetectFace", "2", "", "Throttling.User=2", "4"],
    ]


async def test_the_deduction_and_the_preview(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await cli(
        capsys, "--db", db, "report", "deduction", "acme", "--month", "2026-11", "--format", "csv"
    )
    assert code == 0
    assert list(csv.reader(io.StringIO(out)))[1:] == [
        ["single", "P1", "", "", "2", "100", "0"],
        ["payg", "", "0", "0.40", "3", "0", "1.20"],
    ]
    code, out, _ = await cli(
        capsys, "--db", db, "report", "deduction", "acme", "--month", "2026-11"
    )
    assert out.splitlines()[-1].split() == ["total", "5", "100", "1.20"]
    code, out, _ = await cli(
        capsys, "--db", db, "report", "preview", "acme", "--month", "2026-11", "--format", "json"
    )
    doc = json.loads(out)
    assert code == 0 and doc["month"] == "2026-11" and doc["settled"] == "1.20"
    assert doc["elapsed"] == "1" and doc["projected"] == doc["to_date"]  # the month is over


async def test_overview_and_plans(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await cli(capsys, "--db", db, "report", "overview", "acme", "--month", "2026-11")
    assert code == 0
    assert "balance        17.80 CNY" in out  # 20 - plan 1 - 1.20
    assert "standing       good" in out and "P1" in out and "exhausted" in out
    code, out, _ = await cli(capsys, "--db", db, "report", "overview", "acme", "--format", "json")
    doc = json.loads(out)
    assert set(doc) == {"overview", "plans", "preview"} and doc["overview"]["balance"] == "17.80"
    code, out, _ = await cli(capsys, "--db", db, "report", "plans", "acme", "--format", "json")
    [plan] = json.loads(out)
    assert (plan["id"], plan["points_left"], plan["low"]) == ("P1", "0", True)


async def test_accounts_search_is_literal(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await cli(
        capsys, "--db", db, "report", "accounts", "--search", "%", "--format", "json"
    )
    doc = json.loads(out)
    assert code == 0 and [a["account"] for a in doc["items"]] == ["AC%ME"] and doc["total"] == 1
    code, out, _ = await cli(capsys, "--db", db, "report", "accounts", "--search", "Acme")
    assert [ln.split()[0] for ln in out.splitlines()[2:]] == ["acme", "acme2"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["usage", "acme3"], "no account 'acme3'"),
        (["usage", "acme", "--since", "2026-11-03", "--until", "2026-11-01"], "must be before"),
        (["usage", "acme", "--since", "2026-11-01T00:00:30"], "whole minute"),
        (["report", "overview", "ac%"], "no account 'ac%'"),
        (["report", "deduction", "acme", "--month", "2099-01"], "has not started"),
        (["report", "preview", "nobody"], "no account"),
    ],
)
async def test_refusals_are_one_line_exit_1(
    db: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = await cli(capsys, "--db", db, *argv)
    assert (code, out) == (1, "")
    assert message in err and err.count("\n") == 1 and err.startswith("metering: ")


@pytest.mark.parametrize(
    "argv",
    [
        ["usage", "acme", "--by", "week"],
        ["report", "deduction", "acme", "--month", "2026-13"],
        ["report", "accounts", "--limit", "0"],
        ["report", "accounts", "--offset", "-1"],
    ],
)
async def test_bad_usage_exit_2(
    db: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = await cli(capsys, "--db", db, *argv)
    assert (code, out) == (2, "") and err.count("\n") == 1


async def test_the_memory_store_pages_the_same_way() -> None:
    # iter_calls is part of the LedgerStore contract: the memory store pages like SQLite.
    store = MemoryStore()
    await store.open()
    ledger = Ledger(Path("unused"), START)
    same = START + timedelta(minutes=1)
    records = [
        ledger_record
        for ledger_record in await _records(ledger, [same, same, START, same + timedelta(1)])
    ]
    await store.write(records, [])
    whole = await store.calls()
    assert [r for p in [p async for p in store.iter_calls(page=2)] for r in p] == whole
    assert [len(p) async for p in store.iter_calls(page=2, limit=3)] == [2, 1]
    assert await store.count_calls(since=same) == 3
    await store.close()


async def _records(ledger: Ledger, times: list[datetime]) -> list[CallRecord]:
    written: list[CallRecord] = []

    class _Capture:
        async def write(self, records: list[CallRecord], counts: object) -> None:
            written.extend(records)

    ledger.store = _Capture()  # type: ignore[assignment]
    await ledger.calls("acme", times)
    return written


@pytest.mark.parametrize("argv", [["usage", "acme"], ["report", "accounts"]])
async def test_a_ledger_without_plans_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = await cli(capsys, "--db", "memory://", *argv)
    assert (code, out) == (1, "") and err.count("\n") == 1
    assert "SQLite (sqlite:///path) or PostgreSQL (postgresql://)" in err
