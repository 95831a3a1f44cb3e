"""The durable ledger of chargeable calls: records, stores, the journal and the writer."""

from ..stores.sqlite.ledger import SqliteStore
from .ids import RecordIdFactory, new_record_id, record_id_time
from .journal import Journal
from .memory import MemoryStore
from .records import CallRecord, ClaimedNonce, Outcome, OutcomeCount
from .store import CallSummary, CredentialRow, LedgerStore, StoreError
from .urls import open_store
from .writer import LedgerUnavailable, LedgerWriter, WriterStats

__all__ = [
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
