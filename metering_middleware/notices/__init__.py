"""Notices: what an operator or a tenant must hear about (a plan running low or expiring,
a low balance, an account overdue, suspended or restored, a spend cap reached).

Each is recorded once (its id is deterministic: what it is about), in the ledger's file,
with a webhook delivery owed in the same transaction (the outbox), so none is lost across
a restart.
"""

from .model import Notice, NoticeKind, notice_id
from .records import record_notice

__all__ = ["Notice", "NoticeKind", "notice_id", "record_notice"]
