"""``metering``: results on stdout, messages on stderr, exit 0 / 1 / 2, secrets never echoed."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import pytest
from cryptography.fernet import Fernet

import example_gateway.__main__ as gateway_cli
from metering_middleware import cli
from metering_middleware.cli import main
from metering_middleware.ledger import CallRecord, Outcome, OutcomeCount
from metering_middleware.ledger.urls import open_store


def run(
    *argv: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "metering_middleware.cli", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


def test_add_prints_the_secret_once_and_list_never(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", db, "accounts", "add", "acme", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    [created] = json.loads(out)
    assert created["account"] == "acme" and len(created["access_key_secret"]) >= 16
    assert "shown once" in err and created["access_key_secret"] not in err
    assert main(["--db", db, "accounts", "list", "--format", "json"]) == 0
    out, _ = capsys.readouterr()
    [listed] = json.loads(out)
    assert listed["access_key_id"] == created["access_key_id"] and listed["enabled"] is True
    assert created["access_key_secret"] not in out


def test_secret_from_stdin_and_file(db: str, tmp_path: Path) -> None:
    result = run(
        "--db",
        db,
        "accounts",
        "add",
        "globex",
        "--secret-stdin",
        "--format",
        "csv",
        stdin="a-secret-from-stdin-123\n",
    )
    assert result.returncode == 0, result.stderr
    [row] = list(csv.DictReader(io.StringIO(result.stdout)))
    assert row["access_key_secret"] == "a-secret-from-stdin-123"
    secret_file = tmp_path / "secret"
    secret_file.write_text("a-secret-from-a-file-456\n")
    result = run("--db", db, "accounts", "add", "initech", "--secret-file", str(secret_file))
    assert result.returncode == 0 and "a-secret-from-a-file-456" in result.stdout
    short = run("--db", db, "accounts", "add", "x", "--secret-stdin", stdin="short\n")
    assert short.returncode == 1 and short.stderr.count("\n") == 1 and "16" in short.stderr


def test_secrets_are_encrypted_at_rest_with_a_key(db: str, tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    result = run(
        "--db", db, "accounts", "add", "acme", "--format", "json", env={"METERING_SECRET_KEY": key}
    )
    secret = json.loads(result.stdout)[0]["access_key_secret"]
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
        [(stored,)] = conn.execute("SELECT secret FROM credentials").fetchall()
    assert stored.startswith("fernet:") and secret not in stored


def test_disable(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--db", db, "accounts", "add", "acme"])
    capsys.readouterr()
    assert main(["--db", db, "accounts", "disable", "acme"]) == 0
    assert main(["--db", db, "accounts", "disable", "acme"]) == 1
    _, err = capsys.readouterr()
    assert err.strip().splitlines()[-1].startswith("metering: no enabled")
    main(["--db", db, "accounts", "list", "--format", "json"])
    assert json.loads(capsys.readouterr().out)[0]["enabled"] is False


def _seed(db: str) -> None:
    async def seed() -> None:
        store = open_store(db)
        await store.open()
        t = datetime(2026, 11, 1, 0, 30, tzinfo=UTC)
        records = [
            CallRecord(
                id=f"01REC{i:021d}",
                request_id=f"r{i}",
                account=acct,
                access_key_id="LTAIx",
                category="facebody",
                action="DetectFace",
                version="2019-12-30",
                item="facebody.DetectFace",
                occurred_at=t,
                status=200,
                error_code=None,
                latency_ms=2.0,
            )
            for i, acct in enumerate(["acme", "acme", "globex"])
        ]
        counts = [
            OutcomeCount(t, "acme", "facebody", "DetectFace", Outcome.CHARGED, "", 2),
            OutcomeCount(t, "acme", "facebody", "DetectFace", Outcome.FREE, "InvalidParameter", 4),
        ]
        await store.write(records, counts)
        await store.close()

    asyncio.run(seed())


def test_ledger_views(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    _seed(db)
    assert main(["--db", db, "ledger", "summary", "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {(s["account"], s["calls"]) for s in summary} == {("acme", 2), ("globex", 1)}
    assert main(["--db", db, "ledger", "calls", "--account", "acme", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["request_id"] for r in rows] == ["r0", "r1"]
    assert rows[0]["occurred_at"].endswith("+08:00")  # displayed in UTC+8 by default
    assert main(["--db", db, "ledger", "calls", "--tz", "UTC", "--until", "2026-11-01"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:2] == ["id", "occurred_at"]
    assert len(table.splitlines()) == 2  # 00:30Z is after 2026-11-01T00:00Z: none before
    assert main(["--db", db, "ledger", "outcomes", "--format", "json"]) == 0
    outcomes = json.loads(capsys.readouterr().out)
    assert {(o["outcome"], o["detail"], o["calls"]) for o in outcomes} == {
        ("charged", "", 2),
        ("free", "InvalidParameter", 4),
    }


def test_bad_usage_and_bad_input() -> None:
    assert run("ledger").returncode == 2
    assert run("ledger", "calls", "--format", "yaml").returncode == 2
    bad_time = run("--db", "memory://", "ledger", "calls", "--since", "yesterday")
    assert bad_time.returncode == 2 and "--since" in bad_time.stderr
    bad_db = run("--db", "oracle://x", "ledger", "calls")
    assert bad_db.returncode == 1
    assert bad_db.stderr.count("\n") == 1 and "oracle" in bad_db.stderr
    assert "Traceback" not in bad_db.stderr


# --- reading like a well-made tool (issue 7) ------------------------------------------------


def test_global_options_before_between_or_after_the_command(db: str) -> None:
    _seed(db)
    run("--db", db, "accounts", "add", "acme")
    after = run("accounts", "list", "--format", "json", "--db", db)
    before = run("--format", "json", "--db", db, "accounts", "list")
    between = run("accounts", "--db", db, "--format", "json", "list")
    assert after.returncode == before.returncode == between.returncode == 0, before.stderr
    assert json.loads(after.stdout)[0]["account"] == "acme"
    assert before.stdout == after.stdout == between.stdout
    utc_after = run("--db", db, "ledger", "calls", "--tz", "UTC", "--format", "csv")
    utc_before = run("--tz", "UTC", "--format", "csv", "--db", db, "ledger", "calls")
    assert utc_before.returncode == 0 and utc_before.stdout == utc_after.stdout
    assert "T00:30:00+00:00" in utc_before.stdout
    # Given twice, the later one wins, as with any repeated option.
    twice = run("--format", "csv", "--db", db, "accounts", "list", "--format", "json")
    assert twice.stdout == after.stdout


def test_a_command_group_alone_prints_its_help_and_exits_2() -> None:
    bare = run()
    assert bare.returncode == 2 and bare.stdout == ""  # stdout is for results
    assert bare.stderr.startswith("usage: metering ") and "Traceback" not in bare.stderr
    for command in ("accounts", "ledger", "plans", "settle", "rerate", "bill"):
        assert f"\n  {command} " in bare.stderr
    group = run("--format", "json", "plans")
    assert group.returncode == 2 and group.stderr.startswith("usage: metering plans ")
    assert "\n  buy " in group.stderr and group.stdout == ""
    asked = run("--help")
    assert asked.returncode == 0 and asked.stdout == bare.stderr


def test_version_comes_from_the_package_metadata() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout == f"metering {version('metering_middleware')}\n"
    gateway = subprocess.run(
        [sys.executable, "-m", "example_gateway", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gateway.returncode == 0
    assert gateway.stdout == f"metering-gateway {version('metering_middleware')}\n"


def test_bad_usage_is_one_line_naming_the_help() -> None:
    bad = run("--db", "memory://", "accounts", "list", "--format", "yaml")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("metering accounts list: error: argument --format")
    assert "metering accounts list --help" in bad.stderr


def _parsers(
    parser: argparse.ArgumentParser,
) -> list[tuple[argparse.ArgumentParser, list[argparse.Action]]]:
    """Every parser of the tree with its actions, and each command's entry in its group."""
    found = [(parser, list(parser._actions))]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found[0][1].extend(action._get_subactions())
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(_parsers(sub))
    return found


