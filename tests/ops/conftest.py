"""Helpers of the operations tests: CLI runs, ledgers at a given schema version. The
PostgreSQL cluster is the session's one (``pg_cluster``, tests/support/postgres.py)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from metering_middleware.cli import main
from metering_middleware.ledger.migrate import apply_migrations, load_migrations


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
