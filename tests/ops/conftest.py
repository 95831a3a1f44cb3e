"""Fixtures of the operations tests: CLI runs, ledgers at a given schema version, and a
throw-away PostgreSQL cluster (initdb + pg_ctl) for the pg_dump backup."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from metering_middleware.cli import main
from metering_middleware.ledger.migrate import apply_migrations, load_migrations

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Run:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    """``metering ARGV`` in this process: exit status, stdout, stderr."""
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's bad usage
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def ledger_at(path: Path, version: int) -> Path:
    """A ledger file migrated to ``version`` only (an older release's file)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        apply_migrations(conn, load_migrations()[:version])
    finally:
        conn.close()
    return path


def versions(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    port: int
    password: str
    socket_dir: Path

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql://postgres:{pw}@127.0.0.1:{self.port}/{database}"

    def psql(self, database: str, sql: str) -> str:
        done = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            env={
                **os.environ,
                "PGHOST": str(self.socket_dir),
                "PGPORT": str(self.port),
                "PGUSER": "postgres",
                "PGDATABASE": database,
                "PGPASSWORD": self.password,
            },
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout


def _as_postgres(*argv: str) -> list[str]:
    # The cluster's files belong to the postgres user: we may be root, and postgres
    # refuses to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return list(argv)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL cluster of this test session, in a temporary folder, on a free port."""
    if not (PG_BIN / "initdb").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL binaries missing at {PG_BIN}")
        pytest.skip(f"PostgreSQL binaries missing at {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="metering-ops-pg-"))
    password = "ops-" + os.urandom(8).hex()
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
    data = root / "data"
    subprocess.run(
        _as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
        ),
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-o",
            options,
            "start",
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield PgCluster(port, password, root)
    finally:
        subprocess.run(
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)