RST = re.compile(r"`|:[a-z]+:|\*\*|^\.\. ", re.MULTILINE)
PARSERS: dict[str, ModuleType] = {"metering": cli, "metering-gateway": gateway_cli}


@pytest.mark.parametrize("name", PARSERS)
def test_every_option_and_command_has_plain_text_help(name: str) -> None:
    tree = _parsers(PARSERS[name].build_parser())
    assert len(tree) >= (19 if name == "metering" else 4)  # the walk reached the leaves
    for parser, actions in tree:
        assert parser.description, parser.prog
        text = parser.format_help()  # also proves every %-format in a help renders
        assert not RST.search(text), (parser.prog, RST.findall(text))
        for action in actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            where = f"{parser.prog} {action.option_strings or action.dest}"
            assert action.help and action.help != argparse.SUPPRESS, where


UNIT = re.compile(r"(seconds|minutes|hours|days|months|ms)$")
# A calendar month (--month YYYY-MM) is a date, not a duration; --months is a duration.
DURATION = re.compile(r"lag|grace|months|timeout|interval|ttl|delay|wait|period|drain|age")


@pytest.mark.parametrize("name", PARSERS)
def test_every_duration_has_its_unit_in_its_name_and_help(name: str) -> None:
    durations = [
        action
        for _, actions in _parsers(PARSERS[name].build_parser())
        for action in actions
        if action.option_strings
        and any(DURATION.search(o) for o in action.option_strings)
        # A word among fixed choices (reconcile --period hour|day) is no amount of time.
        and not action.choices
    ]
    if name == "metering":
        assert {a.option_strings[0] for a in durations} >= {
            "--lag-seconds",
            "--grace-days",
            "--months",
            "--validity-months",
        }
    for action in durations:
        unit = UNIT.search(action.option_strings[0])
        assert unit, action.option_strings
        assert action.help and unit.group(1) in action.help, action.option_strings


