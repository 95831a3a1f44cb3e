"""Ledger values to and from storage rows and journal JSON.

One place decides how a record looks outside Python, so the SQLite store, the
journal and (later) other stores agree byte for byte. Times are fixed-width UTC
text ``YYYY-MM-DDTHH:MM:SS.ffffffZ``: text order is time order, and the
round trip is exact to the microsecond.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .records import CallRecord, ClaimedNonce, Outcome, OutcomeCount
from .store import CredentialRow

__all__ = [
    "CallRow",
    "CountKey",
    "CountRow",
    "NonceRow",
    "count_from_json",
    "count_from_row",
    "count_key",
    "count_to_json",
    "count_to_row",
    "credential_from_row",
    "credential_to_row",
    "format_time",
    "minute_of",
    "nonce_from_json",
    "nonce_from_row",
    "nonce_to_json",
    "nonce_to_row",
    "parse_time",
    "record_from_json",
    "record_from_row",
    "record_to_json",
    "record_to_row",
]

#: The ``calls`` columns after ``seq``, in table order (``recorded_at`` last).
CallRow = tuple[str, str | None, str, str, str, str, str, str, str, int, str | None, float, str]
#: The ``outcome_counts`` columns in table order.
CountRow = tuple[str, str, str, str, str, str, int]
#: The ``nonces`` columns after ``seq``, in table order.
NonceRow = tuple[str, str, str, int]
#: What identifies one counter: everything but the count.
CountKey = tuple[datetime, str, str, str, Outcome, str]

# %-formatting is about twice as fast as isoformat()+slicing, and pads the year
# to four digits, which strftime does not do everywhere.
_TIME_FORMAT = "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"


def format_time(when: datetime) -> str:
    """An aware datetime as fixed-width UTC text; naive datetimes are refused."""
    if when.tzinfo is not UTC:
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(f"naive datetime {when!r}: ledger times must be timezone-aware")
        when = when.astimezone(UTC)
    return _TIME_FORMAT % (
        when.year,
        when.month,
        when.day,
        when.hour,
        when.minute,
        when.second,
        when.microsecond,
    )


def parse_time(text: str) -> datetime:
    """The inverse of :func:`format_time` (an aware UTC datetime)."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"ledger time without a zone: {text!r}")
    return when if when.tzinfo is UTC else when.astimezone(UTC)


def minute_of(when: datetime) -> datetime:
    """The UTC minute an instant falls in (the key of outcome counters)."""
    if when.tzinfo is not UTC:
        if when.tzinfo is None:
            raise ValueError(f"naive datetime {when!r}: ledger times must be timezone-aware")
        when = when.astimezone(UTC)
    return when.replace(second=0, microsecond=0)


def record_to_row(record: CallRecord, recorded_at: str) -> CallRow:
    return (
        record.id,
        record.request_id,
        record.account,
        record.access_key_id,
        record.category,
        record.action,
        record.version,
        record.item,
        format_time(record.occurred_at),
        record.status,
        record.error_code,
        record.latency_ms,
        recorded_at,
    )


def record_from_row(row: tuple[Any, ...]) -> CallRecord:
    """A record from the first twelve ``calls`` columns (``recorded_at`` is ignored)."""
    return CallRecord(
        id=row[0],
        request_id=row[1],
        account=row[2],
        access_key_id=row[3],
        category=row[4],
        action=row[5],
        version=row[6],
        item=row[7],
        occurred_at=parse_time(row[8]),
        status=int(row[9]),
        error_code=row[10],
        latency_ms=float(row[11]),
    )


def record_to_json(record: CallRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "request_id": record.request_id,
        "account": record.account,
        "access_key_id": record.access_key_id,
        "category": record.category,
        "action": record.action,
        "version": record.version,
        "item": record.item,
        "occurred_at": format_time(record.occurred_at),
        "status": record.status,
        "error_code": record.error_code,
        "latency_ms": record.latency_ms,
    }


