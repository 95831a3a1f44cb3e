"""Recording a notice inside the caller's transaction (synchronous: a store's worker thread)."""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import datetime

from ..ledger.codec import format_time
from ..logs import fields
from .model import Notice

__all__ = ["LOGGER_NAME", "log_recorded", "notice_data_text", "record_notice"]

#: Every notice recorded is one line on this logger (INFO).
LOGGER_NAME = "metering_middleware.notices"
log = logging.getLogger(LOGGER_NAME)


def notice_data_text(notice: Notice) -> str:
    """The notice's details as the JSON text stored (and sent): keys sorted, compact."""
    return json.dumps(dict(notice.data), sort_keys=True, default=str, separators=(",", ":"))


def record_notice(conn: sqlite3.Connection, notice: Notice, recorded_at: datetime) -> bool:
    """Insert ``notice`` unless one with its id exists, and owe its webhook delivery.

    Runs in the caller's open transaction, so the notice, its delivery and whatever caused
    it commit together. True if it was new (and then it is logged: one line on
    ``metering_middleware.notices``; a transaction rolled back after that logs it again
    when its rerun records it, the notice itself is still recorded once).
    """
    data = notice_data_text(notice)
    cursor = conn.execute(
        "INSERT OR IGNORE INTO notices (id, kind, account, subject, at, data, recorded_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            notice.id,
            notice.kind.value,
            notice.account,
            notice.subject,
            format_time(notice.at),
            data,
            format_time(recorded_at),
        ),
    )
    if cursor.rowcount == 0:
        return False
    conn.execute(
        "INSERT INTO notice_outbox (notice_id, attempts, next_at) VALUES (?, 0, ?)",
        (notice.id, format_time(recorded_at)),
    )
    log_recorded(notice, data)
    return True


def log_recorded(notice: Notice, data: str) -> None:
    """The one line a newly recorded notice logs (both stores: the same text and fields)."""
    log.info(
        "notice id=%s kind=%s account=%s subject=%s at=%s data=%s",
        notice.id,
        notice.kind.value,
        notice.account,
        notice.subject,
        notice.at.isoformat(),
        data,
        extra={
            "notice": {"id": notice.id, "kind": notice.kind.value, "account": notice.account},
            **fields(
                "notice.recorded",
                account=notice.account,
                notice_id=notice.id,
                kind=notice.kind.value,
                subject=notice.subject,
                at=notice.at.isoformat(),
            ),
        },
    )
