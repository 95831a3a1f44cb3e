"""A consistent copy of the whole ledger, and a check of such a copy.

An SQLite ledger file holds everything the gateway keeps: records, counters, nonces,
AccessKeys, plans, balances, money, bills and notices. :func:`backup` copies it with
SQLite's online backup API in **one step** (``Connection.backup(pages=-1)``): one read
transaction, so the copy is the ledger as of one instant, every transaction committed
before the step began and none half. In WAL mode a reader never blocks the gateway's
writer (nor the writer it), so a gateway keeps committing while the copy is made; a
stepped backup (``pages=N``) would instead restart whenever another connection writes
and might never finish under load.

The copy is written to a temporary file beside ``dest``, switched to a rollback
journal (one self-contained file, no ``-wal`` beside it), checked with
``PRAGMA integrity_check``, fsynced, and only then given its name: atomically, and
without replacing an existing file unless ``force`` (a hard link refuses an existing
name even if one appears meanwhile). A failure at any point leaves no partial file
under ``dest``.

PostgreSQL: ``pg_dump`` in its custom format (:mod:`._pg`), the same temporary file
and rename. Everything here is synchronous; the CLI runs it in a worker thread.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..ledger.journal import fsync_directory
from ..ledger.migrate import NotALedger, connect_existing
from ..ledger.store import StoreError
from . import _pg
from .schema import SchemaStatus, status
from .targets import LedgerTarget, PostgresTarget, SqliteTarget

__all__ = ["BackupError", "BackupExists", "BackupRefused", "BackupReport", "backup", "verify"]


class BackupError(StoreError):
    """The copy could not be made or is not a sound ledger (the message says which)."""


class BackupRefused(BackupError):
    """A ``dest`` this backup must not write (bad usage, not a failure)."""


class BackupExists(BackupRefused):
    """``dest`` exists and ``force`` was not given."""


@dataclass(frozen=True, slots=True)
class BackupReport:
    path: Path
    bytes: int
    #: Rows per table of the copy, in name order (a pg_dump archive: its tables, rows None).
    tables: tuple[tuple[str, int | None], ...]
    #: The copy's schema against this code (None for a pg_dump archive).
    schema: SchemaStatus | None


def backup(
    target: LedgerTarget, dest: str | os.PathLike[str], *, force: bool = False
) -> BackupReport:
    """Copy the ledger ``target`` names to ``dest`` (see the module's notes)."""
    dest = Path(dest)
    if isinstance(target, SqliteTarget) and _is_ledger_file(dest, target.path):
        # --force would put a copy in place of the live file: what the gateway commits
        # after the copy would go to the old file, away from the path.
        raise BackupRefused(f"{str(dest)!r} is the ledger itself (or one of its files)")
    if dest.exists() and not force:
        raise BackupExists(f"{str(dest)!r} exists: give --force to replace it")
    if dest.is_dir():
        raise BackupError(f"{str(dest)!r} is a directory: name the backup file")
    if not dest.parent.is_dir():
        raise BackupError(f"no directory {str(dest.parent)!r} for the backup")
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        if isinstance(target, PostgresTarget):
            _pg.dump(target.url, tmp)
            tables: tuple[tuple[str, int | None], ...] = _pg_tables(tmp)
            schema = None
        else:
            _copy_sqlite(target, tmp)
            tables, schema = _check_sqlite(tmp)
        _fsync(tmp)
        _publish(tmp, dest, force)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BackupReport(dest, dest.stat().st_size, tables, schema)


def _is_ledger_file(dest: Path, ledger: Path) -> bool:
    mine = dest.absolute()
    for name in (str(ledger), f"{ledger}-wal", f"{ledger}-shm", f"{ledger}.journal"):
        other = Path(name)
        if mine == other.absolute():
            return True
        if mine.exists() and other.exists() and os.path.samefile(mine, other):
            return True
    return False


def verify(path: str | os.PathLike[str]) -> BackupReport:
    """Check a backup file: a sound SQLite ledger (or a readable pg_dump archive)."""
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"no backup file at {str(path)!r}")
    if _pg.is_archive(path):
        return BackupReport(path, path.stat().st_size, _pg_tables(path), None)
    tables, schema = _check_sqlite(path)
    return BackupReport(path, path.stat().st_size, tables, schema)


def _pg_tables(path: Path) -> tuple[tuple[str, int | None], ...]:
    return tuple((name, None) for name in _pg.check_archive(path))


def _copy_sqlite(target: SqliteTarget, tmp: Path) -> None:
    source = connect_existing(target.path, timeout=target.busy_timeout_ms / 1000)
    try:
        source.execute(f"PRAGMA busy_timeout = {int(target.busy_timeout_ms)}")
        copy = sqlite3.connect(tmp, isolation_level=None)
        try:
            source.backup(copy)  # pages=-1: the whole file in one read transaction
            # One self-contained file: the copy is not in WAL mode until a store opens it
            # (which switches it back), so nothing of it lives in a -wal beside it.
            copy.execute("PRAGMA journal_mode = DELETE")
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy ledger {str(target.path)!r}: {exc}") from exc
    finally:
        source.close()


def _check_sqlite(path: Path) -> tuple[tuple[tuple[str, int | None], ...], SchemaStatus]:
    """Integrity, a ledger's schema, and rows per table; read-only."""
    try:
        conn = connect_existing(path)
    except NotALedger as exc:
        raise BackupError(str(exc)) from None
    try:
        conn.execute("PRAGMA query_only = 1")
        problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BackupError(f"{str(path)!r} fails integrity_check: {'; '.join(problems[:3])}")
        names = [
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        # Names come from sqlite_master of the file itself; quoted as identifiers.
        tables = tuple(
            (
                n,
                int(
                    conn.execute(
                        f'SELECT count(*) FROM "{n.replace(chr(34), chr(34) * 2)}"'
                    ).fetchone()[0]
                ),
            )
            for n in names
        )
    except sqlite3.Error as exc:
        raise BackupError(f"{str(path)!r} is not a sound ledger: {exc}") from exc
    finally:
        conn.close()
    return tables, status(SqliteTarget(path))


def _publish(tmp: Path, dest: Path, force: bool) -> None:
    if force:
        os.replace(tmp, dest)
    else:
        try:
            os.link(tmp, dest)  # fails if dest appeared since the check: never replaced
        except FileExistsError:
            raise BackupExists(f"{str(dest)!r} exists: give --force to replace it") from None
        except OSError:  # no hard links here (some network filesystems): check, then rename
            if dest.exists():
                raise BackupExists(f"{str(dest)!r} exists: give --force to replace it") from None
            os.rename(tmp, dest)
        else:
            tmp.unlink()
    fsync_directory(dest.parent)  # the rename's directory entry too


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
