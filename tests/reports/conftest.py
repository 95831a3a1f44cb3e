"""The report tests' backends: one test body over the SQLite and the PostgreSQL ledger
(the rating tests' ``ledger`` fixture: a file in tmp_path, or a fresh database dropped
after the test)."""

from tests.rating.conftest import LedgerAt, ledger, pg_databases

__all__ = ["LedgerAt", "ledger", "pg_databases"]
