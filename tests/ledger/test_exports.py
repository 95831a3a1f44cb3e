"""The ledger package's public names (a change here is an API change)."""

from __future__ import annotations

import metering_middleware.ledger as ledger


def test_public_names() -> None:
    assert sorted(ledger.__all__) == [
        "CallRecord",
        "CallSummary",
        "ClaimedNonce",
        "CredentialRow",
        "Journal",
        "LedgerStore",
        "LedgerUnavailable",
        "LedgerWriter",
        "MemoryStore",
        "Outcome",
        "OutcomeCount",
        "RecordIdFactory",
        "SqliteStore",
        "StoreError",
        "WriterStats",
        "new_record_id",
        "open_store",
        "record_id_time",
    ]
    assert all(hasattr(ledger, name) for name in ledger.__all__)


def test_stores_satisfy_the_protocol() -> None:
    # Assignments the type checker verifies (mypy tests/ledger); at runtime, a smoke check.
    memory: ledger.LedgerStore = ledger.MemoryStore()
    sqlite: ledger.LedgerStore = ledger.SqliteStore("unused.db")
    assert memory is not sqlite