@pytest.mark.parametrize("value", ["inf", "nan", "1e30", "-5", "soon"])
def test_nonsense_durations_are_bad_usage_in_one_line(db: str, value: str) -> None:
    # The old spellings, so the test runs on the old parser too (which gave a traceback for
    # inf and 1e30, a float error for nan, and a bill for a grace of -5 days).
    for argv in (
        ["settle", f"--lag={value}"],
        ["bill", "a", "--month", "2026-03", f"--grace={value}"],
    ):
        result = run("--db", db, *argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_gateway_alone_prints_its_help_and_exits_2() -> None:
    bare = subprocess.run(
        [sys.executable, "-m", "example_gateway"], capture_output=True, text=True, timeout=60
    )
    assert bare.returncode == 2 and bare.stdout == "" and "Traceback" not in bare.stderr
    assert bare.stderr.startswith("usage: metering-gateway ")
    assert all(f"\n  {c} " in bare.stderr for c in ("demo", "serve", "mock"))


READ_AND_UPDATE_COMMANDS = [
    ["accounts", "list"],
    ["accounts", "disable", "acme"],
    ["ledger", "calls"],
    ["ledger", "summary"],
    ["ledger", "outcomes"],
    ["plans", "list"],
    ["plans", "show", "plan-1"],
    ["plans", "buy", "single", "acme", "--category", "ocr", "--points", "1", "--price", "1"],
    ["settle"],
    ["rerate", "--month", "2026-11"],
    ["bill", "acme", "--month", "2026-11"],
]


@pytest.mark.parametrize("command", READ_AND_UPDATE_COMMANDS, ids=" ".join)
def test_a_mistyped_ledger_path_is_an_error_not_a_new_ledger(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "ledgr.sqlite"
    assert main(["--db", f"sqlite:///{typo}", *command]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "no ledger file" in err and str(typo) in err
    assert not typo.exists()


def test_only_accounts_add_starts_a_new_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new.sqlite"
    assert main(["--db", str(path), "accounts", "add", "acme"]) == 0
    assert path.exists()
    capsys.readouterr()
    assert main(["--db", str(path), "accounts", "list"]) == 0
    assert "acme" in capsys.readouterr().out


def test_a_file_that_is_not_a_ledger_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text)")
    conn.close()
    assert main(["--db", str(path), "ledger", "calls"]) == 1
    assert "not a ledger" in capsys.readouterr().err
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {"notes"}  # not migrated into a ledger
