"""``metering backup``: a consistent copy while a writer commits, atomic and refusing to
overwrite, a check of a copy, restore, bad input; PostgreSQL through pg_dump."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from metering_middleware.ledger import SqliteStore
from metering_middleware.ledger.migrate import load_migrations, migrate_file
from tests.support.postgres import PostgresCluster

from .conftest import cli, ledger_at

LATEST = len(load_migrations())
WRITER = Path(__file__).with_name("writer_child.py")
BATCH = 500


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _ids(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {i for (i,) in conn.execute("SELECT id FROM calls")}
    finally:
        conn.close()


def _committed(child: subprocess.Popen[str], at_least: int) -> int:
    """Read the writer's lines until it has committed ``at_least`` records (no sleeping)."""
    assert child.stdout is not None
    while True:
        line = child.stdout.readline()
        assert line, f"the writer died: {child.stderr.read() if child.stderr else ''}"
        total = int(line.split()[1])
        if total >= at_least:
            return total


def test_a_backup_taken_while_a_writer_commits_is_consistent_and_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "ledger.db"
    migrate_file(db)
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO credentials VALUES"
        " ('LTAIacme', 'acme', 'plain:s', 1, '2026-01-01T00:00:00.000000Z', NULL)"
    )
    conn.commit()
    conn.close()
    child = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), str(BATCH)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        _committed(child, 20 * BATCH)
        before = _ids(db)  # committed before the backup began

        run = cli(capsys, "backup", str(tmp_path / "copy.db"), "--db", _url(db), "--format", "json")

        seen = _committed(child, 0)
        # The writer goes on committing after (and while) the copy is made.
        assert _committed(child, seen + BATCH) > seen
    finally:
        child.kill()
        child.communicate()  # and close its pipes
    assert run.code == 0, run.err
    copy = tmp_path / "copy.db"
    tables = {r["table"]: r["rows"] for r in json.loads(run.out)}
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        counted = conn.execute("SELECT sum(count) FROM outcome_counts").fetchone()[0]
        credentials = conn.execute("SELECT account FROM credentials").fetchall()
    finally:
        conn.close()
    copied = _ids(copy)
    assert before <= copied  # every record committed before the backup began
    assert copied <= _ids(db)  # and nothing the ledger does not hold
    assert calls % BATCH == 0 and counted == calls  # whole transactions only
    assert tables["calls"] == calls and tables["credentials"] == 1
    assert credentials == [("acme",)]
    assert not (tmp_path / "copy.db-wal").exists()
    assert os.stat(copy).st_mode & 0o077 == 0  # it holds AccessKeys: owner only
    assert f"backed up ledger {_url(db)} to {copy}" in run.err


async def _open_and_close(store: SqliteStore) -> None:
    await store.open()
    await store.close()


def test_a_restored_backup_is_the_same_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "ledger.db"
    asyncio.run(_open_and_close(SqliteStore(db)))
    assert cli(capsys, "backup", str(tmp_path / "b.db"), "--db", str(db)).code == 0
    db.unlink()
    (tmp_path / "b.db").rename(db)

    # The same ledger: a store opens it without creating, and it is back in WAL mode.
    asyncio.run(_open_and_close(SqliteStore(db, create=False)))
    assert cli(capsys, "migrate", "--check", "--db", str(db)).code == 0
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_an_existing_dest_is_refused_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ledger_at(tmp_path / "ledger.db", LATEST)
    dest = tmp_path / "backup.db"
    dest.write_text("yesterday's backup")

    run = cli(capsys, "backup", str(dest), "--db", _url(db))

    assert run.code == 2
    assert "exists" in run.err and "--force" in run.err and run.err.count("\n") == 1
    assert dest.read_text() == "yesterday's backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["backup.db", "ledger.db", "ledger.db-shm", "ledger.db-wal"]
        if (tmp_path / "ledger.db-wal").exists()
        else ["backup.db", "ledger.db"]
    )

    forced = cli(capsys, "backup", str(dest), "--force", "--db", _url(db))
    assert forced.code == 0, forced.err
    assert cli(capsys, "backup", "--verify", str(dest)).code == 0


def test_a_failed_backup_leaves_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "out" / "b.db"
    missing = cli(capsys, "backup", str(tmp_path / "b.db"), "--db", _url(tmp_path / "none.db"))
    assert missing.code == 1 and "no ledger file" in missing.err
    db = ledger_at(tmp_path / "ledger.db", LATEST)
    nodir = cli(capsys, "backup", str(dest), "--db", _url(db))
    assert nodir.code == 1 and "no directory" in nodir.err and nodir.err.count("\n") == 1
    not_ledger = tmp_path / "other.db"
    sqlite3.connect(not_ledger).execute("CREATE TABLE t (x)").connection.close()
    other = cli(capsys, "backup", str(tmp_path / "c.db"), "--db", _url(not_ledger))
    assert other.code == 1 and "not a ledger" in other.err
    names = {p.name for p in tmp_path.iterdir()}
    assert not {"b.db", "c.db"} & names
    assert not [n for n in names if n.endswith(".tmp")]