def record_from_json(data: dict[str, Any]) -> CallRecord:
    """Raise ``KeyError``/``TypeError``/``ValueError`` on a malformed object."""
    return CallRecord(
        id=_text(data["id"]),
        request_id=_optional_text(data["request_id"]),
        account=_text(data["account"]),
        access_key_id=_text(data["access_key_id"]),
        category=_text(data["category"]),
        action=_text(data["action"]),
        version=_text(data["version"]),
        item=_text(data["item"]),
        occurred_at=parse_time(_text(data["occurred_at"])),
        status=_integer(data["status"]),
        error_code=_optional_text(data["error_code"]),
        latency_ms=float(data["latency_ms"]),
    )


def count_key(count: OutcomeCount) -> CountKey:
    return (count.minute, count.account, count.category, count.action, count.outcome, count.detail)


def count_to_row(count: OutcomeCount) -> CountRow:
    return (
        format_time(count.minute),
        count.account,
        count.category,
        count.action,
        count.outcome.value,
        count.detail,
        count.count,
    )


def count_from_row(row: tuple[Any, ...]) -> OutcomeCount:
    return OutcomeCount(
        minute=parse_time(row[0]),
        account=row[1],
        category=row[2],
        action=row[3],
        outcome=Outcome(row[4]),
        detail=row[5],
        count=int(row[6]),
    )


def count_to_json(count: OutcomeCount) -> dict[str, Any]:
    return {
        "minute": format_time(count.minute),
        "account": count.account,
        "category": count.category,
        "action": count.action,
        "outcome": count.outcome.value,
        "detail": count.detail,
        "count": count.count,
    }


def count_from_json(data: dict[str, Any]) -> OutcomeCount:
    return OutcomeCount(
        minute=parse_time(_text(data["minute"])),
        account=_text(data["account"]),
        category=_text(data["category"]),
        action=_text(data["action"]),
        outcome=Outcome(_text(data["outcome"])),
        detail=_text(data["detail"]),
        count=_integer(data["count"]),
    )


def credential_to_row(row: CredentialRow) -> tuple[str, str, str, int, str, str | None]:
    return (
        row.access_key_id,
        row.account,
        row.secret,
        1 if row.enabled else 0,
        format_time(row.created_at),
        None if row.disabled_at is None else format_time(row.disabled_at),
    )


def credential_from_row(row: tuple[Any, ...]) -> CredentialRow:
    return CredentialRow(
        access_key_id=row[0],
        account=row[1],
        secret=row[2],
        enabled=bool(row[3]),
        created_at=parse_time(row[4]),
        disabled_at=None if row[5] is None else parse_time(row[5]),
    )


def nonce_to_row(nonce: ClaimedNonce) -> NonceRow:
    # Epoch milliseconds (see migration 0003): cheap per call, exact for whole-second
    # signature timestamps, and what Redis holds.
    return (nonce.access_key_id, nonce.nonce, nonce.account, round(nonce.expires_at * 1000))


def nonce_from_row(row: tuple[Any, ...]) -> ClaimedNonce:
    """A nonce from ``(access_key_id, nonce, account, expires_ms)``."""
    return ClaimedNonce(
        account=row[2], access_key_id=row[0], nonce=row[1], expires_at=int(row[3]) / 1000
    )


def nonce_to_json(nonce: ClaimedNonce) -> dict[str, Any]:
    return {
        "account": nonce.account,
        "access_key_id": nonce.access_key_id,
        "nonce": nonce.nonce,
        "expires_ms": round(nonce.expires_at * 1000),
    }


def nonce_from_json(data: dict[str, Any]) -> ClaimedNonce:
    return ClaimedNonce(
        account=_text(data["account"]),
        access_key_id=_text(data["access_key_id"]),
        nonce=_text(data["nonce"]),
        expires_at=_integer(data["expires_ms"]) / 1000,
    )


# Journal lines come from disk: check types instead of trusting them, so a
# damaged line is skipped rather than turned into a wrong record.
def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _optional_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value
