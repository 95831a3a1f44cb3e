"""``metering migrate``: from/to versions, ``--check`` for deploy scripts, bad input, and
two migrators started at once."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from metering_middleware.ledger.migrate import load_migrations
from tests.support.postgres import PostgresCluster

from .conftest import cli, ledger_at, versions

LATEST = len(load_migrations())


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def test_migrate_brings_an_older_ledger_to_the_current_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ledger_at(tmp_path / "ledger.db", 2)
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO credentials VALUES"
        " ('LTAIkept', 'acme', 'plain:s', 1, '2026-01-01T00:00:00.000000Z', NULL)"
    )
    conn.commit()
    conn.close()

    run = cli(capsys, "migrate", "--db", _url(db), "--format", "json")

    assert run.code == 0, run.err
    [row] = json.loads(run.out)
    assert row["from"] == 2 and row["to"] == LATEST
    assert row["applied"] == ",".join(str(v) for v in range(3, LATEST + 1))
    assert f"schema version 2 -> {LATEST}" in run.err
    assert versions(db) == list(range(1, LATEST + 1))
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT account FROM credentials").fetchall() == [("acme",)]
    conn.close()


def test_migrating_a_current_ledger_applies_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ledger_at(tmp_path / "ledger.db", LATEST)

    run = cli(capsys, "migrate", "--db", _url(db), "--format", "csv")

    assert run.code == 0
    assert run.out.splitlines() == ["ledger,from,to,applied", f"{_url(db)},{LATEST},{LATEST},"]
    assert "nothing to apply" in run.err


def test_check_exits_1_while_a_migration_is_pending_and_applies_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ledger_at(tmp_path / "ledger.db", 3)

    run = cli(capsys, "migrate", "--check", "--db", _url(db))

    assert run.code == 1
    assert run.out == ""
    assert run.err.count("\n") == 1 and "pending" in run.err and "metering migrate" in run.err
    assert versions(db) == [1, 2, 3]  # untouched

    assert cli(capsys, "migrate", "--db", _url(db)).code == 0
    after = cli(capsys, "migrate", "--check", "--db", _url(db), "--format", "json")
    assert after.code == 0
    assert json.loads(after.out) == [
        {"ledger": _url(db), "current": LATEST, "target": LATEST, "pending": ""}
    ]


def test_a_ledger_migrated_by_a_newer_release_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ledger_at(tmp_path / "ledger.db", LATEST)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', '2030-01-01')")
    conn.commit()
    conn.close()

    for argv in (["migrate", "--check"], ["migrate"]):
        run = cli(capsys, *argv, "--db", _url(db))
        assert run.code == 1, argv
        assert "newer than this code" in run.err and run.err.count("\n") == 1


def test_a_missing_ledger_is_an_error_not_a_new_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "typo.db"

    for argv in (["migrate"], ["migrate", "--check"]):
        run = cli(capsys, *argv, "--db", _url(db))
        assert run.code == 1
        assert "no ledger file" in run.err and run.err.count("\n") == 1
    assert not db.exists()

    created = cli(capsys, "migrate", "--create", "--db", _url(db), "--format", "json")
    assert created.code == 0
    assert json.loads(created.out)[0]["from"] == 0
    assert versions(db) == list(range(1, LATEST + 1))


def test_a_file_that_is_not_a_ledger_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "notes.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    text = tmp_path / "text.db"
    text.write_text("not a database at all, but long enough to have a header" * 10)

    for path in (other, text):
        run = cli(capsys, "migrate", "--db", _url(path))
        assert run.code == 1
        assert "not a ledger" in run.err and run.err.count("\n") == 1
    conn = sqlite3.connect(other)
    assert [n for (n,) in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
    conn.close()


@pytest.mark.parametrize(
    "url",
    ["foo://bar", "sqlite://host/x.db", "sqlite:///", "memory://", "sqlite:///x.db?nosuch=1", ""],
)
def test_bad_ledger_urls_are_bad_usage(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METERING_LEDGER_URL", url)  # "" falls back to the default file

    run = cli(capsys, "migrate", *(["--db", url] if url else []))

    if url == "":
        assert run.code == 1 and "no ledger file" in run.err  # the default, missing
    else:
        assert run.code == 2, run.err
        assert run.err.startswith("metering: ") and run.err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_postgresql_migrate_check_create_and_rerun(
    pg_cluster: PostgresCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """On PostgreSQL: an empty database is no ledger (exit 1) until --create; --check
    reads without writing; a second migrate applies nothing; the password is never shown."""
    from metering_middleware.ledger.urls import redact_url
    from metering_middleware.stores.postgresql._migrate import load_migrations as pg_migrations

    pg_url = pg_cluster.url(pg_cluster.new_database("ops_migrate"))
    top = max(m.version for m in pg_migrations())
    run = cli(capsys, "migrate", "--check", "--db", pg_url)
    assert run.code == 1 and "no ledger in" in run.err and run.err.count("\n") == 1
    run = cli(capsys, "migrate", "--db", pg_url)  # a mistyped database is not a new ledger
    assert run.code == 1 and "no ledger in" in run.err

    run = cli(capsys, "migrate", "--create", "--db", pg_url, "--format", "json")
    assert run.code == 0, run.err
    applied = ",".join(map(str, range(1, top + 1)))
    assert json.loads(run.out) == [
        {"ledger": redact_url(pg_url), "from": 0, "to": top, "applied": applied}
    ]
    assert pg_cluster.password not in run.out + run.err
    run = cli(capsys, "migrate", "--check", "--db", pg_url)
    assert run.code == 0 and "up to date" in run.err
    run = cli(capsys, "migrate", "--db", pg_url)
    assert run.code == 0 and "nothing to apply" in run.err


def test_postgresql_unreachable_is_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = cli(capsys, "migrate", "--db", "postgresql://u:s3cret@127.0.0.1:1/ledger")

    assert run.code == 1 and run.err.count("\n") == 1
    assert "cannot connect to ledger" in run.err and "s3cret" not in run.err


def test_check_and_create_together_are_bad_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = cli(capsys, "migrate", "--check", "--create", "--db", _url(tmp_path / "x.db"))

    assert run.code == 2
    assert not (tmp_path / "x.db").exists()


# Each child runs `metering migrate` when the parent says "go" (a barrier: both start
# together) and prints its exit status and JSON result.
CHILD = """
import contextlib, io, json, sys
from metering_middleware.cli import main
print("ready", flush=True)
sys.stdin.readline()
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["migrate", "--db", sys.argv[1], "--format", "json"])
print(json.dumps({"code": code, "rows": json.loads(out.getvalue() or "null")}), flush=True)
"""


def test_two_migrators_at_once_apply_each_migration_once(tmp_path: Path) -> None:
    db = ledger_at(tmp_path / "ledger.db", 1)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, _url(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = []
    for child in children:
        out, err = child.communicate(timeout=60)
        results.append(json.loads(out))
        assert child.returncode == 0, err

    assert [r["code"] for r in results] == [0, 0]
    applied = sorted(r["rows"][0]["applied"] for r in results)
    # One applied everything missing, the other found it applied (never half, never twice).
    assert applied == ["", ",".join(str(v) for v in range(2, LATEST + 1))]
    assert versions(db) == list(range(1, LATEST + 1))