def test_the_ledger_itself_is_never_a_backup_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = ledger_at(tmp_path / "ledger.db", LATEST)
    monkeypatch.chdir(tmp_path)
    before = db.read_bytes()
    (tmp_path / "alias.db").symlink_to(db)

    for dest in (str(db), "ledger.db", "./alias.db", f"{db}-wal", f"{db}.journal"):
        run = cli(capsys, "backup", dest, "--force", "--db", _url(db))
        assert run.code == 2, dest
        assert "the ledger itself" in run.err and run.err.count("\n") == 1
    assert db.read_bytes() == before
    assert not (tmp_path / "ledger.db.journal").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["backup"],  # no DEST
        ["backup", "--verify", "x.db", "y.db"],  # both
        ["backup", "--verify", "x.db", "--force"],
        ["backup", "b.db", "--db", "memory://"],
        ["backup", "b.db", "--db", "redis://localhost"],
        ["backup", "b.db", "--db", "sqlite://host/x.db"],
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)

    run = cli(capsys, *argv)

    assert run.code == 2
    assert run.err.startswith("metering: ") and run.err.count("\n") == 1
    assert run.out == ""
    assert list(tmp_path.iterdir()) == []


def test_verify_tells_a_sound_backup_from_a_damaged_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ledger_at(tmp_path / "ledger.db", LATEST)
    good = tmp_path / "good.db"
    assert cli(capsys, "backup", str(good), "--db", _url(db)).code == 0

    ok = cli(capsys, "backup", "--verify", str(good), "--format", "csv")
    assert ok.code == 0
    assert ok.out.splitlines()[0] == "table,rows"
    assert f"schema_migrations,{LATEST}" in ok.out.splitlines()
    assert "integrity ok" in ok.err

    damaged = tmp_path / "damaged.db"
    conn = sqlite3.connect(good)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    (root,) = conn.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'schema_migrations'"
    ).fetchone()
    conn.close()
    data = bytearray(good.read_bytes())
    start = (root - 1) * page
    data[start : start + page] = b"\x0d" + b"\xff" * (page - 1)  # a table page, wrecked
    damaged.write_bytes(bytes(data))
    bad = cli(capsys, "backup", "--verify", str(damaged))
    assert bad.code == 1 and bad.err.count("\n") == 1

    old = ledger_at(tmp_path / "old.db", 2)
    older = cli(capsys, "backup", "--verify", str(old))
    assert older.code == 0 and f"would migrate it to {LATEST}" in older.err

    for path, text in ((tmp_path / "nope.db", "no backup file"), (tmp_path, "no backup file")):
        run = cli(capsys, "backup", "--verify", str(path))
        assert run.code == 1 and text in run.err
    junk = tmp_path / "junk.db"
    junk.write_text("hello")
    assert cli(capsys, "backup", "--verify", str(junk)).code == 1


def test_postgresql_backup_is_a_pg_dump_archive_without_the_password_in_argv(
    pg_cluster: PostgresCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = pg_cluster.new_database("ops_ledger")
    pg_cluster.psql(
        "CREATE TABLE calls (id text PRIMARY KEY, amount numeric NOT NULL);"
        "INSERT INTO calls SELECT 'r' || g, g * 0.0016 FROM generate_series(1, 1000) g",
        ledger,
    )
    dest = tmp_path / "ledger.dump"

    run = cli(capsys, "backup", str(dest), "--db", pg_cluster.url(ledger), "--format", "json")

    assert run.code == 0, run.err
    assert json.loads(run.out) == [{"table": "public.calls", "rows": None}]
    assert pg_cluster.password not in run.err + run.out
    assert dest.read_bytes()[:5] == b"PGDMP"
    assert cli(capsys, "backup", "--verify", str(dest)).code == 0
    # Restored into a new database, it holds every row, amounts exact.
    restored = pg_cluster.new_database("ops_restored")
    subprocess.run(
        [str(pg_cluster.bin_dir / "pg_restore"), "--no-password", "-d", restored, str(dest)],
        env={
            **os.environ,
            "PGHOST": str(pg_cluster.directory),
            "PGPORT": str(pg_cluster.port),
            "PGUSER": pg_cluster.user,
        },
        check=True,
        capture_output=True,
    )
    assert pg_cluster.psql("SELECT count(*), sum(amount) FROM calls", restored).strip() == (
        "1000|800.8000"  # 500500 x 0.0016, exact
    )

    again = cli(capsys, "backup", str(dest), "--db", pg_cluster.url(ledger))
    assert again.code == 2  # exists

    wrong = cli(
        capsys,
        "backup",
        str(tmp_path / "w.dump"),
        "--db",
        pg_cluster.url(ledger, password="not-the-password"),
    )
    assert wrong.code == 1
    assert "password authentication failed" in wrong.err and wrong.err.count("\n") == 1
    assert "not-the-password" not in wrong.err
    assert not (tmp_path / "w.dump").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_pg_dump_gets_no_password_in_its_arguments_or_environment(
    pg_cluster: PostgresCluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A pg_dump first on PATH that writes down what `ps` and /proc would show of it (its
    # arguments and environment), then runs the real one.
    shim = tmp_path / "bin"
    shim.mkdir()
    real = str(pg_cluster.bin_dir / "pg_dump")
    seen = tmp_path / "seen.json"
    (shim / "pg_dump").write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv, 'env': dict(os.environ)}}, open({str(seen)!r}, 'w'))\n"
        f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n"
    )
    (shim / "pg_dump").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PGPASSWORD", "the-callers-own")  # never handed down either

    run = cli(capsys, "backup", str(tmp_path / "p.dump"), "--db", pg_cluster.url("postgres"))

    assert run.code == 0, run.err
    child = json.loads(seen.read_text())
    shown = " ".join(child["argv"]) + " " + " ".join(f"{k}={v}" for k, v in child["env"].items())
    assert pg_cluster.password not in shown
    assert "PGPASSWORD" not in child["env"]
    assert child["env"]["PGHOST"] == "127.0.0.1" and child["env"]["PGDATABASE"] == "postgres"
    assert not Path(child["env"]["PGPASSFILE"]).exists()  # removed after the dump
