"""The durable ledger of chargeable calls (being written)."""

from .ids import RecordIdFactory, new_record_id, record_id_time
from .records import CallRecord, Outcome, OutcomeCount
from .store import CallSummary, CredentialRow, LedgerStore, StoreError

__all__ = [
    "CallRecord",
    "CallSummary",
    "CredentialRow",
    "LedgerStore",
    "Outcome",
    "OutcomeCount",
    "RecordIdFactory",
    "StoreError",
    "new_record_id",
    "record_id_time",
]
