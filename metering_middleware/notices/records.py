"""Recording a notice inside the caller's transaction (synchronous: a store's worker thread)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from ..ledger.codec import format_time
from .model import Notice

__all__ = ["record_notice"]


def record_notice(conn: sqlite3.Connection, notice: Notice, recorded_at: datetime) -> bool:
    """Insert ``notice`` unless one with its id exists, and owe its webhook delivery.

    Runs in the caller's open transaction, so the notice, its delivery and whatever caused
    it commit together. True if it was new.
    """
    cursor = conn.execute(
        "INSERT OR IGNORE INTO notices (id, kind, account, subject, at, data, recorded_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            notice.id,
            notice.kind.value,
            notice.account,
            notice.subject,
            format_time(notice.at),
            json.dumps(dict(notice.data), sort_keys=True, default=str),
            format_time(recorded_at),
        ),
    )
    if cursor.rowcount == 0:
        return False
    conn.execute(
        "INSERT INTO notice_outbox (notice_id, attempts, next_at) VALUES (?, 0, ?)",
        (notice.id, format_time(recorded_at)),
    )
    return True
