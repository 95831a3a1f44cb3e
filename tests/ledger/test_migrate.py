"""Schema migrations: statement splitting, versions, concurrent starters."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from metering_middleware.ledger import SqliteStore, StoreError
from metering_middleware.ledger.migrate import (
    Migration,
    SchemaTooNew,
    apply_migrations,
    load_migrations,
    migrate_file,
    split_statements,
)

# Each child opens the store when the parent says "go" (a barrier, so they start together),
# then prints the migrations it applied itself.
CHILD = """
import asyncio, json, sys
from metering_middleware.ledger import SqliteStore

async def main() -> None:
    store = SqliteStore(sys.argv[1], busy_timeout_ms=10_000)
    print("ready", flush=True)
    sys.stdin.readline()
    await store.open()
    print(json.dumps(list(store.applied_migrations)), flush=True)
    await store.close()

asyncio.run(main())
"""


def _schema(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
    finally:
        conn.close()


def test_packaged_migrations_are_numbered_from_one() -> None:
    migrations = load_migrations()

    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "initial"


def test_split_statements_uses_sqlite_tokenizer() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b');
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        UPDATE t SET x = 'c;d';
    END;
    -- trailing comment
    """

    statements = split_statements(sql)

    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER")
    assert statements[1].endswith("END;")


def test_split_statements_refuses_an_unfinished_statement() -> None:
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE t (x TEXT);\nCREATE TABLE u (y")


def test_a_failing_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    broken = (
        Migration(1, "one", "CREATE TABLE a (x);"),
        Migration(2, "two", "CREATE TABLE b (x);\nCREATE TABLE a (y);"),  # a exists
    )
    try:
        with pytest.raises(sqlite3.OperationalError, match="already exists"):
            apply_migrations(conn, broken)
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
        assert apply_migrations(conn, broken[:1]) == [1]
        assert apply_migrations(conn, broken[:1]) == []
    finally:
        conn.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    migrate_file(tmp_path / "l.db")
    conn = sqlite3.connect(tmp_path / "l.db")
    with conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 'x')")
    conn.close()

    with pytest.raises(SchemaTooNew, match="99"):
        migrate_file(tmp_path / "l.db")
    assert issubclass(SchemaTooNew, StoreError)


async def test_concurrent_connections_on_a_new_file_migrate_once(tmp_path: Path) -> None:
    stores = [SqliteStore(tmp_path / "l.db", busy_timeout_ms=10_000) for _ in range(8)]

    await asyncio.gather(*(s.open() for s in stores))

    applied = sorted(s.applied_migrations for s in stores)
    assert applied == [()] * 7 + [tuple(m.version for m in load_migrations())]
    for s in stores:
        await s.close()
    assert ("table", "calls") in _schema(tmp_path / "l.db")


def test_concurrent_processes_on_a_new_file_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()

    assert [err for _, err in results] == [""] * 4
    assert [child.returncode for child in children] == [0] * 4
    applied = sorted(json.loads(out) for out, _ in results)
    assert applied == [[]] * 3 + [[m.version for m in load_migrations()]]
    conn = sqlite3.connect(path)
    try:
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
    finally:
        conn.close()
    assert versions == [(m.version,) for m in load_migrations()]
