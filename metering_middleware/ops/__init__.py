"""Operations on a ledger: schema migrations, backups, retention.

The ``metering migrate``, ``backup`` and ``prune`` commands and the gateway's
background retention task are thin faces over these functions (docs/operations.md).
"""

from .backup import BackupError, BackupExists, BackupRefused, BackupReport, backup, verify
from .pg_retention import prune_postgres
from .retention import (
    BackgroundRetention,
    PruneReport,
    RetentionPolicy,
    RetentionStats,
    counter_cutoff,
    prune_ledger_file,
)
from .schema import SchemaStatus, migrate, status
from .targets import BadLedgerUrl, LedgerTarget, PostgresTarget, SqliteTarget, resolve, safe_url

__all__ = [
    "BackgroundRetention",
    "BackupError",
    "BackupExists",
    "BackupRefused",
    "BackupReport",
    "BadLedgerUrl",
    "LedgerTarget",
    "PostgresTarget",
    "PruneReport",
    "RetentionPolicy",
    "RetentionStats",
    "SchemaStatus",
    "SqliteTarget",
    "backup",
    "counter_cutoff",
    "migrate",
    "prune_ledger_file",
    "prune_postgres",
    "resolve",
    "safe_url",
    "status",
    "verify",
]
